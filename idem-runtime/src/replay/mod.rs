//! Capture and replay: from the handler's response to a stored record and back.
//!
//! [`capture`] reads the whole response the handler produced. The first caller receives it
//! unchanged — every header, the full body. The record kept for retries ([`StoredResponse`]) holds
//! the status, the headers minus those that must not be repeated, and the body byte for byte:
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
    CONNECTION, DATE, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, SET_COOKIE, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: StoredBody,
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
        }
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

    /// An estimate of the heap memory the response holds (its headers and body), in bytes: part
    /// of what bounds a byte-limited store
    /// ([`Completed::weight`](crate::store::Completed::weight)).
    #[must_use]
    pub fn heap_weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        let body = match &self.body {
            StoredBody::Kept(bytes) => bytes.len(),
            StoredBody::Dropped { .. } => 0,
        };
        headers + body
    }

    /// Drops the headers that `policy` does not replay (the defaults are applied already).
    pub(crate) fn retain_headers(&mut self, policy: &ReplayHeaders) {
        policy.retain(&mut self.headers);
    }

    /// The replay: the stored status, headers and body, plus `Idempotent-Replayed: true`.
    ///
    /// # Errors
    ///
    /// [`NotKept`] when the body was too large to keep: the response cannot be replayed.
    pub fn replay(&self) -> Result<Response, NotKept> {
        let body = match &self.body {
            StoredBody::Kept(body) => body,
            StoredBody::Dropped { len } => {
                return Err(NotKept {
                    status: self.status,
                    len: *len,
                });
            }
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
        Ok(response)
    }
}

/// A stored response whose body was not kept, so it cannot be replayed: what is known of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotKept {
    /// The status the handler answered.
    pub status: StatusCode,
    /// The length of the body that was not kept, in bytes.
    pub len: u64,
}

/// Drops the headers that must not be replayed: those [`is_replayable`] refuses, and those the
/// response's own `Connection` header names.
fn retain_replayable(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    if named.is_empty() && headers.keys().all(is_replayable) {
        return;
    }
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| !is_replayable(name) || named.contains(name))
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
