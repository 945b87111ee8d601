//! Claim, handler and completion as one exchange that a client disconnect cannot cut short.

use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::task::Poll;

use axum::response::Response;

use super::claim::{Decision, claim_here, decide, settle};
use super::handler::Produce;
use super::prepare::Prepared;
use super::record::{Execution, Outcome};
use super::transaction::Offer;
use crate::config::ConflictPolicy;
use crate::metrics::Route;
use crate::problem::{Problem, Renderer};
use crate::store::{ClaimToken, StoreError};

impl Prepared {
    /// Runs the whole idempotent exchange — claim, handler, completion — so that it cannot be
    /// abandoned halfway: a claim whose answer was lost would block its key until the lease ran
    /// out, and a handler cut short would leave its work half done.
    ///
    /// - With a store that answers at once (the in-memory one,
    ///   [`immediate`](crate::store::IdempotencyStore::immediate)), the claim and the completion
    ///   cannot be cut short, since neither waits. The exchange runs in the request's own future;
    ///   only its handler, if it has to wait, moves into a task of its own with the rest of the
    ///   execution (`Execution::run_here`). A handler under `ConflictPolicy::Wait` takes the
    ///   other way, since a duplicate of it waits on the store.
    /// - With any other store the exchange is polled once right here. If that one poll finishes
    ///   it, there was no moment at which dropping this future could have cut it short. Otherwise
    ///   the exchange moves, as it is, into a task of its own that owns everything it needs, so
    ///   that neither the claim nor the handler is abandoned when this future is dropped because
    ///   the client went away. The task finishes, stores the result, and the retry gets the
    ///   replay.
    #[allow(
        clippy::result_large_err,
        reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
    )]
    pub(super) async fn run(self: Box<Self>, produce: Produce, transaction: Offer) -> Response {
        // The format is taken before the exchange owns the settings, for the answer made when the
        // exchange itself fails.
        let errors = self.settings.errors.clone();
        let route = self.route.clone();
        // Waiting for an in-flight duplicate waits on the store, whatever the store.
        if self.config.store().immediate().is_some()
            && self.settings.conflict != ConflictPolicy::Wait
        {
            // The claim's result is taken apart before anything is awaited, so that this future
            // keeps no room for it.
            let execution = match std::panic::catch_unwind(AssertUnwindSafe(|| self.claim_here())) {
                Ok(Ok(execution)) => execution,
                Ok(Err(answer)) => return answer,
                Err(_panic) => return aborted(&errors, &route, &"a panic"),
            };
            return execution.run_here(produce).await;
        }
        let mut exchange = Box::pin(self.process(produce, transaction));
        let first_poll = poll_fn(|cx| {
            Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| {
                exchange.as_mut().poll(cx)
            })))
        })
        .await;
        match first_poll {
            Ok(Poll::Ready(response)) => return response,
            Ok(Poll::Pending) => {}
            Err(_panic) => return aborted(&errors, &route, &"a panic"),
        }
        match tokio::spawn(exchange).await {
            Ok(response) => response,
            Err(error) => aborted(&errors, &route, &error),
        }
    }

    /// The claim, made in place with a store that answers at once: the execution that holds it,
    /// or the answer when the handler is not to run.
    #[allow(
        clippy::result_large_err,
        reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
    )]
    fn claim_here(self: Box<Self>) -> Result<Box<Execution>, Response> {
        let execution = self.begin()?;
        let store = execution.store();
        let Execution {
            settings,
            route,
            key,
            fingerprint,
            token,
            ..
        } = &*execution;
        let claimed = claim_here(store, settings, "claim", key, fingerprint, *token)
            .unwrap_or_else(|| Err(StoreError::new("the store no longer answers at once")));
        match settle(settings, route, key, fingerprint, claimed) {
            Decision::Run => Ok(execution),
            Decision::Answer(answer) => Err(answer),
            Decision::Failed(answer) => {
                execution.record_here(Outcome::Release);
                Err(answer)
            }
        }
    }

    /// The exchange with a store that may wait: claim, handler, completion.
    async fn process(self: Box<Self>, produce: Produce, transaction: Offer) -> Response {
        let execution = match self.begin() {
            Ok(execution) => execution,
            Err(answer) => return answer,
        };
        let store = execution.store();
        let Execution {
            settings,
            route,
            key,
            fingerprint,
            token,
            ..
        } = &*execution;
        match decide(store, settings, route, key, fingerprint, *token).await {
            Decision::Answer(response) => response,
            Decision::Failed(response) => {
                execution.record(Outcome::Release).await;
                response
            }
            Decision::Run => execution.run(produce, transaction).await,
        }
    }

    /// The execution of this request, under a new claim token, once its fingerprint is final;
    /// `Err` with the `500` when it could not be computed.
    #[allow(
        clippy::result_large_err,
        reason = "the error is the request's answer, moved once; boxing it would cost an allocation"
    )]
    fn begin(self: Box<Self>) -> Result<Box<Execution>, Response> {
        let Prepared {
            config,
            settings,
            key,
            fingerprint,
            digest,
            route,
            ..
        } = *self;
        let fingerprint = match fingerprint.finish() {
            Ok(fingerprint) => fingerprint,
            Err(error) => {
                tracing::error!(target: "idem", outcome = "fingerprint_failed", %error, "request input could not be fingerprinted");
                route.outcome("fingerprint_failed");
                return Err(settings.errors.render(&Problem::fingerprint_failed(&error)));
            }
        };
        Ok(Box::new(Execution {
            config,
            settings,
            key,
            fingerprint,
            digest,
            token: ClaimToken::random(),
            route,
            transaction: Default::default(),
        }))
    }
}

/// The `500` of an exchange that failed outside its handler (a store that panicked, say): `why`
/// says how.
pub(super) fn aborted(errors: &Renderer, route: &Route, why: &dyn std::fmt::Display) -> Response {
    tracing::error!(target: "idem", outcome = "aborted", why = %why, "idempotent request failed outside its handler");
    route.outcome("aborted");
    errors.render(&Problem::handler_panicked())
}
