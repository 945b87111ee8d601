//! The Stripe-compatible error format.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;

use super::{ErrorFormat, Problem, ProblemKind};

/// Stripe's error envelope, `{"error": {"type": .., "code": .., "message": ..}}` as
/// `application/json`, with Stripe's types and statuses: for an API that answers its own errors
/// the way Stripe does, and clients written for Stripe.
///
/// | kind | status | `type` | `code` |
/// |---|---|---|---|
/// | [key-invalid](super#key-invalid) | `400` | `invalid_request_error` | `idempotency_key_invalid` |
/// | [key-missing](super#key-missing) | `400` | `invalid_request_error` | `idempotency_key_missing` |
/// | [request-in-flight](super#request-in-flight) | `409` | `invalid_request_error` | `idempotency_key_in_use` (Stripe's own) |
/// | [key-reused](super#key-reused) | `400` | `idempotency_error` | `idempotency_key_reused` |
/// | [response-not-kept](super#response-not-kept) | `410` | `idempotency_error` | `idempotency_response_not_kept` |
/// | [store-unavailable](super#store-unavailable) | `503` | `api_error` | `idempotency_store_unavailable` |
/// | [handler-panicked](super#handler-panicked) | `500` | `api_error` | `idempotency_handler_panicked` |
/// | [response-failed](super#response-failed) | `500` | `api_error` | `idempotency_response_failed` |
/// | [fingerprint-failed](super#fingerprint-failed) | `500` | `api_error` | `idempotency_fingerprint_failed` |
///
/// The types and the `409`'s code are Stripe's; Stripe answers a key reused with other parameters
/// with `400` and an `idempotency_error`, and so does this format (problem+json answers `422`).
/// Every other code is idem's own, named `idempotency_*` so that it cannot collide with the API's.
/// Stripe has no answer for a completed request whose body was too large to keep: it is an
/// `idempotency_error` (the key's state, not the request, is at fault) and keeps its `410`, with
/// the original status and the body's length as `original_status` and `body_bytes` next to the
/// `message`. The `message` is the problem's [`detail`](Problem::detail). `409` and `503` carry
/// `Retry-After`.
///
/// ```
/// use idem_runtime::problem::{ErrorFormat, Problem, Stripe};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let response = Stripe.render(&Problem::key_reused());
/// assert_eq!(response.status(), 400);
/// let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
/// assert_eq!(
///     std::str::from_utf8(&body).unwrap(),
///     r#"{"error":{"type":"idempotency_error","code":"idempotency_key_reused","message":"this idempotency key was already used for a different request (method, path, query or body differ); use a new key for a new request"}}"#,
/// );
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Stripe;

#[derive(Serialize)]
struct Envelope<'a> {
    error: StripeError<'a>,
}

#[derive(Serialize)]
struct StripeError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_bytes: Option<u64>,
}

/// The status, `type` and `code` of `kind` in Stripe's format.
pub(crate) fn classify(kind: ProblemKind) -> (StatusCode, &'static str, &'static str) {
    const INVALID: &str = "invalid_request_error";
    const IDEMPOTENCY: &str = "idempotency_error";
    const API: &str = "api_error";
    match kind {
        ProblemKind::KeyInvalid => (kind.status(), INVALID, "idempotency_key_invalid"),
        ProblemKind::KeyMissing => (kind.status(), INVALID, "idempotency_key_missing"),
        ProblemKind::RequestInFlight => (kind.status(), INVALID, "idempotency_key_in_use"),
        ProblemKind::KeyReused => (
            StatusCode::BAD_REQUEST,
            IDEMPOTENCY,
            "idempotency_key_reused",
        ),
        ProblemKind::ResponseNotKept => {
            (kind.status(), IDEMPOTENCY, "idempotency_response_not_kept")
        }
        ProblemKind::StoreUnavailable => (kind.status(), API, "idempotency_store_unavailable"),
        ProblemKind::HandlerPanicked => (kind.status(), API, "idempotency_handler_panicked"),
        ProblemKind::ResponseFailed => (kind.status(), API, "idempotency_response_failed"),
        ProblemKind::FingerprintFailed => (kind.status(), API, "idempotency_fingerprint_failed"),
        ProblemKind::CommitFailed => (kind.status(), API, "idempotency_commit_failed"),
        ProblemKind::TransactionUnavailable => {
            (kind.status(), API, "idempotency_transaction_unavailable")
        }
    }
}

impl ErrorFormat for Stripe {
    fn render(&self, problem: &Problem) -> Response {
        let (status, kind, code) = classify(problem.kind());
        let body = Envelope {
            error: StripeError {
                kind,
                code,
                message: problem.detail(),
                original_status: problem.original_status().map(|status| status.as_u16()),
                body_bytes: problem.body_bytes(),
            },
        };
        (status, Json(body)).into_response()
    }

    #[cfg(feature = "utoipa")]
    fn schema(
        &self,
    ) -> Option<(
        std::borrow::Cow<'static, str>,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )> {
        Some(crate::openapi::schemas::stripe())
    }
}
