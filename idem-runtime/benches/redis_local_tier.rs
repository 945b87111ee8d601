//! Replays through Redis, with and without the local tier: the measurement behind the tier's
//! default (off).
//!
//! A replay is what a retry of a completed request costs the store: one `claim` that finds the
//! done record. Measured on a throw-away `redis-server` on a unix socket (the best case for the
//! network: a real deployment adds a network round trip to every Redis call, never to a tier hit),
//! for a small response (44-byte JSON body) and a 16 KiB one:
//!
//! - `memory`: the in-process [`MemoryStore`], for reference;
//! - `redis`: [`RedisStore`] without the tier: one Lua script call per replay;
//! - `redis+tier`: [`RedisStore`] with the tier: the replay is served in process.
//!
//! A second group, `fresh_claim`, claims keys never seen before, to show what the tier costs on
//! the path that misses it (a local lookup before the Redis call).
//!
//! `cargo bench -p idem-runtime --features redis --bench redis_local_tier`. Without `--bench` (as
//! `cargo test --benches` runs it) every case runs once.

#![allow(missing_docs)]

#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, StatusCode};
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::key::IdempotencyKey;
use idem_runtime::replay::StoredResponse;
use idem_runtime::scope::Scope;
use idem_runtime::store::{
    Claim, ClaimToken, Completed, IdempotencyStore, MemoryStore, RedisStore, StoreKey,
};
use redis_server::RedisServer;
use tokio::runtime::Runtime;

const LEASE: Duration = Duration::from_secs(300);
const TTL: Duration = Duration::from_secs(3600);
const FINGERPRINT: Fingerprint = Fingerprint::from_bytes([7; 32]);

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

fn fresh_key() -> StoreKey {
    let i = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
    let key = IdempotencyKey::parse(format!("key-{i:012}").as_bytes(), 255).expect("valid");
    StoreKey::new(Scope::from_identity("Bearer sk_test_1"), key)
}

fn response(body_len: usize) -> StoredResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("location", HeaderValue::from_static("/charges/ch_1"));
    let body = if body_len <= 44 {
        Bytes::from_static(br#"{"id":"ch_1","amount":1999,"currency":"eur"}"#)
    } else {
        Bytes::from(vec![b'x'; body_len])
    };
    StoredResponse::new(StatusCode::CREATED, &headers, body)
}

/// A completed key in `store`.
async fn completed(store: &dyn IdempotencyStore, body_len: usize) -> StoreKey {
    let key = fresh_key();
    let token = ClaimToken::random();
    let claim = store.claim(&key, &FINGERPRINT, token, LEASE).await;
    assert_eq!(claim.expect("claim"), Claim::Fresh, "the key is fresh");
    let completed = Completed {
        fingerprint: FINGERPRINT,
        request_digest: None,
        response: response(body_len),
    };
    store
        .complete(&key, token, Arc::new(completed), TTL)
        .await
        .expect("complete");
    key
}

fn main() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stores: Vec<(&str, Arc<dyn IdempotencyStore>)> = rt.block_on(async {
        let redis = RedisStore::builder()
            .url(server.url())
            .build()
            .await
            .expect("connects");
        let tiered = RedisStore::builder()
            .url(server.url())
            .local_tier(64 * 1024 * 1024)
            .build()
            .await
            .expect("connects");
        vec![
            (
                "memory",
                Arc::new(MemoryStore::default()) as Arc<dyn IdempotencyStore>,
            ),
            ("redis", Arc::new(redis)),
            ("redis+tier", Arc::new(tiered)),
        ]
    });

    let mut criterion = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    replay(&mut criterion, &rt, &stores);
    fresh_claim(&mut criterion, &rt, &stores);
    criterion.final_summary();
    drop(server);
}

fn replay(c: &mut Criterion, rt: &Runtime, stores: &[(&str, Arc<dyn IdempotencyStore>)]) {
    let mut group = c.benchmark_group("replay");
    for body_len in [44, 16 * 1024] {
        for (name, store) in stores {
            let key = rt.block_on(completed(&**store, body_len));
            let id = BenchmarkId::new(*name, format!("{body_len}B"));
            group.bench_with_input(id, &key, |b, key| {
                b.to_async(rt).iter(|| async {
                    let claim = store
                        .claim(key, &FINGERPRINT, ClaimToken::random(), LEASE)
                        .await
                        .expect("claim");
                    assert!(matches!(claim, Claim::Existing(_)));
                    black_box(claim)
                });
            });
        }
    }
    group.finish();
}

fn fresh_claim(c: &mut Criterion, rt: &Runtime, stores: &[(&str, Arc<dyn IdempotencyStore>)]) {
    let mut group = c.benchmark_group("fresh_claim");
    for (name, store) in stores {
        group.bench_function(*name, |b| {
            b.to_async(rt).iter(|| async {
                let claim = store
                    .claim(&fresh_key(), &FINGERPRINT, ClaimToken::random(), LEASE)
                    .await
                    .expect("claim");
                black_box(claim)
            });
        });
    }
    group.finish();
}
