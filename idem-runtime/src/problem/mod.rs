//! Every answer the idempotency layer makes itself: what went wrong (a [`Problem`], of a
//! [`ProblemKind`]), and the format it is answered in (an [`ErrorFormat`]).
//!
//! Each problem has a kind, a status, a fixed title, a `detail` that says what happened and what
//! to do, and for some kinds a `Retry-After` or extra members. Nothing here is stored: the client
//! can fix the request and retry with the same key.
//!
//! # Formats
//!
//! By default a problem is answered as RFC 9457 `application/problem+json` ([`ProblemJson`]):
//! a `type` (a link to its section below), the `title`, the `status` and the `detail`. An API
//! with an error format of its own chooses another, runtime-wide with
//! [`IdempotencyBuilder::errors`](crate::config::IdempotencyBuilder::errors) or for one handler
//! with `#[idempotent(errors = ..)]`:
//!
//! - [`ProblemJson`], the default;
//! - [`Stripe`], Stripe's `{"error": {"type", "code", "message"}}` envelope, with Stripe's types
//!   and statuses;
//! - a format of the API's own: a function `fn(&Problem) -> Response`, or any type that
//!   implements [`ErrorFormat`].
//!
//! Whatever the format, a `409` and a `503` carry `Retry-After`: the runtime adds it when the
//! format did not.
//!
//! ```
//! use axum::Json;
//! use axum::response::{IntoResponse, Response};
//! use idem_runtime::config::Idempotency;
//! use idem_runtime::problem::{Problem, ProblemKind};
//!
//! /// The API's own error shape: `{"message": .., "retryable": ..}`.
//! fn api_error(problem: &Problem) -> Response {
//!     let retryable = matches!(
//!         problem.kind(),
//!         ProblemKind::RequestInFlight | ProblemKind::StoreUnavailable
//!     );
//!     let body = serde_json::json!({ "message": problem.detail(), "retryable": retryable });
//!     (problem.status(), Json(body)).into_response()
//! }
//!
//! let idempotency = Idempotency::builder().errors(api_error).build().unwrap();
//! # let _ = idempotency;
//! ```
//!
//! The kinds, and their `type` in problem+json:
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
use http::StatusCode;

use crate::key::KeyError;

mod format;
mod stripe;

pub use self::format::{ErrorFormat, ProblemJson, Renderer};
pub use self::stripe::Stripe;

/// What went wrong, for an answer of the idempotency layer. Each kind is described in the
/// [module docs](self), under its problem+json `type` ([`ProblemKind::slug`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// `400`: the key is not valid ([key-invalid](self#key-invalid)).
    KeyInvalid,
    /// `400`: the handler requires a key and the request has none
    /// ([key-missing](self#key-missing)).
    KeyMissing,
    /// `409` + `Retry-After`: a request with this key is still running
    /// ([request-in-flight](self#request-in-flight)).
    RequestInFlight,
    /// `422`: the key was used for a different request ([key-reused](self#key-reused)).
    KeyReused,
    /// `410`: the original request completed, but its body was too large to keep
    /// ([response-not-kept](self#response-not-kept)).
    ResponseNotKept,
    /// `503` + `Retry-After`: the store could not be reached; the handler did not run
    /// ([store-unavailable](self#store-unavailable)).
    StoreUnavailable,
    /// `500`: the handler panicked ([handler-panicked](self#handler-panicked)).
    HandlerPanicked,
    /// `500`: the handler's response body failed ([response-failed](self#response-failed)).
    ResponseFailed,
    /// `500`: an input could not be encoded for the fingerprint
    /// ([fingerprint-failed](self#fingerprint-failed)).
    FingerprintFailed,
    /// `503` + `Retry-After`: the request's database transaction did not commit; nothing of it
    /// was kept ([commit-failed](self#commit-failed)).
    CommitFailed,
    /// `500`: the handler takes `idem::postgres::Transaction` but the store is not a
    /// `PostgresStore` ([transaction-unavailable](self#transaction-unavailable)).
    TransactionUnavailable,
}

