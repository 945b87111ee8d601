//! The store in the application's own database: Postgres, so that a claim dies with its
//! connection and, in the transactional mode, the answer commits with the handler's writes.

mod builder;
mod decode;
mod held;
mod queries;
mod schema;
mod sweep;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};
use sqlx::{PgPool, Row as _};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep};

pub use self::builder::PostgresStoreBuilder;
use self::decode::{Found, decode};
use self::held::Claims;
pub(crate) use self::held::HeldConn;
use self::queries::Queries;
pub use self::schema::DEFAULT_TABLE;
use self::schema::TableName;
pub use self::sweep::{DEFAULT_SWEEP_BATCH, DEFAULT_SWEEP_INTERVAL};
use super::{
    Claim, ClaimToken, Completed, Completion, IdempotencyStore, Record, StoreError, StoreKey,
};
use crate::fingerprint::Fingerprint;

/// The most connections of a pool the store opens itself, by default: 16.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// How long an operation waits for a free connection of a pool the store opens itself, by
/// default: 1 second.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// The schema of the store's table, as the migration runs it: `{table}` and `{index}` stand for
/// the table's name and its expiry index's.
pub const SCHEMA_SQL: &str = include_str!("schema.sql");

/// The record format this build writes and the only one it reads.
const RECORD_VERSION: i16 = 1;

/// How long a claim waits, at most, for a key whose lock another request has just taken to show
/// that request's row (one statement takes the lock and writes the row, and the row is seen by
/// others only once the statement commits).
const CLAIM_PATIENCE: Duration = Duration::from_secs(1);

/// A store on [Postgres](https://www.postgresql.org): keys live in the application's own
/// database, every instance that uses the same table shares them, a crashed request frees its
/// key at once, and — with [`Transaction`](crate::postgres::Transaction) — the stored answer
/// commits in the same transaction as the handler's own writes.
///
/// # The table
///
/// One row per key ([`SCHEMA_SQL`], created by [`migrate`](Self::migrate) or by the builder
/// with [`migrate(true)`](PostgresStoreBuilder::migrate)), in the table `idem_keys` unless the
/// builder names another:
///
/// | column | in flight | done |
/// |---|---|---|
/// | `scope`, `key` | the caller's scope (32 bytes) and key: the primary key | the same |
/// | `version` | record format, `1` | `1` |
/// | `state` | `in_flight` | `done` |
/// | `fingerprint` | the request's fingerprint (32 bytes) | the same |
/// | `token` | the claim's [`ClaimToken`] (16 bytes) | `NULL` |
/// | `lock_id` | the key's advisory lock | the same |
/// | `request_digest`, `response` | `NULL` | the [request digest](Completed::request_digest) and the [encoded response](crate::replay::StoredResponse::encode) |
/// | `expires_at` | the end of the lease | the end of the TTL |
///
/// Times are the database's (`clock_timestamp()`), so instances with skewed clocks agree. A row
/// past its `expires_at` counts as absent; a background task deletes such rows (every minute,
/// at most ten statements of 1000 rows and one second per pass; see
/// [`sweep_interval`](PostgresStoreBuilder::sweep_interval)). It ends when the last clone of the
/// store is dropped.
///
/// # Claims, and crashes
///
/// A claim first reads the key's row, without any lock: a completed key (a replay, a `422`)
/// costs one query. Otherwise it takes a pooled connection and, on it, the key's advisory lock
/// with `pg_try_advisory_lock` — a session-level lock on a 64-bit id derived from the table, the
/// scope and the key by SHA-256, never waited for — and, in the same statement, only if it took
/// the lock, writes the in-flight row (fingerprint and token), committed at once so that every
/// instance sees it. It keeps the connection, with its lock, until the request
/// completes (the done row is written, then the lock released) or is released (the row
/// deleted, then the lock released). If the lock is busy, another request holds the key: a
/// duplicate gets `409` at once (or waits, with `conflict = wait`), a request with another
/// fingerprint `422`.
///
/// Postgres releases a session's locks the instant its connection ends. When the process
/// holding a claim dies (SIGKILL, a lost machine), its connection closes and the key's lock is
/// free: an in-flight row whose lock is free is an orphan, and the next claim, on any instance,
/// takes it over at once. A retry after a crash is answered without waiting for a lease.
///
/// # What the lease means here
///
/// No other request can take a key whose lock is held, so the lease is not what protects a
/// running request. It bounds how long a *live* request may keep its key: when a claim's lease
/// runs out while its handler still runs (a hung handler), this process gives the key up (it
/// deletes the row and releases the lock), and the late request's answer is not stored
/// ([`Completion::LeaseLost`]) unless nobody claimed the key meanwhile. In the transactional mode
/// the handler uses the claim's connection, and its key is kept until it returns, whatever the
/// lease: its writes and its answer commit together or not at all, so a second execution is
/// impossible either way.
///
/// # Connections
///
/// **Every keyed request whose handler runs holds one pooled connection** from its claim to its
/// completion, and a request in the transactional mode holds one too. The pool's size
/// ([`max_connections`](PostgresStoreBuilder::max_connections), default 16, or that of the pool
/// given with [`pool`](PostgresStoreBuilder::pool)) therefore bounds how many such requests run
/// at once. When the pool is exhausted, a claim waits for a connection up to its acquire timeout
/// (default 1 s), then fails: the request is answered `503` with `Retry-After`, as it is when the
/// runtime's `store_timeout` runs out first, and its handler does not run. Replays, `409`s and
/// `422`s borrow a connection for one query only.
///
/// A connection dropped while it holds a lock or an open transaction (a failed query, a request
/// cut short) is closed rather than returned to the pool, so no idle connection keeps a key.
/// Session-level locks need a session per client: behind PgBouncer, use session pooling.
///
/// # Versioned rows
///
/// A row whose `version` is not `1`, or whose columns or response bytes do not decode, is never
/// replayed: the operation fails with a [`StoreError`] and the request is answered `503`.
///
/// ```no_run
/// use idem_runtime::config::Idempotency;
/// use idem_runtime::store::PostgresStore;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::builder()
///     .url("postgres://payments@127.0.0.1/payments")
///     .table("idem_keys")
///     .migrate(true)
///     .build()
///     .await?;
/// let idempotency = Idempotency::builder().store(store).build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    pool: PgPool,
    table: TableName,
    queries: Queries,
    /// Hashed into every lock id, so that two tables never share a key's lock.
    lock_salt: [u8; 32],
    claims: Claims,
    sweep_batch: u32,
    /// Dropped with the last clone of the store, which ends the sweep.
    _stop_sweep: oneshot::Sender<()>,
}

