//! The binary form of a [`StoredResponse`], for stores that keep bytes.

use http::{HeaderName, HeaderValue, StatusCode};

use super::StoredResponse;

/// The most headers a record holds: what a header map holds, so that every record read back can
/// be replayed.
const MAX_HEADERS: u32 = 32 * 1024;

/// The version [`StoredResponse::encode`] writes.
const FORMAT_VERSION: u8 = 1;

/// The version that also carried a request digest (now kept beside the response by the store);
/// still read, its digest skipped.
const FORMAT_VERSION_WITH_DIGEST: u8 = 2;

impl StoredResponse {
    /// The response in a versioned binary form, for stores that keep bytes.
    ///
    /// Layout (integers little-endian): version `1u8`, status `u16`, header count `u32`, then per
    /// header name length `u32`, name, value length `u32`, value; then body kind `u8` (`0` kept,
    /// `1` dropped) and `u64` length, followed by the body when kept. Version `2` is the same
    /// followed by `0u8`, or `1u8` and a 32-byte request digest; [`decode`](Self::decode) reads
    /// both.
    ///
    /// ```
    /// use idem_runtime::replay::StoredResponse;
    ///
    /// let stored = StoredResponse::new(http::StatusCode::CREATED, &http::HeaderMap::new(), "ch_1".into());
    /// assert_eq!(StoredResponse::decode(&stored.encode()).unwrap(), stored);
    /// ```
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.heap_weight() + 16);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.status.as_u16().to_le_bytes());
        out.extend_from_slice(&(self.pairs().count() as u32).to_le_bytes());
        for (name, value) in self.pairs() {
            for part in [name.as_bytes(), value.as_bytes()] {
                out.extend_from_slice(&(part.len() as u32).to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        out.push(u8::from(!self.kept));
        out.extend_from_slice(&self.body_len().to_le_bytes());
        if self.kept {
            out.extend_from_slice(self.tail());
        }
        out
    }

    /// Reads back a response written by [`StoredResponse::encode`].
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the bytes are truncated, corrupt, or of a format version this build
    /// does not know (a record written by a newer release): the store should treat the record as
    /// unreadable rather than replay something wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = Reader(bytes);
        let version = input.take(1)?[0];
        if version != FORMAT_VERSION && version != FORMAT_VERSION_WITH_DIGEST {
            return Err(DecodeError::Version(version));
        }
        let status = u16::from_le_bytes(input.array()?);
        let status = StatusCode::from_u16(status).map_err(|_| DecodeError::Status(status))?;
        let count = u32::from_le_bytes(input.array()?);
        if count > MAX_HEADERS {
            return Err(DecodeError::TooManyHeaders);
        }
        let mut headers = Vec::new();
        for _ in 0..count {
            let len = u32::from_le_bytes(input.array()?) as usize;
            let name = input.take(len)?;
            HeaderName::from_bytes(name).map_err(|e| DecodeError::Header(e.to_string()))?;
            let len = u32::from_le_bytes(input.array()?) as usize;
            let value = input.take(len)?;
            HeaderValue::from_bytes(value).map_err(|e| DecodeError::Header(e.to_string()))?;
            headers.push((name, value));
        }
        let kind = input.take(1)?[0];
        let len = u64::from_le_bytes(input.array()?);
        let body = match kind {
            0 => {
                let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
                Some(input.take(len)?)
            }
            1 => None,
            other => return Err(DecodeError::Kind("body", other)),
        };
        if version == FORMAT_VERSION_WITH_DIGEST {
            match input.take(1)?[0] {
                0 => {}
                1 => {
                    input.take(32)?;
                }
                other => return Err(DecodeError::Kind("digest", other)),
            }
        }
        if !input.0.is_empty() {
            return Err(DecodeError::Trailing(input.0.len()));
        }
        Ok(Self::assemble(
            status,
            || headers.iter().copied(),
            body,
            len,
        ))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let Some((head, rest)) = self.0.split_at_checked(n) else {
            return Err(DecodeError::Truncated);
        };
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

/// A stored response could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes end before the record does.
    #[error("unreadable idempotency record: record is truncated")]
    Truncated,
    /// A format version this build does not read.
    #[error("unreadable idempotency record: unknown record format version {0}")]
    Version(u8),
    /// The status is not an HTTP status.
    #[error("unreadable idempotency record: invalid status {0}")]
    Status(u16),
    /// A header name or value is not valid.
    #[error("unreadable idempotency record: invalid header: {0}")]
    Header(String),
    /// More headers than a header map holds.
    #[error("unreadable idempotency record: more headers than a header map holds")]
    TooManyHeaders,
    /// An unknown tag in the named part.
    #[error("unreadable idempotency record: unknown {0} kind {1}")]
    Kind(&'static str, u8),
    /// Bytes left over after the record.
    #[error("unreadable idempotency record: {0} trailing bytes")]
    Trailing(usize),
}
