//! Where claims and results live: the [`IdempotencyStore`] trait and its implementations.
//!
//! A store keeps one record per [`StoreKey`] (a caller's [`Scope`] and the [`IdempotencyKey`] it
//! sent). A record is either *in flight* — claimed by a request whose handler is running, with a
//! lease — or *done*, holding the [`StoredResponse`] to replay until its TTL runs out. The four
//! operations are what any shared store can do atomically:
//!
//! | operation | atomic rule |
//! |---|---|
//! | [`claim`](IdempotencyStore::claim) | create an in-flight record with a fresh [`ClaimToken`] if none exists (or the existing one's lease ran out); otherwise return the existing record |
//! | [`complete`](IdempotencyStore::complete) | replace the in-flight record with the done one, only if the record still holds this token (or has lapsed and nobody claimed it since) |
//! | [`release`](IdempotencyStore::release) | delete the record, only if it still holds this token |
//! | [`lookup`](IdempotencyStore::lookup) | read the record |
//!
//! [`MemoryStore`] (moka, one process) is the default. With the `redis` feature, `RedisStore` shares
//! claims and results between every instance of a service. Other stores — Postgres, DynamoDB —
//! implement the same trait outside this crate; the record format they need is
//! [`StoredResponse::encode`] / [`StoredResponse::decode`].
//!
//! [`Scope`]: crate::scope::Scope
//! [`IdempotencyKey`]: crate::key::IdempotencyKey

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::memory::{DEFAULT_MAX_BYTES, MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "redis")]
pub use self::redis::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_LOCAL_TIER_BYTES, DEFAULT_PREFIX, DEFAULT_RESPONSE_TIMEOUT,
    RedisStore, RedisStoreBuilder,
};
use crate::fingerprint::Fingerprint;
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
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken(u128);

impl ClaimToken {
    /// A new random token (128 bits from the operating system's generator).
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

/// A record as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A request with this fingerprint holds the key and its handler is running.
    InFlight {
        /// The fingerprint of the request that holds the claim.
        fingerprint: Fingerprint,
    },
    /// A request with this fingerprint completed; its response is kept for replay.
    Done {
        /// The fingerprint of the request that completed.
        fingerprint: Fingerprint,
        /// What its handler answered.
        response: Arc<StoredResponse>,
    },
}

impl Record {
    /// The fingerprint of the request that created the record.
    #[must_use]
    pub fn fingerprint(&self) -> &Fingerprint {
        match self {
            Self::InFlight { fingerprint } | Self::Done { fingerprint, .. } => fingerprint,
        }
    }
}

/// The outcome of [`IdempotencyStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and is now claimed by the caller: run the handler.
    Fresh(ClaimToken),
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
#[derive(Debug)]
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

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// The storage behind idempotency: atomic claims, compare-and-set completion, release, lookup.
///
/// Every operation must be atomic with respect to the others on the same [`StoreKey`], across
/// every process that shares the store. A store never interprets the response it keeps.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::fingerprint::Fingerprint;
/// use idem_runtime::key::IdempotencyKey;
/// use idem_runtime::replay::StoredResponse;
/// use idem_runtime::scope::Scope;
/// use idem_runtime::store::{Claim, Completion, IdempotencyStore, MemoryStore, Record, StoreKey};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryStore::default();
/// let key = StoreKey::new(Scope::ANONYMOUS, IdempotencyKey::parse(b"k1", 255).unwrap());
/// let fp = Fingerprint::from_bytes([7; 32]);
///
/// let Claim::Fresh(token) = store.claim(&key, &fp, Duration::from_secs(60)).await.unwrap() else {
///     panic!("a new key is free");
/// };
/// let again = store.claim(&key, &fp, Duration::from_secs(60)).await.unwrap();
/// assert_eq!(again, Claim::Existing(Record::InFlight { fingerprint: fp }));
///
/// let response = StoredResponse::new(http::StatusCode::CREATED, http::HeaderMap::new(), "{}".into());
/// let done = store.complete(&key, token, &fp, &response, Duration::from_secs(3600)).await.unwrap();
/// assert_eq!(done, Completion::Stored);
/// assert!(matches!(store.lookup(&key).await.unwrap(), Some(Record::Done { .. })));
/// # });
/// ```
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for a request with `fingerprint`, for at most `lease`.
    ///
    /// Returns [`Claim::Fresh`] with a new token when no record exists (or the existing in-flight
    /// record's lease has run out), and the existing record otherwise. Must be atomic: of any
    /// number of concurrent claims on a free key, exactly one is fresh.
    async fn claim(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<Claim, StoreError>;

    /// Stores `response` as the result of the claim `token`, to be kept for `ttl`.
    ///
    /// Writes only if the record is still in flight under `token`, or no record exists (the lease
    /// lapsed and nobody claimed the key since: keeping the result then saves a second execution).
    /// If another request holds the key, writes nothing and returns [`Completion::LeaseLost`].
    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        fingerprint: &Fingerprint,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<Completion, StoreError>;

    /// Deletes the in-flight record of the claim `token`, so that the next request runs the
    /// handler again. Does nothing if the record is gone or belongs to another claim.
    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError>;

    /// Reads the record of `key`, if any (an in-flight record past its lease counts as none).
    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError>;

    /// Reads the record of `key` if the store can answer at once, from this process's memory,
    /// without I/O; `None` when it cannot (the default) or holds no record.
    ///
    /// A hint, never a decision: the layer uses it only to answer a retry that repeats a completed
    /// request byte for byte before parsing its body again, and goes through
    /// [`claim`](Self::claim) whenever it returns `None`. A store without a local copy of its
    /// records keeps the default.
    fn peek(&self, key: &StoreKey) -> Option<Record> {
        let _ = key;
        None
    }
}
