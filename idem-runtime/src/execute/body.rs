//! The second phase: the handler's last argument, read into memory first so that a retry that
//! repeats a completed request byte for byte is answered before its body is parsed, by the
//! extractor itself.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{self, Poll};

use axum::RequestExt as _;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::Either;
use http::request::Parts;

use super::HandlerConfig;
use super::claim::replay;
use super::prepare::{Keyed, Prepared, request_line};
use crate::fingerprint::{FingerprintInput, RequestDigest};
use crate::metrics::Route;

/// What [`Context`](super::Context) leaves on a request that takes part in idempotency, for the
/// handler's last extractor, [`Last`]: where to look for a completed record of the same key, so
/// that a byte-identical retry is answered before its body is parsed. Left only for a handler
/// whose inputs are all determined by the request's bytes ([`HandlerConfig::exact_replay`]).
///
/// It holds the request's key, and the rest of the request's preparation waits for it: a retry
/// answered with the replay needs none of it. [`Last`] makes the rest ([`Prepared::new`]) once it
/// knows the request is not such a retry, and hands it to [`Context`](super::Context) with
/// [`Context::adopt`](super::Context::adopt).
#[derive(Clone)]
pub(super) struct Peek(pub(super) Keyed);

/// The last argument of an `#[idempotent]` handler, wrapped: `T`, extracted as usual, except that
/// for a request with an idempotency key, to a handler whose every input is determined by the
/// request's bytes, the body is first read into memory and its digest looked up, and a
/// byte-identical retry of a completed request is answered with the replay (the extractor's
/// rejection, `Err`) without `T` being extracted at all.
///
/// The body is read under the same limit `T` would apply (axum's
/// [`DefaultBodyLimit`](axum::extract::DefaultBodyLimit)); if reading fails, `T` is handed the
/// failure and answers with its own rejection, as it would have. An extractor that reads no body
/// (`Path`, `Query`, …) is simply extracted.
pub struct Last<T, O> {
    value: T,
    /// The request's digest, when its body was read first.
    digest: Option<RequestDigest>,
    /// The request's preparation, when it waited for this argument (see [`Peek`]).
    prepared: Option<Box<Prepared>>,
    _options: PhantomData<fn() -> O>,
}

impl<T, O> std::fmt::Debug for Last<T, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Last")
            .field("read_first", &self.digest.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, T, O> FromRequest<S> for Last<T, O>
where
    S: Clone + Send + Sync + 'static,
    T: FromRequest<S> + Send + 'static,
    O: HandlerConfig,
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
        // held beside the request it consumes.
        match request.extensions_mut().remove::<Peek>() {
            Some(peek) => Either::Right(read_first::<S, T, O>(request, state, peek)),
            None => Either::Left(
                T::from_request(request, state).map(|value| extracted(value, None, None)),
            ),
        }
    }
}

/// A [`Last`] of a value extracted as usual (with the digest of the request, if its body was read
/// first), or the extractor's rejection.
#[allow(
    clippy::result_large_err,
    reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
)]
fn extracted<T, O, E: IntoResponse>(
    extracted: Result<T, E>,
    digest: Option<RequestDigest>,
    prepared: Option<Box<Prepared>>,
) -> Result<Last<T, O>, Response> {
    match extracted {
        Ok(value) => Ok(Last {
            value,
            digest,
            prepared,
            _options: PhantomData,
        }),
        Err(rejection) => Err(rejection.into_response()),
    }
}

