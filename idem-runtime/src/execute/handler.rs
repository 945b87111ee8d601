//! The claimed request's handler runs, its claim renewed meanwhile, and its answer is captured
//! for the store.

use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use tokio::time::{Instant, sleep};

use super::claim::claim;
use super::exchange::aborted;
use super::record::{Execution, Outcome};
use super::transaction::Offer;
use crate::metrics::Route;
use crate::problem::Problem;
use crate::replay::{StoredResponse, capture};
use crate::store::{Claim, Completed};

/// The shortest pause between two renewals, whatever the lease.
const MIN_RENEWAL_PERIOD: Duration = Duration::from_millis(10);

/// Why the claim stopped being renewed while the handler still ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    /// Another request holds or completed the key: this claim's lease ran out before a renewal.
    LeaseLost,
    /// The handler has held the key for `max_hold`; its last lease runs out on its own.
    MaxHold,
}

/// What the handler produced: its response for the first caller and the record to store, the
/// body's failure, or its panic.
pub(super) type Produced = std::thread::Result<Result<(Response, StoredResponse), axum::Error>>;

/// The handler's future and the capture of its answer, boxed once per request: everything after
/// it is the same code for every handler, and the futures around it stay small.
pub(super) type Produce = Pin<Box<dyn Future<Output = Produced> + Send>>;

/// The handler's future, made into a [`Produce`]: its answer is captured, a body of at most
/// `max_body_bytes` kept, and a panic caught.
pub(super) fn produce<F>(handler: F, max_body_bytes: usize) -> Produce
where
    F: Future + Send + 'static,
    F::Output: IntoResponse,
{
    Box::pin(
        AssertUnwindSafe(async move {
            let response = handler.await.into_response();
            capture(response, max_body_bytes).await
        })
        .catch_unwind(),
    )
}

impl Execution {
    /// Runs the handler to its end in the exchange's task, records the outcome, and answers: the
    /// handler's response, or `500` when it panicked or its body failed (the key is then
    /// released). A handler that takes a `Transaction` runs in the claim's; if it does not
    /// commit, the answer is `503`.
    pub(super) async fn run(mut self: Box<Self>, produce: Produce, transaction: Offer) -> Response {
        self.transaction = match transaction.lend(&self.key, self.token).await {
            Ok(lent) => lent,
            Err(response) => {
                self.record(Outcome::Release).await;
                return response;
            }
        };
        self.drive(produce).await
    }

    /// Runs the handler of a claim made in place, with a store that answers at once
    /// ([`IdempotencyStore::immediate`]). The handler is polled once right here: one that does
    /// not wait is captured and completed within that poll, so there is no moment at which a
    /// client going away could cut the execution short. One that waits moves, with the rest of
    /// the execution, into a task of its own that finishes it whatever becomes of the request.
    ///
    /// [`IdempotencyStore::immediate`]: crate::store::IdempotencyStore::immediate
    pub(super) async fn run_here(self: Box<Self>, mut produce: Produce) -> Response {
        // In a block of its own, so that this future keeps no room for what the first poll
        // produced while it waits for the task.
        {
            let polled = poll_fn(|cx| Poll::Ready(produce.as_mut().poll(cx))).await;
            if let Poll::Ready(produced) = polled {
                let (answer, outcome) = self.conclude(produced, None);
                if let Some(outcome) = outcome {
                    let route = self.route.clone();
                    let recorded =
                        std::panic::catch_unwind(AssertUnwindSafe(|| self.record_here(outcome)));
                    if recorded.is_err() {
                        record_panicked(&route);
                    }
                }
                return answer;
            }
        }
        let (errors, route) = (self.settings.errors.clone(), self.route.clone());
        let task = tokio::spawn(self.drive(produce));
        match task.await {
            Ok(response) => response,
            Err(error) => aborted(&errors, &route, &error),
        }
    }

