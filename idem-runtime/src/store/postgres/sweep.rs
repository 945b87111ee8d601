//! The background sweep: deletes expired rows, bounded in rows and in time per pass, and ends
//! when the store is dropped.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior, interval};

use super::Inner;
use crate::store::StoreError;

/// How often the sweep runs unless the builder says otherwise: every minute.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// How many rows one sweep statement deletes at most unless the builder says otherwise.
pub const DEFAULT_SWEEP_BATCH: u32 = 1000;

/// The most statements of one pass: a pass deletes at most this many batches.
const BATCHES_PER_PASS: u32 = 10;

/// How long one pass may run: no further batch starts after this.
const PASS_TIME: Duration = Duration::from_secs(1);

/// One pass: deletes expired rows in batches until a batch comes back short, or the pass has
/// deleted [`BATCHES_PER_PASS`] batches or run for [`PASS_TIME`]. Answers the rows deleted.
pub(super) async fn pass(inner: &Inner) -> Result<u64, StoreError> {
    let started = Instant::now();
    let mut deleted = 0;
    for _ in 0..BATCHES_PER_PASS {
        let done = sqlx::query(&inner.queries.sweep)
            .bind(i64::from(inner.sweep_batch))
            .execute(&inner.pool)
            .await
            .map_err(|e| StoreError::with_source("Postgres sweep failed", e))?
            .rows_affected();
        deleted += done;
        if done < u64::from(inner.sweep_batch) || started.elapsed() >= PASS_TIME {
            break;
        }
    }
    Ok(deleted)
}

/// Runs a pass every `every` until `stop` is dropped (with the store) or the store is gone.
pub(super) async fn run(store: Weak<Inner>, every: Duration, mut stop: oneshot::Receiver<()>) {
    let mut ticks = interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate: the first pass comes one interval after the start.
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticks.tick() => {}
        }
        let Some(inner) = store.upgrade() else {
            return;
        };
        match pass(&inner).await {
            Ok(0) => {}
            Ok(rows) => {
                tracing::debug!(target: "idem", outcome = "swept", rows, table = %inner.table, "expired idempotency records deleted");
            }
            Err(error) => {
                tracing::warn!(target: "idem", outcome = "store_error", operation = "sweep", %error, "sweep of expired idempotency records failed; retried at the next interval");
            }
        }
    }
}
