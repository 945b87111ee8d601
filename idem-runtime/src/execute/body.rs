//! The second phase: the handler's last argument, read into memory first so that a retry that
//! repeats a completed request byte for byte is answered before its body is parsed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};

use axum::RequestExt as _;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Either};
use http::request::Parts;

use super::claim::replay;
use super::prepare::{Prepared, request_line};
use crate::fingerprint::{FingerprintInput, RequestDigest};
use crate::store::{Completed, IdempotencyStore, StoreKey};

/// What [`Context`](super::Context) leaves on a request that takes part in idempotency, for the
/// handler's last extractor, [`Last`]: where to look for a completed record of the same key, so
/// that a byte-identical retry is found before its body is parsed.
#[derive(Clone)]
pub(super) struct Peek {
    store: Arc<dyn IdempotencyStore>,
    key: StoreKey,
}

impl Peek {
    pub(super) fn new(request: &Prepared) -> Self {
        Self {
            store: Arc::clone(request.config.store()),
            key: request.key.clone(),
        }
    }
}

/// The last argument of an `#[idempotent]` handler, wrapped: `T`, extracted as usual, except that
/// for a request with an idempotency key the body is first read into memory and its digest looked
/// up, so that [`Context::body`](super::Context::body) can answer a byte-identical retry of a
/// completed request without parsing it.
///
/// The body is read under the same limit `T` would apply (axum's
/// [`DefaultBodyLimit`](axum::extract::DefaultBodyLimit)); if reading fails, `T` is handed the
/// failure and answers with its own rejection, as it would have. An extractor that reads no body
/// (`Path`, `Query`, …) is simply extracted.
pub struct Last<T>(LastState<T>);

#[allow(
    clippy::large_enum_variant,
    reason = "a `Last` lives for one request; boxing the parts would cost an allocation per replay to save a few hundred bytes of stack"
)]
enum LastState<T> {
    /// Extracted; `digest` is the request's, when its body was read first.
    Extracted {
        value: T,
        digest: Option<RequestDigest>,
    },
    /// A byte-identical retry of a completed request, not extracted yet: if the handler's other
    /// inputs are determined by the request's bytes too, it is answered with the replay of
    /// `completed`; otherwise `extract` makes the value, and the retry takes the claim's way.
    Repeated {
        completed: Arc<Completed>,
        parts: Parts,
        body: Bytes,
        extract: Box<dyn FnOnce(Request) -> BoxFuture<'static, Result<T, Response>> + Send>,
    },
}

impl<T> std::fmt::Debug for Last<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.0 {
            LastState::Extracted { .. } => "extracted",
            LastState::Repeated { .. } => "repeated",
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

    #[allow(
        clippy::result_large_err,
        reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
    )]
    fn from_request(
        mut request: Request,
        state: &S,
    ) -> impl Future<Output = Result<Self, Response>> + Send {
        // Two futures made here rather than one `async fn`, so that the extractor's future is not
        // held beside the request it consumes. (Whether `T` is determined by the request's bytes is
        // not asked here: a bound on it would turn a missing `FingerprintInput` into a handler
        // that axum refuses. `Context::body` asks it.)
        match request.extensions_mut().remove::<Peek>() {
            Some(peek) => Either::Right(read_first(request, state, peek)),
            None => {
                Either::Left(T::from_request(request, state).map(|value| extracted(value, None)))
            }
        }
    }
}

/// A [`Last`] of a value extracted as usual (with the digest of the request, if its body was read
/// first), or the extractor's rejection.
#[allow(
    clippy::result_large_err,
    reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
)]
fn extracted<T, E: IntoResponse>(
    extracted: Result<T, E>,
    digest: Option<RequestDigest>,
) -> Result<Last<T>, Response> {
    match extracted {
        Ok(value) => Ok(Last(LastState::Extracted { value, digest })),
        Err(rejection) => Err(rejection.into_response()),
    }
}

/// A [`Last`] whose body is read into memory and looked up before `T` is extracted from it: `T`
/// is extracted at once unless the store holds a completed record of this very request.
///
/// Two futures one after the other (`then`), so that the reading's state and `T`'s future share
/// their room instead of sitting side by side in one `async fn`.
#[allow(
    clippy::result_large_err,
    reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
)]
fn read_first<'a, S, T>(
    request: Request,
    state: &'a S,
    peek: Peek,
) -> impl Future<Output = Result<Last<T>, Response>> + Send + 'a
where
    S: Clone + Send + Sync + 'static,
    T: FromRequest<S> + Send + 'static,
{
    look_up(request, state, peek).then(move |read| match read {
        Read::Repeated(last) => Either::Left(std::future::ready(Ok(last))),
        Read::Extract(request, digest) => Either::Right(
            T::from_request(request, state).map(move |value| extracted(value, digest)),
        ),
    })
}

