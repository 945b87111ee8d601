//! The default store, in process: in-flight claims in a sharded table of their own, completed
//! records in a moka cache bounded in bytes.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::num::NonZero;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::completed::{CompletedCache, KeyHasher, deadline};
use super::{
    Claim, ClaimToken, Completed, Completion, IdempotencyStore, ImmediateStore, Record, StoreError,
    StoreKey,
};
use crate::fingerprint::Fingerprint;

/// The default byte bound of a [`MemoryStore`]: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// An in-process store: zero set-up, one process.
///
/// - **Completed records in a [moka](https://docs.rs/moka) cache, bounded in bytes.** Each record
///   weighs its key, headers and body plus a fixed overhead ([`Completed::weight`]); when the
///   total passes [`max_bytes`](MemoryStoreBuilder::max_bytes) (default 64 MiB) the least recently
///   used records are evicted. An evicted completed record means a late retry runs the handler
///   again, so size the bound for your TTL and traffic, or use a shared store. A record expires
///   after its TTL, counted from completion: it is never answered after it, and its memory is
///   reused when its key completes again or newer records push it out. The store holds up to its
///   bound, whatever the TTLs.
/// - **In-flight claims in a table of their own**, split into shards with a mutex each. A claim
///   expires after its lease. Claims are not counted against `max_bytes`: there is one per request
///   whose handler is running, so their number is bounded by the service's concurrency. A claim
///   whose lease ran out and that nobody claims again (its request's task died) is dropped the next
///   time its shard grows to twice its size.
/// - **Atomic per key.** Claim, completion and release each decide under the lock of the key's
///   shard, held only for that synchronous decision, never across an `.await`; a completion moves
///   the key from the claim table into the cache while holding it, so no claim can find the key in
///   neither. A lookup or [`peek`](IdempotencyStore::peek) of a completed key is answered from
///   the cache without the lock.
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
    done: CompletedCache,
    claims: Arc<ClaimTable>,
    max_bytes: u64,
}

/// A claim whose handler is running (or whose lease ran out).
#[derive(Debug)]
struct InFlight {
    token: ClaimToken,
    fingerprint: Fingerprint,
    lease_ends: Instant,
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

    /// The total weight of the completed records held, in bytes, once pending evictions have run;
    /// records past their TTL count until they are evicted. In-flight claims are not counted.
    #[must_use]
    pub fn weighted_size(&self) -> u64 {
        self.done.weighted_size()
    }

    /// The number of completed records held, once pending evictions have run; records past their
    /// TTL count until they are evicted. In-flight claims are not counted.
    #[must_use]
    pub fn entry_count(&self) -> u64 {
        self.done.entry_count()
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
        MemoryStore {
            done: CompletedCache::new(self.max_bytes),
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
        token: ClaimToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.claim_now(key, fingerprint, token, lease)
    }

    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        self.complete_now(key, token, completed, ttl)
    }

    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        self.release_now(key, token)
    }

    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        if let Some(done) = self.done.get(key) {
            return Ok(Some(Record::Done(done)));
        }
        let now = Instant::now();
        let claims = self.claims.lock(key);
        if let Some(held) = claims.live(key, now) {
            return Ok(Some(Record::InFlight {
                fingerprint: held.fingerprint,
            }));
        }
        Ok(self.done.get_at(key, now).map(Record::Done))
    }

    fn peek(&self, key: &StoreKey) -> Option<Arc<Completed>> {
        self.done.get(key)
    }

    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        Some(self)
    }
}

impl ImmediateStore for MemoryStore {
    fn claim_now(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        // One look at each table, under the shard's lock: a completion moves its key from the
        // claim table into the cache under that lock, so none is missed between the two looks.
        // (The cache is looked at second, since a live claim makes its answer moot; a completed
        // key whose claim is gone is found there.)
        let now = Instant::now();
        let mut claims = self.claims.lock(key);
        if let Some(held) = claims.live(key, now)
            && held.token != token
        {
            return Ok(Claim::Existing(Record::InFlight {
                fingerprint: held.fingerprint,
            }));
        }
        if let Some(done) = self.done.get_at(key, now) {
            return Ok(Claim::Existing(Record::Done(done)));
        }
        let held = InFlight {
            token,
            fingerprint: *fingerprint,
            lease_ends: deadline(now, lease),
        };
        // Replaces a claim whose lease ran out, or this token's own, if there is one.
        claims.insert(key.clone(), held, now);
        Ok(Claim::Fresh)
    }

    fn complete_now(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        let now = Instant::now();
        let mut claims = self.claims.lock(key);
        let ours = match claims.map.get(key) {
            Some(held) if held.token == token => true,
            Some(held) if now < held.lease_ends => false,
            // The lease lapsed (ours or a later claim's) and nobody holds the key: the result is
            // kept, unless another request completed it meanwhile.
            _ => self.done.get_at(key, now).is_none(),
        };
        if !ours {
            return Ok(Completion::LeaseLost);
        }
        // Both steps happen under the shard's lock, which every claim of the key takes before it
        // looks at the claim table: none sees the key between them.
        let key = claims.remove(key).unwrap_or_else(|| key.clone());
        self.done.insert(key, completed, now, ttl);
        Ok(Completion::Stored)
    }

    fn release_now(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        let mut claims = self.claims.lock(key);
        if claims.map.get(key).is_some_and(|held| held.token == token) {
            claims.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::IdempotencyKey;
    use crate::replay::StoredResponse;
    use crate::scope::Scope;

    fn key(name: &str) -> StoreKey {
        StoreKey::new(
            Scope::ANONYMOUS,
            IdempotencyKey::parse(name.as_bytes(), 255).unwrap(),
        )
    }

    const FP: Fingerprint = Fingerprint::from_bytes([1; 32]);

    fn completed(status: http::StatusCode) -> Arc<Completed> {
        Arc::new(Completed {
            fingerprint: FP,
            request_digest: None,
            response: StoredResponse::new(status, &http::HeaderMap::new(), "{}".into()),
        })
    }

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
                        ClaimToken::random(),
                        Duration::from_millis(1),
                    )
                    .await
                    .unwrap();
                assert_eq!(claim, Claim::Fresh);
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
        let completed = completed(http::StatusCode::OK);
        for i in 0..100 {
            let k = key(&format!("c-{i}"));
            let token = ClaimToken::random();
            let claim = store.claim(&k, &FP, token, Duration::from_secs(60)).await;
            assert_eq!(claim.unwrap(), Claim::Fresh);
            if i % 2 == 0 {
                let done = store
                    .complete(&k, token, Arc::clone(&completed), Duration::from_secs(60))
                    .await
                    .unwrap();
                assert_eq!(done, Completion::Stored);
            } else {
                store.release(&k, token).await.unwrap();
            }
        }
        assert_eq!(store.in_flight_len(), 0);
        assert_eq!(store.entry_count(), 50);
    }

    #[tokio::test]
    async fn peek_answers_completed_records_only() {
        let store = MemoryStore::default();
        let k = key("peeked");
        assert_eq!(store.peek(&k), None);
        let token = ClaimToken::random();
        let claim = store.claim(&k, &FP, token, Duration::from_secs(60)).await;
        assert_eq!(claim.unwrap(), Claim::Fresh);
        assert_eq!(store.peek(&k), None, "an in-flight claim is not peeked");
        let completed = completed(http::StatusCode::CREATED);
        store
            .complete(&k, token, Arc::clone(&completed), Duration::from_secs(60))
            .await
            .unwrap();
        let peeked = store.peek(&k).expect("a completed record is peeked");
        assert!(Arc::ptr_eq(&peeked, &completed), "the very record stored");
    }
}