    /// Polls the handler to its end while renewing the claim, then records the outcome and
    /// answers.
    async fn drive(self: Box<Self>, mut produce: Produce) -> Response {
        let (produced, stopped) = {
            // The handler first: one that finishes without waiting never starts the renewal timer.
            let mut renewals = pin!(self.renew());
            let mut stopped = None;
            loop {
                tokio::select! {
                    biased;
                    produced = &mut produce => break (produced, stopped),
                    why = &mut renewals, if stopped.is_none() => stopped = Some(why),
                }
            }
        };
        let (answer, outcome) = self.conclude(produced, stopped);
        let Some(outcome) = outcome else {
            return answer;
        };
        let completes = matches!(outcome, Outcome::Complete(_));
        let errors = self.settings.errors.clone();
        let route = self.route.clone();
        match AssertUnwindSafe(self.record(outcome)).catch_unwind().await {
            Ok(false) if completes => errors.render(&Problem::commit_failed()),
            Ok(_) => answer,
            Err(_panic) => {
                record_panicked(&route);
                answer
            }
        }
    }

    /// The answer to what the handler produced, and what the store is to record of it (nothing,
    /// when the lease was lost).
    fn conclude(
        &self,
        produced: Produced,
        stopped: Option<Stopped>,
    ) -> (Response, Option<Outcome>) {
        if stopped == Some(Stopped::LeaseLost) {
            tracing::warn!(target: "idem", outcome = "lease_lost", key = %self.key.key(), "the claim's lease ran out while the handler ran and the key was taken over; its answer is sent but not stored");
            self.route.outcome("lease_lost");
            let answer = match produced {
                Ok(Ok((first, _))) => first,
                Ok(Err(_)) => self.settings.errors.render(&Problem::response_failed()),
                Err(_panic) => self.settings.errors.render(&Problem::handler_panicked()),
            };
            return (answer, None);
        }
        match produced {
            Err(_panic) => {
                tracing::error!(target: "idem", outcome = "panicked", key = %self.key.key(), "idempotent handler panicked; key released");
                self.route.outcome("panicked");
                let answer = self.settings.errors.render(&Problem::handler_panicked());
                (answer, Some(Outcome::Release))
            }
            Ok(Err(error)) => {
                tracing::error!(target: "idem", outcome = "response_failed", key = %self.key.key(), %error, "response body failed; key released");
                self.route.outcome("response_failed");
                let answer = self.settings.errors.render(&Problem::response_failed());
                (answer, Some(Outcome::Release))
            }
            Ok(Ok((first, mut stored))) => {
                if !self.settings.keep.keeps(stored.status()) {
                    tracing::info!(target: "idem", outcome = "executed", stored = false, key = %self.key.key(), status = stored.status().as_u16(), "answer not kept by the keep policy; key released");
                    self.route.outcome("executed");
                    return (first, Some(Outcome::Release));
                }
                stored.retain_headers(&self.settings.replay_headers);
                let completed = Arc::new(Completed {
                    fingerprint: self.fingerprint,
                    request_digest: self.digest,
                    response: stored,
                });
                (first, Some(Outcome::Complete(completed)))
            }
        }
    }

    /// Renews the claim every third of its lease — a repeated claim under its token — until it
    /// finds the key taken over, or `max_hold` would be passed; never returns otherwise. A renewal
    /// that fails (the store is unreachable) is tried again at the next period: the lease still
    /// has two thirds to run.
    async fn renew(&self) -> Stopped {
        let lease = self.settings.lease;
        let period = (lease / 3).max(MIN_RENEWAL_PERIOD);
        let hold_ends = Instant::now() + self.settings.max_hold;
        loop {
            sleep(period).await;
            if Instant::now() + lease > hold_ends {
                tracing::warn!(target: "idem", outcome = "max_hold", key = %self.key.key(), max_hold = ?self.settings.max_hold, "handler still running after max_hold; its claim is no longer renewed and may be taken over when its lease runs out");
                return Stopped::MaxHold;
            }
            let renewal = claim(
                self.store(),
                &self.settings,
                "renew",
                &self.key,
                &self.fingerprint,
                self.token,
            );
            match renewal.await {
                Ok(Claim::Fresh) => {}
                Ok(Claim::Existing(_)) => return Stopped::LeaseLost,
                Err(error) => {
                    tracing::warn!(target: "idem", outcome = "store_error", operation = "renew", key = %self.key.key(), %error, "claim renewal failed; trying again");
                }
            }
        }
    }
}

/// Reports a store that panicked while it recorded a handler's outcome. The handler's answer still
/// goes out; the key stays in flight until its lease runs out, so no retry runs the handler
/// meanwhile.
fn record_panicked(route: &Route) {
    tracing::error!(target: "idem", outcome = "aborted", "the store panicked while recording the outcome; the answer is sent, the key stays in flight until its lease runs out");
    route.outcome("aborted");
}
