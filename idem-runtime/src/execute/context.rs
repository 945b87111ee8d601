//! [`Context`], a request's idempotency state once its arguments are extracted, and the calls
//! the expansion of `#[idempotent]` makes on it; [`HandlerConfig`], a handler's options as a type.

use std::marker::PhantomData;

use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use http::request::Parts;

use super::handler::produce;
use super::prepare::{Keyed, Prepared};
use super::transaction::Offer;
use crate::config::handler::HandlerOptions;
use crate::fingerprint::{FingerprintInput, RequestDigest};

/// The options of one idempotent handler, as a type: `#[idempotent]` declares one per handler so
/// that [`Arguments`](super::Arguments) knows them while it is extracted.
pub trait HandlerConfig: Send + Sync + 'static {
    /// The handler's settings, in a `static` the expansion declares. A reference to a `static`,
    /// not a constant: a constant of a type with drop glue (a header name, a renderer) would be
    /// built afresh on the stack, copied and dropped, every time a request reads it.
    fn options() -> &'static HandlerOptions;
    /// The `operationId` of the handler's OpenAPI operation: the `operation_id` of a
    /// `#[utoipa::path]` below the attribute, or else the function's name.
    const OPERATION_ID: &'static str = "";
    /// The `path` of a `#[utoipa::path]` below the attribute, when it is a string.
    const PATH: Option<&'static str> = None;

    /// Whether a byte-identical retry of a completed request can be answered before the handler's
    /// arguments are extracted: the last one is part of the fingerprint, and every input of the
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

/// The idempotency state of one request, as [`Arguments`](super::Arguments) extracted it: the
/// request's preparation if it takes part (its key and scope, its settings, the start of its
/// fingerprint), and the slot of a Postgres transaction. The expansion of `#[idempotent]` feeds
/// the handler's inputs with [`Context::input`], then hands it the handler's future with
/// [`Context::run`].
pub struct Context<O> {
    /// `None` when the request takes no part (no key, or a method the handler does not cover).
    prepared: Option<Box<Prepared>>,
    /// A slot for the handler's `idem::postgres::Transaction`, when the store is Postgres.
    transaction: Offer,
    _options: PhantomData<fn() -> O>,
}

impl<O> std::fmt::Debug for Context<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("key", &self.prepared.as_ref().map(|prepared| &prepared.key))
            .finish_non_exhaustive()
    }
}

impl<O: HandlerConfig> Context<O> {
    /// The context of a request whose key is read (`keyed`), prepared in full: made before any
    /// of the handler's extractors runs, as the transaction's slot must be in `parts` by then.
    pub(super) fn prepare(parts: &mut Parts, keyed: Option<Keyed>) -> Self {
        let transaction = Offer::make(parts, O::options(), keyed.as_ref().map(|keyed| &keyed.key));
        let prepared = keyed.map(|keyed| Prepared::new(keyed, parts, O::options()));
        Self {
            prepared,
            transaction,
            _options: PhantomData,
        }
    }

    /// Keeps with the request the digest of its exact bytes, read before its arguments were
    /// extracted, for the record its response will make.
    pub(super) fn keep_digest(&mut self, digest: Option<RequestDigest>) {
        if let Some(prepared) = &mut self.prepared {
            prepared.digest = digest;
        }
    }
}

impl<O> Context<O> {
    /// Whether the request takes part in idempotency (it has a key and an accepted method).
    #[must_use]
    pub fn is_idempotent(&self) -> bool {
        self.prepared.is_some()
    }

    /// Adds the handler's next argument to the request's fingerprint.
    pub fn input<T: FingerprintInput + ?Sized>(&mut self, input: &T) {
        if let Some(prepared) = &mut self.prepared {
            prepared.input(input);
        }
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
            prepared,
            transaction,
            ..
        } = self;
        match prepared {
            None => Either::Left(transaction.run_keyless(handler)),
            Some(prepared) => {
                let produce = produce(handler, prepared.settings.max_body_bytes);
                Either::Right(prepared.run(produce, transaction))
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
