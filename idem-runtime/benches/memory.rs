//! Memory held by the in-memory store, per stored key, and the byte bound under a flood of keys.
//!
//! Every allocation of this program is counted (a counting global allocator, `stats_alloc`), so
//! the heap a store holds is the difference between the bytes live before and after it was
//! filled. Each key is stored the way a request stores it: a claim, then the completion with a
//! small response (`201`, `content-type: application/json`, a 44-byte JSON body in an allocation of
//! its own, like a captured body).
//!
//! - **Per key**, at 100k and 1M keys in a store large enough to keep them all: the heap held per
//!   key, and the *overhead*: that minus the key's characters, the stored header names and values
//!   and the body bytes. The caller's scope (32 B), the fingerprint (32 B), the expiry and the
//!   cache's own bookkeeping all count as overhead. (Each key's claim is gone from the claim table
//!   once it is completed.) Also: the weight the store
//!   charged the key against its bound, beside the heap it really holds.
//! - **Flood**: 500k unique keys into a store bounded at 16 MiB: the heap it holds once evictions
//!   have run must stay within the bound.
//!
//! `cargo bench -p idem-runtime --bench memory` (`IDEM_BENCH_MEMORY=per_key` or `=flood` runs one
//! part). Without `--bench` (as `cargo test --benches` runs
//! it) it does a quick pass with a few thousand keys.

// A benchmark's report is its output.
#![allow(clippy::print_stdout, missing_docs)]

use std::alloc::System;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::key::IdempotencyKey;
use idem_runtime::replay::StoredResponse;
use idem_runtime::scope::Scope;
use idem_runtime::store::{Claim, ClaimToken, Completed, IdempotencyStore, MemoryStore, StoreKey};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static HEAP: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed, by the whole program. (`stats_alloc` already counts a
/// reallocation's growth as allocated and its shrinking as freed.)
fn live_bytes() -> i64 {
    let stats = HEAP.stats();
    stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
}

const LEASE: Duration = Duration::from_secs(300);
const TTL: Duration = Duration::from_secs(24 * 3600);
const BODY: &str = r#"{"id":"ch_1","amount":1999,"currency":"eur"}"#;
const CONTENT_TYPE: (&str, &str) = ("content-type", "application/json");

/// A 36-character key, as long as a UUID.
fn key(i: u64) -> StoreKey {
    let key = format!("key-{i:032}");
    StoreKey::new(
        Scope::from_identity(b"Bearer sk_test_1"),
        IdempotencyKey::parse(key.as_bytes(), 255).expect("valid"),
    )
}

/// The bytes of a stored key that are the application's own: key, header names and values, body.
fn payload(key: &StoreKey) -> usize {
    key.key().as_str().len() + CONTENT_TYPE.0.len() + CONTENT_TYPE.1.len() + BODY.len()
}

/// Claims and completes `n` keys starting at `first`, the way a request does.
async fn fill(store: &MemoryStore, first: u64, n: u64) {
    let fingerprint = Fingerprint::from_bytes([7; 32]);
    for i in first..first + n {
        let key = key(i);
        let token = ClaimToken::random();
        let claim = store.claim(&key, &fingerprint, token, LEASE).await;
        assert_eq!(claim.expect("claim"), Claim::Fresh, "key {i} is fresh");
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE.0, HeaderValue::from_static(CONTENT_TYPE.1));
        // A body in an allocation of its own, as a captured response body is.
        let body = Bytes::from(BODY.as_bytes().to_vec());
        let completed = Completed {
            fingerprint,
            request_digest: None,
            response: StoredResponse::new(StatusCode::CREATED, &headers, body),
        };
        store
            .complete(&key, token, Arc::new(completed), TTL)
            .await
            .expect("complete");
    }
}

