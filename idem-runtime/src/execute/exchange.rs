//! Claim, handler and completion as one exchange that a client disconnect cannot cut short.

use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use axum::response::{IntoResponse, Response};

use super::claim::{Decision, decide};
use super::prepare::Prepared;
use super::record::{Execution, Outcome};
use super::transaction::Offer;
use crate::problem::Problem;
use crate::store::ClaimToken;

impl Prepared {
    /// Runs the whole idempotent exchange — claim, handler, completion — so that it cannot be
    /// abandoned halfway.
    ///
    /// The exchange is polled once right here. If that one poll finishes it (an in-memory store and
    /// a handler that does not wait: a replay, a 409, most first executions), there was no moment
    /// at which dropping this future could have cut it short, and no task is needed. Otherwise the
    /// exchange moves, as it is, into a task of its own that owns everything it needs, so that
    /// neither the claim nor the handler is abandoned when this future is dropped because the
    /// client went away: a claim whose answer was lost would block its key until the lease ran
    /// out, and a handler cut short would leave its work half done. The task finishes, stores the
    /// result, and the retry gets the replay.
    pub(super) async fn run<F>(self, handler: F, transaction: Offer) -> Response
    where
        F: Future + Send + 'static,
        F::Output: IntoResponse,
    {
        // The format is taken before the exchange owns the settings, for the two answers made
        // when the exchange itself fails.
        let errors = self.settings.errors.clone();
        let route = self.route.clone();
        let mut exchange = Box::pin(self.process(handler, transaction));
        let first_poll = poll_fn(|cx| {
            Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| {
                exchange.as_mut().poll(cx)
            })))
        })
        .await;
        match first_poll {
            Ok(Poll::Ready(response)) => return response,
            Ok(Poll::Pending) => {}
            Err(_panic) => {
                tracing::error!(target: "idem", outcome = "aborted", "idempotent request panicked outside its handler");
                route.outcome("aborted");
                return errors.render(&Problem::handler_panicked());
            }
        }
        match tokio::spawn(exchange).await {
            Ok(response) => response,
            Err(error) => {
                tracing::error!(target: "idem", outcome = "aborted", %error, "idempotent request task did not finish");
                route.outcome("aborted");
                errors.render(&Problem::handler_panicked())
            }
        }
    }

    async fn process<F>(self, handler: F, transaction: Offer) -> Response
    where
        F: Future + Send + 'static,
        F::Output: IntoResponse,
    {
        let Prepared {
            config,
            settings,
            key,
            fingerprint,
            digest,
            route,
            ..
        } = self;
        let fingerprint = match fingerprint.finish() {
            Ok(fingerprint) => fingerprint,
            Err(error) => {
                tracing::error!(target: "idem", outcome = "fingerprint_failed", %error, "request input could not be fingerprinted");
                route.outcome("fingerprint_failed");
                return settings.errors.render(&Problem::fingerprint_failed(&error));
            }
        };
        let store = Arc::clone(config.store());
        let token = ClaimToken::random();
        let decision = decide(&*store, &settings, &route, &key, &fingerprint, token).await;
        let execution = Execution {
            store,
            settings,
            key,
            fingerprint,
            digest,
            token,
            route,
            transaction: Default::default(),
        };
        match decision {
            Decision::Answer(response) => response,
            Decision::Failed(response) => {
                execution.record(Outcome::Release).await;
                response
            }
            Decision::Run => execution.run(handler, transaction).await,
        }
    }
}
