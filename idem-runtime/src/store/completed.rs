//! The completed records a process keeps in its own memory: a [moka](https://docs.rs/moka) cache
//! bounded in bytes, each record answered until its TTL runs out. [`MemoryStore`](super::MemoryStore)
//! keeps its results here, and `RedisStore`'s local tier its copies of Redis's.
//!
//! The TTL is checked when a record is read, not by the cache's own expiry: the cache then keeps
//! no timer-wheel node per record (40 bytes of each small record, measured by the `memory` bench,
//! and work on every insertion and eviction). A record past its TTL is never answered; its memory
//! is reused when the key completes again, or when newer records push it out of the bound, least
//! recently used first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::{Completed, StoreKey};

/// The fixed cost of a completed record beyond its key's text and [`Completed::weight`]: the
/// cache's own entry (its hash-table bucket, the shared key, the access-order node), the entry's
/// expiry, the `Arc` around the record and the allocator's rounding. Measured with a counting
/// allocator by the `memory` bench of this crate, which prints the heap a small record holds
/// (482–487 B) beside the weight it is charged (517 B); the margin covers the cache's table, so that
/// the bound holds: a flood of unique keys ends at 0.96 of it.
const ENTRY_OVERHEAD: usize = 320;

/// How keys are hashed by the cache. A [`StoreKey`] hashes as the one word it carries, computed
/// once from its scope and key with a seed drawn at random per process, so the cache only mixes
/// that word; it does so on every probe and again for every entry when it rehashes its table, and
/// foldhash is cheaper there than std's SipHash.
pub(super) type KeyHasher = foldhash::quality::RandomState;

/// Completed records, bounded in bytes, least recently used evicted first.
#[derive(Clone)]
pub(super) struct CompletedCache {
    cache: Cache<StoreKey, Kept, KeyHasher>,
    /// The instant expiry times are counted from.
    epoch: Instant,
}

/// One record as the cache holds it: cloned out on every hit, so it is an `Arc` and a word.
#[derive(Clone)]
struct Kept {
    completed: Arc<Completed>,
    /// When the TTL runs out, in milliseconds after the cache's epoch.
    expires_at: u64,
}

impl CompletedCache {
    /// A cache that keeps at most `max_bytes` of records, by their weight.
    pub(super) fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &StoreKey, kept: &Kept| weight(key, &kept.completed))
            // Retries come soon after the original: recency is the signal that matters. TinyLFU's
            // admission filter would turn away the newest record, the one most likely needed.
            .eviction_policy(EvictionPolicy::lru())
            .build_with_hasher(KeyHasher::default());
        Self {
            cache,
            epoch: Instant::now(),
        }
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
        let expires_at = self.millis(deadline(now, ttl));
        self.cache.insert(
            key,
            Kept {
                completed,
                expires_at,
            },
        );
    }

    /// The record of `key`, if there is one whose TTL is still running.
    ///
    /// The clock is read only once the key is known to be held: most looks are at keys that are
    /// new, and those cost one probe of the table and nothing else.
    pub(super) fn get(&self, key: &StoreKey) -> Option<Arc<Completed>> {
        if !self.cache.contains_key(key) {
            return None;
        }
        self.fetch(key, Instant::now())
    }

    /// The record of `key`, if there is one whose TTL is still running at `now`.
    pub(super) fn get_at(&self, key: &StoreKey, now: Instant) -> Option<Arc<Completed>> {
        if !self.cache.contains_key(key) {
            return None;
        }
        self.fetch(key, now)
    }

    /// The record of `key`, which was held a moment ago, if its TTL is still running at `now`.
    ///
    /// Most looks at a key that is new find nothing, and a cache `get` that misses still records
    /// the miss for the cache's housekeeping, which it then runs on the caller's time.
    /// `contains_key` records nothing, so the callers probe with it first; only a hit pays for
    /// a `get`, which marks the record as recently used.
    fn fetch(&self, key: &StoreKey, now: Instant) -> Option<Arc<Completed>> {
        let now = self.millis(now);
        self.cache
            .get(key)
            .filter(|kept| now < kept.expires_at)
            .map(|kept| kept.completed)
    }

    /// `at` in whole milliseconds after the epoch. Both the deadline and the time of a read are
    /// rounded down, so a record is never answered after its TTL (it may be forgotten less than
    /// a millisecond early).
    fn millis(&self, at: Instant) -> u64 {
        let after = at.saturating_duration_since(self.epoch);
        u64::try_from(after.as_millis()).unwrap_or(u64::MAX)
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

/// What a record weighs against the bound: its key's text, [`Completed::weight`] and the entry
/// around them.
fn weight(key: &StoreKey, completed: &Completed) -> u32 {
    let bytes = ENTRY_OVERHEAD + key.key().len() + completed.weight();
    u32::try_from(bytes).unwrap_or(u32::MAX)
}