/// The salt of `table`'s lock ids.
fn lock_salt(table: &TableName) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(b"idem/postgres/lock/v1\0");
    digest.update(table.as_str().as_bytes());
    digest.finalize().into()
}

fn failed(operation: &str, error: sqlx::Error) -> StoreError {
    StoreError::with_source(format!("Postgres {operation} failed"), error)
}

/// A duration in whole milliseconds, rounded up, at most a century.
fn millis(duration: Duration) -> f64 {
    const CENTURY_MS: u128 = 100 * 365 * 24 * 3600 * 1000;
    // At most a century in milliseconds: well inside an f64's exact integers.
    #[allow(clippy::cast_precision_loss)]
    let ms = duration.as_nanos().div_ceil(1_000_000).min(CENTURY_MS) as f64;
    ms
}

impl PostgresStore {
    /// A builder: name the database with [`url`](PostgresStoreBuilder::url) or
    /// [`pool`](PostgresStoreBuilder::pool), then [`build`](PostgresStoreBuilder::build).
    pub fn builder() -> PostgresStoreBuilder {
        PostgresStoreBuilder::new()
    }

    /// The pool the store uses, to share it with the application's own queries.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The store's table, as written in SQL.
    #[must_use]
    pub fn table(&self) -> &str {
        self.inner.table.as_str()
    }

