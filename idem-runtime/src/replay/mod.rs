//! Capture and replay: from the handler's response to a stored record and back.
//!
//! [`capture`] reads the whole response the handler produced. The first caller receives it
//! unchanged — every header, the full body. The record kept for retries ([`StoredResponse`]) holds
//! the status, the headers minus those that must not be repeated, and the body byte for byte, with
//! its length as `Content-Length` when the handler set none (the length axum would send with the
//! replay anyway, kept so that the replay need not format it):
//!
//! - not kept: `Set-Cookie` (a session must not be handed out twice), `Date` (the replay gets its
//!   own), the hop-by-hop headers `Connection`, `Keep-Alive`, `Proxy-Authenticate`,
//!   `Proxy-Authorization`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`,
//!   and every header the response's own `Connection` header names (hop-by-hop too, RFC 9110
//!   §7.6.1);
//! - beyond these, an application or a handler may narrow what is kept with an allow-list and an
//!   extra deny list ([`ReplayHeaders`]);
//! - a body larger than the cap is not kept either: the record remembers the status and the length,
//!   and a retry is told so (the execution answers with [`crate::problem`]'s `response-not-kept`)
//!   rather than given a truncated body or a second execution.
//!
//! The record's binary form, for stores that keep bytes, is [`StoredResponse::encode`].
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
//! let replay = stored.replay().expect("the body was kept");
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
    CONNECTION, CONTENT_LENGTH, DATE, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, SET_COOKIE, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

mod block;
mod codec;
mod headers;

pub use self::codec::DecodeError;
pub use self::headers::ReplayHeaders;

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
///
/// The headers and the kept body are held in one buffer of exactly their size, the headers
/// encoded at its start: a completed record is then one allocation beside the record itself, so
/// that it costs little to keep and to evict, weighs what it holds whichever way it was built, and
/// keeps no spare capacity of the buffer the handler's body was written into.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredResponse {
    status: StatusCode,
    /// Whether the body is kept (after the headers in `data`).
    kept: bool,
    /// The length of the header block at the start of `data`, in bytes (see [`block`]).
    headers_len: u32,
    /// The header block, then the body if it is kept, or else the body's length (`u64`,
    /// little-endian).
    data: Bytes,
}

impl fmt::Debug for StoredResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredResponse")
            .field("status", &self.status)
            .field("headers", &self.headers())
            .field("body", &self.body())
            .finish()
    }
}

