//! The default store, in process: in-flight claims in a sharded table of their own, completed
//! records in a moka cache bounded in bytes.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::num::NonZero;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::{Claim, ClaimToken, Completion, IdempotencyStore, Record, StoreError, StoreKey};
use crate::fingerprint::Fingerprint;
use crate::replay::StoredResponse;

/// The default byte bound of a [`MemoryStore`]: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// An in-process store: zero set-up, one process.
///
/// - **Completed records in a [moka](https://docs.rs/moka) cache, bounded in bytes.** Each record
///   weighs its key, headers and body plus a fixed overhead ([`StoredResponse::weight`]); when the
///   total passes [`max_bytes`](MemoryStoreBuilder::max_bytes) (default 64 MiB) the least recently
///   used records are evicted. An evicted completed record means a late retry runs the handler
///   again, so size the bound for your TTL and traffic, or use a shared store. A record expires
///   after its TTL, counted from completion.
/// - **In-flight claims in a table of their own**, split into shards with a mutex each. A claim
///   expires after its lease. Claims are not counted against `max_bytes`: there is one per request
///   whose handler is running, so their number is bounded by the service's concurrency. A claim
///   whose lease ran out and that nobody claims again (its request's task died) is dropped the next
///   time its shard grows to twice its size.
/// - **Atomic per key.** Claim, completion and release each decide under the lock of the key's
///   shard, held only for that synchronous decision, never across an `.await`; a completion moves
///   the key from the claim table into the cache while holding it, so no claim can find the key in
///   neither. A claim or lookup of a completed key is answered from the cache without the lock.
/// - **One process only.** Several instances of a service each have their own; a retry routed to
///   another instance runs the handler again. Use a shared store (Redis) there.
///
/// Clones share the same records.
///
/// ```
/// use idem_runtime::store::MemoryStore;
///
/// let store = MemoryStore::builder().max_bytes(16 * 1024 * 1024).build();
/// assert_eq!(store.max_bytes(), 16 * 1024 * 1024);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    done: Cache<StoreKey, Done, KeyHasher>,
    claims: Arc<ClaimTable>,
    max_bytes: u64,
}

/// A completed record, as the cache holds it.
#[derive(Debug, Clone)]
struct Done {
    fingerprint: Fingerprint,
    response: Arc<StoredResponse>,
    expires_at: Instant,
    weight: u32,
}

impl Done {
    fn new(
        key: &StoreKey,
        fingerprint: Fingerprint,
        response: &StoredResponse,
        now: Instant,
        ttl: Duration,
    ) -> Self {
        Self {
            weight: weigh(key, response.weight()),
            fingerprint,
            response: Arc::new(response.clone()),
            expires_at: deadline(now, ttl),
        }
    }

    fn into_record(self) -> Record {
        Record::Done {
            fingerprint: self.fingerprint,
            response: self.response,
        }
    }
}

/// A claim whose handler is running (or whose lease ran out).
#[derive(Debug)]
struct InFlight {
    token: ClaimToken,
    fingerprint: Fingerprint,
    lease_ends: Instant,
}

