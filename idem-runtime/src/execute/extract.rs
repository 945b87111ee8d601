//! The second phase: the handler's arguments, extracted by one extractor, [`Arguments`], once the
//! key and the scope are read. For a handler whose every input is determined by the request's
//! bytes, the body is read into memory first, so that a retry that repeats a completed request
//! byte for byte is answered before any argument is extracted, by the extractor itself.

use std::future::ready;
use std::pin::Pin;
use std::task::{self, Poll};

use axum::RequestExt as _;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{FutureExt as _, TryFutureExt as _};
use http::request::Parts;

use super::claim::replay;
use super::context::{Context, HandlerConfig};
use super::prepare::{self, Keyed, request_line};
use crate::fingerprint::RequestDigest;
use crate::metrics::Route;

/// The one argument of the handler `#[idempotent]` writes: the request's idempotency
/// [`Context`] and the original handler's arguments `T`, as a tuple, extracted in their order.
///
/// Extracting it first reads the key (answering `400` for a bad one, or a missing one where it is
/// required) and the scope, before any of the handler's own extractors can see the request. Then:
///
/// - for a request with a key, to a handler whose every input is determined by the request's bytes
///   ([`HandlerConfig::exact_replay`]), the body is read into memory and the request's digest
///   looked up, and a byte-identical retry of a completed request is answered with the replay (the
///   rejection, `Err`) without `T` being extracted at all. A body that declares a length of up
///   to 64 KiB is read whole; any other is read under the same limit `T`'s extractors would
///   apply (axum's [`DefaultBodyLimit`](axum::extract::DefaultBodyLimit)), which they apply again
///   to what was read. If reading fails, they are handed the failure and answer with their own
///   rejection;
/// - otherwise `T` is extracted as the handler's arguments would have been, each rejection the
///   extractor's own.
///
/// As one extractor reads the key and extracts the arguments, the key never travels through the
/// request's extensions, and no extractor of the handler's can take it away.
pub struct Arguments<O, T> {
    context: Context<O>,
    arguments: T,
}

impl<O, T> std::fmt::Debug for Arguments<O, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arguments")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl<O, T> Arguments<O, T> {
    /// The request's context and the handler's arguments.
    pub fn into_parts(self) -> (Context<O>, T) {
        (self.context, self.arguments)
    }
}

impl<S, O, T> FromRequest<S> for Arguments<O, T>
where
    S: Send + Sync,
    T: Extractors<S> + Send + 'static,
    O: HandlerConfig,
{
    type Rejection = Response;

    #[allow(
        clippy::result_large_err,
        reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
    )]
    fn from_request(
        request: Request,
        state: &S,
    ) -> impl Future<Output = Result<Self, Response>> + Send {
        // Futures made here rather than one `async fn`, so that the extractors' futures are not
        // held beside the request they consume.
        let (mut parts, body) = request.into_parts();
        match prepare::key(&parts, O::options()) {
            Err(rejection) => Either::Left(ready(Err(rejection.into_response()))),
            Ok(Some(keyed)) if O::exact_replay() => {
                Either::Right(Either::Left(read_first::<S, T, O>(
                    parts, body, state, keyed,
                )))
            }
            Ok(keyed) => {
                let context = Context::prepare(&mut parts, keyed);
                Either::Right(Either::Right(extract(
                    context,
                    Request::from_parts(parts, body),
                    state,
                )))
            }
        }
    }
}

impl<S, O, T> FromRequestParts<S> for Arguments<O, T>
where
    S: Send + Sync,
    T: FromRequestParts<S> + Send,
    O: HandlerConfig,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        // No body to read first: the request is prepared at once.
        let keyed = prepare::key(parts, O::options()).map_err(IntoResponse::into_response)?;
        let context = Context::prepare(parts, keyed);
        match T::from_request_parts(parts, state).await {
            Ok(arguments) => Ok(Self { context, arguments }),
            Err(rejection) => Err(rejection.into_response()),
        }
    }
}

