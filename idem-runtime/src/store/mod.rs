//! Where claims and results live: the [`IdempotencyStore`] trait and its implementations.
//!
//! A store keeps one record per [`StoreKey`] (a caller's [`Scope`] and the [`IdempotencyKey`] it
//! sent). A record is either *in flight* — claimed by a request whose handler is running, with a
//! lease — or *done*, holding the [`StoredResponse`] to replay until its TTL runs out. The four
//! operations are what any shared store can do atomically:
//!
//! | operation | atomic rule |
//! |---|---|
//! | [`claim`](IdempotencyStore::claim) | create an in-flight record under the caller's [`ClaimToken`] if none exists (or the existing one's lease ran out, or it carries the same token); otherwise return the existing record |
//! | [`complete`](IdempotencyStore::complete) | replace the in-flight record with the done one, only if the record still holds this token (or has lapsed and nobody claimed it since) |
//! | [`release`](IdempotencyStore::release) | delete the record, only if it still holds this token |
//! | [`lookup`](IdempotencyStore::lookup) | read the record |
//!
//! A completed record ([`Completed`]) is built once, behind an [`Arc`], and handed to the store:
//! the in-memory tiers keep that very `Arc`.
//!
//! [`MemoryStore`] (moka, one process) is the default. With the `redis` feature, `RedisStore` shares
//! claims and results between every instance of a service; with the `postgres` feature,
//! `PostgresStore` keeps them in the application's own database, holds each claim with an
//! advisory lock that dies with its connection, and backs the transactional mode
//! (`idem::postgres`). Other stores — DynamoDB, say —
//! implement the same trait outside this crate; the response format they need is
//! [`StoredResponse::encode`] / [`StoredResponse::decode`].
//!
//! [`Scope`]: crate::scope::Scope
//! [`IdempotencyKey`]: crate::key::IdempotencyKey

mod completed;
mod memory;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "redis")]
mod redis;

use std::any::Any;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::memory::{DEFAULT_MAX_BYTES, MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "postgres")]
pub use self::postgres::{
    DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_SWEEP_BATCH, DEFAULT_SWEEP_INTERVAL,
    DEFAULT_TABLE, PostgresStore, PostgresStoreBuilder, SCHEMA_SQL,
};
#[cfg(feature = "redis")]
pub use self::redis::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_LOCAL_TIER_BYTES, DEFAULT_PREFIX, DEFAULT_RESPONSE_TIMEOUT,
    RedisStore, RedisStoreBuilder,
};
use crate::fingerprint::{Fingerprint, RequestDigest};
use crate::key::IdempotencyKey;
use crate::replay::StoredResponse;
use crate::scope::Scope;

/// The identity of a stored record: the caller's scope and the key it sent.
///
/// A store key carries its own hash, computed once when it is made: a request's key is looked up
/// several times on its way (peek, claim, completion), and a hash table that moves its entries
/// around rehashes them all, so hashing the 32-byte scope and the key every time showed in
/// profiles. The hash is seeded at random once per process, so a client cannot choose keys that
/// collide; [`Hash`] writes only it, and equality still compares the scope and the key.
#[derive(Debug, Clone)]
pub struct StoreKey {
    hash: u64,
    scope: Scope,
    key: IdempotencyKey,
}

impl StoreKey {
    /// The record's identity.
    ///
    /// ```
    /// use idem_runtime::key::IdempotencyKey;
    /// use idem_runtime::scope::Scope;
    /// use idem_runtime::store::StoreKey;
    ///
    /// let key = IdempotencyKey::parse(b"k1", 255).unwrap();
    /// let alice = StoreKey::new(Scope::from_identity("alice"), key.clone());
    /// assert_eq!(alice.key(), &key);
    /// assert_eq!(alice, StoreKey::new(*alice.scope(), key.clone()));
    /// assert_ne!(alice, StoreKey::new(Scope::from_identity("bob"), key));
    /// ```
    #[must_use]
    pub fn new(scope: Scope, key: IdempotencyKey) -> Self {
        static SEED: std::sync::OnceLock<foldhash::quality::FixedState> =
            std::sync::OnceLock::new();
        let seed = SEED.get_or_init(|| foldhash::quality::FixedState::with_seed(rand::random()));
        let hash = seed.hash_one((&scope, &key));
        Self { hash, scope, key }
    }

    /// Whose key it is.
    #[must_use]
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The key, as the caller sent it (unquoted).
    #[must_use]
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }
}

impl PartialEq for StoreKey {
    fn eq(&self, other: &Self) -> bool {
        // The hash first: two different keys almost never share it.
        self.hash == other.hash && self.scope == other.scope && self.key == other.key
    }
}

impl Eq for StoreKey {}

impl std::hash::Hash for StoreKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Display for StoreKey {
    /// `<scope as 64 hex digits>:<key>`, a form suitable as a key in a string-keyed store.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.scope, self.key)
    }
}