impl ProblemKind {
    /// Every kind, in the order of the module docs.
    pub const ALL: &'static [ProblemKind] = &[
        Self::KeyInvalid,
        Self::KeyMissing,
        Self::RequestInFlight,
        Self::KeyReused,
        Self::ResponseNotKept,
        Self::StoreUnavailable,
        Self::HandlerPanicked,
        Self::ResponseFailed,
        Self::FingerprintFailed,
        Self::CommitFailed,
        Self::TransactionUnavailable,
    ];

    /// The kind's name in problem+json `type` links: `key-invalid`, `request-in-flight`, ….
    #[must_use]
    pub const fn slug(self) -> &'static str {
        match self {
            Self::KeyInvalid => "key-invalid",
            Self::KeyMissing => "key-missing",
            Self::RequestInFlight => "request-in-flight",
            Self::KeyReused => "key-reused",
            Self::ResponseNotKept => "response-not-kept",
            Self::StoreUnavailable => "store-unavailable",
            Self::HandlerPanicked => "handler-panicked",
            Self::ResponseFailed => "response-failed",
            Self::FingerprintFailed => "fingerprint-failed",
            Self::CommitFailed => "commit-failed",
            Self::TransactionUnavailable => "transaction-unavailable",
        }
    }

    /// The kind's status in problem+json (a format may answer with another: [`Stripe`] answers a
    /// reused key with `400`).
    #[must_use]
    pub const fn status(self) -> StatusCode {
        match self {
            Self::KeyInvalid | Self::KeyMissing => StatusCode::BAD_REQUEST,
            Self::RequestInFlight => StatusCode::CONFLICT,
            Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::ResponseNotKept => StatusCode::GONE,
            Self::StoreUnavailable | Self::CommitFailed => StatusCode::SERVICE_UNAVAILABLE,
            Self::HandlerPanicked
            | Self::ResponseFailed
            | Self::FingerprintFailed
            | Self::TransactionUnavailable => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The kind's fixed title.
    #[must_use]
    pub const fn title(self) -> &'static str {
        match self {
            Self::KeyInvalid => "Invalid idempotency key",
            Self::KeyMissing => "Idempotency key required",
            Self::RequestInFlight => "Request in progress",
            Self::KeyReused => "Idempotency key reused",
            Self::ResponseNotKept => "Original response not kept",
            Self::StoreUnavailable => "Idempotency store unavailable",
            Self::HandlerPanicked => "Request failed",
            Self::ResponseFailed => "Response failed",
            Self::FingerprintFailed => "Request could not be fingerprinted",
            Self::CommitFailed => "Request not committed",
            Self::TransactionUnavailable => "No database transaction for this handler",
        }
    }
}

/// The base of problem+json `type` links: the module docs, where each kind has a section.
const TYPE_BASE: &str = "https://docs.rs/idem/latest/idem/problem/index.html#";

/// An answer made by the idempotency layer, before it is rendered in an [`ErrorFormat`].
///
/// Its accessors give a format everything it needs: the [`kind`](Self::kind), the
/// [`status`](Self::status), [`title`](Self::title) and [`detail`](Self::detail), the
/// [`retry_after`](Self::retry_after) of a `409` or `503`, and the extra members of a `410`
/// ([`original_status`](Self::original_status), [`body_bytes`](Self::body_bytes)).
#[derive(Debug, Clone)]
pub struct Problem {
    kind: ProblemKind,
    detail: String,
    retry_after: Option<Duration>,
    not_kept: Option<(StatusCode, u64)>,
    key_error: Option<KeyError>,
}