impl StoredResponse {
    /// A stored response with a kept body. Headers that must not be replayed are dropped.
    #[must_use]
    #[allow(
        clippy::needless_pass_by_value,
        reason = "callers hold the body as `Bytes`; the record copies it into its own buffer"
    )]
    pub fn new(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Self {
        Self::with_body(status, headers, Some(&body), body.len() as u64)
    }

    /// A stored response whose body of `len` bytes was not kept.
    #[must_use]
    pub fn without_body(status: StatusCode, headers: &HeaderMap, len: u64) -> Self {
        Self::with_body(status, headers, None, len)
    }

    /// The record of a response with these parts, keeping only the replayable headers, and the
    /// body when it is given.
    fn with_body(status: StatusCode, headers: &HeaderMap, body: Option<&[u8]>, len: u64) -> Self {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        // A kept body's length goes with it, as the `Content-Length` axum would add to the
        // replay: read from the record's buffer, it costs the replay no formatting and no
        // allocation. A length the handler set itself is kept as it is, and none is added to an
        // answer whose status may not carry one (RFC 9110 §8.6).
        let mut digits = itoa::Buffer::new();
        let length = body
            .filter(|body| {
                !body.is_empty()
                    && carries_length(status)
                    && !headers.contains_key(CONTENT_LENGTH)
                    && !named.contains(&CONTENT_LENGTH)
            })
            .map(|_| digits.format(len).as_bytes());
        let kept = || {
            headers
                .iter()
                .filter(|(name, _)| is_replayable(name) && !named.contains(name))
                .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
                .chain(length.map(|length| (CONTENT_LENGTH.as_str().as_bytes(), length)))
        };
        Self::assemble(status, kept, body, len)
    }

    /// A record of `headers` (names and values valid, replayable) and `body`; `headers` is called
    /// twice, to size the buffer and to fill it.
    fn assemble<'a, I>(
        status: StatusCode,
        headers: impl Fn() -> I,
        body: Option<&[u8]>,
        body_len: u64,
    ) -> Self
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])>,
    {
        let headers_len: usize = headers()
            .map(|(name, value)| block::encoded_len(name, value))
            .sum();
        let tail = body.map_or(8, <[u8]>::len);
        let mut data = Vec::with_capacity(headers_len + tail);
        for (name, value) in headers() {
            block::push(&mut data, name, value);
        }
        match body {
            Some(body) => data.extend_from_slice(body),
            None => data.extend_from_slice(&body_len.to_le_bytes()),
        }
        // The capacity is exactly the length: the buffer becomes the `Bytes` as it is.
        debug_assert_eq!(data.len(), data.capacity());
        Self {
            status,
            kept: body.is_some(),
            headers_len: u32::try_from(headers_len).unwrap_or(u32::MAX),
            data: Bytes::from(data),
        }
    }

    /// The bytes after the header block: the body, or its length.
    fn tail(&self) -> &[u8] {
        &self.data[self.headers_len as usize..]
    }

    /// The body's length in bytes, kept or not.
    fn body_len(&self) -> u64 {
        if self.kept {
            return self.tail().len() as u64;
        }
        self.tail().try_into().map_or(0, u64::from_le_bytes)
    }

    /// The status the handler answered.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers that are replayed, as a new header map.
    #[must_use]
    pub fn headers(&self) -> HeaderMap {
        self.to_map(self.pairs().count())
    }

    /// The body, or its length if it was not kept.
    #[must_use]
    pub fn body(&self) -> StoredBody {
        if self.kept {
            StoredBody::Kept(self.data.slice(self.headers_len as usize..))
        } else {
            StoredBody::Dropped {
                len: self.body_len(),
            }
        }
    }

    /// An estimate of the heap memory the response holds (its headers and body), in bytes: part
    /// of what bounds a byte-limited store
    /// ([`Completed::weight`](crate::store::Completed::weight)).
    #[must_use]
    pub fn heap_weight(&self) -> usize {
        self.data.len()
    }

    /// Drops the headers that `policy` does not replay (the defaults are applied already).
    pub(crate) fn retain_headers(&mut self, policy: &ReplayHeaders) {
        if policy.is_default() {
            return;
        }
        let kept: Vec<(&[u8], &[u8])> = self
            .pairs()
            .filter(|(name, _)| {
                name.to_header_name()
                    .is_some_and(|name| policy.replays(&name))
            })
            .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
            .collect();
        let body = self.kept.then(|| self.tail());
        *self = Self::assemble(self.status, || kept.iter().copied(), body, self.body_len());
    }

    /// The name and value of every stored header, in order.
    fn pairs(&self) -> impl Iterator<Item = (block::Name<'_>, block::Value<'_>)> + '_ {
        block::headers(&self.data[..self.headers_len as usize])
    }

    /// A header map of the stored headers, with room for `capacity` headers in all. The values
    /// share the record's buffer, or are the block's constants.
    fn to_map(&self, capacity: usize) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(capacity);
        for (name, value) in self.pairs() {
            let value = match value {
                block::Value::Known(value) => Ok(value.clone()),
                block::Value::Written(bytes) => {
                    HeaderValue::from_maybe_shared(self.data.slice_ref(bytes))
                }
            };
            // Both were valid header parts when the record was written.
            if let (Some(name), Ok(value)) = (name.to_header_name(), value) {
                map.append(name, value);
            }
        }
        map
    }

    /// The replay: the stored status, headers and body, plus `Idempotent-Replayed: true`.
    ///
    /// # Errors
    ///
    /// [`NotKept`] when the body was too large to keep: the response cannot be replayed.
    pub fn replay(&self) -> Result<Response, NotKept> {
        if !self.kept {
            return Err(NotKept {
                status: self.status,
                len: self.body_len(),
            });
        }
        // Sized for the stored headers, the replay mark, and the `Content-Length` that axum adds
        // to a body of known length when the record has none, so that the map never grows.
        let (stored, has_length) = self.pairs().fold((0, false), |(n, has), (name, _)| {
            (n + 1, has || name.is(&CONTENT_LENGTH))
        });
        let mut headers = self.to_map(stored + if has_length { 1 } else { 2 });
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
        let body = self.data.slice(self.headers_len as usize..);
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// Whether an answer of `status` may carry the length of its body: not an interim one, not `204 No
/// Content`, and not `304 Not Modified`, whose length would be the length of another response.
fn carries_length(status: StatusCode) -> bool {
    !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
}

/// A stored response whose body was not kept, so it cannot be replayed: what is known of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotKept {
    /// The status the handler answered.
    pub status: StatusCode,
    /// The length of the body that was not kept, in bytes.
    pub len: u64,
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
    let bytes = crate::collect::to_bytes(body).await?;
    let kept = (bytes.len() <= max_body_bytes).then_some(&bytes[..]);
    let stored = StoredResponse::with_body(parts.status, &parts.headers, kept, bytes.len() as u64);
    Ok((Response::from_parts(parts, Body::from(bytes)), stored))
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse as _;
    use http::header::CONTENT_TYPE;

    use super::*;

    #[test]
    fn the_stored_length_is_the_body_length_at_every_width() {
        for len in [1, 7, 10, 999, 1_048_576] {
            let body = Bytes::from(vec![b'x'; len]);
            let stored = StoredResponse::new(StatusCode::OK, &HeaderMap::new(), body);
            assert_eq!(stored.headers()[CONTENT_LENGTH], len.to_string().as_str());
        }
    }

    #[tokio::test]
    async fn a_kept_body_is_stored_with_its_length() {
        let answer = (
            StatusCode::CREATED,
            [(CONTENT_TYPE, "application/json")],
            "{\"id\":1}",
        );
        let (first, stored) = capture(answer.into_response(), 1024).await.unwrap();
        assert!(
            first.headers().get(CONTENT_LENGTH).is_none(),
            "the first answer is the handler's, unchanged"
        );
        assert_eq!(stored.headers()[CONTENT_LENGTH], "8");
        assert_eq!(stored.headers()[CONTENT_TYPE], "application/json");
        let replay = stored.replay().unwrap();
        assert_eq!(replay.headers().get_all(CONTENT_LENGTH).iter().count(), 1);
        assert_eq!(replay.headers()[CONTENT_LENGTH], "8");
    }

    #[tokio::test]
    async fn a_length_the_handler_set_is_kept_alone() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("3"));
        let stored = StoredResponse::new(StatusCode::OK, &headers, Bytes::from_static(b"abc"));
        let kept = stored.headers();
        assert_eq!(kept.get_all(CONTENT_LENGTH).iter().count(), 1);
        assert_eq!(kept[CONTENT_LENGTH], "3");
    }

    #[test]
    fn no_length_is_stored_for_an_empty_or_dropped_body() {
        let empty = StoredResponse::new(StatusCode::NO_CONTENT, &HeaderMap::new(), Bytes::new());
        assert!(empty.headers().is_empty());
        let dropped = StoredResponse::without_body(StatusCode::OK, &HeaderMap::new(), 4096);
        assert!(dropped.headers().is_empty());
    }

    #[test]
    fn no_length_is_stored_where_the_status_may_carry_none() {
        for status in [100, 103, 204, 304] {
            let status = StatusCode::from_u16(status).unwrap();
            let stored = StoredResponse::new(status, &HeaderMap::new(), Bytes::from_static(b"x"));
            assert!(stored.headers().is_empty(), "{status}");
        }
        let stored = StoredResponse::new(StatusCode::ACCEPTED, &HeaderMap::new(), "x".into());
        assert_eq!(stored.headers()[CONTENT_LENGTH], "1");
    }

    #[test]
    fn a_length_the_connection_header_names_is_not_added() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("content-length"));
        let stored = StoredResponse::new(StatusCode::OK, &headers, Bytes::from_static(b"abc"));
        assert!(stored.headers().is_empty());
    }
}
