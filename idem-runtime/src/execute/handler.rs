//! The claimed request's handler runs, its claim renewed meanwhile, and its answer is captured
//! for the store.

use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tokio::time::{Instant, sleep};

use super::claim::with_timeout;
use super::record::{Execution, Outcome};
use super::transaction::Offer;
use crate::problem::Problem;
use crate::replay::capture;
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

impl Execution {
    /// Runs the handler to its end, records the outcome, and answers: the handler's response,
    /// or `500` when it panicked or its body failed (the key is then released). A handler that
    /// takes a `Transaction` runs in the claim's; if it does not commit, the answer is `503`.
    pub(super) async fn run<F>(mut self, handler: F, transaction: Offer) -> Response
    where
        F: Future + Send + 'static,
        F::Output: IntoResponse,
    {
        self.transaction = match transaction.lend(&self.key, self.token).await {
            Ok(lent) => lent,
            Err(response) => {
                self.record(Outcome::Release).await;
                return response;
            }
        };
        let max_body_bytes = self.settings.max_body_bytes;
        let mut produced = pin!(
            AssertUnwindSafe(async move {
                let response = handler.await.into_response();
                capture(response, max_body_bytes).await
            })
            .catch_unwind()
        );
        let (produced, stopped) = {
            // The handler first: one that finishes without waiting never starts the renewal timer.
            let mut renewals = pin!(self.renew());
            let mut stopped = None;
            loop {
                tokio::select! {
                    biased;
                    produced = &mut produced => break (produced, stopped),
                    why = &mut renewals, if stopped.is_none() => stopped = Some(why),
                }
            }
        };
        if stopped == Some(Stopped::LeaseLost) {
            tracing::warn!(target: "idem", outcome = "lease_lost", key = %self.key.key(), "the claim's lease ran out while the handler ran and the key was taken over; its answer is sent but not stored");
            self.route.outcome("lease_lost");
            return match produced {
                Ok(Ok((first, _))) => first,
                Ok(Err(_)) => self.settings.errors.render(&Problem::response_failed()),
                Err(_panic) => self.settings.errors.render(&Problem::handler_panicked()),
            };
        }
        match produced {
            Err(_panic) => {
                tracing::error!(target: "idem", outcome = "panicked", key = %self.key.key(), "idempotent handler panicked; key released");
                self.route.outcome("panicked");
                let answer = self.settings.errors.render(&Problem::handler_panicked());
                self.record(Outcome::Release).await;
                answer
            }
            Ok(Err(error)) => {
                tracing::error!(target: "idem", outcome = "response_failed", key = %self.key.key(), %error, "response body failed; key released");
                self.route.outcome("response_failed");
                let answer = self.settings.errors.render(&Problem::response_failed());
                self.record(Outcome::Release).await;
                answer
            }
            Ok(Ok((first, mut stored))) => {
                if !self.settings.keep.keeps(stored.status()) {
                    tracing::info!(target: "idem", outcome = "executed", stored = false, key = %self.key.key(), status = stored.status().as_u16(), "answer not kept by the keep policy; key released");
                    self.route.outcome("executed");
                    self.record(Outcome::Release).await;
                } else {
                    stored.retain_headers(&self.settings.replay_headers);
                    let completed = Arc::new(Completed {
                        fingerprint: self.fingerprint,
                        request_digest: self.digest,
                        response: stored,
                    });
                    if !self.record(Outcome::Complete(completed)).await {
                        return Problem::commit_failed().into_response();
                    }
                }
                first
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
            let renewal = self
                .store
                .claim(&self.key, &self.fingerprint, self.token, lease);
            match with_timeout(&self.settings, "renew", renewal).await {
                Ok(Claim::Fresh) => {}
                Ok(Claim::Existing(_)) => return Stopped::LeaseLost,
                Err(error) => {
                    tracing::warn!(target: "idem", outcome = "store_error", operation = "renew", key = %self.key.key(), %error, "claim renewal failed; trying again");
                }
            }
        }
    }
}
