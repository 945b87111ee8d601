//! Request fingerprints: is this retry really the same request?
//!
//! A key may only be reused for the request it was first sent with. The [`Fingerprint`] is a
//! SHA-256 digest over a versioned, domain-separated, length-prefixed encoding of
//!
//! 1. the HTTP method,
//! 2. the route's matched path template (`/charges/{id}`),
//! 3. the concrete path (`/charges/ch_1`) and the query string,
//! 4. every input the handler extracts, in argument order, each through [`FingerprintInput`].
//!
//! Inputs are encoded canonically from their deserialized value, so the order of a JSON object's
//! members, a `HashMap`'s iteration order and the JSON's whitespace never change the digest, while
//! any change of a value does. State, extensions and other non-input extractors contribute nothing.
//!
//! ```
//! use axum::Json;
//! use idem_runtime::fingerprint::Fingerprinter;
//!
//! let digest = |body: &str| {
//!     let value: serde_json::Value = serde_json::from_str(body).unwrap();
//!     let mut fp = Fingerprinter::new(&http::Method::POST, Some("/charges"), "/charges", None);
//!     fp.input(&Json(value));
//!     fp.finish().unwrap()
//! };
//! assert_eq!(digest(r#"{"amount": 5, "currency": "eur"}"#), digest(r#"{"currency":"eur","amount":5}"#));
//! assert_ne!(digest(r#"{"amount": 5}"#), digest(r#"{"amount": 6}"#));
//! ```

mod canonical;
mod input;

use std::fmt;

use http::Method;
use serde::Serialize;
use sha2::{Digest, Sha256};

use self::canonical::Sink;
pub use self::input::FingerprintInput;

/// A request's fingerprint: 32 bytes of SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// A fingerprint from its raw digest, as read back from a store.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl fmt::Display for Fingerprint {
    /// Lowercase hexadecimal, 64 characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A digest of a request exactly as it was sent: method, matched route, path, query,
/// `Content-Type` and body bytes (SHA-256, domain-separated from [`Fingerprint`]).
///
/// Where a [`Fingerprint`] says "the same request, whatever its spelling", this says "the same
/// bytes". A completed record keeps the digest of the request that created it, so that a retry
/// sending the same bytes again can be answered before its body is parsed: when every input of the
/// handler is [determined by those bytes](FingerprintInput::FROM_REQUEST_BYTES), equal digests
/// imply equal fingerprints.
///
/// ```
/// use idem_runtime::fingerprint::RequestDigest;
///
/// let digest = |body: &[u8]| {
///     RequestDigest::new(&http::Method::POST, Some("/charges"), "/charges", None, Some(b"application/json"), body)
/// };
/// assert_eq!(digest(br#"{"amount":5}"#), digest(br#"{"amount":5}"#));
/// // Unlike a fingerprint, it sees the spelling.
/// assert_ne!(digest(br#"{"amount":5}"#), digest(br#"{"amount": 5}"#));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestDigest([u8; 32]);

impl RequestDigest {
    /// The digest of a request with this method, matched route template, path, query,
    /// `Content-Type` header value and body.
    #[must_use]
    pub fn new(
        method: &Method,
        route: Option<&str>,
        path: &str,
        query: Option<&str>,
        content_type: Option<&[u8]>,
        body: &[u8],
    ) -> Self {
        let mut hasher = Hasher::new();
        hasher.put(REQUEST_DOMAIN);
        request_line(&mut hasher, method, route, path, query);
        match content_type {
            Some(value) => put_field(&mut hasher, field::CONTENT_TYPE, value),
            None => hasher.put(&[field::NO_CONTENT_TYPE]),
        }
        put_field(&mut hasher, field::BYTES, body);
        Self(hasher.finish())
    }

    /// A digest from its raw bytes, as read back from a store.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for RequestDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestDigest(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str(")")
    }
}

/// The domain tag and format version of a [`RequestDigest`].
const REQUEST_DOMAIN: &[u8] = b"idem/request/v1\0";

/// The domain tag and format version that every fingerprint starts with. Changing the encoding
/// means changing this tag, so that old and new digests never compare equal by accident.
const DOMAIN: &[u8] = b"idem/fingerprint/v1\0";

mod field {
    pub(super) const METHOD: u8 = 0xF0;
    pub(super) const ROUTE: u8 = 0xF1;
    pub(super) const NO_ROUTE: u8 = 0xF2;
    pub(super) const PATH: u8 = 0xF3;
    pub(super) const QUERY: u8 = 0xF4;
    pub(super) const NO_QUERY: u8 = 0xF5;
    pub(super) const INPUT: u8 = 0xF6;
    pub(super) const BYTES: u8 = 0xF7;
    pub(super) const VALUE: u8 = 0xF8;
    pub(super) const CONTENT_TYPE: u8 = 0xF9;
    pub(super) const NO_CONTENT_TYPE: u8 = 0xFA;
}

/// One length-prefixed field.
fn put_field(hasher: &mut Hasher, tag: u8, bytes: &[u8]) {
    hasher.put(&[tag]);
    hasher.put(&(bytes.len() as u64).to_le_bytes());
    hasher.put(bytes);
}

