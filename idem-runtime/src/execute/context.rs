//! [`Context`], the extractor `#[idempotent]` puts first in a handler, and the calls its
//! expansion makes on it.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use http::request::Parts;

use super::body::{self, Last, Peek};
use super::handler::produce;
use super::prepare::{self, KeyRejection, Prepared};
use super::transaction::Offer;
use crate::config::Idempotency;
use crate::config::handler::HandlerOptions;
use crate::fingerprint::FingerprintInput;
use crate::problem::Problem;

/// The options of one idempotent handler, as a type: `#[idempotent]` declares one per handler so
/// that [`Context`] knows them while it is extracted.
pub trait HandlerConfig: Send + Sync + 'static {
    /// The handler's settings.
    const OPTIONS: HandlerOptions;
    /// The `operationId` of the handler's OpenAPI operation: the `operation_id` of a
    /// `#[utoipa::path]` below the attribute, or else the function's name.
    const OPERATION_ID: &'static str = "";
    /// The `path` of a `#[utoipa::path]` below the attribute, when it is a string.
    const PATH: Option<&'static str> = None;

    /// Whether a byte-identical retry of a completed request can be answered before the handler's
    /// last argument is extracted: that argument is taken through [`Last`], and every input of the
    /// handler is [determined by the request's bytes](FingerprintInput::FROM_REQUEST_BYTES). The
    /// expansion says so with [`InputProbe`]; without it, every retry takes the claim's way.
    #[must_use]
    fn exact_replay() -> bool {
        false
    }
}

/// Whether an argument of type `T` is determined by the request's bytes, asked by the expansion of
/// `#[idempotent]` for [`HandlerConfig::exact_replay`] as `(&&InputProbe::<T>::NEW).exact()`.
///
/// The method resolves to [`ProbeInput::exact`], which reads
/// [`FingerprintInput::FROM_REQUEST_BYTES`], when `T` is an input, and otherwise to
/// [`ProbeOther::exact`], which answers `false`: a type that is not an input is reported once,
/// where the expansion feeds it to the fingerprint, and not a second time here.
pub struct InputProbe<T: ?Sized>(PhantomData<fn() -> PhantomData<T>>);

impl<T: ?Sized> InputProbe<T> {
    /// The probe.
    pub const NEW: Self = Self(PhantomData);
}

/// [`InputProbe`] of a [`FingerprintInput`].
pub trait ProbeInput {
    /// Whether the input is determined by the request's bytes.
    fn exact(&self) -> bool;
}

impl<T: FingerprintInput + ?Sized> ProbeInput for &InputProbe<T> {
    fn exact(&self) -> bool {
        T::FROM_REQUEST_BYTES
    }
}

/// [`InputProbe`] of any other type.
pub trait ProbeOther {
    /// `false`: the type is not an input (and fails to compile where it is fed).
    fn exact(&self) -> bool {
        false
    }
}

impl<T: ?Sized> ProbeOther for InputProbe<T> {}

/// The idempotency state of one request: the first extractor of an `#[idempotent]` handler.
///
/// Extracting it reads the key (answering `400` for a bad or missing-but-required one) and the
/// scope; the rest of the request's preparation (its settings, the start of its fingerprint with
/// the request line) is made at once, or, for a handler whose every input is determined by the
/// request's bytes, by the last argument ([`Last`]) once it knows the request is not a
/// byte-identical retry, which it answers itself. The expansion takes that preparation back with
/// [`Context::adopt`], feeds the handler's inputs with [`Context::input`], the last one through
/// [`Context::body`], then hands it the handler's future with [`Context::run`].
pub struct Context<O> {
    request: Request,
    /// A slot for the handler's `idem::postgres::Transaction`, when the store is Postgres.
    transaction: Offer,
    _options: PhantomData<fn() -> O>,
}

/// Where a request stands in idempotency while the handler's arguments are extracted.
enum Request {
    /// It takes no part (no key, or a method the handler does not cover).
    Keyless,
    /// It takes part, and the rest of its preparation waits, with its key, for the last argument
    /// ([`Last`]), which answers a byte-identical retry before anything else is needed.
    Waiting,
    /// It takes part and is prepared.
    Prepared(Box<Prepared>),
}

impl<O> std::fmt::Debug for Context<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let request = match &self.request {
            Request::Keyless => "keyless",
            Request::Waiting => "waiting for the last argument",
            Request::Prepared(_) => "prepared",
        };
        let key = match &self.request {
            Request::Prepared(prepared) => Some(&prepared.key),
            _ => None,
        };
        f.debug_struct("Context")
            .field("request", &request)
            .field("key", &key)
            .finish()
    }
}

