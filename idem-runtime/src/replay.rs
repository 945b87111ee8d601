//! Capture and replay: from the handler's response to a stored record and back.
//!
//! [`capture`] reads the whole response the handler produced. The first caller receives it
//! unchanged — every header, the full body. The record kept for retries ([`StoredResponse`]) holds
//! the status, the headers minus those that must not be repeated, and the body byte for byte:
//!
//! - not kept: `Set-Cookie` (a session must not be handed out twice), `Date` (the replay gets its
//!   own), and the hop-by-hop headers `Connection`, `Keep-Alive`, `Proxy-Authenticate`,
//!   `Proxy-Authorization`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`;
//! - a body larger than the cap is not kept either: the record remembers the status and the length,
//!   and a retry is told so ([`crate::problem`]) rather than given a truncated body or a second
//!   execution.
//!
//! A replay carries `Idempotent-Replayed: true`; the first answer never does.
//!
//! ```
//! use axum::response::IntoResponse;
//! use http::StatusCode;
//! use idem_runtime::replay::{capture, REPLAYED};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let answer = (StatusCode::CREATED, [("set-cookie", "s=1")], "ch_1").into_response();
//! let (first, stored) = capture(answer, 1024).await.unwrap();
//! assert_eq!(first.headers()["set-cookie"], "s=1");
//! assert!(first.headers().get(REPLAYED).is_none());
//!
//! let replay = stored.to_response();
//! assert_eq!(replay.status(), StatusCode::CREATED);
//! assert_eq!(replay.headers()[REPLAYED], "true");
//! assert!(replay.headers().get("set-cookie").is_none());
//! # });
//! ```

use std::fmt;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{
    CONNECTION, DATE, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, SET_COOKIE, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;

use crate::fingerprint::RequestDigest;

/// The header that marks a replayed response.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a response header is kept for replay.
#[must_use]
pub fn is_replayable(name: &HeaderName) -> bool {
    ![
        SET_COOKIE,
        DATE,
        CONNECTION,
        KEEP_ALIVE,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        PROXY_CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ]
    .contains(name)
}

/// The body of a stored response.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredBody {
    /// The body, byte for byte.
    Kept(Bytes),
    /// The body was larger than the store's cap and was not kept.
    Dropped {
        /// Its length in bytes.
        len: u64,
    },
}

impl fmt::Debug for StoredBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kept(bytes) => write!(f, "Kept({} bytes)", bytes.len()),
            Self::Dropped { len } => write!(f, "Dropped({len} bytes)"),
        }
    }
}

/// A response as kept for replay: status, replayable headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: StoredBody,
    request: Option<RequestDigest>,
}

impl StoredResponse {
    /// A stored response with a kept body. Headers that must not be replayed are dropped.
    #[must_use]
    pub fn new(status: StatusCode, mut headers: HeaderMap, body: Bytes) -> Self {
        retain_replayable(&mut headers);
        Self {
            status,
            headers,
            body: StoredBody::Kept(body),
            request: None,
        }
    }

    /// A stored response whose body of `len` bytes was not kept.
    #[must_use]
    pub fn without_body(status: StatusCode, mut headers: HeaderMap, len: u64) -> Self {
        retain_replayable(&mut headers);
        Self {
            status,
            headers,
            body: StoredBody::Dropped { len },
            request: None,
        }
    }

    /// The same response, remembering the exact request it answers: a retry with the same
    /// [`RequestDigest`] may be replayed without parsing its body (see
    /// [`FingerprintInput::FROM_REQUEST_BYTES`](crate::fingerprint::FingerprintInput::FROM_REQUEST_BYTES)).
    #[must_use]
    pub fn with_request_digest(mut self, digest: RequestDigest) -> Self {
        self.request = Some(digest);
        self
    }

    /// The digest of the exact request this response answers, if it was recorded.
    #[must_use]
    pub fn request_digest(&self) -> Option<&RequestDigest> {
        self.request.as_ref()
    }

    /// The status the handler answered.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers that are replayed.
    #[must_use]
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body, or its length if it was not kept.
    #[must_use]
    pub fn body(&self) -> &StoredBody {
        &self.body
    }