/// The request line, as both digests begin.
fn request_line(
    hasher: &mut Hasher,
    method: &Method,
    route: Option<&str>,
    path: &str,
    query: Option<&str>,
) {
    put_field(hasher, field::METHOD, method.as_str().as_bytes());
    match route {
        Some(route) => put_field(hasher, field::ROUTE, route.as_bytes()),
        None => hasher.put(&[field::NO_ROUTE]),
    }
    put_field(hasher, field::PATH, path.as_bytes());
    match query {
        Some(query) => put_field(hasher, field::QUERY, query.as_bytes()),
        None => hasher.put(&[field::NO_QUERY]),
    }
}

/// The SHA-256 state behind a small buffer. The encoding arrives in many pieces of a few bytes
/// (tags, lengths, short strings); handing each to the hash function on its own costs several
/// times more than hashing the bytes, so they are gathered first. The digest is the same: the hash
/// sees the same bytes in the same order.
struct Hasher {
    sha: Sha256,
    buffer: [u8; HASHER_BUFFER],
    len: usize,
}

const HASHER_BUFFER: usize = 256;

impl Hasher {
    fn new() -> Self {
        Self {
            sha: Sha256::new(),
            buffer: [0; HASHER_BUFFER],
            len: 0,
        }
    }

    fn flush(&mut self) {
        self.sha.update(&self.buffer[..self.len]);
        self.len = 0;
    }

    fn finish(mut self) -> [u8; 32] {
        self.flush();
        self.sha.finalize().into()
    }
}

impl Sink for Hasher {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if bytes.len() > HASHER_BUFFER - self.len {
            self.flush();
            if bytes.len() >= HASHER_BUFFER {
                self.sha.update(bytes);
                return;
            }
        }
        self.buffer[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}

/// Builds a [`Fingerprint`]: the request line first, then each input in argument order.
pub struct Fingerprinter {
    hasher: Hasher,
    inputs: u32,
    error: Option<FingerprintError>,
}

/// An input of the request could not be encoded for its fingerprint: its `Serialize`
/// implementation failed. The request is refused (`500`, [`fingerprint-failed`]) rather than
/// risk matching a different request.
///
/// [`fingerprint-failed`]: crate::problem#fingerprint-failed
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FingerprintError(String);

impl Fingerprinter {
    /// Starts a fingerprint with the request's method, matched route template (if the router
    /// matched one), concrete path and query string.
    #[must_use]
    pub fn new(method: &Method, route: Option<&str>, path: &str, query: Option<&str>) -> Self {
        let mut fp = Self {
            hasher: Hasher::new(),
            inputs: 0,
            error: None,
        };
        fp.hasher.put(DOMAIN);
        request_line(&mut fp.hasher, method, route, path, query);
        fp
    }

    /// Adds the handler's next argument. Arguments are numbered in the order they are added, so
    /// an input can never be mistaken for its neighbour.
    pub fn input<T: FingerprintInput + ?Sized>(&mut self, input: &T) {
        self.hasher.put(&[field::INPUT]);
        self.hasher.put(&self.inputs.to_le_bytes());
        self.inputs += 1;
        input.fingerprint(self);
    }

    /// Adds raw bytes (a body read as `Bytes` or `String`, say).
    pub fn bytes(&mut self, bytes: &[u8]) {
        put_field(&mut self.hasher, field::BYTES, bytes);
    }

    /// Adds a value in its canonical encoding: maps are sorted, integers are encoded by value.
    ///
    /// Should the value's `Serialize` implementation fail, the fingerprint is unusable and
    /// [`Fingerprinter::finish`] says so: the request is refused rather than risk matching a
    /// different request.
    pub fn value<T: Serialize + ?Sized>(&mut self, value: &T) {
        self.hasher.put(&[field::VALUE]);
        if let Err(error) = canonical::encode(value, &mut self.hasher) {
            self.error
                .get_or_insert_with(|| FingerprintError(error.to_string()));
        }
    }

    /// The finished fingerprint.
    ///
    /// # Errors
    ///
    /// [`FingerprintError`], with the first `Serialize` error met by [`Fingerprinter::value`].
    pub fn finish(self) -> Result<Fingerprint, FingerprintError> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(Fingerprint(self.hasher.finish())),
        }
    }
}

impl fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fingerprinter")
            .field("inputs", &self.inputs)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buffer in front of the hash must never change the digest, whatever the sizes of the
    /// pieces: tiny ones, ones that straddle the buffer's end, ones longer than the buffer.
    #[test]
    fn buffered_hasher_digests_like_plain_sha256() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        for sizes in [
            &[1usize, 8, 3][..],
            &[255, 1, 2],
            &[256, 257, 1],
            &[100, 1000, 7, 300],
        ] {
            let mut buffered = Hasher::new();
            let mut plain = Sha256::new();
            let mut at = 0;
            for size in sizes.iter().cycle().take(40) {
                let piece = &data[at % 4000..at % 4000 + size];
                buffered.put(piece);
                plain.update(piece);
                at += size;
            }
            assert_eq!(buffered.finish(), <[u8; 32]>::from(plain.finalize()));
        }
    }
}
