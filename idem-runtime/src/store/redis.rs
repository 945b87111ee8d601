//! The shared store: Redis, so that every instance of a service sees the same claims and results.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Script, Value};
use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;

use super::{Claim, ClaimToken, Completion, IdempotencyStore, Record, StoreError, StoreKey};
use crate::fingerprint::Fingerprint;
use crate::replay::StoredResponse;

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

const STATE_IN_FLIGHT: &[u8] = b"in_flight";
const STATE_DONE: &[u8] = b"done";

/// Creates the in-flight record if the key is free; otherwise answers the existing record, its
/// remaining time to live in milliseconds first.
///
/// KEYS[1] record; ARGV[1] version, ARGV[2] token, ARGV[3] fingerprint, ARGV[4] lease (ms).
const CLAIM: &str = r"
local record = redis.call('HGETALL', KEYS[1])
if #record == 0 then
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'state', 'in_flight', 'token', ARGV[2], 'fp', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 1
end
table.insert(record, 1, redis.call('PTTL', KEYS[1]))
return record
";

/// Replaces the record with the done one if it is still in flight under this token, or if there is
/// no record at all (the lease lapsed and nobody claimed the key since). Answers 1 when written.
///
/// KEYS[1] record; ARGV[1] version, ARGV[2] token, ARGV[3] fingerprint, ARGV[4] response,
/// ARGV[5] TTL (ms).
const COMPLETE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'state', 'done', 'fp', ARGV[3], 'response', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

/// Deletes the record if it is in flight under this token.
///
/// KEYS[1] record; ARGV[1] token.
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Answers the record, its remaining time to live in milliseconds first, or an empty array.
///
/// KEYS[1] record.
const LOOKUP: &str = r"
local record = redis.call('HGETALL', KEYS[1])
if #record == 0 then
  return record
end
table.insert(record, 1, redis.call('PTTL', KEYS[1]))
return record
";

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
/// | `response` | — | [`StoredResponse::encode`] bytes (versioned themselves) |
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
/// # Local tier
///
/// Optionally ([`RedisStoreBuilder::local_tier`]), completed records this instance has seen are
/// also kept in a small in-process moka cache, bounded in bytes, until their TTL runs out. A
/// completed record never changes, so a replay served from it is the one Redis would give; it
/// only skips the network.
///
/// It is **off by default**, decided from the `redis_local_tier` bench (criterion, a throw-away
/// `redis-server` on a unix socket, a busy 2-core machine; medians):
///
/// | replay (a `claim` that finds the done record) | 44-byte body | 16 KiB body |
/// |---|---|---|
/// | `RedisStore` | 104 µs | 298 µs |
/// | `RedisStore` with the local tier | 1.1 µs | 1.4 µs |
/// | `MemoryStore`, for reference | 4.0 µs | 3.7 µs |
///
/// A claim of a new key is not slowed by the tier (it misses, and goes to Redis as before). So a
/// tier hit saves one Redis round trip — a fraction of a millisecond on loopback, a network round
/// trip in production — and only for retries that land on an instance that has already seen the
/// record. Retries are a small share of traffic, so the saving rarely shows; the costs are memory
/// in every instance and that a key deleted by hand in Redis is still replayed by the instances
/// that keep it, until its TTL. Switch it on for services that replay a lot (clients that retry
/// aggressively, hot keys) with [`RedisStoreBuilder::local_tier`].
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
    connection: ConnectionManager,
    prefix: Arc<str>,
    local: Option<Cache<StoreKey, Arc<Kept>>>,
    scripts: Arc<Scripts>,
}

struct Scripts {
    claim: Script,
    complete: Script,
    release: Script,
    lookup: Script,
}

/// A completed record held by the local tier.
struct Kept {
    fingerprint: Fingerprint,
    response: Arc<StoredResponse>,
    expires_at: Instant,
    weight: u32,
}

struct KeptExpiry;

impl Expiry<StoreKey, Arc<Kept>> for KeptExpiry {
    fn expire_after_create(
        &self,
        _: &StoreKey,
        kept: &Arc<Kept>,
        now: Instant,
    ) -> Option<Duration> {
        Some(kept.expires_at.saturating_duration_since(now))
    }
}

impl RedisStore {
    /// A builder: name the server with [`url`](RedisStoreBuilder::url) or
    /// [`client`](RedisStoreBuilder::client), then [`build`](RedisStoreBuilder::build).
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder {
            target: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            local_tier: None,
        }
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