    /// Creates the table and its index if they do not exist ([`SCHEMA_SQL`]), in one
    /// transaction, under a lock that keeps instances starting at once from racing.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database refuses (no right to create tables, say).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        schema::migrate(&self.inner.pool, &self.inner.table).await
    }

    /// Deletes expired rows now, in one bounded pass (what the background sweep does), and
    /// answers how many.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database fails.
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        sweep::pass(&self.inner).await
    }

    /// The number of claims this process holds (each with a connection).
    #[must_use]
    pub fn held_claims(&self) -> usize {
        self.inner.claims.len()
    }

    /// The advisory lock id of `key`: the first 8 bytes of a SHA-256 over the table's salt, the
    /// scope and the key.
    fn lock_id(&self, key: &StoreKey) -> i64 {
        let mut digest = Sha256::new();
        digest.update(self.inner.lock_salt);
        digest.update(key.scope().as_bytes());
        digest.update(key.key().as_str().as_bytes());
        let digest = digest.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(id)
    }

    /// What the row of `key` says, read without a lock.
    async fn read(&self, key: &StoreKey) -> Result<Found, StoreError> {
        let row = sqlx::query(&self.inner.queries.read)
            .bind(key.scope().as_bytes().as_slice())
            .bind(key.key().as_str())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| failed("read", e))?;
        match row {
            None => Ok(Found::Free),
            Some(row) => decode(&row).map_err(|reason| {
                StoreError::new(format!(
                    "unreadable record in {} for {key}: {reason}",
                    self.inner.table
                ))
            }),
        }
    }

    /// Writes the done row on `conn` (which holds the key's lock, or a transaction that does).
    async fn write_done(
        &self,
        conn: &mut sqlx::PgConnection,
        key: &StoreKey,
        token: ClaimToken,
        completed: &Completed,
        ttl: Duration,
    ) -> Result<Completion, sqlx::Error> {
        let written = sqlx::query(&self.inner.queries.complete)
            .bind(key.scope().as_bytes().as_slice())
            .bind(key.key().as_str())
            .bind(RECORD_VERSION)
            .bind(completed.fingerprint.as_bytes().as_slice())
            .bind(self.lock_id(key))
            .bind(completed.request_digest.map(|d| d.as_bytes().to_vec()))
            .bind(completed.response.encode())
            .bind(millis(ttl))
            .bind(token.as_u128().to_be_bytes().as_slice())
            .fetch_optional(conn)
            .await?;
        Ok(if written.is_some() {
            Completion::Stored
        } else {
            Completion::LeaseLost
        })
    }

    // ---- the transactional mode: what the runtime's exchange calls ----

    /// Lends the claim's connection to the request's handler, with a transaction open on it.
    /// `None` when this process does not hold the claim (its lease ran out before the handler
    /// started).
    pub(crate) async fn lend(
        &self,
        key: &StoreKey,
        token: ClaimToken,
    ) -> Result<Option<HeldConn>, StoreError> {
        let Some(mut conn) = self.inner.claims.lend(key, token) else {
            return Ok(None);
        };
        if let Err(error) = conn.begin().await {
            self.inner.claims.forget(key, token);
            drop(conn);
            return Err(failed("begin", error));
        }
        Ok(Some(conn))
    }

    /// Writes the done row in the lent transaction and commits it: the handler's writes and the
    /// answer are kept together. On failure nothing is kept and the key is free.
    pub(crate) async fn complete_lent(
        &self,
        mut conn: HeldConn,
        key: &StoreKey,
        token: ClaimToken,
        completed: &Completed,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let committed = async {
            match self
                .write_done(&mut conn, key, token, completed, ttl)
                .await?
            {
                Completion::Stored => conn.commit().await,
                // Cannot happen while the lock is held; refuse rather than commit unanswered work.
                Completion::LeaseLost => Err(sqlx::Error::Protocol(
                    "the claim's row was taken while its lock was held".to_owned(),
                )),
            }
        }
        .await;
        match committed {
            Ok(()) => {
                self.inner.claims.forget(key, token);
                let _ = conn.unlock().await;
                Ok(())
            }
            Err(error) => {
                let _ = self.release_lent(conn, key, token).await;
                Err(failed("commit", error))
            }
        }
    }

    /// Rolls the lent transaction back and frees the key.
    pub(crate) async fn release_lent(
        &self,
        conn: HeldConn,
        key: &StoreKey,
        token: ClaimToken,
    ) -> Result<(), StoreError> {
        self.inner.claims.forget(key, token);
        self.inner.give_up(conn, key, token).await
    }

    /// Forgets the claim whose connection was lent and is lost (closed when dropped, which frees
    /// the key).
    pub(crate) fn abandon_lent(&self, key: &StoreKey, token: ClaimToken) {
        self.inner.claims.forget(key, token);
    }

    /// Commits the transaction of a request without a key.
    pub(crate) async fn commit_keyless(&self, mut conn: HeldConn) -> Result<(), StoreError> {
        conn.commit().await.map_err(|e| failed("commit", e))
    }

    /// Rolls back the transaction of a request without a key.
    pub(crate) async fn rollback_keyless(&self, mut conn: HeldConn) -> Result<(), StoreError> {
        conn.rollback().await.map_err(|e| failed("rollback", e))
    }

    /// A connection with a transaction open, for a request without a key.
    pub(crate) async fn begin_keyless(&self) -> Result<HeldConn, StoreError> {
        let mut conn = HeldConn::acquire(&self.inner.pool)
            .await
            .map_err(|e| failed("acquire", e))?;
        conn.begin().await.map_err(|e| failed("begin", e))?;
        Ok(conn)
    }
}

