//! The claims this process holds: for each, a pooled connection holding the key's advisory lock,
//! and a timer that gives the key up when the claim's lease runs out.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, PgPool, Postgres, Row as _, TransactionManager as _};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until};

use super::Inner;
use crate::store::{ClaimToken, StoreKey};

type Manager = <Postgres as sqlx::Database>::TransactionManager;

/// A pooled connection, holding the session-level advisory lock of a claimed key (or no lock, for
/// the transaction of a request without a key), and the transaction lent to a handler, if one
/// is open.
///
/// Dropped while it still holds the lock or a transaction (a failed query, a future dropped
/// halfway), the connection is closed rather than returned to the pool: closing it releases the
/// lock and rolls the transaction back on the server, so a key can never stay locked by an idle
/// pooled connection.
pub(crate) struct HeldConn {
    conn: PoolConnection<Postgres>,
    lock_id: Option<i64>,
}

impl HeldConn {
    /// A connection from `pool`, holding nothing yet.
    pub(super) async fn acquire(pool: &PgPool) -> Result<Self, sqlx::Error> {
        Ok(Self {
            conn: pool.acquire().await?,
            lock_id: None,
        })
    }

    /// Runs `statement`, which takes the advisory lock `lock_id` if it is free, without waiting,
    /// and answers one row whose column `locked` says whether it did: the row if it did, `None`
    /// if the lock is held elsewhere.
    pub(super) async fn try_lock_in(
        &mut self,
        lock_id: i64,
        statement: Query<'_, Postgres, PgArguments>,
    ) -> Result<Option<PgRow>, sqlx::Error> {
        // Marked held before the statement: if its answer is lost or unreadable, the connection
        // is closed, and the lock with it.
        self.lock_id = Some(lock_id);
        let row = statement.fetch_one(&mut *self.conn).await?;
        if !row.try_get::<bool, _>("locked")? {
            self.lock_id = None;
            return Ok(None);
        }
        Ok(Some(row))
    }

    /// Releases the lock; the connection then goes back to the pool when dropped.
    pub(super) async fn unlock(mut self) -> Result<(), sqlx::Error> {
        if let Some(lock_id) = self.lock_id {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(lock_id)
                .execute(&mut *self.conn)
                .await?;
            self.lock_id = None;
        }
        Ok(())
    }

    /// Opens the transaction (through sqlx's own transaction manager, so that a handler's
    /// `begin()` on the connection opens a savepoint inside it).
    pub(super) async fn begin(&mut self) -> Result<(), sqlx::Error> {
        Manager::begin(&mut self.conn, None).await
    }

    /// Commits the transaction. A transaction nested in it that the handler left open is an
    /// error: committing would only release its savepoint.
    pub(super) async fn commit(&mut self) -> Result<(), sqlx::Error> {
        match Manager::get_transaction_depth(&self.conn) {
            1 => Manager::commit(&mut self.conn).await,
            depth => Err(sqlx::Error::Protocol(format!(
                "the request's transaction is {depth} levels deep at commit, not 1: a \
                 transaction the handler began on it was neither committed nor rolled back"
            ))),
        }
    }

    /// Rolls back every open level of the transaction, if any is open.
    pub(super) async fn rollback(&mut self) -> Result<(), sqlx::Error> {
        while Manager::get_transaction_depth(&self.conn) > 0 {
            Manager::rollback(&mut self.conn).await?;
        }
        Ok(())
    }

    /// Whether a transaction is open on the connection.
    pub(super) fn in_transaction(&self) -> bool {
        Manager::get_transaction_depth(&self.conn) > 0
    }
}

impl Deref for HeldConn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for HeldConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for HeldConn {
    fn drop(&mut self) {
        if self.lock_id.is_some() || self.in_transaction() {
            self.conn.close_on_drop();
        }
    }
}

/// A claim this process holds.
struct Held {
    /// `None` while the connection is lent to the request's handler (the transactional mode).
    conn: Option<HeldConn>,
    lease_ends: Instant,
    /// Dropped with the claim, which ends its timer.
    _timer: oneshot::Sender<()>,
}