/// What reading the body first found.
enum Read<T> {
    /// A byte-identical retry of a completed request.
    Repeated(Last<T>),
    /// Anything else: the request to extract `T` from, its body in memory (or the failure to read
    /// it), and its digest.
    Extract(Request, Option<RequestDigest>),
}

async fn look_up<S, T>(request: Request, state: &S, peek: Peek) -> Read<T>
where
    S: Clone + Send + Sync + 'static,
    T: FromRequest<S> + Send + 'static,
{
    let (parts, body) = request.with_limited_body().into_parts();
    let body = match crate::collect::to_bytes(body).await {
        Ok(body) => body,
        // The extractor reads the failure in place of the body, and rejects it as its own.
        Err(error) => {
            let failed = Body::new(Failed(Some(innermost(error))));
            return Read::Extract(Request::from_parts(parts, failed), None);
        }
    };
    let (method, route, path, query) = request_line(&parts);
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(http::HeaderValue::as_bytes);
    let digest = RequestDigest::new(method, route, path, query, content_type, &body);
    if let Some(completed) = peek.store.peek(&peek.key)
        && completed.request_digest == Some(digest)
    {
        return Read::Repeated(Last(LastState::Repeated {
            completed,
            parts,
            body,
            extract: later(state.clone()),
        }));
    }
    Read::Extract(Request::from_parts(parts, Body::from(body)), Some(digest))
}

/// The extraction of `T` from a request yet to be made, for a [`Last`] answered later.
fn later<S, T>(
    state: S,
) -> Box<dyn FnOnce(Request) -> BoxFuture<'static, Result<T, Response>> + Send>
where
    S: Send + Sync + 'static,
    T: FromRequest<S> + Send + 'static,
{
    Box::new(
        move |request: Request| -> BoxFuture<'static, Result<T, Response>> {
            Box::pin(async move {
                T::from_request(request, &state)
                    .await
                    .map_err(IntoResponse::into_response)
            })
        },
    )
}

impl<S, T> FromRequestParts<S> for Last<T>
where
    S: Send + Sync,
    T: FromRequestParts<S>,
{
    type Rejection = T::Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, T::Rejection> {
        T::from_request_parts(parts, state).await.map(|value| {
            Self(LastState::Extracted {
                value,
                digest: None,
            })
        })
    }
}

/// Extracts the value inside `last` and feeds it to `request`'s fingerprint, or answers a
/// byte-identical retry of a completed request with its replay (`Err`) when every input of the
/// handler is determined by the request's bytes.
///
/// The future is made here rather than by an `async fn`, so that it does not hold `last` beside
/// the future that consumes it.
pub(super) fn extract<'a, T: FingerprintInput + 'a>(
    request: Option<&'a mut Prepared>,
    last: Last<T>,
) -> impl Future<Output = Result<T, Response>> + 'a {
    match last.0 {
        LastState::Extracted { value, digest } => {
            if let Some(request) = request {
                request.input(&value);
                if request.exact {
                    request.digest = digest;
                }
            }
            Either::Left(std::future::ready(Ok(value)))
        }
        LastState::Repeated {
            completed,
            parts,
            body,
            extract,
        } => Either::Right(repeated(request, completed, parts, body, extract)),
    }
}

/// The answer to a byte-identical retry of `completed`: its replay if every input is determined by
/// the request's bytes; otherwise the last input, extracted now.
async fn repeated<T: FingerprintInput>(
    request: Option<&mut Prepared>,
    completed: Arc<Completed>,
    parts: Parts,
    body: Bytes,
    extract: Box<dyn FnOnce(Request) -> BoxFuture<'static, Result<T, Response>> + Send>,
) -> Result<T, Response> {
    if let Some(request) = &request
        && request.exact
        && T::FROM_REQUEST_BYTES
    {
        tracing::debug!(target: "idem", outcome = "replayed", exact = true, key = %request.key.key(), status = completed.response.status().as_u16(), "replaying stored response to a byte-identical retry");
        request.route.outcome("replayed");
        return Err(replay(&request.settings, &completed));
    }
    let value = extract(Request::from_parts(parts, Body::from(body))).await?;
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
