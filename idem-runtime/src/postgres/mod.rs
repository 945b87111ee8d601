//! Exactly once with your database: the handler's writes and the stored answer in one Postgres
//! transaction (feature `postgres`).
//!
//! With a [`PostgresStore`] installed, a handler that takes a [`Transaction`] argument runs inside
//! the transaction of its request's claim:
//!
//! ```text
//! claim ─► the claim's connection holds the key's lock ─► BEGIN
//!   ─► the handler writes through the Transaction
//!   ─► the runtime writes the completed record in the same transaction ─► COMMIT ─► answer
//! ```
//!
//! - **Committed together, or not at all.** A crash before the commit leaves nothing of the
//!   handler's work and frees the key at once (the lock dies with the connection): the retry runs
//!   the handler again, on any instance. A crash after the commit leaves the work and its answer:
//!   the retry is a replay. There is no moment at which the work is kept but its answer lost.
//! - **Rolled back** when the handler panics (`500`), when it answers a `5xx` that is not stored
//!   (`store_server_errors = false`), or when anything fails before the commit; the key is then
//!   free.
//! - **A failed commit** (a deferred constraint, a lost connection) never sends the handler's
//!   answer as if it had happened: the client gets `503` [commit-failed](crate::problem#commit-failed),
//!   and the key is free.
//! - **Without a key** (or for a method the handler is not idempotent for) the handler still gets
//!   a transaction, begun on the store's pool: it is committed after the handler returns unless
//!   the handler panicked (then it is rolled back and the panic goes on); a failed commit answers
//!   `503` commit-failed.
//! - **With another store**, a handler taking a `Transaction` answers `500`
//!   [transaction-unavailable](crate::problem#transaction-unavailable), whose detail says to
//!   install a `PostgresStore` with `Idempotency::builder().store(..)`.
//!
//! What it covers: writes made through the transaction. What it does not: anything else the
//! handler does — a call to a payment processor, an e-mail. For a call to another idempotent API,
//! send [`Transaction::downstream_key`]: a handler run again after a crash sends the same key, and
//! the other API answers the first call's result instead of acting twice.
//!
//! The request holds its pooled connection from the claim to the commit (see [`PostgresStore`]'s
//! *Connections*). The claim's lease does not cut a handler that uses its transaction short: its
//! connection keeps the key until it returns.
//!
//! ```no_run
//! use axum::Json;
//! use axum::http::StatusCode;
//! use idem_runtime::postgres::{Transaction, sqlx};
//!
//! // With `#[idempotent(post)]` from the `idem` crate on it.
//! async fn create_charge(tx: Transaction, Json(amount): Json<i64>) -> (StatusCode, String) {
//!     let mut conn = tx.lock().await;
//!     let id: i64 = sqlx::query_scalar("INSERT INTO charges (amount) VALUES ($1) RETURNING id")
//!         .bind(amount)
//!         .fetch_one(&mut *conn)
//!         .await
//!         .expect("charge inserted");
//!     (StatusCode::CREATED, format!("ch_{id}"))
//! }
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use sha2::{Digest as _, Sha256};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

/// The version of [sqlx](https://docs.rs/sqlx/0.8) the store is built on (0.8), to name its types
/// (`sqlx::PgConnection`, `sqlx::query`) without a dependency of your own that might differ.
pub use sqlx;

use crate::fingerprint::{FingerprintInput, Fingerprinter};
use crate::problem::Problem;
use crate::store::StoreKey;
use crate::store::postgres::HeldConn;
pub use crate::store::{PostgresStore, PostgresStoreBuilder};

/// The request's database transaction, as a handler argument: what the handler writes through it
/// commits together with the stored answer (see the [module docs](self)).
///
/// Take it as an argument of an `#[idempotent]` handler, anywhere in the list; it is not part of
/// the request's fingerprint. Its connection is [`lock`](Self::lock)ed for each use:
///
/// ```no_run
/// use idem_runtime::postgres::{Transaction, sqlx};
///
/// async fn record_charge(tx: &Transaction, amount: i64) -> Result<(), sqlx::Error> {
///     let mut conn = tx.lock().await;
///     sqlx::query("INSERT INTO charges (amount) VALUES ($1)")
///         .bind(amount)
///         .execute(&mut *conn)
///         .await?;
///     Ok(())
/// }
/// ```
///
/// A transaction the handler begins on the connection (`sqlx::Connection::begin`) is a savepoint
/// inside the request's; it must be committed or rolled back before the handler returns, or the
/// request fails with `503` commit-failed.
pub struct Transaction {
    slot: Arc<Slot>,
}

/// Where the runtime puts the request's connection for the handler, and takes it back.
pub(crate) struct Slot {
    pub(crate) conn: Mutex<Option<HeldConn>>,
    wanted: AtomicBool,
    key: Option<StoreKey>,
}

impl Slot {
    /// An empty slot for a request with `key` (if it has one).
    pub(crate) fn new(key: Option<StoreKey>) -> Self {
        Self {
            conn: Mutex::new(None),
            wanted: AtomicBool::new(false),
            key,
        }
    }

    /// Whether the handler takes a [`Transaction`].
    pub(crate) fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Acquire)
    }
}