/// What the lease timer of a claim finds when it fires.
enum Lapse {
    /// The lease ran out: the claim is removed, its connection handed to the timer to give the
    /// key up.
    Expired(HeldConn),
    /// The lease was renewed: sleep until then.
    Renewed(Instant),
    /// Completed, released, or lent to a handler (whose connection keeps the key until it
    /// returns): nothing to do.
    Done,
}

/// The claims this process holds, by key and token. The mutex is held only for map operations,
/// never across an `.await`.
#[derive(Default)]
pub(super) struct Claims {
    map: Mutex<HashMap<(StoreKey, ClaimToken), Held>>,
}

impl Claims {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(StoreKey, ClaimToken), Held>> {
        // Every change under the lock is one map operation.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a fresh claim, and starts its lease timer (which holds the store only weakly).
    pub(super) fn insert(
        &self,
        store: Weak<Inner>,
        key: StoreKey,
        token: ClaimToken,
        conn: HeldConn,
        lease: Duration,
    ) {
        let lease_ends = deadline(lease);
        let (timer, cancelled) = oneshot::channel();
        let held = Held {
            conn: Some(conn),
            lease_ends,
            _timer: timer,
        };
        self.map().insert((key.clone(), token), held);
        tokio::spawn(lease_timer(store, key, token, lease_ends, cancelled));
    }

    /// Extends the lease of the claim `token` if this process holds it.
    pub(super) fn renew(&self, key: &StoreKey, token: ClaimToken, lease: Duration) -> bool {
        match self.map().get_mut(&(key.clone(), token)) {
            Some(held) => {
                held.lease_ends = deadline(lease);
                true
            }
            None => false,
        }
    }

    /// Removes the claim and answers its connection (`None` if this process does not hold it, or
    /// lent its connection).
    pub(super) fn take(&self, key: &StoreKey, token: ClaimToken) -> Option<HeldConn> {
        self.map()
            .remove(&(key.clone(), token))
            .and_then(|mut held| held.conn.take())
    }

    /// Lends the claim's connection; the claim stays, so that the lease is not enforced against
    /// the handler using it, and a repeated claim still renews it.
    pub(super) fn lend(&self, key: &StoreKey, token: ClaimToken) -> Option<HeldConn> {
        self.map()
            .get_mut(&(key.clone(), token))
            .and_then(|held| held.conn.take())
    }

    /// Removes the claim whose connection was lent.
    pub(super) fn forget(&self, key: &StoreKey, token: ClaimToken) {
        self.map().remove(&(key.clone(), token));
    }

    fn lapse(&self, key: &StoreKey, token: ClaimToken) -> Lapse {
        let mut map = self.map();
        let id = (key.clone(), token);
        let Some(held) = map.get(&id) else {
            return Lapse::Done;
        };
        if held.conn.is_none() {
            return Lapse::Done;
        }
        if Instant::now() < held.lease_ends {
            return Lapse::Renewed(held.lease_ends);
        }
        match map.remove(&id).and_then(|mut held| held.conn.take()) {
            Some(conn) => Lapse::Expired(conn),
            None => Lapse::Done,
        }
    }

    /// The number of claims held.
    pub(super) fn len(&self) -> usize {
        self.map().len()
    }
}

/// Gives the key up when the claim's lease runs out, unless it is renewed, completed, released
/// or lent first. Ends as soon as the claim is gone (or the store with it).
async fn lease_timer(
    store: Weak<Inner>,
    key: StoreKey,
    token: ClaimToken,
    mut lease_ends: Instant,
    mut cancelled: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut cancelled => return,
            () = sleep_until(lease_ends) => {}
        }
        let Some(inner) = store.upgrade() else {
            return;
        };
        match inner.claims.lapse(&key, token) {
            Lapse::Done => return,
            Lapse::Renewed(until) => lease_ends = until,
            Lapse::Expired(conn) => {
                tracing::warn!(target: "idem", outcome = "lease_expired", key = %key.key(), "claim's lease ran out while its request still runs; key given up");
                if let Err(error) = inner.give_up(conn, &key, token).await {
                    tracing::error!(target: "idem", outcome = "store_error", operation = "release", key = %key.key(), %error, "could not give up an expired claim; its connection is closed instead");
                }
                return;
            }
        }
    }
}

/// `now + after`, capped at a century.
fn deadline(after: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(after.min(CENTURY)).unwrap_or(now)
}
