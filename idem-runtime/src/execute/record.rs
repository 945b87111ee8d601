//! The last phase: what a finished execution writes to the store, retried in the background when
//! the store fails.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::claim::{timed, with_timeout};
use super::prepare::Config;
use super::transaction::Lent;
use crate::config::Settings;
use crate::fingerprint::{Fingerprint, RequestDigest};
use crate::metrics::Route;
use crate::store::{ClaimToken, Completed, Completion, IdempotencyStore, StoreError, StoreKey};

/// A claimed request: its handler runs ([`super::handler`]) and its outcome is recorded here.
///
/// It is always boxed, so that the futures that own it on its way stay small.
pub(super) struct Execution {
    pub(super) config: Config,
    pub(super) settings: Settings,
    pub(super) key: StoreKey,
    pub(super) fingerprint: Fingerprint,
    pub(super) digest: Option<RequestDigest>,
    pub(super) token: ClaimToken,
    /// The route, for metrics.
    pub(super) route: Route,
    /// The claim's connection, when it was lent to the handler (the transactional mode).
    pub(super) transaction: Lent,
}

/// What a finished execution writes to the store.
pub(super) enum Outcome {
    /// Keep the response for replay.
    Complete(Arc<Completed>),
    /// Free the key, so that the next request runs the handler.
    Release,
}

impl Outcome {
    fn operation(&self) -> &'static str {
        match self {
            Self::Complete(_) => "complete",
            Self::Release => "release",
        }
    }
}

impl Execution {
    /// The store the claim is held in.
    pub(super) fn store(&self) -> &dyn IdempotencyStore {
        &**self.config.store()
    }

    /// Writes the outcome. If the store fails, the handler's answer still goes to the client at
    /// once, and the write is retried in the background until it lands or the claim's lease runs
    /// out: a transient fault must not leave the key in flight for a whole lease, after which a
    /// retry would run the handler a second time (a lost completion) or wait for nothing (a lost
    /// release).
    ///
    /// In the transactional mode the outcome is written in the handler's transaction, before the
    /// answer, and nothing is retried: `false` when a completion did not commit (none of the
    /// request's work was kept, and the key is free); the answer must then say so.
    pub(super) async fn record(mut self: Box<Self>, outcome: Outcome) -> bool {
        if self.transaction.is_lent() {
            let lent = std::mem::take(&mut self.transaction);
            return lent
                .finish(&self.key, self.token, &self.settings, &outcome)
                .await;
        }
        if let Err(error) = self.write(&outcome).await {
            self.retry_later(outcome, &error);
        }
        true
    }

    /// [`record`](Self::record), with a store that answers at once
    /// ([`immediate`](crate::store::IdempotencyStore::immediate)) and outside the transactional
    /// mode: the write is made before this returns (or, if it fails, retried in the background).
    pub(super) fn record_here(self: Box<Self>, outcome: Outcome) {
        match self.write_here(&outcome) {
            Some(Ok(())) => {}
            Some(Err(error)) => self.retry_later(outcome, &error),
            None => {
                tokio::spawn(self.record(outcome));
            }
        }
    }

    fn retry_later(self: Box<Self>, outcome: Outcome, error: &StoreError) {
        let operation = outcome.operation();
        tracing::error!(target: "idem", outcome = "store_error", operation, key = %self.key.key(), %error, "store write failed; retrying in the background until the lease runs out");
        tokio::spawn(self.retry(outcome));
    }

    async fn retry(self: Box<Self>, outcome: Outcome) {
        let give_up = Instant::now() + self.settings.lease;
        let mut pause = Duration::from_millis(10);
        loop {
            sleep(pause).await;
            match self.write(&outcome).await {
                Ok(()) => return,
                Err(error) if Instant::now() >= give_up => {
                    tracing::error!(target: "idem", outcome = "store_error", operation = outcome.operation(), key = %self.key.key(), %error, "store write still failing when the lease ran out; giving up");
                    // A release follows an outcome counted already; a completion that never
                    // lands is the request's outcome.
                    if let Outcome::Complete(_) = outcome {
                        self.route.outcome("store_error");
                    }
                    return;
                }
                Err(_) => pause = (pause * 2).min(Duration::from_secs(1)),
            }
        }
    }

    /// The write, in place, if the store answers at once; `None` if it has to be awaited.
    fn write_here(&self, outcome: &Outcome) -> Option<Result<(), StoreError>> {
        let now = self.store().immediate()?;
        let written = match outcome {
            Outcome::Complete(completed) => timed("complete", || {
                now.complete_now(
                    &self.key,
                    self.token,
                    Arc::clone(completed),
                    self.settings.ttl,
                )
            })
            .map(|completion| self.completed(completed, completion)),
            Outcome::Release => timed("release", || now.release_now(&self.key, self.token)),
        };
        Some(written)
    }

    async fn write(&self, outcome: &Outcome) -> Result<(), StoreError> {
        if let Some(written) = self.write_here(outcome) {
            return written;
        }
        match outcome {
            Outcome::Complete(completed) => {
                let complete = self.store().complete(
                    &self.key,
                    self.token,
                    Arc::clone(completed),
                    self.settings.ttl,
                );
                let completion = with_timeout(&self.settings, "complete", complete).await?;
                self.completed(completed, completion);
                Ok(())
            }
            Outcome::Release => {
                let release = self.store().release(&self.key, self.token);
                with_timeout(&self.settings, "release", release).await
            }
        }
    }

    /// Reports a completion the store answered.
    fn completed(&self, completed: &Completed, completion: Completion) {
        let key = self.key.key();
        let status = completed.response.status().as_u16();
        match completion {
            Completion::Stored => {
                tracing::info!(target: "idem", outcome = "executed", stored = true, %key, status, "response stored for replay");
                self.route.outcome("executed");
            }
            Completion::LeaseLost => {
                tracing::warn!(target: "idem", outcome = "lease_lost", stored = false, %key, status, "claim lease ran out and the key was taken over; response not stored");
                self.route.outcome("lease_lost");
            }
        }
    }
}