/// The heap that the key and the completed record take by themselves, held the way the store
/// holds them (an owned key, the record behind an `Arc`, its buffer of headers and body): the rest
/// of a record's heap is the cache's entry around them.
fn record_alone() -> i64 {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE.0, HeaderValue::from_static(CONTENT_TYPE.1));
    let before = live_bytes();
    // The captured body is copied into the record's buffer, and freed.
    let body = Bytes::from(BODY.as_bytes().to_vec());
    let held = (
        key(0),
        Arc::new(Completed {
            fingerprint: Fingerprint::from_bytes([7; 32]),
            request_digest: None,
            response: StoredResponse::new(StatusCode::CREATED, &headers, body),
        }),
    );
    let bytes = live_bytes() - before;
    drop(held);
    bytes
}

async fn per_key(n: u64) {
    let before = live_bytes();
    let started = Instant::now();
    let store = MemoryStore::builder().max_bytes(1 << 40).build();
    fill(&store, 0, n).await;
    let entries = store.entry_count();
    let weighted = store.weighted_size();
    let held = live_bytes() - before;
    assert_eq!(entries, n, "a store this large evicts nothing");
    let per_key = held as f64 / n as f64;
    let payload = payload(&key(0)) as f64;
    let record = record_alone() as f64;
    println!(
        "{n:>9} keys  {per_key:>5.0} B/key held  payload {payload:.0} B  overhead {:>4.0} B/key \
         (record and its buffer {:.0}, cache entry {:.0})  weight charged {:>4.0} B/key  ({:.1} s)",
        per_key - payload,
        record - payload,
        per_key - record,
        weighted as f64 / n as f64,
        started.elapsed().as_secs_f64(),
    );
    drop(store);
}

async fn flood(keys: u64, bound: u64) {
    let before = live_bytes();
    let store = MemoryStore::builder().max_bytes(bound).build();
    let mut peak = 0;
    let chunk = keys / 10;
    let mut progress = Vec::new();
    for c in 0..10 {
        fill(&store, (1 << 40) + c * chunk, chunk).await;
        // Evictions run in the store's housekeeping; measure once it has caught up.
        let _ = store.weighted_size();
        let held = live_bytes() - before;
        peak = peak.max(held);
        progress.push(format!("{:.2}", held as f64 / bound as f64));
    }
    println!(
        "flood: heap held / bound after each tenth: {}",
        progress.join(" ")
    );
    let weighted = store.weighted_size();
    let entries = store.entry_count();
    let held = live_bytes() - before;
    println!(
        "flood: {keys} unique keys into a {} MiB store: {entries} kept, weight {weighted} B, heap held {held} B ({:.2} x bound), peak {:.2} x bound",
        bound >> 20,
        held as f64 / bound as f64,
        peak as f64 / bound as f64,
    );
    assert!(weighted <= bound, "the weighed size passed the bound");
    drop(store);
    let after_drop = live_bytes() - before;
    // The concurrent hash table under the cache frees removed entries through deferred garbage
    // collection, which advances as the program keeps using caches: use another one a while.
    let other = MemoryStore::builder().max_bytes(1 << 20).build();
    let probe = key(u64::MAX);
    for _ in 0..200_000 {
        let _ = other.lookup(&probe).await;
    }
    println!(
        "flood: heap still held once the store is dropped: {after_drop} B; after 200k reads of another store: {} B",
        live_bytes() - before
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and gets a quick pass.
    let benching = std::env::args().any(|arg| arg == "--bench");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "memory held by MemoryStore, counted by the global allocator (a record is {} B before its buffer)",
            std::mem::size_of::<Completed>()
        );
        let only = std::env::var("IDEM_BENCH_MEMORY").unwrap_or_default();
        if benching {
            if only != "flood" {
                per_key(100_000).await;
                per_key(1_000_000).await;
            }
            if only != "per_key" {
                flood(500_000, 16 << 20).await;
            }
        } else {
            per_key(5_000).await;
            flood(20_000, 1 << 20).await;
        }
    });
}
