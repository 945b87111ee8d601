//! The default store: an in-process moka cache, bounded in bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use moka::policy::EvictionPolicy;

use super::{Claim, ClaimToken, Completion, IdempotencyStore, Record, StoreError, StoreKey};
use crate::fingerprint::Fingerprint;
use crate::replay::StoredResponse;

/// The default byte bound of a [`MemoryStore`]: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// An in-process store on a [moka](https://docs.rs/moka) cache: zero set-up, one process.
///
/// - **Bounded in bytes.** Each record weighs its key, headers and body plus a fixed overhead
///   ([`StoredResponse::weight`]); when the total passes [`max_bytes`](MemoryStoreBuilder::max_bytes)
///   (default 64 MiB) the least recently used records are evicted. An evicted completed
///   record means a late retry runs the handler again, so size the bound for your TTL and traffic,
///   or use a shared store.
/// - **Per-record expiry.** An in-flight claim expires after its lease, a completed record after its
///   TTL, counted from completion.
/// - **Atomic per key**, without a lock held across an `.await`: every operation is one moka
///   `and_compute_with` on the key.
/// - **One process only.** Several instances of a service each have their own; a retry routed to
///   another instance runs the handler again. Use a shared store (Redis) there.
///
/// ```
/// use idem_runtime::store::MemoryStore;
///
/// let store = MemoryStore::builder().max_bytes(16 * 1024 * 1024).build();
/// assert_eq!(store.max_bytes(), 16 * 1024 * 1024);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<StoreKey, Arc<Slot>, KeyHasher>,
    max_bytes: u64,
}

/// What the cache holds for a key.
#[derive(Debug)]
struct Slot {
    record: Record,
    token: Option<ClaimToken>,
    expires_at: Instant,
    weight: u32,
}

impl Slot {
    fn in_flight(
        key: &StoreKey,
        token: ClaimToken,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Self {
        Self {
            record: Record::InFlight { fingerprint },
            token: Some(token),
            expires_at: deadline(lease),
            weight: weigh(key, 0),
        }
    }

    fn done(
        key: &StoreKey,
        fingerprint: Fingerprint,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Self {
        Self {
            weight: weigh(key, response.weight()),
            record: Record::Done {
                fingerprint,
                response: Arc::new(response.clone()),
            },
            token: None,
            expires_at: deadline(ttl),
        }
    }

    fn is_live(&self) -> bool {
        Instant::now() < self.expires_at
    }
}

fn deadline(after: Duration) -> Instant {
    let now = Instant::now();
    // A TTL too large for the clock is as good as forever.
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// The fixed cost of a record beyond its key and response: the cache's own entry (its hash-table
/// bucket, the shared key, the access-order and timer-wheel nodes), the slot, the `Arc`s around
/// them and the allocator's rounding. Measured with a counting allocator by the `memory` bench of
/// this crate: a small record holds about 910 bytes of heap, of which `StoredResponse::weight` and
/// the key account for about 280; the rest, and a margin for the table itself, is this constant.
const ENTRY_OVERHEAD: usize = 700;

fn weigh(key: &StoreKey, response: usize) -> u32 {
    let bytes = ENTRY_OVERHEAD + key.key.as_str().len() + response;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// How the cache hashes keys. The cache hashes a key on every operation and rehashes its whole
/// table as evictions leave holes in it, so the hash function's speed shows on every request; std's
/// SipHash spent more time there than any other part of a claim. foldhash is several times faster
/// on these 70-byte keys and, seeded at random per store, gives a client no way to predict which
/// keys collide.
type KeyHasher = foldhash::quality::RandomState;

struct SlotExpiry;

impl Expiry<StoreKey, Arc<Slot>> for SlotExpiry {
    fn expire_after_create(
        &self,
        _: &StoreKey,
        slot: &Arc<Slot>,
        now: Instant,
    ) -> Option<Duration> {
        Some(slot.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &StoreKey,
        slot: &Arc<Slot>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.expires_at.saturating_duration_since(now))
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

    /// The total weight of the records held, in bytes, once pending evictions have run.
    pub async fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.weighted_size()
    }

    /// The number of records held, once pending evictions have run.
    pub async fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
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
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

/// Builds a [`MemoryStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    max_bytes: u64,
}

impl MemoryStoreBuilder {
    /// The most bytes the store holds (keys, headers and bodies, plus a fixed overhead per record);
    /// default 64 MiB.
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        let cache = Cache::builder()
            .max_capacity(self.max_bytes)
            .weigher(|_: &StoreKey, slot: &Arc<Slot>| slot.weight)
            .expire_after(SlotExpiry)
            // Retries come soon after the original: recency is the signal that matters. TinyLFU's
            // admission filter would turn away the newest record, the one most likely needed.
            .eviction_policy(EvictionPolicy::lru())
            .build_with_hasher(KeyHasher::default());
        MemoryStore {
            cache,
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
        // A live record answers the claim as it is: a plain read is much cheaper than the
        // per-key computation, and retries (replays, 409s) are what reach this line with a known
        // key. Should the record go away right after the read, the claim simply counts as having
        // happened before that.
        if let Some(slot) = self.cache.get(key).await
            && slot.is_live()
        {
            return Ok(Claim::Existing(slot.record.clone()));
        }
        let token = ClaimToken::random();
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|existing| {
                let op = match existing {
                    Some(entry) if entry.value().is_live() => Op::Nop,
                    _ => Op::Put(Arc::new(Slot::in_flight(key, token, *fingerprint, lease))),
                };
                std::future::ready(op)
            })
            .await;
        Ok(match result {
            CompResult::Inserted(_) | CompResult::ReplacedWith(_) => Claim::Fresh(token),
            CompResult::Unchanged(entry) => Claim::Existing(entry.value().record.clone()),
            CompResult::StillNone(_) | CompResult::Removed(_) => {
                return Err(StoreError::new("moka refused to insert the claim"));
            }
        })
    }

    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        fingerprint: &Fingerprint,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        let result = self
            .cache
            .entry_by_ref(key)
            .and_compute_with(|existing| {
                let ours = match &existing {
                    None => true,
                    Some(entry) => {
                        let slot = entry.value();
                        slot.token == Some(token) || !slot.is_live()
                    }
                };
                std::future::ready(if ours {
                    Op::Put(Arc::new(Slot::done(key, *fingerprint, response, ttl)))
                } else {
                    Op::Nop
                })
            })
            .await;
        Ok(match result {
            CompResult::Inserted(_) | CompResult::ReplacedWith(_) => Completion::Stored,
            _ => Completion::LeaseLost,
        })
    }

    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|existing| {
                std::future::ready(match existing {
                    Some(entry) if entry.value().token == Some(token) => Op::Remove,
                    _ => Op::Nop,
                })
            })
            .await;
        Ok(())
    }

    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        Ok(self
            .cache
            .get(key)
            .await
            .filter(|slot| slot.is_live())
            .map(|slot| slot.record.clone()))
    }
}