impl Problem {
    fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            retry_after: None,
            not_kept: None,
            key_error: None,
        }
    }

    fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// `400`: the key in header `header` is not valid (or missing where required).
    #[must_use]
    pub fn invalid_key(error: &KeyError, header: &str) -> Self {
        let mut problem = match error {
            KeyError::Missing => Self::new(
                ProblemKind::KeyMissing,
                format!(
                    "this endpoint requires an `{header}` header; send a unique key (a UUID, say) with each new request"
                ),
            ),
            error => Self::new(
                ProblemKind::KeyInvalid,
                format!("invalid `{header}` header: {error}"),
            ),
        };
        problem.key_error = Some(error.clone());
        problem
    }

    /// `409` + `Retry-After`: a request with this key is still being processed.
    #[must_use]
    pub fn in_flight(retry_after: Duration) -> Self {
        Self::new(
            ProblemKind::RequestInFlight,
            "a request with this idempotency key is still being processed; retry later to receive its result",
        )
        .with_retry_after(retry_after)
    }

    /// `422`: the key was used for a different request.
    #[must_use]
    pub fn key_reused() -> Self {
        Self::new(
            ProblemKind::KeyReused,
            "this idempotency key was already used for a different request (method, path, query or body differ); use a new key for a new request",
        )
    }

    /// `410`: the original request completed with `original_status`, but its body of `len`
    /// bytes was too large to keep.
    #[must_use]
    pub fn response_not_kept(original_status: StatusCode, len: u64) -> Self {
        let status = original_status.as_u16();
        let mut problem = Self::new(
            ProblemKind::ResponseNotKept,
            format!(
                "the request with this idempotency key completed with status {status}, but its {len}-byte response body was too large to keep, so it cannot be replayed; the operation was not performed again"
            ),
        );
        problem.not_kept = Some((original_status, len));
        problem
    }

    /// `503` + `Retry-After`: the store could not be reached; the handler did not run.
    #[must_use]
    pub fn store_unavailable() -> Self {
        Self::new(
            ProblemKind::StoreUnavailable,
            "the request could not be recorded, so it was not processed; retry later with the same key",
        )
        .with_retry_after(Duration::from_secs(1))
    }

    /// `503` + `Retry-After`: the request's database transaction did not commit; nothing of it
    /// was kept.
    #[must_use]
    pub fn commit_failed() -> Self {
        Self::new(
            ProblemKind::CommitFailed,
            "the request's database transaction could not be committed, so none of its work was kept; retry later with the same key",
        )
        .with_retry_after(Duration::from_secs(1))
    }

    /// `500`: the handler takes `idem::postgres::Transaction` but no `PostgresStore` is
    /// installed; the handler did not run.
    #[must_use]
    pub fn transaction_unavailable() -> Self {
        Self::new(
            ProblemKind::TransactionUnavailable,
            "this handler takes `idem::postgres::Transaction`, which needs a `PostgresStore` as the idempotency store and an `#[idempotent]` handler: install the store with `Idempotency::builder().store(PostgresStore::builder().url(..).build().await?)` and layer the `Idempotency` on the router",
        )
    }

    /// `500`: the handler panicked; nothing was stored.
    #[must_use]
    pub fn handler_panicked() -> Self {
        Self::new(
            ProblemKind::HandlerPanicked,
            "the request failed unexpectedly and nothing was stored; it may be retried with the same key",
        )
    }

    /// `500`: the response body failed while being read; nothing was stored.
    #[must_use]
    pub fn response_failed() -> Self {
        Self::new(
            ProblemKind::ResponseFailed,
            "the response could not be produced and nothing was stored; it may be retried with the same key",
        )
    }

    /// `500`: an input could not be encoded for the fingerprint; the handler did not run.
    #[must_use]
    pub fn fingerprint_failed(reason: &dyn std::fmt::Display) -> Self {
        Self::new(
            ProblemKind::FingerprintFailed,
            format!(
                "an input of this request could not be encoded for its idempotency fingerprint: {reason}"
            ),
        )
    }

    /// A problem of `kind` with representative values (the default header, a `Retry-After` of one
    /// second, a `201` whose 2 MiB body was not kept): to test a format, or to document it.
    #[must_use]
    pub fn example(kind: ProblemKind) -> Self {
        let header = "idempotency-key";
        match kind {
            ProblemKind::KeyInvalid => Self::invalid_key(&KeyError::Empty, header),
            ProblemKind::KeyMissing => Self::invalid_key(&KeyError::Missing, header),
            ProblemKind::RequestInFlight => Self::in_flight(Duration::from_secs(1)),
            ProblemKind::KeyReused => Self::key_reused(),
            ProblemKind::ResponseNotKept => {
                Self::response_not_kept(StatusCode::CREATED, 2 * 1024 * 1024)
            }
            ProblemKind::StoreUnavailable => Self::store_unavailable(),
            ProblemKind::HandlerPanicked => Self::handler_panicked(),
            ProblemKind::ResponseFailed => Self::response_failed(),
            ProblemKind::FingerprintFailed => {
                Self::fingerprint_failed(&"the input's `Serialize` implementation failed")
            }
            ProblemKind::CommitFailed => Self::commit_failed(),
            ProblemKind::TransactionUnavailable => Self::transaction_unavailable(),
        }
    }

    /// What went wrong.
    #[must_use]
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }

    /// The HTTP status of this answer in problem+json ([`ProblemKind::status`]).
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The kind's fixed, human-readable title.
    #[must_use]
    pub fn title(&self) -> &'static str {
        self.kind.title()
    }

    /// What happened and what the client can do, in one sentence.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The problem+json `type`: a link to the kind's section of these docs.
    #[must_use]
    pub fn type_url(&self) -> String {
        format!("{TYPE_BASE}{}", self.kind.slug())
    }

    /// How long the client should wait before retrying: set for a `409` and a `503`, which carry
    /// it as `Retry-After`.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// For [`ProblemKind::ResponseNotKept`]: the status the original request completed with.
    #[must_use]
    pub fn original_status(&self) -> Option<StatusCode> {
        self.not_kept.map(|(status, _)| status)
    }

    /// For [`ProblemKind::ResponseNotKept`]: the length of the body that was not kept, in bytes.
    #[must_use]
    pub fn body_bytes(&self) -> Option<u64> {
        self.not_kept.map(|(_, len)| len)
    }

    /// For [`ProblemKind::KeyInvalid`] and [`ProblemKind::KeyMissing`]: what is wrong with the key.
    #[must_use]
    pub fn key_error(&self) -> Option<&KeyError> {
        self.key_error.as_ref()
    }

    /// The `application/problem+json` response ([`ProblemJson`]), with its `Retry-After`.
    #[must_use]
    pub fn into_response(self) -> Response {
        Renderer::default().render(&self)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        Problem::into_response(self)
    }
}