/// `T` extracted from `request`, beside `context`, or `T`'s rejection.
///
/// `T`'s future is boxed. Extractors that read the body make large futures (axum's `Json`,
/// about 1.1 KiB), and inline it would size every request's future, a replay's too: axum boxes
/// the whole handler's future, and past 1 KiB the allocator serves it by a slower path, which
/// tidies its caches of small blocks first. Boxed, a replay never allocates it, and a first
/// execution pays one allocation.
#[allow(
    clippy::result_large_err,
    reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
)]
fn extract<'a, S, T, O>(
    context: Context<O>,
    request: Request,
    state: &'a S,
) -> impl Future<Output = Result<Arguments<O, T>, Response>> + Send + 'a
where
    S: Send + Sync,
    T: Extractors<S> + Send + 'static,
    O: HandlerConfig,
{
    Box::pin(T::extract(request, state))
        .map(move |extracted| extracted.map(|arguments| Arguments { context, arguments }))
}

/// The longest body, by its declared length, that [`read_first`] reads whole, without axum's
/// [`DefaultBodyLimit`](axum::extract::DefaultBodyLimit).
///
/// axum keeps a route's limit to itself: the only way to apply it is to box the body anew in a
/// limited one, an allocation and a layer of polling on every request. A body that declares its
/// length (a `Content-Length`, which hyper holds it to) costs no more than that length to read,
/// so one up to this size is read whole, and held to this size should it yield more than it
/// declared. The limit is not lost: the handler's extractors read the bytes again under it, and
/// a body over it gets their own `413` as before. A body of unknown length, or a longer one, is
/// read under the limit.
const READ_WHOLE: usize = 64 * 1024;

/// [`Arguments`] whose body is read into memory and looked up before `T` is extracted from it:
/// the replay of a byte-identical retry of a completed request (`Err`), or else `T`, extracted.
///
/// One block, which captures the request's parts, its body's reading and its key: the digest and
/// the replay are made from them where they lie, by reference, so a byte-identical retry moves
/// none of them, and no combinator moves the outcome of the reading into a second future. `T`'s
/// future is boxed ([`extract`]), so it takes a pointer of this one's room.
#[allow(
    clippy::result_large_err,
    reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
)]
fn read_first<'a, S, T, O>(
    parts: Parts,
    body: Body,
    state: &'a S,
    keyed: Keyed,
) -> impl Future<Output = Result<Arguments<O, T>, Response>> + Send + 'a
where
    S: Send + Sync,
    T: Extractors<S> + Send + 'static,
    O: HandlerConfig,
{
    // The body is chosen here, and the rest is a block that captures what it needs, rather than
    // one `async fn`: a function's arguments would be kept beside the locals made from them. Both
    // bodies are read the same way, so that the block keeps room for one reading: a body read
    // whole is held to `READ_WHOLE`, and one read under axum's limit has a limit already.
    let declared = http_body::Body::size_hint(&body).exact();
    let (mut parts, body, most) = match declared {
        Some(len) if len <= READ_WHOLE as u64 => (parts, body, READ_WHOLE),
        _ => {
            let (parts, body) = Request::from_parts(parts, body)
                .with_limited_body()
                .into_parts();
            (parts, body, usize::MAX)
        }
    };
    async move {
        let read = crate::collect::to_bytes(http_body_util::Limited::new(body, most));
        let (body, digest) = match read.await {
            Ok(body) => {
                let digest = request_digest(&parts, &body);
                if let Some(replay) = replay_exact::<O>(&parts, &keyed, &digest) {
                    return Err(replay);
                }
                (Body::from(body), Some(digest))
            }
            // The extractor reads the failure in place of the body, and rejects it as its own.
            Err(error) => (Body::new(Failed(Some(innermost(error)))), None),
        };
        let mut context = Context::prepare(&mut parts, Some(keyed));
        context.keep_digest(digest);
        extract(context, Request::from_parts(parts, body), state).await
    }
}

/// The digest of the request of `parts`, whose body is `body`.
fn request_digest(parts: &Parts, body: &[u8]) -> RequestDigest {
    let (method, route, path, query) = request_line(parts);
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(http::HeaderValue::as_bytes);
    RequestDigest::new(method, route, path, query, content_type, body)
}

