//! The in-memory store's operations: claim, complete, release, lookup; on one thread, and on two
//! threads working on the same store at once.
//!
//! - `claim`: a claim of a key never seen before (what every first execution does): two misses in
//!   the cache of completed records and an insertion into the claim table. The claims of one
//!   sample stay in flight until it ends, up to some 10⁵ of them: a claim table far larger than a
//!   service's concurrency makes, whose cache misses make the figure a pessimistic one;
//! - `complete`: storing a small response for a claimed key: its move from the claim table into
//!   the cache of completed records;
//! - `release`: giving a claimed key up (what a handler's failure does);
//! - `lookup`: reading a completed record. With two threads both read the same key: the hottest
//!   contention there is;
//! - `1-thread-not-full/*`: claims and completions into a store whose bound is far away, so that
//!   no completion evicts anything.
//!
//! The store has the default 64 MiB bound otherwise, so completions of fresh keys fill it and then
//! each one evicts the least recently used record.
//!
//! With two threads, one iteration is one operation on each thread, timed from the common start to
//! the slower thread's end; the time per operation is half of it when the two do not get in each
//! other's way.
//!
//! `cargo bench -p idem-runtime --bench store`.

#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, StatusCode};
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::key::IdempotencyKey;
use idem_runtime::replay::StoredResponse;
use idem_runtime::scope::Scope;
use idem_runtime::store::{Claim, ClaimToken, Completed, IdempotencyStore, MemoryStore, StoreKey};
use tokio::runtime::Runtime;

const LEASE: Duration = Duration::from_secs(300);
const TTL: Duration = Duration::from_secs(24 * 3600);
const FINGERPRINT: Fingerprint = Fingerprint::from_bytes([7; 32]);

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

/// `n` keys never used before.
fn fresh_keys(n: u64) -> Vec<StoreKey> {
    let first = NEXT_KEY.fetch_add(n, Ordering::Relaxed);
    (first..first + n)
        .map(|i| {
            let key = IdempotencyKey::parse(format!("key-{i:012}").as_bytes(), 255).expect("valid");
            StoreKey::new(Scope::ANONYMOUS, key)
        })
        .collect()
}

fn response() -> StoredResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    StoredResponse::new(
        StatusCode::CREATED,
        &headers,
        r#"{"id":"ch_1","amount":1999,"currency":"eur"}"#.into(),
    )
}

/// The record a request completes with, built as the runtime builds it: once, from the captured
/// response.
fn completed(response: StoredResponse) -> Arc<Completed> {
    Arc::new(Completed {
        fingerprint: FINGERPRINT,
        request_digest: None,
        response,
    })
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn claim(store: &MemoryStore, key: &StoreKey) -> ClaimToken {
    let token = ClaimToken::random();
    match store
        .claim(key, &FINGERPRINT, token, LEASE)
        .await
        .expect("claim")
    {
        Claim::Fresh => token,
        Claim::Existing(_) => panic!("the key is fresh"),
    }
}

#[derive(Clone, Copy)]
enum Op {
    Claim,
    Complete,
    Release,
    Lookup,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Claim => "claim",
            Op::Complete => "complete",
            Op::Release => "release",
            Op::Lookup => "lookup",
        }
    }
}

/// Runs `iters` operations on one thread with its own runtime, after preparing what they need;
/// waits at `start` with the other threads before timing. Returns the thread's end instant.
fn worker(store: &MemoryStore, op: Op, iters: u64, start: &Barrier, hot: &StoreKey) -> Instant {
    let runtime = runtime();
    runtime.block_on(async {
        let response = response();
        match op {
            Op::Claim => {
                let keys = fresh_keys(iters);
                let mut tokens = Vec::with_capacity(keys.len());
                start.wait();
                for key in &keys {
                    tokens.push(black_box(claim(store, key).await));
                }
                let end = Instant::now();
                // Untimed: give the claims up, so that the claim table holds one sample's claims
                // at most, not every claim of the run.
                for (key, token) in keys.iter().zip(tokens) {
                    store.release(key, token).await.expect("release");
                }
                return end;
            }
            Op::Complete | Op::Release => {
                let keys = fresh_keys(iters);
                let mut claimed = Vec::with_capacity(keys.len());
                for key in keys {
                    let token = claim(store, &key).await;
                    claimed.push((key, token));
                }
                start.wait();
                for (key, token) in &claimed {
                    if let Op::Complete = op {
                        let done = store
                            .complete(key, *token, completed(response.clone()), TTL)
                            .await
                            .expect("complete");
                        black_box(done);
                    } else {
                        store.release(key, *token).await.expect("release");
                    }
                }
            }
            Op::Lookup => {
                start.wait();
                for _ in 0..iters {
                    black_box(store.lookup(hot).await.expect("lookup"));
                }
            }
        }
        Instant::now()
    })
}

/// `iters` operations on each of `threads` threads at once: the wall time from the common start
/// to the last thread's end.
fn run(store: &MemoryStore, op: Op, threads: usize, iters: u64, hot: &StoreKey) -> Duration {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| worker(store, op, iters, &start, hot)))
            .collect();
        start.wait();
        let began = Instant::now();
        let ended = workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .max()
            .expect("a worker");
        ended - began
    })
}

fn benches(c: &mut Criterion) {
    let store = MemoryStore::default();
    let hot = fresh_keys(1).remove(0);
    runtime().block_on(async {
        let token = claim(&store, &hot).await;
        store
            .complete(&hot, token, completed(response()), TTL)
            .await
            .expect("complete");
    });
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!("store/{threads}-thread"));
        group.throughput(Throughput::Elements(threads as u64));
        for op in [Op::Claim, Op::Complete, Op::Release, Op::Lookup] {
            group.bench_function(BenchmarkId::from_parameter(op.name()), |b| {
                b.iter_custom(|iters| run(&store, op, threads, iters, &hot));
            });
        }
        group.finish();
    }
    // The same into a store far from its bound: no eviction, no table rehash after it.
    let roomy = MemoryStore::builder().max_bytes(1 << 36).build();
    let mut group = c.benchmark_group("store/1-thread-not-full");
    group.throughput(Throughput::Elements(1));
    for op in [Op::Claim, Op::Complete] {
        group.bench_function(BenchmarkId::from_parameter(op.name()), |b| {
            b.iter_custom(|iters| run(&roomy, op, 1, iters, &hot));
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
}
