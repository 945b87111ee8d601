//! [`Context`], the extractor `#[idempotent]` puts first in a handler, and the calls its
//! expansion makes on it.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use http::request::Parts;

use super::body::{self, Last, Peek};
use super::handler::produce;
use super::prepare::{KeyRejection, Prepared, prepare};
use super::transaction::Offer;
use crate::config::handler::HandlerOptions;
use crate::fingerprint::FingerprintInput;

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
/// Extracting it reads the key (answering `400` for a bad or missing-but-required one), the scope
/// and the request line. The expansion feeds it the handler's inputs with [`Context::input`], the
/// last one through [`Context::body`], then hands it the handler's future with [`Context::run`].
pub struct Context<O> {
    request: Option<Box<Prepared>>,
    /// A slot for the handler's `idem::postgres::Transaction`, when the store is Postgres.
    transaction: Offer,
    _options: PhantomData<fn() -> O>,
}

impl<O> std::fmt::Debug for Context<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("key", &self.request.as_ref().map(|r| &r.key))
            .finish()
    }
}

impl<O: HandlerConfig, S: Send + Sync> FromRequestParts<S> for Context<O> {
    type Rejection = KeyRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, KeyRejection> {
        let request = prepare(parts, &O::OPTIONS)?;
        if let Some(request) = &request
            && O::exact_replay()
        {
            parts.extensions.insert(Peek::new(request));
        }
        let transaction = Offer::make(
            parts,
            &O::OPTIONS,
            request.as_ref().map(|request| &request.key),
        );
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
        self.request.is_some()
    }

    /// Adds the handler's next argument to the request's fingerprint.
    pub fn input<T: FingerprintInput + ?Sized>(&mut self, input: &T) {
        if let Some(request) = &mut self.request {
            request.input(input);
        }
    }

    /// Takes the handler's last argument, after every other one went through [`Context::input`],
    /// and adds it to the request's fingerprint. (A byte-identical retry of a completed request
    /// never gets here: [`Last`] answered it with the replay.)
    pub fn body<T: FingerprintInput>(&mut self, last: Last<T, O>) -> T {
        body::extract(self.request.as_deref_mut(), last)
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
            None => Either::Left(transaction.run_keyless(handler)),
            Some(request) => {
                let produce = produce(handler, request.settings.max_body_bytes);
                Either::Right(request.run(produce, transaction))
            }
        }
    }
}
