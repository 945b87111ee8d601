//! The shared store: Redis, so that every instance of a service sees the same claims and results.

mod builder;
mod connection;
mod decode;
mod scripts;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::Value;
use async_trait::async_trait;

pub use self::builder::RedisStoreBuilder;
use self::connection::Connection;
use self::decode::decode_record;
use self::scripts::Scripts;
use super::completed::CompletedCache;
use super::{
    Claim, ClaimToken, Completed, Completion, IdempotencyStore, Record, StoreError, StoreKey,
};
use crate::fingerprint::Fingerprint;

/// The key prefix used unless the builder names another: `idem:`.
pub const DEFAULT_PREFIX: &str = "idem:";

/// How long one connection attempt may take by default: 1 second.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one command may wait for Redis's answer by default: 1 second.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The byte bound of the local tier when it is switched on without a size: 8 MiB.
pub const DEFAULT_LOCAL_TIER_BYTES: u64 = 8 * 1024 * 1024;

/// The record format this build writes and the only one it reads.
const RECORD_VERSION: &str = "1";

/// A store on [Redis](https://redis.io): every instance of a service that points at the same
/// Redis (and prefix) shares claims and results, so a retry that lands on another instance is
/// replayed rather than run again.
///
/// # Key layout
///
/// One Redis hash per record, at `<prefix><scope as 64 hex digits>:<key>` (the prefix is
/// [`DEFAULT_PREFIX`], `idem:`, unless [`RedisStoreBuilder::prefix`] names another). Its fields:
///
/// | field | in flight | done |
/// |---|---|---|
/// | `v` | record format version, `1` | `1` |
/// | `state` | `in_flight` | `done` |
/// | `fp` | the request's fingerprint, 64 hex digits | the same |
/// | `token` | the claim's [`ClaimToken`], 32 hex digits | — |
/// | `response` | — | [`StoredResponse::encode`](crate::replay::StoredResponse::encode) bytes (versioned themselves) |
/// | `rq` | — | the [request digest](Completed::request_digest), 64 hex digits, when there is one |
///
/// The hash's Redis expiry is the claim's lease while in flight, and the TTL once done (counted
/// from completion), so Redis forgets both on its own.
///
/// # Atomicity
///
/// Every operation is one Lua script on one key (run with `EVALSHA`, loaded again on its own
/// after a Redis restart), so it is atomic with respect to every other client:
/// claim creates the in-flight record only if the key is free; complete writes the done record
/// only if the record still carries the claim's token (or is gone); release deletes only under
/// the claim's token. A request whose lease ran out and whose key was taken over can therefore
/// never overwrite the new owner's result ([`Completion::LeaseLost`]).
///
/// # Versioned records
///
/// A record whose `v` is not `1`, or whose fields or response bytes do not decode, is never
/// replayed nor overwritten: the operation fails with a [`StoreError`] and the request is
/// answered `503` (fail closed). A record written by a release with another format is thus
/// refused rather than misread: during a rolling upgrade, an instance that cannot read a key's
/// record answers `503` for that key instead of replaying something wrong or running the handler
/// a second time.
///
/// # Failures and timeouts
///
/// Connection attempts and commands are each bounded ([`RedisStoreBuilder::connect_timeout`],
/// [`RedisStoreBuilder::response_timeout`]); the runtime bounds each store call again with
/// [`Settings::store_timeout`](crate::config::Settings::store_timeout). While Redis is unreachable
/// every claim fails and idempotent requests are answered `503` without running their handler.
/// The connection is re-established in the background (redis-rs's `ConnectionManager`), so service
/// resumes on its own once Redis is back. A claim that timed out on this side may still have been
/// applied by a slow Redis: its key then stays in flight until the lease runs out.
///
/// # Redis Cluster
///
/// [`RedisStoreBuilder::cluster`] connects to a Redis Cluster instead of one server. Every
/// operation is one script on one key, so no operation ever spans two slots and no hash tags are
/// needed: records spread over the cluster by their whole key, and each operation is atomic on
/// the node that holds its slot. Redirections during resharding or failover are followed by
/// redis-rs's cluster connection; a write acknowledged by a primary that fails before its replica
/// has it can be lost, as with any Redis replication, which at worst lets a retry run again.
///
/// # Local tier
///
/// Optionally ([`RedisStoreBuilder::local_tier`]), completed records this instance has seen are
/// also kept in a small in-process moka cache, bounded in bytes, until their TTL runs out. A
/// completed record never changes, so a replay served from it is the one Redis would give; it
/// only skips the network.
///
/// It is **off by default**. A claim of a new key is not slowed by the tier (it misses, and goes
/// to Redis as before); a hit saves one Redis round trip — a fraction of a millisecond on
/// loopback, a network round trip in production — and only for retries that land on an instance
/// that has already seen the record (the `redis_local_tier` bench measures both, see
/// BENCHMARKS.md). Retries are a small share of traffic, so the saving rarely shows; the costs
/// are memory in every instance and that a key deleted by hand in Redis is still replayed by the
/// instances that keep it, until its TTL. Switch it on for services that replay a lot (clients
/// that retry aggressively, hot keys) with [`RedisStoreBuilder::local_tier`]. It is the same
/// bounded cache as [`MemoryStore`](super::MemoryStore)'s, weighing records the same way.
///
/// ```no_run
/// use idem_runtime::config::Idempotency;
/// use idem_runtime::store::RedisStore;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::builder()
///     .url("redis://127.0.0.1:6379")
///     .prefix("payments:idem:")
///     .build()
///     .await?;
/// let idempotency = Idempotency::builder().store(store).build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    prefix: Arc<str>,
    local: Option<CompletedCache>,
    scripts: Arc<Scripts>,
}