impl Inner {
    /// Rolls back what `conn` has open, deletes the in-flight row of `token`, and releases the
    /// lock. On failure the connection is closed, which releases the lock too: the row left
    /// behind is an orphan that the next claim takes over.
    async fn give_up(
        &self,
        mut conn: HeldConn,
        key: &StoreKey,
        token: ClaimToken,
    ) -> Result<(), StoreError> {
        conn.rollback().await.map_err(|e| failed("rollback", e))?;
        sqlx::query(&self.queries.release)
            .bind(key.scope().as_bytes().as_slice())
            .bind(key.key().as_str())
            .bind(token.as_u128().to_be_bytes().as_slice())
            .execute(&mut *conn)
            .await
            .map_err(|e| failed("release", e))?;
        conn.unlock().await.map_err(|e| failed("unlock", e))
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.inner.table.as_str())
            .field("held_claims", &self.inner.claims.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IdempotencyStore for PostgresStore {
    async fn claim(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let token_bytes = token.as_u128().to_be_bytes();
        // The same request claiming again (a renewal, or a claim whose answer was lost).
        if self.inner.claims.renew(key, token, lease) {
            sqlx::query(&self.inner.queries.renew)
                .bind(key.scope().as_bytes().as_slice())
                .bind(key.key().as_str())
                .bind(token_bytes.as_slice())
                .bind(millis(lease))
                .execute(&self.inner.pool)
                .await
                .map_err(|e| failed("renew", e))?;
            return Ok(Claim::Fresh);
        }
        let lock_id = self.lock_id(key);
        let patience = Instant::now() + CLAIM_PATIENCE;
        let mut pause = Duration::from_millis(1);
        loop {
            match self.read(key).await? {
                Found::Done(completed) => return Ok(Claim::Existing(Record::Done(completed))),
                Found::Held(fingerprint) => {
                    return Ok(Claim::Existing(Record::InFlight { fingerprint }));
                }
                Found::Free => {}
            }
            let mut conn = HeldConn::acquire(&self.inner.pool)
                .await
                .map_err(|e| failed("acquire", e))?;
            let statement = sqlx::query(&self.inner.queries.claim)
                .bind(key.scope().as_bytes().as_slice())
                .bind(key.key().as_str())
                .bind(RECORD_VERSION)
                .bind(fingerprint.as_bytes().as_slice())
                .bind(token_bytes.as_slice())
                .bind(lock_id)
                .bind(millis(lease));
            let claimed = conn
                .try_lock_in(lock_id, statement)
                .await
                .map_err(|e| failed("claim", e))?;
            if let Some(row) = claimed {
                let written: bool = row.try_get("written").map_err(|e| failed("claim", e))?;
                if written {
                    let store = Arc::downgrade(&self.inner);
                    self.inner
                        .claims
                        .insert(store, key.clone(), token, conn, lease);
                    return Ok(Claim::Fresh);
                }
                // Completed since the read: the next read answers the record.
                conn.unlock().await.map_err(|e| failed("unlock", e))?;
                continue;
            }
            drop(conn);
            // Another request has just taken the lock and is writing its row.
            if Instant::now() >= patience {
                return Err(StoreError::new(format!(
                    "the lock of {key} in {} is held but no claim row appeared within {:?}",
                    self.inner.table, CLAIM_PATIENCE
                )));
            }
            sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        if let Some(mut conn) = self.inner.claims.take(key, token) {
            // The claim's own connection holds the lock: write, then let the key go. If the write
            // fails the connection is closed (its lock with it) and the runtime tries again below.
            let completion = self
                .write_done(&mut conn, key, token, &completed, ttl)
                .await
                .map_err(|e| failed("complete", e))?;
            let _ = conn.unlock().await;
            return Ok(completion);
        }
        // A claim this process no longer holds (its lease ran out, or its first completion
        // failed): write only under the key's lock, and only if nobody took the key since.
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(|e| failed("complete", e))?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(self.lock_id(key))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| failed("lock", e))?;
        if !locked {
            return Ok(Completion::LeaseLost);
        }
        let completion = self
            .write_done(&mut tx, key, token, &completed, ttl)
            .await
            .map_err(|e| failed("complete", e))?;
        tx.commit().await.map_err(|e| failed("complete", e))?;
        Ok(completion)
    }

    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        if let Some(conn) = self.inner.claims.take(key, token) {
            return self.inner.give_up(conn, key, token).await;
        }
        sqlx::query(&self.inner.queries.release)
            .bind(key.scope().as_bytes().as_slice())
            .bind(key.key().as_str())
            .bind(token.as_u128().to_be_bytes().as_slice())
            .execute(&self.inner.pool)
            .await
            .map_err(|e| failed("release", e))?;
        Ok(())
    }

    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        Ok(match self.read(key).await? {
            Found::Done(completed) => Some(Record::Done(completed)),
            Found::Held(fingerprint) => Some(Record::InFlight { fingerprint }),
            Found::Free => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_durations_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::from_nanos(1)), 1.0);
        assert_eq!(millis(Duration::from_micros(1500)), 2.0);
        assert_eq!(
            millis(Duration::MAX),
            100.0 * 365.0 * 24.0 * 3600.0 * 1000.0
        );
    }
}