/// Proof of a claim: only the request holding it may complete or release the record.
///
/// The runtime draws one per request before it claims the key and passes it to
/// [`claim`](IdempotencyStore::claim), so that a claim repeated by the same request (after a
/// store call whose answer was lost) recognises its own record instead of blocking on it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken(u128);

impl ClaimToken {
    /// A new random token (128 bits from a generator seeded by the operating system).
    #[must_use]
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// A token from its raw value, as read back from a store.
    #[must_use]
    pub const fn from_u128(raw: u128) -> Self {
        Self(raw)
    }

    /// The raw value.
    #[must_use]
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Debug for ClaimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClaimToken({self})")
    }
}

impl fmt::Display for ClaimToken {
    /// 32 lowercase hexadecimal digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A completed request, as kept for replay: who it was, and what its handler answered.
///
/// Built once by the runtime and shared, behind an [`Arc`], by every store tier that keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// The fingerprint of the request that completed.
    pub fingerprint: Fingerprint,
    /// The digest of that request's exact bytes, when every input of its handler is determined
    /// by them: a retry with the same digest may be replayed before its body is parsed (see
    /// [`FingerprintInput::FROM_REQUEST_BYTES`](crate::fingerprint::FingerprintInput::FROM_REQUEST_BYTES)).
    pub request_digest: Option<RequestDigest>,
    /// What its handler answered.
    pub response: StoredResponse,
}

impl Completed {
    /// An estimate of the memory the record holds beyond its key, in bytes: what bounds a
    /// byte-limited store.
    #[must_use]
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.response.heap_weight()
    }
}

/// A record as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A request with this fingerprint holds the key and its handler is running.
    InFlight {
        /// The fingerprint of the request that holds the claim.
        fingerprint: Fingerprint,
    },
    /// A request completed; its response is kept for replay.
    Done(Arc<Completed>),
}

impl Record {
    /// The fingerprint of the request that created the record.
    #[must_use]
    pub fn fingerprint(&self) -> &Fingerprint {
        match self {
            Self::InFlight { fingerprint } => fingerprint,
            Self::Done(completed) => &completed.fingerprint,
        }
    }
}

/// The outcome of [`IdempotencyStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free, or already held by this very token, and is now claimed by the caller:
    /// run the handler.
    Fresh,
    /// Another request already holds or completed the key.
    Existing(Record),
}

/// The outcome of [`IdempotencyStore::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The response is stored and will be replayed.
    Stored,
    /// The claim's lease ran out and another request took the key over: nothing was written.
    LeaseLost,
}