/// The replay of the completed request of `keyed`, if the request of `parts` repeats it byte for
/// byte (its digest is `digest`).
fn replay_exact<O: HandlerConfig>(
    parts: &Parts,
    keyed: &Keyed,
    digest: &RequestDigest,
) -> Option<Response> {
    let Keyed { config, key } = keyed;
    let completed = config.store().peek(key)?;
    if completed.request_digest.as_ref() != Some(digest) {
        return None;
    }
    tracing::debug!(target: "idem", outcome = "replayed", exact = true, key = %key.key(), status = completed.response.status().as_u16(), "replaying stored response to a byte-identical retry");
    Route::of(parts).outcome("replayed");
    Some(replay(
        config.settings().errors_for(O::options()),
        &completed,
    ))
}

/// A handler's arguments as one tuple, extracted as axum extracts a handler's: each but the last
/// from the request's parts, in order, and the last from the request, its body with it. The first
/// rejection is the answer.
///
/// [`Arguments`] extracts its `T` with this rather than with axum's `FromRequest` of the tuple,
/// whose future keeps a copy of the request beside the futures of the extractors it runs (a
/// tuple of one `Json` is a 1,152-byte future, the `Json` alone 896). That future is boxed once
/// per first execution, and past 1 KiB the allocator serves it by a slower path. Here the request
/// is taken apart before any future is made, the extractors of the parts run in a future of their
/// own, and the last one's future is the whole of what follows.
pub trait Extractors<S>: Sized {
    /// The arguments, or the response of the first extractor that rejects the request.
    fn extract(request: Request, state: &S) -> impl Future<Output = Result<Self, Response>> + Send;
}

#[allow(
    clippy::result_large_err,
    reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
)]
impl<S, T> Extractors<S> for (T,)
where
    S: Send + Sync,
    T: FromRequest<S> + Send,
{
    fn extract(request: Request, state: &S) -> impl Future<Output = Result<Self, Response>> + Send {
        T::from_request(request, state).map(|extracted| match extracted {
            Ok(last) => Ok((last,)),
            Err(rejection) => Err(rejection.into_response()),
        })
    }
}

/// [`Extractors`] of a tuple of two arguments and more: the parts' extractors in one future,
/// which hands the parts and the body on, then the last extractor's future, in the same room.
macro_rules! extractors {
    ($($part:ident),+; $last:ident) => {
        #[allow(non_snake_case, reason = "each argument is named after its type")]
        #[allow(
            clippy::result_large_err,
            reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
        )]
        impl<S, $($part,)+ $last> Extractors<S> for ($($part,)+ $last,)
        where
            S: Send + Sync,
            $($part: FromRequestParts<S> + Send,)+
            $last: FromRequest<S> + Send,
        {
            fn extract(
                request: Request,
                state: &S,
            ) -> impl Future<Output = Result<Self, Response>> + Send {
                let (mut parts, body) = request.into_parts();
                async move {
                    $(
                        let $part = match $part::from_request_parts(&mut parts, state).await {
                            Ok(extracted) => extracted,
                            Err(rejection) => return Err(rejection.into_response()),
                        };
                    )+
                    Ok((parts, body, ($($part,)+)))
                }
                .and_then(move |(parts, body, ($($part,)+))| {
                    $last::from_request(Request::from_parts(parts, body), state).map(
                        move |extracted| match extracted {
                            Ok($last) => Ok(($($part,)+ $last,)),
                            Err(rejection) => Err(rejection.into_response()),
                        },
                    )
                })
            }
        }
    };
}

extractors!(T1; T2);
extractors!(T1, T2; T3);
extractors!(T1, T2, T3; T4);
extractors!(T1, T2, T3, T4; T5);
extractors!(T1, T2, T3, T4, T5; T6);
extractors!(T1, T2, T3, T4, T5, T6; T7);
extractors!(T1, T2, T3, T4, T5, T6, T7; T8);
extractors!(T1, T2, T3, T4, T5, T6, T7, T8; T9);
extractors!(T1, T2, T3, T4, T5, T6, T7, T8, T9; T10);
extractors!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10; T11);
extractors!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11; T12);
extractors!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12; T13);
extractors!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13; T14);
extractors!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14; T15);
extractors!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14, T15; T16);

/// The error inside the layers of `axum::Error` that bodies wrap around it, so that an extractor
/// reading it again (and wrapping it again) still recognises a length limit.
fn innermost(mut error: axum::BoxError) -> axum::BoxError {
    loop {
        match error.downcast::<axum::Error>() {
            Ok(wrapped) => error = wrapped.into_inner(),
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
