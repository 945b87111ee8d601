//! Every answer the idempotency layer makes itself, as RFC 9457 `application/problem+json`.
//!
//! Each answer has a `type` (a link to its section below), a fixed `title`, the `status` and a
//! `detail` that says what happened and what to do. Nothing here is stored: the client can fix the
//! request and retry with the same key.
//!
//! # key-invalid
//! `400 Bad Request`. The `Idempotency-Key` header is empty, too long, has a character that keys may
//! not contain, is a malformed quoted string, or was sent twice. The handler did not run.
//!
//! # key-missing
//! `400 Bad Request`. The endpoint requires an `Idempotency-Key` and the request has none. The
//! handler did not run.
//!
//! # request-in-flight
//! `409 Conflict`, with `Retry-After`. A request with the same key is still being processed. Retry
//! after the given number of seconds to receive its result.
//!
//! # key-reused
//! `422 Unprocessable Content`. The key was already used for a different request (another body,
//! path, query or route). Use a new key for a new request.
//!
//! # response-not-kept
//! `410 Gone`. The original request completed (its status is in `original_status`), but its body was
//! larger than the store keeps (`body_bytes`), so it cannot be replayed. The operation was not run
//! again.
//!
//! # store-unavailable
//! `503 Service Unavailable`, with `Retry-After`. The idempotency store could not be reached, so the
//! request could not be claimed and the handler did not run.
//!
//! # handler-panicked
//! `500 Internal Server Error`. The handler panicked. Nothing was stored: the request may be retried
//! with the same key.
//!
//! # response-failed
//! `500 Internal Server Error`. The handler's response body failed while it was being read. Nothing
//! was stored: the request may be retried with the same key.
//!
//! # fingerprint-failed
//! `500 Internal Server Error`. An input of the request could not be encoded for its fingerprint
//! (its `Serialize` implementation failed). The handler did not run.
//!
//! # commit-failed
//! `503 Service Unavailable`, with `Retry-After`. The handler ran in the database transaction of
//! the request (`idem::postgres::Transaction`), but the transaction could not be committed: none
//! of its work was kept and nothing was stored. Retry with the same key.
//!
//! # transaction-unavailable
//! `500 Internal Server Error`. The handler takes `idem::postgres::Transaction`, but the
//! application's idempotency store is not a `PostgresStore` (or the handler is not
//! `#[idempotent]`). The handler did not run. Install one with
//! `Idempotency::builder().store(PostgresStore::builder()...build().await?)`.
//!
//! ```
//! use idem_runtime::problem::Problem;
//!
//! let response = Problem::in_flight(std::time::Duration::from_secs(2)).into_response();
//! assert_eq!(response.status(), 409);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! assert_eq!(response.headers()["retry-after"], "2");
//! ```

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header::RETRY_AFTER};
use http_api_problem::HttpApiProblem;

use crate::key::KeyError;

const TYPE_BASE: &str = "https://docs.rs/idem/latest/idem/problem/index.html#";

/// An answer made by the idempotency layer.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    body: HttpApiProblem,
    retry_after: Option<Duration>,
}

impl Problem {
    fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            body: HttpApiProblem::new(status)
                .type_url(format!("{TYPE_BASE}{slug}"))
                .title(title)
                .detail(detail),
            retry_after: None,
        }
    }

    fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// `400`: the key in header `header` is not valid (or missing where required).
    #[must_use]
    pub fn invalid_key(error: &KeyError, header: &str) -> Self {
        match error {
            KeyError::Missing => Self::new(
                StatusCode::BAD_REQUEST,
                "key-missing",
                "Idempotency key required",
                format!(
                    "this endpoint requires an `{header}` header; send a unique key (a UUID, say) with each new request"
                ),
            ),
            error => Self::new(
                StatusCode::BAD_REQUEST,
                "key-invalid",
                "Invalid idempotency key",
                format!("invalid `{header}` header: {error}"),
            ),
        }
    }

    /// `409` + `Retry-After`: a request with this key is still being processed.
    #[must_use]
    pub fn in_flight(retry_after: Duration) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "request-in-flight",
            "Request in progress",
            "a request with this idempotency key is still being processed; retry later to receive its result",
        )
        .retry_after(retry_after)
    }

    /// `422`: the key was used for a different request.
    #[must_use]
    pub fn key_reused() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "key-reused",
            "Idempotency key reused",
            "this idempotency key was already used for a different request (method, path, query or body differ); use a new key for a new request",
        )
    }

    /// `410`: the original request completed with `original_status`, but its body of `len`
    /// bytes was too large to keep.
    #[must_use]
    pub fn response_not_kept(original_status: StatusCode, len: u64) -> Self {
        let status = original_status.as_u16();
        let mut problem = Self::new(
            StatusCode::GONE,
            "response-not-kept",
            "Original response not kept",
            format!(
                "the request with this idempotency key completed with status {status}, but its {len}-byte response body was too large to keep, so it cannot be replayed; the operation was not performed again"
            ),
        );
        problem.body.set_value("original_status", &status);
        problem.body.set_value("body_bytes", &len);
        problem
    }

    /// `503` + `Retry-After`: the store could not be reached; the handler did not run.
    #[must_use]
    pub fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Idempotency store unavailable",
            "the request could not be recorded, so it was not processed; retry later with the same key",
        )
        .retry_after(Duration::from_secs(1))
    }

    /// `500`: the handler panicked; nothing was stored.
    #[must_use]
    pub fn handler_panicked() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "handler-panicked",
            "Request failed",
            "the request failed unexpectedly and nothing was stored; it may be retried with the same key",
        )
    }

    /// `500`: the response body failed while being read; nothing was stored.
    #[must_use]
    pub fn response_failed() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "response-failed",
            "Response failed",
            "the response could not be produced and nothing was stored; it may be retried with the same key",
        )
    }

    /// `500`: an input could not be encoded for the fingerprint; the handler did not run.
    #[must_use]
    pub fn fingerprint_failed(reason: &dyn std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "fingerprint-failed",
            "Request could not be fingerprinted",
            format!(
                "an input of this request could not be encoded for its idempotency fingerprint: {reason}"
            ),
        )
    }

    /// `503` + `Retry-After`: the request's database transaction did not commit; nothing of it
    /// was kept.
    #[must_use]
    pub fn commit_failed() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "commit-failed",
            "Request not committed",
            "the request's database transaction could not be committed, so none of its work was kept; retry later with the same key",
        )
        .retry_after(Duration::from_secs(1))
    }

    /// `500`: the handler takes `idem::postgres::Transaction` but no `PostgresStore` is
    /// installed; the handler did not run.
    #[must_use]
    pub fn transaction_unavailable() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "transaction-unavailable",
            "No database transaction for this handler",
            "this handler takes `idem::postgres::Transaction`, which needs a `PostgresStore` as the idempotency store and an `#[idempotent]` handler: install the store with `Idempotency::builder().store(PostgresStore::builder().url(..).build().await?)` and layer the `Idempotency` on the router",
        )
    }

    /// The HTTP status of this answer.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `application/problem+json` response.
    #[must_use]
    pub fn into_response(self) -> Response {
        let mut response = self.body.to_axum_response();
        if let Some(after) = self.retry_after {
            let seconds = u64::try_from(after.as_millis().div_ceil(1000))
                .unwrap_or(u64::MAX)
                .max(1);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        Problem::into_response(self)
    }
}