/// A store failed or could not be reached.
///
/// The request is answered `503 Service Unavailable` and its handler is not run: without a claim
/// there is no guarantee against a second execution, so the layer fails closed.
#[derive(Debug, thiserror::Error)]
#[error("{message}{}", .source.as_ref().map(|source| format!(": {source}")).unwrap_or_default())]
pub struct StoreError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A store error with a message of its own.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A store error caused by `source` (a connection error, a driver error).
    #[must_use]
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// The storage behind idempotency: atomic claims, compare-and-set completion, release, lookup.
///
/// Every operation must be atomic with respect to the others on the same [`StoreKey`], across
/// every process that shares the store. A store never interprets the response it keeps.
///
/// # Writing a store
///
/// A store outside this crate (DynamoDB, another database) implements the five operations with
/// the rules in the [module docs](self), and passes the contract tests this crate runs against
/// its own stores. Keep the [`ClaimToken`] the runtime hands to `claim` with the in-flight record:
/// it is what `complete`, `release` and a repeated `claim` compare. A store that keeps bytes
/// encodes the response with [`StoredResponse::encode`] and keeps the fingerprint and the
/// request digest beside it.
///
/// [`Any`] is a supertrait so that the runtime can recognise a store it has more to do with (the
/// Postgres store lends its claim's transaction to the handler); every `'static` type already
/// implements it, so it asks nothing of an implementation.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use idem_runtime::fingerprint::Fingerprint;
/// use idem_runtime::key::IdempotencyKey;
/// use idem_runtime::replay::StoredResponse;
/// use idem_runtime::scope::Scope;
/// use idem_runtime::store::{
///     Claim, ClaimToken, Completed, Completion, IdempotencyStore, MemoryStore, Record, StoreKey,
/// };
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryStore::default();
/// let key = StoreKey::new(Scope::ANONYMOUS, IdempotencyKey::parse(b"k1", 255).unwrap());
/// let fp = Fingerprint::from_bytes([7; 32]);
/// let lease = Duration::from_secs(60);
///
/// let token = ClaimToken::random();
/// assert_eq!(store.claim(&key, &fp, token, lease).await.unwrap(), Claim::Fresh);
/// // Another request finds the claim; the same one (a repeated call) recognises its own.
/// let other = store.claim(&key, &fp, ClaimToken::random(), lease).await.unwrap();
/// assert_eq!(other, Claim::Existing(Record::InFlight { fingerprint: fp }));
/// assert_eq!(store.claim(&key, &fp, token, lease).await.unwrap(), Claim::Fresh);
///
/// let response = StoredResponse::new(http::StatusCode::CREATED, &http::HeaderMap::new(), "{}".into());
/// let completed = Arc::new(Completed { fingerprint: fp, request_digest: None, response });
/// let done = store.complete(&key, token, completed, Duration::from_secs(3600)).await.unwrap();
/// assert_eq!(done, Completion::Stored);
/// assert!(matches!(store.lookup(&key).await.unwrap(), Some(Record::Done(_))));
/// # });
/// ```
#[async_trait]
pub trait IdempotencyStore: Any + Send + Sync + 'static {
    /// Claims `key` under `token` for a request with `fingerprint`, for at most `lease`.
    ///
    /// Returns [`Claim::Fresh`] when no record exists (or the existing in-flight record's lease
    /// has run out), or when the in-flight record already carries `token` (the same request
    /// claiming again; its lease starts anew), and the existing record otherwise. Must be atomic:
    /// of any number of concurrent claims with different tokens on a free key, exactly one is
    /// fresh.
    async fn claim(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<Claim, StoreError>;

    /// Stores `completed` as the result of the claim `token`, to be kept for `ttl`.
    ///
    /// Writes only if the record is still in flight under `token`, or no record exists (the lease
    /// lapsed and nobody claimed the key since: keeping the result then saves a second execution).
    /// If another request holds the key, writes nothing and returns [`Completion::LeaseLost`].
    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError>;

    /// Deletes the in-flight record of the claim `token`, so that the next request runs the
    /// handler again. Does nothing if the record is gone or belongs to another claim.
    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError>;

    /// Reads the record of `key`, if any (an in-flight record past its lease counts as none).
    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError>;

    /// Reads the completed record of `key` if the store can answer at once, from this process's
    /// memory, without I/O; `None` when it cannot (the default) or holds none.
    ///
    /// A hint, never a decision: the layer uses it only to answer a retry that repeats a completed
    /// request byte for byte before parsing its body again, and goes through
    /// [`claim`](Self::claim) whenever it returns `None`. A store without a local copy of its
    /// records keeps the default; a store that wraps another (for metrics, tracing or faults)
    /// forwards it, or the requests it serves lose the byte-identical replay.
    fn peek(&self, key: &StoreKey) -> Option<Arc<Completed>> {
        let _ = key;
        None
    }

    /// The same store's claim, completion and release as plain calls, if it answers them at once
    /// from this process's memory; `None` (the default) for a store that waits on I/O.
    ///
    /// The runtime then calls them in place of [`claim`](Self::claim),
    /// [`complete`](Self::complete) and [`release`](Self::release): a request whose handler does
    /// not wait is claimed, run and completed within one poll, with no future boxed for the
    /// store, no store timeout armed, and no task spawned to protect the exchange from a client
    /// that goes away (nothing can be cut short between two calls that do not wait). The
    /// [`ImmediateStore`] methods must follow the same rules as the asynchronous ones and see the
    /// same records. A store that wraps another keeps the default unless it forwards every call.
    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        None
    }
}

/// The operations of a store that answers without waiting (see
/// [`IdempotencyStore::immediate`]): each follows the rules of its asynchronous twin.
///
/// [`MemoryStore`] implements it.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::fingerprint::Fingerprint;
/// use idem_runtime::key::IdempotencyKey;
/// use idem_runtime::scope::Scope;
/// use idem_runtime::store::{Claim, ClaimToken, IdempotencyStore, MemoryStore, StoreKey};
///
/// let store = MemoryStore::default();
/// let now = store.immediate().expect("the memory store answers at once");
/// let key = StoreKey::new(Scope::ANONYMOUS, IdempotencyKey::parse(b"k1", 255).unwrap());
/// let token = ClaimToken::random();
/// let claim = now.claim_now(&key, &Fingerprint::from_bytes([7; 32]), token, Duration::from_secs(60));
/// assert_eq!(claim.unwrap(), Claim::Fresh);
/// now.release_now(&key, token).unwrap();
/// ```
pub trait ImmediateStore: Send + Sync {
    /// [`IdempotencyStore::claim`], answered at once.
    ///
    /// # Errors
    ///
    /// The store failed; the request is answered `503`.
    fn claim_now(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<Claim, StoreError>;

    /// [`IdempotencyStore::complete`], answered at once.
    ///
    /// # Errors
    ///
    /// The store failed; the runtime retries in the background, as for `complete`.
    fn complete_now(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError>;

    /// [`IdempotencyStore::release`], answered at once.
    ///
    /// # Errors
    ///
    /// The store failed; the runtime retries in the background, as for `release`.
    fn release_now(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError>;
}