    async fn keep(
        &self,
        key: &StoreKey,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) {
        let Some(local) = &self.local else { return };
        if ttl.is_zero() {
            return;
        }
        let weight =
            u32::try_from(response.weight() + key.key().as_str().len() + 160).unwrap_or(u32::MAX);
        let kept = Kept {
            fingerprint,
            response,
            expires_at: Instant::now() + ttl,
            weight,
        };
        local.insert(key.clone(), Arc::new(kept)).await;
    }

    async fn kept(&self, key: &StoreKey) -> Option<Record> {
        let kept = self.local.as_ref()?.get(key).await?;
        (Instant::now() < kept.expires_at).then(|| Record::Done {
            fingerprint: kept.fingerprint,
            response: Arc::clone(&kept.response),
        })
    }

    /// Reads a record answered by the claim or lookup script, and keeps it in the local tier if it
    /// is done.
    async fn read_record(&self, key: &StoreKey, values: Vec<Value>) -> Result<Record, StoreError> {
        let (record, ttl) = decode_record(values).map_err(|reason| {
            StoreError::new(format!(
                "unreadable record at {}: {reason}",
                self.redis_key(key)
            ))
        })?;
        if let (
            Record::Done {
                fingerprint,
                response,
            },
            Some(ttl),
        ) = (&record, ttl)
        {
            self.keep(key, *fingerprint, Arc::clone(response), ttl)
                .await;
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

/// Builds a [`RedisStore`].
#[must_use]
pub struct RedisStoreBuilder {
    target: Option<Target>,
    prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    local_tier: Option<u64>,
}

enum Target {
    Url(String),
    Client(Client),
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("local_tier", &self.local_tier)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The server, as a redis-rs URL: `redis://[:password@]host[:port][/db]`, or
    /// `redis+unix:///path/to/socket` for a unix socket. (TLS, `rediss://`, is not enabled.)
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.target = Some(Target::Url(url.into()));
        self
    }

    /// The server, as a client of the [`redis`](https://docs.rs/redis/1) crate (version 1) built
    /// by the application.
    pub fn client(mut self, client: Client) -> Self {
        self.target = Some(Target::Client(client));
        self
    }

    /// The prefix of every key (default [`DEFAULT_PREFIX`], `idem:`). Services sharing one Redis
    /// use different prefixes to keep their keys apart.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one attempt to connect may take (default [`DEFAULT_CONNECT_TIMEOUT`], 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one command may wait for an answer (default [`DEFAULT_RESPONSE_TIMEOUT`], 1 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Keeps completed records in an in-process tier of at most `max_bytes` (response sizes plus
    /// a fixed overhead per record), so that replays of them skip Redis; `0` switches it off, as
    /// is the default. See [`RedisStore`]'s *Local tier* for the trade-off and
    /// [`DEFAULT_LOCAL_TIER_BYTES`] for a starting size.
    pub fn local_tier(mut self, max_bytes: u64) -> Self {
        self.local_tier = (max_bytes > 0).then_some(max_bytes);
        self
    }

    /// Connects and answers the store.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when neither a URL nor a client was given, the URL is invalid, a timeout is
    /// zero, or Redis cannot be reached now (a service should not start with its idempotency store
    /// unreachable; once running, it rides out outages as described on [`RedisStore`]).
    pub async fn build(self) -> Result<RedisStore, StoreError> {
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(StoreError::new(
                "Redis connect and response timeouts must be longer than zero",
            ));
        }
        let client = match self.target {
            Some(Target::Client(client)) => client,
            Some(Target::Url(url)) => Client::open(url.as_str())
                .map_err(|e| StoreError::with_source(format!("invalid Redis URL {url:?}"), e))?,
            None => return Err(StoreError::new("RedisStore needs a URL or a client")),
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| StoreError::with_source("could not connect to Redis", e))?;
        let local = self.local_tier.map(|max_bytes| {
            Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_: &StoreKey, kept: &Arc<Kept>| kept.weight)
                .expire_after(KeptExpiry)
                .build()
        });
        Ok(RedisStore {
            connection,
            prefix: self.prefix.into(),
            local,
            scripts: Arc::new(Scripts {
                claim: Script::new(CLAIM),
                complete: Script::new(COMPLETE),
                release: Script::new(RELEASE),
                lookup: Script::new(LOOKUP),
            }),
        })
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
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        if let Some(record) = self.kept(key).await {
            return Ok(Claim::Existing(record));
        }
        let token = ClaimToken::random();
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
            Value::Int(1) => Ok(Claim::Fresh(token)),
            Value::Array(values) => Ok(Claim::Existing(self.read_record(key, values).await?)),
            other => Err(StoreError::new(format!(
                "unexpected answer to a claim: {other:?}"
            ))),
        }
    }

    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        fingerprint: &Fingerprint,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        let written: i64 = self
            .scripts
            .complete
            .key(self.redis_key(key))
            .arg(RECORD_VERSION)
            .arg(token.to_string())
            .arg(fingerprint.to_string())
            .arg(response.encode())
            .arg(millis(ttl))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| redis_failed("complete", e))?;
        if written == 1 {
            self.keep(key, *fingerprint, Arc::new(response.clone()), ttl)
                .await;
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
        if let Some(record) = self.kept(key).await {
            return Ok(Some(record));
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
        self.read_record(key, values).await.map(Some)
    }
}