impl Transaction {
    /// The transaction's connection, for as long as the guard lives. Run queries on it with
    /// `&mut *guard` (a [`sqlx::PgConnection`]).
    ///
    /// # Panics
    ///
    /// When used after the handler returned (from a task it spawned, say): the transaction has
    /// been committed or rolled back by then.
    pub async fn lock(&self) -> TransactionGuard<'_> {
        let guard = self.slot.conn.lock().await;
        TransactionGuard(MutexGuard::map(guard, |conn| {
            conn.as_mut().expect(
                "idem::postgres::Transaction used outside its handler's run: the request's \
                 transaction is already committed or rolled back",
            )
        }))
    }

    /// A key for a call this handler makes to another idempotent API (a payment processor),
    /// derived from the request's scope and idempotency key and from `purpose`, which tells the
    /// handler's calls apart (`"charge"`, `"refund"`). The same request — a retry, or a run again
    /// after a crash — always gets the same key, so the other API answers the first call's result
    /// instead of acting twice; another caller, key or purpose never does.
    ///
    /// UUID-shaped (version 8): 32 hex digits of a SHA-256 over a domain tag, the scope, the key
    /// and the purpose. `None` for a request without an idempotency key: there is nothing to
    /// derive a stable key from, and its retries are new requests anyway.
    ///
    /// ```no_run
    /// use idem_runtime::postgres::Transaction;
    ///
    /// async fn charge_card(tx: &Transaction, processor: &reqwest_like::Client) {
    ///     let mut call = processor.post("https://processor.example/v1/charges");
    ///     if let Some(key) = tx.downstream_key("charge") {
    ///         call = call.header("Idempotency-Key", key);
    ///     }
    ///     call.send().await;
    /// }
    /// # mod reqwest_like {
    /// #     pub struct Client;
    /// #     pub struct Request;
    /// #     impl Client { pub fn post(&self, _: &str) -> Request { Request } }
    /// #     impl Request {
    /// #         pub fn header(self, _: &str, _: String) -> Self { self }
    /// #         pub async fn send(self) {}
    /// #     }
    /// # }
    /// ```
    #[must_use]
    pub fn downstream_key(&self, purpose: &str) -> Option<String> {
        self.slot
            .key
            .as_ref()
            .map(|key| downstream_key(key, purpose))
    }
}

/// The downstream key of `key` for `purpose`.
pub(crate) fn downstream_key(key: &StoreKey, purpose: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"idem/downstream-key/v1\0");
    digest.update(key.scope().as_bytes());
    for part in [key.key().as_str(), purpose] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    let mut bytes: [u8; 16] = digest.finalize()[..16].try_into().expect("16 bytes");
    // A version-8 (custom) UUID with the RFC 9562 variant.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("key", &self.slot.key.as_ref().map(|key| key.key()))
            .finish_non_exhaustive()
    }
}

/// The connection of a [`Transaction`], locked: derefs to [`sqlx::PgConnection`].
pub struct TransactionGuard<'a>(MappedMutexGuard<'a, HeldConn>);

impl std::ops::Deref for TransactionGuard<'_> {
    type Target = sqlx::PgConnection;

    fn deref(&self) -> &sqlx::PgConnection {
        &self.0
    }
}

impl std::ops::DerefMut for TransactionGuard<'_> {
    fn deref_mut(&mut self) -> &mut sqlx::PgConnection {
        &mut self.0
    }
}

impl fmt::Debug for TransactionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionGuard").finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Transaction {
    type Rejection = NoTransaction;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, NoTransaction> {
        match parts.extensions.get::<Arc<Slot>>() {
            Some(slot) => {
                slot.wanted.store(true, Ordering::Release);
                Ok(Self {
                    slot: Arc::clone(slot),
                })
            }
            None => {
                tracing::error!(target: "idem", outcome = "transaction_unavailable", "handler takes idem::postgres::Transaction but the idempotency store is not a PostgresStore");
                Err(NoTransaction)
            }
        }
    }
}

impl FingerprintInput for Transaction {
    const FROM_REQUEST_BYTES: bool = true;

    /// Nothing: the transaction reads no client input.
    fn fingerprint(&self, _fp: &mut Fingerprinter) {}
}

/// The rejection of [`Transaction`] when the application's store is not a [`PostgresStore`] (or
/// the handler is not `#[idempotent]`): `500` problem+json
/// [transaction-unavailable](crate::problem#transaction-unavailable), saying to install a
/// `PostgresStore` with `Idempotency::builder().store(..)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoTransaction;

impl IntoResponse for NoTransaction {
    fn into_response(self) -> Response {
        Problem::transaction_unavailable().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::IdempotencyKey;
    use crate::scope::Scope;

    fn key(scope: &str, key: &str) -> StoreKey {
        StoreKey::new(
            Scope::from_identity(scope),
            IdempotencyKey::parse(key.as_bytes(), 255).unwrap(),
        )
    }

    #[test]
    fn downstream_keys_are_stable_uuid_shaped_and_apart() {
        let a = downstream_key(&key("alice", "order-1"), "charge");
        assert_eq!(a, downstream_key(&key("alice", "order-1"), "charge"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "version 8: {a}");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "variant: {a}");
        for other in [
            downstream_key(&key("bob", "order-1"), "charge"),
            downstream_key(&key("alice", "order-2"), "charge"),
            downstream_key(&key("alice", "order-1"), "refund"),
            // The length prefixes keep the parts apart.
            downstream_key(&key("alice", "order-1c"), "harge"),
        ] {
            assert_ne!(a, other);
        }
    }
}
