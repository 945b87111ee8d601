//! The claim, and what a key that already has a record answers: a replay, `409`, `422` or `410`.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use axum::response::Response;
use tokio::time::{Instant, sleep, timeout};

use crate::config::{ConflictPolicy, Settings};
use crate::fingerprint::Fingerprint;
use crate::metrics::{Route, StoreTimer};
use crate::problem::{Problem, Renderer};
use crate::replay::NotKept;
use crate::store::{Claim, ClaimToken, Completed, IdempotencyStore, Record, StoreError, StoreKey};

/// What the claim decided.
pub(super) enum Decision {
    /// The key is this request's: run the handler.
    Run,
    /// Answer without running the handler.
    Answer(Response),
    /// The claim failed (`503`). The store may still have applied it, its answer lost on the
    /// way: the claim's token is released, so that the retry is not blocked for a lease.
    Failed(Response),
}

/// Claims the key under `token`, and for an existing record decides the answer (replay, 409,
/// 422), waiting for an in-flight one under [`ConflictPolicy::Wait`].
pub(super) async fn decide(
    store: &dyn IdempotencyStore,
    settings: &Settings,
    route: &Route,
    key: &StoreKey,
    fingerprint: &Fingerprint,
    token: ClaimToken,
) -> Decision {
    let wait_until = Instant::now() + settings.wait_timeout;
    loop {
        let claimed = claim(store, settings, "claim", key, fingerprint, token).await;
        if let Ok(Claim::Existing(record @ Record::InFlight { .. })) = &claimed
            && record.fingerprint() == fingerprint
            && settings.conflict == ConflictPolicy::Wait
        {
            return match wait_for_result(store, settings, key, wait_until).await {
                Ok(Some(record)) => {
                    Decision::Answer(answer_existing(settings, route, key, fingerprint, &record))
                }
                // Released or expired: the key is free again, so try to claim it.
                Ok(None) => continue,
                Err(error) => {
                    Decision::Answer(store_failed(settings, route, "lookup", key, &error))
                }
            };
        }
        return settle(settings, route, key, fingerprint, claimed);
    }
}

/// What the answer to a claim decides, without waiting for an in-flight record.
pub(super) fn settle(
    settings: &Settings,
    route: &Route,
    key: &StoreKey,
    fingerprint: &Fingerprint,
    claimed: Result<Claim, StoreError>,
) -> Decision {
    match claimed {
        Ok(Claim::Fresh) => Decision::Run,
        Ok(Claim::Existing(record)) => {
            Decision::Answer(answer_existing(settings, route, key, fingerprint, &record))
        }
        Err(error) => Decision::Failed(store_failed(settings, route, "claim", key, &error)),
    }
}

/// The answer to a request whose key already has a record.
fn answer_existing(
    settings: &Settings,
    route: &Route,
    key: &StoreKey,
    fingerprint: &Fingerprint,
    record: &Record,
) -> Response {
    if record.fingerprint() != fingerprint {
        tracing::info!(target: "idem", outcome = "mismatch", key = %key.key(), "idempotency key reused for a different request");
        route.outcome("mismatch");
        return settings.errors.render(&Problem::key_reused());
    }
    match record {
        Record::InFlight { .. } => {
            tracing::info!(target: "idem", outcome = "conflict", key = %key.key(), "request with this idempotency key is in flight");
            route.outcome("conflict");
            settings
                .errors
                .render(&Problem::in_flight(settings.retry_after))
        }
        Record::Done(completed) => {
            tracing::debug!(target: "idem", outcome = "replayed", key = %key.key(), status = completed.response.status().as_u16(), "replaying stored response");
            route.outcome("replayed");
            replay(&settings.errors, completed)
        }
    }
}

/// The replay of a completed request; `410`, in the format `errors`, when its body was too large
/// to keep.
pub(super) fn replay(errors: &Renderer, completed: &Completed) -> Response {
    match completed.response.replay() {
        Ok(replay) => replay,
        Err(NotKept { status, len }) => errors.render(&Problem::response_not_kept(status, len)),
    }
}

/// Polls the record with back-off until it is done, gone, or `until` passes (then the in-flight
/// record is returned, for a 409).
async fn wait_for_result(
    store: &dyn IdempotencyStore,
    settings: &Settings,
    key: &StoreKey,
    until: Instant,
) -> Result<Option<Record>, StoreError> {
    let mut pause = Duration::from_millis(5);
    loop {
        let now = Instant::now();
        let record = with_timeout(settings, "lookup", store.lookup(key)).await?;
        match record {
            Some(Record::InFlight { .. }) if now < until => {}
            other => return Ok(other),
        }
        sleep(pause.min(until.saturating_duration_since(now))).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Claims `key` under `token` for a lease, in place if the store answers at once; `name` names
/// the operation in metrics (a claim, or the renewal of one).
pub(super) async fn claim(
    store: &dyn IdempotencyStore,
    settings: &Settings,
    name: &'static str,
    key: &StoreKey,
    fingerprint: &Fingerprint,
    token: ClaimToken,
) -> Result<Claim, StoreError> {
    if let Some(claimed) = claim_here(store, settings, name, key, fingerprint, token) {
        return claimed;
    }
    let claim = store.claim(key, fingerprint, token, settings.lease);
    with_timeout(settings, name, claim).await
}

/// [`claim`], made in place if the store answers at once
/// ([`IdempotencyStore::immediate`]); `None` if it has to be awaited.
pub(super) fn claim_here(
    store: &dyn IdempotencyStore,
    settings: &Settings,
    name: &'static str,
    key: &StoreKey,
    fingerprint: &Fingerprint,
    token: ClaimToken,
) -> Option<Result<Claim, StoreError>> {
    let now = store.immediate()?;
    Some(timed(name, || {
        now.claim_now(key, fingerprint, token, settings.lease)
    }))
}

/// A call to a store that answers at once ([`IdempotencyStore::immediate`]), timed for metrics.
pub(super) fn timed<T>(name: &'static str, call: impl FnOnce() -> T) -> T {
    let timer = StoreTimer::start();
    let result = call();
    timer.stop(name);
    result
}

/// A store operation, failed after [`Settings::store_timeout`]; `name` names it in metrics.
pub(super) async fn with_timeout<T>(
    settings: &Settings,
    name: &'static str,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let timer = StoreTimer::start();
    let mut operation = pin!(operation);
    // A store that answers at once (one in memory) needs no timer.
    let result = match poll_fn(|cx| Poll::Ready(operation.as_mut().poll(cx))).await {
        Poll::Ready(result) => result,
        Poll::Pending => match timeout(settings.store_timeout, operation).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::new(format!(
                "store did not answer within {:?}",
                settings.store_timeout
            ))),
        },
    };
    timer.stop(name);
    result
}

/// The `503` of a request whose claim (or wait) the store failed.
pub(super) fn store_failed(
    settings: &Settings,
    route: &Route,
    operation: &str,
    key: &StoreKey,
    error: &StoreError,
) -> Response {
    tracing::error!(target: "idem", outcome = "store_error", operation, key = %key.key(), %error, "idempotency store failed; request not processed");
    route.outcome("store_error");
    settings.errors.render(&Problem::store_unavailable())
}