    /// An estimate of the memory the record holds, in bytes: what bounds a byte-limited store.
    #[must_use]
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        let body = match &self.body {
            StoredBody::Kept(bytes) => bytes.len(),
            StoredBody::Dropped { .. } => 0,
        };
        std::mem::size_of::<Self>() + headers + body
    }

    /// The replay: the stored status, headers and body, plus `Idempotent-Replayed: true`.
    ///
    /// A record whose body was not kept cannot be replayed; it answers with the problem that says
    /// so ([`crate::problem::Problem::response_not_kept`]).
    #[must_use]
    pub fn to_response(&self) -> Response {
        let StoredBody::Kept(body) = &self.body else {
            return crate::problem::Problem::response_not_kept(self).into_response();
        };
        // Sized for the stored headers and the replay mark at once: a clone of the stored map
        // would have to grow to take the mark.
        let mut headers = HeaderMap::with_capacity(self.headers.len() + 1);
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
        let mut response = Response::new(Body::from(body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        response
    }

    /// The record in a versioned binary form, for stores that keep bytes.
    ///
    /// Layout (integers little-endian): version `2u8`, status `u16`, header count `u32`, then per
    /// header name length `u32`, name, value length `u32`, value; then body kind `u8` (`0` kept,
    /// `1` dropped) and `u64` length, followed by the body when kept; then `0u8`, or `1u8` and the
    /// 32 bytes of the [request digest](Self::request_digest). Version `1` is the same without the
    /// digest part; [`decode`](Self::decode) reads both.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.weight() + 33);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.status.as_u16().to_le_bytes());
        out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
        for (name, value) in &self.headers {
            for part in [name.as_str().as_bytes(), value.as_bytes()] {
                out.extend_from_slice(&(part.len() as u32).to_le_bytes());
                out.extend_from_slice(part);
            }
        }
        match &self.body {
            StoredBody::Kept(body) => {
                out.push(0);
                out.extend_from_slice(&(body.len() as u64).to_le_bytes());
                out.extend_from_slice(body);
            }
            StoredBody::Dropped { len } => {
                out.push(1);
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
        match &self.request {
            Some(digest) => {
                out.push(1);
                out.extend_from_slice(digest.as_bytes());
            }
            None => out.push(0),
        }
        out
    }

    /// Reads back a record written by [`StoredResponse::encode`].
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the bytes are truncated, corrupt, or of a format version this build
    /// does not know (a record written by a newer release): the store should treat the record as
    /// unreadable rather than replay something wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = Reader(bytes);
        let version = input.take(1)?[0];
        if version != FORMAT_VERSION && version != 1 {
            return Err(DecodeError(format!(
                "unknown record format version {version}"
            )));
        }
        let status = u16::from_le_bytes(input.array()?);
        let status = StatusCode::from_u16(status)
            .map_err(|_| DecodeError(format!("invalid status {status}")))?;
        let count = u32::from_le_bytes(input.array()?);
        let mut headers = HeaderMap::new();
        for _ in 0..count {
            let len = u32::from_le_bytes(input.array()?) as usize;
            let name = HeaderName::from_bytes(input.take(len)?)
                .map_err(|e| DecodeError(format!("invalid header name: {e}")))?;
            let len = u32::from_le_bytes(input.array()?) as usize;
            let value = HeaderValue::from_bytes(input.take(len)?)
                .map_err(|e| DecodeError(format!("invalid header value: {e}")))?;
            // A map holds at most 32 768 entries; `append` would panic past that.
            headers
                .try_append(name, value)
                .map_err(|_| DecodeError("more headers than a header map holds".into()))?;
        }
        let kind = input.take(1)?[0];
        let len = u64::from_le_bytes(input.array()?);
        let body = match kind {
            0 => {
                let len = usize::try_from(len).map_err(|_| DecodeError("body too long".into()))?;
                StoredBody::Kept(Bytes::copy_from_slice(input.take(len)?))
            }
            1 => StoredBody::Dropped { len },
            _ => return Err(DecodeError(format!("unknown body kind {kind}"))),
        };
        let request = match version {
            1 => None,
            _ => match input.take(1)?[0] {
                0 => None,
                1 => Some(RequestDigest::from_bytes(input.array()?)),
                other => return Err(DecodeError(format!("unknown digest kind {other}"))),
            },
        };
        if !input.0.is_empty() {
            return Err(DecodeError(format!("{} trailing bytes", input.0.len())));
        }
        Ok(Self {
            status,
            headers,
            body,
            request,
        })
    }
}

/// The version [`StoredResponse::encode`] writes.
const FORMAT_VERSION: u8 = 2;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("record is truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("took exactly N bytes"))
    }
}

/// A stored record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable idempotency record: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn retain_replayable(headers: &mut HeaderMap) {
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| !is_replayable(name))
        .cloned()
        .collect();
    for name in dropped {
        headers.remove(name);
    }
}

/// Reads the handler's whole response: returns it for the first caller, and the record to store,
/// whose body is kept only if it is at most `max_body_bytes` long.
///
/// # Errors
///
/// The body stream's error, if it failed before its end.
pub async fn capture(
    response: Response,
    max_body_bytes: usize,
) -> Result<(Response, StoredResponse), axum::Error> {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let stored = if bytes.len() <= max_body_bytes {
        StoredResponse::new(parts.status, parts.headers.clone(), bytes.clone())
    } else {
        StoredResponse::without_body(parts.status, parts.headers.clone(), bytes.len() as u64)
    };
    Ok((Response::from_parts(parts, Body::from(bytes)), stored))
}