fn deadline(now: Instant, after: Duration) -> Instant {
    // A TTL too large for the clock is as good as forever.
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// The fixed cost of a completed record beyond its key and response: the cache's own entry (its
/// hash-table bucket, the shared key, the access-order and timer-wheel nodes), the record with
/// its expiry and fingerprint, the `Arc` around the response and the allocator's rounding.
/// Measured with a counting allocator by the `memory` bench of this crate: a small completed
/// record holds about 790 bytes of heap, of which `StoredResponse::weight` and the key account for
/// about 310; the rest, and a margin for the table itself, is this constant.
const ENTRY_OVERHEAD: usize = 550;

fn weigh(key: &StoreKey, response: usize) -> u32 {
    let bytes = ENTRY_OVERHEAD + key.key().as_str().len() + response;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// How keys are hashed, by the cache, the claim table's maps and its choice of shard. A
/// [`StoreKey`] hashes as the one word it carries, computed once from its scope and key with a
/// seed drawn at random per process, so these tables only mix that word; the cache does so on
/// every probe and again for every entry when it rehashes its table, and foldhash is cheaper
/// there than std's SipHash.
type KeyHasher = foldhash::quality::RandomState;

struct DoneExpiry;

impl Expiry<StoreKey, Done> for DoneExpiry {
    fn expire_after_create(&self, _: &StoreKey, done: &Done, now: Instant) -> Option<Duration> {
        Some(done.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &StoreKey,
        done: &Done,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(done.expires_at.saturating_duration_since(now))
    }
}

/// The in-flight claims: a power-of-two number of shards, each a map under a mutex. A key's shard
/// is chosen from its hash under a seed of the table's own, so that keys of one shard spread over
/// its map as well as over the whole table.
struct ClaimTable {
    hasher: KeyHasher,
    shards: Box<[Shard]>,
}

/// One shard, on cache lines of its own so that threads working on neighbouring shards do not
/// contend for the same line.
#[repr(align(128))]
struct Shard(Mutex<Claims>);

/// Below this many entries a shard is never swept: sweeping so small a map would cost more than
/// the few lapsed entries it could hold.
const SWEEP_FLOOR: usize = 32;

struct Claims {
    map: HashMap<StoreKey, InFlight, KeyHasher>,
    /// The map's length after its last sweep, lowered by removals since: the map is swept when it
    /// grows past twice this, so the cost of a sweep is paid by the insertions that made it due.
    swept_len: usize,
}

impl ClaimTable {
    fn new(shards: usize) -> Self {
        debug_assert!(shards.is_power_of_two());
        Self {
            hasher: KeyHasher::default(),
            shards: (0..shards)
                .map(|_| {
                    Shard(Mutex::new(Claims {
                        map: HashMap::with_hasher(KeyHasher::default()),
                        swept_len: 0,
                    }))
                })
                .collect(),
        }
    }

    /// Four shards per thread the machine runs at once, at least 16: two requests rarely wait
    /// for each other's lock.
    fn default_shards() -> usize {
        let threads = std::thread::available_parallelism().map_or(1, NonZero::get);
        (threads * 4).next_power_of_two().max(16)
    }

    /// Locks the shard of `key`.
    fn lock(&self, key: &StoreKey) -> MutexGuard<'_, Claims> {
        let hash = self.hasher.hash_one(key);
        // The length is a power of two: the mask keeps the hash's low bits.
        let shard = &self.shards[hash as usize & (self.shards.len() - 1)];
        // Every change under the lock is one map operation, so a panic elsewhere while it was held
        // cannot have left the map half-changed.
        shard.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Claims {
    /// The claim of `key`, if its lease is still running at `now`.
    fn live(&self, key: &StoreKey, now: Instant) -> Option<&InFlight> {
        self.map.get(key).filter(|held| now < held.lease_ends)
    }

    fn insert(&mut self, key: StoreKey, held: InFlight, now: Instant) {
        self.map.insert(key, held);
        if self.map.len() > SWEEP_FLOOR.max(2 * self.swept_len) {
            self.sweep(now);
        }
    }

    fn remove(&mut self, key: &StoreKey) -> Option<StoreKey> {
        let removed = self.map.remove_entry(key).map(|(key, _)| key);
        self.swept_len = self.swept_len.min(self.map.len());
        removed
    }

    /// Drops the claims whose lease has run out, and gives back memory the map no longer needs.
    fn sweep(&mut self, now: Instant) {
        self.map.retain(|_, held| now < held.lease_ends);
        let len = self.map.len();
        if self.map.capacity() > 4 * len.max(SWEEP_FLOOR) {
            self.map.shrink_to(2 * len);
        }
        self.swept_len = len;
    }
}

impl MemoryStore {
    /// A builder, to set the byte bound.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// The byte bound.
    #[must_use]
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The total weight of the completed records held, in bytes, once pending evictions have run.
    /// In-flight claims are not counted.
    pub async fn weighted_size(&self) -> u64 {
        self.done.run_pending_tasks();
        self.done.weighted_size()
    }

    /// The number of completed records held, once pending evictions have run. In-flight claims are
    /// not counted.
    pub async fn entry_count(&self) -> u64 {
        self.done.run_pending_tasks();
        self.done.entry_count()
    }

    /// The completed record of `key`, if there is one.
    ///
    /// Most looks at a key that is new find nothing (a first execution looks three times), and a
    /// cache `get` that misses still records the miss for the cache's housekeeping, which it then
    /// runs on the caller's time. `contains_key` records nothing, so a miss costs one probe of
    /// the table; only a hit pays for a `get`, which marks the record as recently used.
    fn done(&self, key: &StoreKey) -> Option<Done> {
        if self.done.contains_key(key) {
            self.done.get(key)
        } else {
            None
        }
    }

    /// The completed record of `key`, if its TTL is still running at `now`. (The cache drops a
    /// record once its TTL has run out, and never returns it after: where no time has been read
    /// yet, [`done`](Self::done) saves reading the clock again.)
    fn done_at(&self, key: &StoreKey, now: Instant) -> Option<Done> {
        self.done(key).filter(|done| now < done.expires_at)
    }

    /// The number of in-flight entries held, lapsed or not.
    #[cfg(test)]
    fn in_flight_len(&self) -> usize {
        self.claims
            .shards
            .iter()
            .map(|shard| {
                shard
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .map
                    .len()
            })
            .sum()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.max_bytes)
            .field("completed", &self.done.entry_count())
            .finish_non_exhaustive()
    }
}

/// Builds a [`MemoryStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    max_bytes: u64,
}

impl MemoryStoreBuilder {
    /// The most bytes the store keeps in completed records (keys, headers and bodies, plus a fixed
    /// overhead per record); default 64 MiB.
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        self.build_with_shards(ClaimTable::default_shards())
    }

    fn build_with_shards(self, shards: usize) -> MemoryStore {
        let done = Cache::builder()
            .max_capacity(self.max_bytes)
            .weigher(|_: &StoreKey, done: &Done| done.weight)
            .expire_after(DoneExpiry)
            // Retries come soon after the original: recency is the signal that matters. TinyLFU's
            // admission filter would turn away the newest record, the one most likely needed.
            .eviction_policy(EvictionPolicy::lru())
            .build_with_hasher(KeyHasher::default());
        MemoryStore {
            done,
            claims: Arc::new(ClaimTable::new(shards)),
            max_bytes: self.max_bytes,
        }
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        // A completed key (every replay, 422) is answered without the lock: a record in the cache
        // is final, whatever the claim table says.
        if let Some(done) = self.done(key) {
            return Ok(Claim::Existing(done.into_record()));
        }
        let now = Instant::now();
        let mut claims = self.claims.lock(key);
        if let Some(held) = claims.live(key, now) {
            return Ok(Claim::Existing(Record::InFlight {
                fingerprint: held.fingerprint,
            }));
        }
        // A completion may have moved the key into the cache since the first look; under the lock
        // no other can.
        if let Some(done) = self.done_at(key, now) {
            return Ok(Claim::Existing(done.into_record()));
        }
        let token = ClaimToken::random();
        let held = InFlight {
            token,
            fingerprint: *fingerprint,
            lease_ends: deadline(now, lease),
        };
        // Replaces a claim whose lease ran out, if there is one.
        claims.insert(key.clone(), held, now);
        Ok(Claim::Fresh(token))
    }

    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        fingerprint: &Fingerprint,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        let now = Instant::now();
        // Built before taking the lock: copying the response is the slow part.
        let done = Done::new(key, *fingerprint, response, now, ttl);
        let mut claims = self.claims.lock(key);
        let ours = match claims.map.get(key) {
            Some(held) if held.token == token => true,
            Some(held) if now < held.lease_ends => false,
            // The lease lapsed (ours or a later claim's) and nobody holds the key: the result is
            // kept, unless another request completed it meanwhile.
            _ => self.done_at(key, now).is_none(),
        };
        if !ours {
            return Ok(Completion::LeaseLost);
        }
        // Both steps happen under the shard's lock, which every claim of the key takes before it
        // looks at the claim table: none sees the key between them.
        let key = claims.remove(key).unwrap_or_else(|| key.clone());
        self.done.insert(key, done);
        Ok(Completion::Stored)
    }

    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        let mut claims = self.claims.lock(key);
        if claims.map.get(key).is_some_and(|held| held.token == token) {
            claims.remove(key);
        }
        Ok(())
    }

    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        if let Some(done) = self.done(key) {
            return Ok(Some(done.into_record()));
        }
        let now = Instant::now();
        let claims = self.claims.lock(key);
        if let Some(held) = claims.live(key, now) {
            return Ok(Some(Record::InFlight {
                fingerprint: held.fingerprint,
            }));
        }
        Ok(self.done_at(key, now).map(Done::into_record))
    }

    fn peek(&self, key: &StoreKey) -> Option<Record> {
        self.done(key).map(Done::into_record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::IdempotencyKey;
    use crate::scope::Scope;

    fn key(name: &str) -> StoreKey {
        StoreKey::new(
            Scope::ANONYMOUS,
            IdempotencyKey::parse(name.as_bytes(), 255).unwrap(),
        )
    }

    const FP: Fingerprint = Fingerprint::from_bytes([1; 32]);

    #[tokio::test]
    async fn lapsed_claims_nobody_takes_over_are_swept() {
        const ROUNDS: usize = 40;
        const PER_ROUND: usize = 200;
        // One shard: every claim lands in the same map, so the bound below is exact.
        let store = MemoryStore::builder().build_with_shards(1);
        let mut most = 0;
        for round in 0..ROUNDS {
            for i in 0..PER_ROUND {
                let claim = store
                    .claim(
                        &key(&format!("k-{round}-{i}")),
                        &FP,
                        Duration::from_millis(1),
                    )
                    .await
                    .unwrap();
                assert!(matches!(claim, Claim::Fresh(_)));
                most = most.max(store.in_flight_len());
            }
            // Every claim of this round lapses before the next round starts.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        // A sweep keeps at most the round under way, and the next one is due at twice that.
        assert!(
            most <= 2 * PER_ROUND.max(SWEEP_FLOOR) + 1,
            "{most} in-flight entries held at once, of {} claims",
            ROUNDS * PER_ROUND
        );
    }

    #[tokio::test]
    async fn completion_and_release_leave_nothing_in_the_claim_table() {
        let store = MemoryStore::default();
        let response =
            StoredResponse::new(http::StatusCode::OK, http::HeaderMap::new(), "{}".into());
        for i in 0..100 {
            let k = key(&format!("c-{i}"));
            let Claim::Fresh(token) = store.claim(&k, &FP, Duration::from_secs(60)).await.unwrap()
            else {
                panic!("fresh key");
            };
            if i % 2 == 0 {
                let done = store
                    .complete(&k, token, &FP, &response, Duration::from_secs(60))
                    .await
                    .unwrap();
                assert_eq!(done, Completion::Stored);
            } else {
                store.release(&k, token).await.unwrap();
            }
        }
        assert_eq!(store.in_flight_len(), 0);
        assert_eq!(store.entry_count().await, 50);
    }

    #[tokio::test]
    async fn peek_answers_completed_records_only() {
        let store = MemoryStore::default();
        let k = key("peeked");
        assert_eq!(store.peek(&k), None);
        let Claim::Fresh(token) = store.claim(&k, &FP, Duration::from_secs(60)).await.unwrap()
        else {
            panic!("fresh key");
        };
        assert_eq!(store.peek(&k), None, "an in-flight claim is not peeked");
        let response = StoredResponse::new(
            http::StatusCode::CREATED,
            http::HeaderMap::new(),
            "{}".into(),
        );
        store
            .complete(&k, token, &FP, &response, Duration::from_secs(60))
            .await
            .unwrap();
        match store.peek(&k) {
            Some(Record::Done {
                fingerprint,
                response: kept,
            }) => assert_eq!((fingerprint, &*kept), (FP, &response)),
            other => panic!("a completed record is peeked, found {other:?}"),
        }
    }
}
