//! The second phase: the handler's last argument, read into memory first so that a retry that
//! repeats a completed request byte for byte is answered before its body is parsed.

use std::pin::Pin;
use std::task::{self, Poll};

use axum::RequestExt as _;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Either};
use http::request::Parts;
use http_body_util::BodyExt;

use super::claim::replay;
use super::prepare::Prepared;
use crate::fingerprint::{FingerprintInput, RequestDigest};

/// The mark [`Context`](super::Context) leaves on a request that takes part in idempotency: it
/// tells the handler's last extractor, [`Last`], to read the body first.
#[derive(Clone, Copy)]
pub(super) struct BufferBody;

/// The last argument of an `#[idempotent]` handler, wrapped: `T`, extracted as usual, except that
/// for a request with an idempotency key its body is first read into memory, so that
/// [`Context::body`](super::Context::body) can answer a byte-identical retry without parsing it.
///
/// The body is read under the same limit `T` would apply (axum's
/// [`DefaultBodyLimit`](axum::extract::DefaultBodyLimit)); if reading fails, `T` is handed the
/// failure and answers with its own rejection, as it would have. An extractor that reads no body
/// (`Path`, `Query`, …) is simply extracted.
pub struct Last<T>(LastState<T>);

#[allow(
    clippy::large_enum_variant,
    reason = "a `Last` lives for one request; boxing the parts would cost an allocation per keyed request to save a few hundred bytes of stack"
)]
enum LastState<T> {
    Extracted(T),
    Buffered {
        parts: Parts,
        /// The body, or why it could not be read.
        body: Result<Bytes, axum::BoxError>,
        extract: Box<dyn FnOnce(Request) -> BoxFuture<'static, Result<T, Response>> + Send>,
    },
}

impl<T> std::fmt::Debug for Last<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.0 {
            LastState::Extracted(_) => "extracted",
            LastState::Buffered { .. } => "buffered",
        };
        f.debug_tuple("Last").field(&state).finish()
    }
}

impl<S, T> FromRequest<S> for Last<T>
where
    S: Clone + Send + Sync + 'static,
    T: FromRequest<S> + Send + 'static,
{
    type Rejection = Response;

    fn from_request(
        request: Request,
        state: &S,
    ) -> impl Future<Output = Result<Self, Response>> + Send {
        // Two futures made here rather than one `async fn`, so that the extractor's future is not
        // held beside the request it consumes.
        if request.extensions().get::<BufferBody>().is_none() {
            return Either::Left(T::from_request(request, state).map(extracted));
        }
        Either::Right(read_first(request, state.clone()))
    }
}

/// A [`Last`] of a value extracted as usual, or the extractor's rejection.
#[allow(
    clippy::result_large_err,
    reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
)]
fn extracted<T, E: IntoResponse>(extracted: Result<T, E>) -> Result<Last<T>, Response> {
    match extracted {
        Ok(value) => Ok(Last(LastState::Extracted(value))),
        Err(rejection) => Err(rejection.into_response()),
    }
}

/// A [`Last`] whose body is read into memory before `T` is extracted from it.
async fn read_first<S, T>(request: Request, state: S) -> Result<Last<T>, Response>
where
    S: Send + Sync + 'static,
    T: FromRequest<S> + Send + 'static,
{
    let (parts, body) = request.with_limited_body().into_parts();
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(innermost);
    let extract = Box::new(
        move |request: Request| -> BoxFuture<'static, Result<T, Response>> {
            Box::pin(async move {
                T::from_request(request, &state)
                    .await
                    .map_err(IntoResponse::into_response)
            })
        },
    );
    Ok(Last(LastState::Buffered {
        parts,
        body,
        extract,
    }))
}

impl<S, T> FromRequestParts<S> for Last<T>
where
    S: Send + Sync,
    T: FromRequestParts<S>,
{
    type Rejection = T::Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, T::Rejection> {
        T::from_request_parts(parts, state)
            .await
            .map(|value| Self(LastState::Extracted(value)))
    }
}

/// Extracts the value inside `last` and feeds it to `request`'s fingerprint, or answers a
/// byte-identical retry of a completed request with its replay (`Err`) when `request` is exact
/// so far and `T` is too.
///
/// The future is made here rather than by an `async fn`, so that it does not hold `last` beside
/// the future that consumes it.
pub(super) fn extract<'a, T: FingerprintInput + 'a>(
    request: Option<&'a mut Prepared>,
    last: Last<T>,
) -> impl Future<Output = Result<T, Response>> + 'a {
    match last.0 {
        LastState::Extracted(value) => {
            if let Some(request) = request {
                request.input(&value);
            }
            Either::Left(std::future::ready(Ok(value)))
        }
        LastState::Buffered {
            parts,
            body,
            extract,
        } => Either::Right(buffered(request, parts, body, extract)),
    }
}

/// The value of a `Last` whose body was read first, fed to the fingerprint: the replay of a
/// byte-identical retry, or the extractor's answer.
async fn buffered<T: FingerprintInput>(
    mut request: Option<&mut Prepared>,
    parts: Parts,
    body: Result<Bytes, axum::BoxError>,
    extract: Box<dyn FnOnce(Request) -> BoxFuture<'static, Result<T, Response>> + Send>,
) -> Result<T, Response> {
    if let Some(request) = request.as_deref_mut()
        && request.exact
        && T::FROM_REQUEST_BYTES
        && let Ok(body) = &body
    {
        let digest = RequestDigest::new(
            &parts.method,
            parts
                .extensions
                .get::<MatchedPath>()
                .map(MatchedPath::as_str),
            parts.uri.path(),
            parts.uri.query(),
            parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(http::HeaderValue::as_bytes),
            body,
        );
        if let Some(completed) = request.config.store().peek(&request.key)
            && completed.request_digest == Some(digest)
        {
            tracing::debug!(target: "idem", outcome = "replayed", exact = true, key = %request.key.key(), status = completed.response.status().as_u16(), "replaying stored response to a byte-identical retry");
            request.route.outcome("replayed");
            return Err(replay(&request.settings, &completed));
        }
        request.digest = Some(digest);
    }
    let body = match body {
        Ok(bytes) => Body::from(bytes),
        // The extractor reads the failure in place of the body, and rejects it as its own.
        Err(error) => Body::new(Failed(Some(error))),
    };
    let value = extract(Request::from_parts(parts, body)).await?;
    if let Some(request) = request {
        request.input(&value);
    }
    Ok(value)
}

/// The error inside the layers of `axum::Error` that bodies wrap around it, so that an extractor
/// reading it again (and wrapping it again) still recognises a length limit.
fn innermost(error: axum::Error) -> axum::BoxError {
    let mut inner = error.into_inner();
    loop {
        match inner.downcast::<axum::Error>() {
            Ok(wrapped) => inner = wrapped.into_inner(),
            Err(other) => return other,
        }
    }
}

/// A body whose reading failed: yields the failure, once, to whoever reads it next.
struct Failed(Option<axum::BoxError>);

impl http_body::Body for Failed {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::BoxError>>> {
        Poll::Ready(self.get_mut().0.take().map(Err))
    }
}
