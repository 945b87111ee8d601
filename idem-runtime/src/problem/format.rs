//! The format a [`Problem`] is answered in: the [`ErrorFormat`] trait, problem+json, and the
//! handle a request renders with.

use std::fmt;
use std::sync::Arc;

use axum::response::Response;
use http::HeaderValue;
use http::header::RETRY_AFTER;
use http_api_problem::HttpApiProblem;

use super::Problem;

/// Turns a [`Problem`] into the response the client receives: the error format of the API that
/// idem is part of.
///
/// Implemented by [`ProblemJson`] (the default), [`Stripe`](super::Stripe), and every function
/// `fn(&Problem) -> Response`. The runtime adds `Retry-After` to a `409` or `503` whose response
/// has none, so a format need not.
///
/// ```
/// use axum::response::{IntoResponse, Response};
/// use idem_runtime::problem::{ErrorFormat, Problem, ProblemKind};
///
/// /// Plain text, with a code of the API's own in a header.
/// struct PlainText;
///
/// impl ErrorFormat for PlainText {
///     fn render(&self, problem: &Problem) -> Response {
///         let code = match problem.kind() {
///             ProblemKind::RequestInFlight => "in-progress",
///             _ => problem.kind().slug(),
///         };
///         (problem.status(), [("x-error-code", code)], problem.detail().to_owned())
///             .into_response()
///     }
/// }
///
/// let response = PlainText.render(&Problem::key_reused());
/// assert_eq!(response.status(), 422);
/// assert_eq!(response.headers()["x-error-code"], "key-reused");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an idempotency error format",
    label = "not an `idem::problem::ErrorFormat`",
    note = "name `idem::problem::ProblemJson`, `idem::problem::Stripe`, a function `fn(&idem::problem::Problem) -> axum::response::Response`, or a type that implements `idem::problem::ErrorFormat`"
)]
pub trait ErrorFormat: Send + Sync + 'static {
    /// The response for `problem`.
    fn render(&self, problem: &Problem) -> Response;

    /// The name and JSON schema of the bodies [`render`](Self::render) writes, for the OpenAPI
    /// document ([`openapi`](crate::openapi)). `None` (the default) documents each answer with an
    /// example body rendered by this format, and no schema.
    #[cfg(feature = "utoipa")]
    fn schema(
        &self,
    ) -> Option<(
        std::borrow::Cow<'static, str>,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )> {
        None
    }
}

impl<F> ErrorFormat for F
where
    F: Fn(&Problem) -> Response + Send + Sync + 'static,
{
    fn render(&self, problem: &Problem) -> Response {
        self(problem)
    }
}

/// RFC 9457 `application/problem+json`, the default format: `type` (a link to the kind's section
/// of the [`problem`](super) docs), `title`, `status` and `detail`, plus `original_status` and
/// `body_bytes` for a `410`.
///
/// ```text
/// HTTP/1.1 422 Unprocessable Entity
/// content-type: application/problem+json
///
/// {"type":"https://docs.rs/idem/latest/idem/problem/index.html#key-reused","status":422,"title":"Idempotency key reused","detail":"this idempotency key was already used for a different request (method, path, query or body differ); use a new key for a new request"}
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ProblemJson;

impl ErrorFormat for ProblemJson {
    fn render(&self, problem: &Problem) -> Response {
        let mut body = HttpApiProblem::new(problem.status())
            .type_url(problem.type_url())
            .title(problem.title())
            .detail(problem.detail());
        if let (Some(status), Some(len)) = (problem.original_status(), problem.body_bytes()) {
            body.set_value("original_status", &status.as_u16());
            body.set_value("body_bytes", &len);
        }
        body.to_axum_response()
    }

    #[cfg(feature = "utoipa")]
    fn schema(
        &self,
    ) -> Option<(
        std::borrow::Cow<'static, str>,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )> {
        Some(crate::openapi::schemas::problem_json())
    }
}

/// The error format a request answers in: a cheap handle to an [`ErrorFormat`], chosen
/// runtime-wide ([`IdempotencyBuilder::errors`](crate::config::IdempotencyBuilder::errors)) or per
/// handler (`#[idempotent(errors = ..)]`).
///
/// Cloning it copies a reference, or clones an `Arc` for a format with state of its own.
#[derive(Clone)]
pub struct Renderer(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static dyn ErrorFormat),
    Shared(Arc<dyn ErrorFormat>),
}

impl Renderer {
    /// A handle to `format`. A format without state (a unit struct such as [`Stripe`](super::Stripe),
    /// a function) is not allocated; another is kept behind an `Arc`.
    pub fn new<F: ErrorFormat>(format: F) -> Self {
        if size_of::<F>() == 0 && !std::mem::needs_drop::<F>() {
            // A zero-sized value lives nowhere: boxing it allocates nothing, and leaking the box
            // gives it a `'static` address.
            Self(Repr::Static(Box::leak(Box::new(format))))
        } else {
            Self(Repr::Shared(Arc::new(format)))
        }
    }

    /// A handle to a format that lives forever: what `#[idempotent(errors = ..)]` writes.
    #[must_use]
    pub const fn from_static(format: &'static dyn ErrorFormat) -> Self {
        Self(Repr::Static(format))
    }

    /// The format.
    #[must_use]
    pub fn format(&self) -> &dyn ErrorFormat {
        match &self.0 {
            Repr::Static(format) => *format,
            Repr::Shared(format) => &**format,
        }
    }

    /// `problem` in this format, with its `Retry-After` (when it has one) if the format wrote none.
    #[must_use]
    pub fn render(&self, problem: &Problem) -> Response {
        let mut response = self.format().render(problem);
        if let Some(after) = problem.retry_after()
            && !response.headers().contains_key(RETRY_AFTER)
        {
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

impl Default for Renderer {
    /// [`ProblemJson`].
    fn default() -> Self {
        Self::from_static(&ProblemJson)
    }
}

impl fmt::Debug for Renderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renderer").finish_non_exhaustive()
    }
}