/// Reads `[pttl, field, value, field, value, …]` into a record and its remaining time to live
/// (`None` when Redis reports no expiry).
fn decode_record(values: Vec<Value>) -> Result<(Record, Option<Duration>), String> {
    let mut values = values.into_iter();
    let ttl = match values.next() {
        Some(Value::Int(ms)) => u64::try_from(ms).ok().map(Duration::from_millis),
        other => return Err(format!("expected the time to live first, found {other:?}")),
    };
    let mut version = None;
    let mut state = None;
    let mut fingerprint = None;
    let mut response = None;
    while let Some(field) = values.next() {
        let (Value::BulkString(field), Some(Value::BulkString(value))) = (field, values.next())
        else {
            return Err("malformed field list".to_owned());
        };
        match field.as_slice() {
            b"v" => version = Some(value),
            b"state" => state = Some(value),
            b"fp" => fingerprint = Some(value),
            b"response" => response = Some(value),
            _ => {}
        }
    }
    let version = version.ok_or("no format version")?;
    if version != RECORD_VERSION.as_bytes() {
        return Err(format!(
            "record format version {:?}, this build reads only version {RECORD_VERSION}",
            String::from_utf8_lossy(&version)
        ));
    }
    let fingerprint = fingerprint.ok_or("no fingerprint")?;
    let fingerprint = Fingerprint::from_bytes(hex32(&fingerprint).ok_or("malformed fingerprint")?);
    let record = match state.as_deref() {
        Some(STATE_IN_FLIGHT) => Record::InFlight { fingerprint },
        Some(STATE_DONE) => {
            let bytes = response.ok_or("done without a response")?;
            let response = StoredResponse::decode(&bytes).map_err(|e| e.to_string())?;
            Record::Done {
                fingerprint,
                response: Arc::new(response),
            }
        }
        Some(other) => {
            return Err(format!(
                "unknown state {:?}",
                String::from_utf8_lossy(other)
            ));
        }
        None => return Err("no state".to_owned()),
    };
    Ok((record, ttl))
}

/// 64 lowercase or uppercase hex digits as 32 bytes.
fn hex32(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn fields(version: &str, state: &str) -> Vec<Value> {
        vec![
            Value::Int(5000),
            bulk("v"),
            bulk(version),
            bulk("state"),
            bulk(state),
            bulk("fp"),
            bulk(&Fingerprint::from_bytes([9; 32]).to_string()),
            bulk("token"),
            bulk(&ClaimToken::from_u128(1).to_string()),
        ]
    }

    #[test]
    fn reads_an_in_flight_record_and_its_ttl() {
        let (record, ttl) = decode_record(fields("1", "in_flight")).unwrap();
        assert_eq!(
            record,
            Record::InFlight {
                fingerprint: Fingerprint::from_bytes([9; 32])
            }
        );
        assert_eq!(ttl, Some(Duration::from_secs(5)));
    }

    #[test]
    fn refuses_an_unknown_version_state_or_a_bad_fingerprint() {
        assert!(
            decode_record(fields("2", "in_flight"))
                .unwrap_err()
                .contains("version")
        );
        assert!(
            decode_record(fields("1", "paused"))
                .unwrap_err()
                .contains("state")
        );
        let mut bad = fields("1", "in_flight");
        bad[6] = bulk("zz");
        assert!(decode_record(bad).unwrap_err().contains("fingerprint"));
        assert!(decode_record(vec![bulk("v")]).is_err());
    }

    #[test]
    fn refuses_a_done_record_whose_response_does_not_decode() {
        let mut done = fields("1", "done");
        done.extend([bulk("response"), Value::BulkString(vec![99, 0, 1])]);
        assert!(decode_record(done).unwrap_err().contains("unreadable"));
    }

    #[test]
    fn rounds_durations_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::from_nanos(1)), 1);
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::MAX), 100 * 365 * 24 * 3600 * 1000);
    }
}