impl<O: HandlerConfig, S: Send + Sync> FromRequestParts<S> for Context<O> {
    type Rejection = KeyRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, KeyRejection> {
        let keyed = prepare::key(parts, &O::OPTIONS)?;
        let transaction = Offer::make(parts, &O::OPTIONS, keyed.as_ref().map(|keyed| &keyed.key));
        let request = match keyed {
            None => Request::Keyless,
            Some(keyed) if O::exact_replay() => {
                parts.extensions.insert(Peek(keyed));
                Request::Waiting
            }
            Some(keyed) => Request::Prepared(Prepared::new(keyed, parts, &O::OPTIONS)),
        };
        Ok(Context {
            request,
            transaction,
            _options: PhantomData,
        })
    }
}

impl<O> Context<O> {
    /// Whether the request takes part in idempotency (it has a key and an accepted method).
    #[must_use]
    pub fn is_idempotent(&self) -> bool {
        !matches!(self.request, Request::Keyless)
    }

    /// Takes from the handler's last argument the rest of the request's preparation, if it waited
    /// for that argument; called before any input is fed.
    pub fn adopt<T>(&mut self, last: &mut Last<T, O>) {
        if let Some(prepared) = body::prepared(last) {
            self.request = Request::Prepared(prepared);
        }
    }

    /// Adds the handler's next argument to the request's fingerprint.
    pub fn input<T: FingerprintInput + ?Sized>(&mut self, input: &T) {
        if let Request::Prepared(request) = &mut self.request {
            request.input(input);
        }
    }

    /// Takes the handler's last argument, after every other one went through [`Context::input`],
    /// and adds it to the request's fingerprint. (A byte-identical retry of a completed request
    /// never gets here: [`Last`] answered it with the replay.)
    pub fn body<T: FingerprintInput>(&mut self, last: Last<T, O>) -> T {
        let request = match &mut self.request {
            Request::Prepared(request) => Some(&mut **request),
            _ => None,
        };
        body::extract(request, last)
    }

    /// Runs the handler's future under the idempotency rules and answers.
    ///
    /// Without a key the future simply runs. With one, the claim decides whether it runs at all;
    /// if it does, it runs to its end even if the client goes away, and its response is stored
    /// and answered.
    pub fn run<F>(self, handler: F) -> impl Future<Output = Response> + Send + 'static
    where
        F: Future + Send + 'static,
        F::Output: IntoResponse,
    {
        // The futures are made here, not in an `async` block: what is returned is the one that
        // runs, without a second copy of the handler's future beside it.
        let Context {
            request,
            transaction,
            ..
        } = self;
        match request {
            Request::Keyless => Either::Left(transaction.run_keyless(handler)),
            Request::Prepared(request) => {
                let produce = produce(handler, request.settings.max_body_bytes);
                Either::Right(Either::Left(request.run(produce, transaction)))
            }
            // The expansion adopts the preparation from the last argument before it feeds any
            // input, and that argument always carries one for a waiting request; should it not,
            // the handler must not run without its key's protection: the request fails closed.
            Request::Waiting => {
                tracing::error!(target: "idem", outcome = "store_error", "the request's preparation never reached its context; handler not run");
                let answer = Idempotency::global()
                    .settings()
                    .errors
                    .render(&Problem::store_unavailable());
                Either::Right(Either::Right(std::future::ready(answer)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::extract::{Json, Path};

    use super::{InputProbe, ProbeInput as _, ProbeOther as _};

    /// A type of the application's that is no input: the probe must not require it to be one.
    struct NotAnInput;

    #[test]
    #[allow(
        clippy::needless_borrow,
        reason = "the probe is called as the expansion calls it, whatever the type"
    )]
    fn the_probe_reads_whether_an_input_is_determined_by_the_request_bytes() {
        assert!((&&InputProbe::<Json<u64>>::NEW).exact());
        assert!((&&InputProbe::<Path<String>>::NEW).exact());
        assert!(
            !(&&InputProbe::<HashMap<String, String>>::NEW).exact(),
            "an input that does not say it is determined by the request's bytes"
        );
        assert!(
            !(&&InputProbe::<NotAnInput>::NEW).exact(),
            "a type that is no input answers false, and compiles"
        );
    }
}