/// A [`Last`] whose body is read into memory and looked up before `T` is extracted from it: the
/// replay of a byte-identical retry of a completed request (`Err`), or else `T`, extracted.
///
/// Two futures one after the other (`then`), so that the reading's state and `T`'s future share
/// their room instead of sitting side by side in one `async fn`.
#[allow(
    clippy::result_large_err,
    reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
)]
fn read_first<'a, S, T, O>(
    request: Request,
    state: &'a S,
    peek: Peek,
) -> impl Future<Output = Result<Last<T, O>, Response>> + Send + 'a
where
    S: Clone + Send + Sync + 'static,
    T: FromRequest<S> + Send + 'static,
    O: HandlerConfig,
{
    look_up::<O>(request, peek).then(move |read| match read {
        Err(replay) => Either::Left(std::future::ready(Err(replay))),
        Ok(Unseen {
            request,
            digest,
            prepared,
        }) => Either::Right(
            T::from_request(request, state)
                .map(move |value| extracted(value, digest, Some(prepared))),
        ),
    })
}

/// A request that is not a byte-identical retry of a completed one: the request to extract the
/// last argument from, its body in memory (or the failure to read it), its digest, and the rest
/// of its preparation.
struct Unseen {
    request: Request,
    digest: Option<RequestDigest>,
    prepared: Box<Prepared>,
}

/// Reads the body into memory and looks its request up: the replay of a byte-identical retry of
/// a completed request (`Err`), or else the request, [`Unseen`].
#[allow(
    clippy::result_large_err,
    reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
)]
async fn look_up<O: HandlerConfig>(request: Request, peek: Peek) -> Result<Unseen, Response> {
    let (parts, body) = request.with_limited_body().into_parts();
    let body = match crate::collect::to_bytes(body).await {
        Ok(body) => body,
        // The extractor reads the failure in place of the body, and rejects it as its own.
        Err(error) => {
            let prepared = Prepared::new(peek.0, &parts, &O::OPTIONS);
            let failed = Body::new(Failed(Some(innermost(error))));
            return Ok(Unseen {
                request: Request::from_parts(parts, failed),
                digest: None,
                prepared,
            });
        }
    };
    let (method, route, path, query) = request_line(&parts);
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(http::HeaderValue::as_bytes);
    let digest = RequestDigest::new(method, route, path, query, content_type, &body);
    let Keyed { config, key } = &peek.0;
    if let Some(completed) = config.store().peek(key)
        && completed.request_digest == Some(digest)
    {
        tracing::debug!(target: "idem", outcome = "replayed", exact = true, key = %key.key(), status = completed.response.status().as_u16(), "replaying stored response to a byte-identical retry");
        Route::of(&parts).outcome("replayed");
        let errors = match O::OPTIONS.errors {
            Some(errors) => errors,
            None => config.settings().errors.clone(),
        };
        return Err(replay(&errors, &completed));
    }
    let prepared = Prepared::new(peek.0, &parts, &O::OPTIONS);
    Ok(Unseen {
        request: Request::from_parts(parts, Body::from(body)),
        digest: Some(digest),
        prepared,
    })
}

impl<S, T, O> FromRequestParts<S> for Last<T, O>
where
    S: Send + Sync,
    T: FromRequestParts<S>,
    O: HandlerConfig,
{
    type Rejection = T::Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, T::Rejection> {
        // No body to read first: the preparation that waited for this argument is made at once.
        let prepared = parts
            .extensions
            .remove::<Peek>()
            .map(|peek| Prepared::new(peek.0, parts, &O::OPTIONS));
        T::from_request_parts(parts, state).await.map(|value| Self {
            value,
            digest: None,
            prepared,
            _options: PhantomData,
        })
    }
}

/// The preparation `last` carries, if the request's waited for it.
pub(super) fn prepared<T, O>(last: &mut Last<T, O>) -> Option<Box<Prepared>> {
    last.prepared.take()
}

/// The value inside `last`, fed to `request`'s fingerprint, with the request's digest, if the
/// body was read ahead (only for a handler whose every input is determined by the request's
/// bytes), kept for the record.
pub(super) fn extract<T: FingerprintInput, O>(
    request: Option<&mut Prepared>,
    last: Last<T, O>,
) -> T {
    if let Some(request) = request {
        request.input(&last.value);
        request.digest = last.digest;
    }
    last.value
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
