//! The completed records a process keeps in its own memory: a [moka](https://docs.rs/moka) cache
//! bounded in bytes, each record expiring after its TTL. [`MemoryStore`](super::MemoryStore) keeps
//! its results here, and `RedisStore`'s local tier its copies of Redis's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::{Completed, StoreKey};

/// The fixed cost of a completed record beyond its key's text and [`Completed::weight`]: the
/// cache's own entry (its hash-table bucket, the shared key, the access-order and timer-wheel
/// nodes), the entry's expiry and weight, the `Arc` around the record and the allocator's
/// rounding. Measured with a counting allocator by the `memory` bench of this crate: a small
/// completed record (a 20-byte key, one header, a 50-byte body) holds about 620 bytes of heap,
/// of which about 415 are the cache's entry and the record around the payload; this constant
/// charges that, and a margin for the table itself, so that the bound holds (a flood of unique
/// keys ends below it).
const ENTRY_OVERHEAD: usize = 400;

/// How keys are hashed by the cache. A [`StoreKey`] hashes as the one word it carries, computed
/// once from its scope and key with a seed drawn at random per process, so the cache only mixes
/// that word; it does so on every probe and again for every entry when it rehashes its table, and
/// foldhash is cheaper there than std's SipHash.
pub(super) type KeyHasher = foldhash::quality::RandomState;

/// Completed records, bounded in bytes, least recently used evicted first.
#[derive(Clone)]
pub(super) struct CompletedCache {
    cache: Cache<StoreKey, Kept, KeyHasher>,
}

/// One record as the cache holds it: cloned out on every hit, so it is an `Arc` and two words.
#[derive(Clone)]
struct Kept {
    completed: Arc<Completed>,
    expires_at: Instant,
    weight: u32,
}

struct KeptExpiry;

impl Expiry<StoreKey, Kept> for KeptExpiry {
    fn expire_after_create(&self, _: &StoreKey, kept: &Kept, now: Instant) -> Option<Duration> {
        Some(kept.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &StoreKey,
        kept: &Kept,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(kept.expires_at.saturating_duration_since(now))
    }
}

impl CompletedCache {
    /// A cache that keeps at most `max_bytes` of records, by their weight.
    pub(super) fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &StoreKey, kept: &Kept| kept.weight)
            .expire_after(KeptExpiry)
            // Retries come soon after the original: recency is the signal that matters. TinyLFU's
            // admission filter would turn away the newest record, the one most likely needed.
            .eviction_policy(EvictionPolicy::lru())
            .build_with_hasher(KeyHasher::default());
        Self { cache }
    }

    /// Keeps `completed` under `key` until `now + ttl` (a TTL too large for the clock is kept as
    /// good as forever).
    pub(super) fn insert(
        &self,
        key: StoreKey,
        completed: Arc<Completed>,
        now: Instant,
        ttl: Duration,
    ) {
        let bytes = ENTRY_OVERHEAD + key.key().as_str().len() + completed.weight();
        let kept = Kept {
            weight: u32::try_from(bytes).unwrap_or(u32::MAX),
            completed,
            expires_at: deadline(now, ttl),
        };
        self.cache.insert(key, kept);
    }

    /// The record of `key`, if there is one.
    ///
    /// Most looks at a key that is new find nothing (a first execution looks several times), and
    /// a cache `get` that misses still records the miss for the cache's housekeeping, which it
    /// then runs on the caller's time. `contains_key` records nothing, so a miss costs one probe
    /// of the table; only a hit pays for a `get`, which marks the record as recently used.
    pub(super) fn get(&self, key: &StoreKey) -> Option<Arc<Completed>> {
        if !self.cache.contains_key(key) {
            return None;
        }
        self.cache.get(key).map(|kept| kept.completed)
    }

    /// The record of `key`, if its TTL is still running at `now`. (The cache drops a record once
    /// its TTL has run out and never returns it after; where no time has been read yet,
    /// [`get`](Self::get) saves reading the clock again.)
    pub(super) fn get_at(&self, key: &StoreKey, now: Instant) -> Option<Arc<Completed>> {
        if !self.cache.contains_key(key) {
            return None;
        }
        self.cache
            .get(key)
            .filter(|kept| now < kept.expires_at)
            .map(|kept| kept.completed)
    }

    /// The total weight held, in bytes, once pending evictions have run.
    pub(super) fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// The number of records held, once pending evictions have run.
    pub(super) fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

/// `now + after`, or a century from now when that is past the clock's range.
pub(super) fn deadline(now: Instant, after: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(after.min(CENTURY))
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}