impl RedisStore {
    /// A builder: name the server with [`url`](RedisStoreBuilder::url) or
    /// [`client`](RedisStoreBuilder::client), then [`build`](RedisStoreBuilder::build).
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder::new()
    }

    /// The prefix of every key this store writes.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether completed records are also kept in the in-process local tier.
    #[must_use]
    pub fn has_local_tier(&self) -> bool {
        self.local.is_some()
    }

    /// The Redis key of a record: `<prefix><scope hex>:<key>`.
    #[must_use]
    pub fn redis_key(&self, key: &StoreKey) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Keeps a completed record in the local tier, if there is one.
    fn keep(&self, key: &StoreKey, completed: &Arc<Completed>, ttl: Duration) {
        if let Some(local) = &self.local
            && !ttl.is_zero()
        {
            local.insert(key.clone(), Arc::clone(completed), Instant::now(), ttl);
        }
    }

    fn kept(&self, key: &StoreKey) -> Option<Arc<Completed>> {
        self.local.as_ref()?.get(key)
    }

    /// Reads a record answered by the claim or lookup script, and keeps it in the local tier if it
    /// is done.
    fn read_record(&self, key: &StoreKey, values: Vec<Value>) -> Result<Record, StoreError> {
        let (record, ttl) = decode_record(values).map_err(|reason| {
            StoreError::new(format!(
                "unreadable record at {}: {reason}",
                self.redis_key(key)
            ))
        })?;
        if let (Record::Done(completed), Some(ttl)) = (&record, ttl) {
            self.keep(key, completed, ttl);
        }
        Ok(record)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("local_tier", &self.local.is_some())
            .finish_non_exhaustive()
    }
}

fn redis_failed(operation: &str, error: ::redis::RedisError) -> StoreError {
    StoreError::with_source(format!("Redis {operation} failed"), error)
}

/// A duration in whole milliseconds for `PEXPIRE`: at least 1, rounded up, at most 100 years.
fn millis(duration: Duration) -> u64 {
    const MAX: u64 = 100 * 365 * 24 * 3600 * 1000;
    let ms = duration.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(MAX).clamp(1, MAX)
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn claim(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        if let Some(completed) = self.kept(key) {
            return Ok(Claim::Existing(Record::Done(completed)));
        }
        let answer: Value = self
            .scripts
            .claim
            .key(self.redis_key(key))
            .arg(RECORD_VERSION)
            .arg(token.to_string())
            .arg(fingerprint.to_string())
            .arg(millis(lease))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| redis_failed("claim", e))?;
        match answer {
            Value::Int(1) => Ok(Claim::Fresh),
            Value::Array(values) => Ok(Claim::Existing(self.read_record(key, values)?)),
            other => Err(StoreError::new(format!(
                "unexpected answer to a claim: {other:?}"
            ))),
        }
    }

    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        let request_digest = completed
            .request_digest
            .map(|digest| hex(digest.as_bytes()))
            .unwrap_or_default();
        let written: i64 = self
            .scripts
            .complete
            .key(self.redis_key(key))
            .arg(RECORD_VERSION)
            .arg(token.to_string())
            .arg(completed.fingerprint.to_string())
            .arg(completed.response.encode())
            .arg(millis(ttl))
            .arg(request_digest)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| redis_failed("complete", e))?;
        if written == 1 {
            self.keep(key, &completed, ttl);
            Ok(Completion::Stored)
        } else {
            Ok(Completion::LeaseLost)
        }
    }

    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        let _deleted: i64 = self
            .scripts
            .release
            .key(self.redis_key(key))
            .arg(token.to_string())
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| redis_failed("release", e))?;
        Ok(())
    }

    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        if let Some(completed) = self.kept(key) {
            return Ok(Some(Record::Done(completed)));
        }
        let values: Vec<Value> = self
            .scripts
            .lookup
            .key(self.redis_key(key))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| redis_failed("lookup", e))?;
        if values.is_empty() {
            return Ok(None);
        }
        self.read_record(key, values).map(Some)
    }

    fn peek(&self, key: &StoreKey) -> Option<Arc<Completed>> {
        self.kept(key)
    }
}

/// Lowercase hexadecimal.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_durations_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::from_nanos(1)), 1);
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::MAX), 100 * 365 * 24 * 3600 * 1000);
    }
}
