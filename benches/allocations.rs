//! Heap allocations per request, with and without idempotency: a count, not a time, so it is the
//! same on every run and on any machine.
//!
//! Every allocation of this program is counted (a counting global allocator, `stats_alloc`).
//! The handler is the one of the `handler` bench (`Json<NewCharge>` in, a small receipt out, a
//! 100-byte body), sent through `Router::oneshot` on a single-threaded runtime, its response read
//! to the end. The ways:
//!
//! - `plain`: the handler without idempotency;
//! - `first`: under `#[idempotent(post)]`, a key never used before, every request, on a store far
//!   from its bound (so that no request evicts: eviction frees what an earlier request allocated);
//! - `replay`: the same key and bytes every request;
//! - `no_key`: the idempotent handler without a key.
//!
//! For each way: allocations, bytes allocated and reallocations per request, and what the way adds
//! to `plain`. The store's growth (its table doubling now and then) is spread over the requests,
//! as it is in a service.
//!
//! `cargo bench --bench allocations` (a few seconds). Without `--bench`, as `cargo test --benches`
//! runs it, it does fewer requests. `IDEM_BENCH_WAY=first` counts one way alone, for a heap
//! profiler (`valgrind --tool=dhat`).

// A benchmark's report is its output.
#![allow(clippy::print_stdout, missing_docs)]

use std::alloc::System;
use std::hint::black_box;

use axum::body::Body;
use axum::routing::post;
use axum::{Json, Router};
use http::{HeaderValue, Request};
use idem::config::Idempotency;
use idem::store::MemoryStore;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::ServiceExt;

mod support;

use support::{NewCharge, Receipt, charge};

#[global_allocator]
static HEAP: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A 100-byte charge, without line items.
const BODY: &str = r#"{"amount":1999,"currency":"eur","customer":"cus_4fQx9Lb2","description":"xxxxxxxxxxxxxx","items":[]}"#;

#[idem::idempotent(post)]
async fn idempotent_charge(body: Json<NewCharge>) -> Json<Receipt> {
    charge(body).await
}

#[derive(Clone, Copy)]
enum Way {
    Plain,
    First,
    Replay,
    NoKey,
}

impl Way {
    const ALL: [Way; 4] = [Way::Plain, Way::First, Way::Replay, Way::NoKey];

    fn name(self) -> &'static str {
        match self {
            Way::Plain => "plain",
            Way::First => "first",
            Way::Replay => "replay",
            Way::NoKey => "no_key",
        }
    }
}

/// Allocations counted over some requests.
#[derive(Clone, Copy)]
struct Counted {
    allocations: f64,
    bytes: f64,
    reallocations: f64,
}

struct Bench {
    plain: Router,
    idempotent: Router,
    next_key: u64,
}

impl Bench {
    fn new() -> Self {
        // The process-wide configuration, so that the idempotent router has no layer the plain
        // one lacks.
        Idempotency::builder()
            .store(MemoryStore::builder().max_bytes(4 << 30).build())
            .build()
            .expect("defaults are valid")
            .install()
            .expect("installed once");
        Self {
            plain: Router::new().route("/charges", post(charge)),
            idempotent: Router::new().route("/charges", post(idempotent_charge)),
            next_key: 0,
        }
    }

    /// The request of `way`, built before counting starts.
    fn request(&mut self, way: Way) -> (Router, Request<Body>) {
        let mut request = Request::post("/charges")
            .header("content-type", "application/json")
            .body(Body::from(BODY))
            .expect("valid request");
        let key = match way {
            Way::Plain | Way::NoKey => None,
            Way::Replay => Some(HeaderValue::from_static("replayed")),
            Way::First => {
                self.next_key += 1;
                Some(HeaderValue::from_str(&format!("key-{}", self.next_key)).expect("ascii"))
            }
        };
        if let Some(key) = key {
            request.headers_mut().insert("idempotency-key", key);
        }
        let router = match way {
            Way::Plain => self.plain.clone(),
            _ => self.idempotent.clone(),
        };
        (router, request)
    }

    /// `requests` of `way`; the allocations of each, on average, from the router's call to the
    /// response's last byte (the request itself is built before).
    async fn count(&mut self, way: Way, requests: u32) -> Counted {
        let (mut allocations, mut bytes, mut reallocations) = (0, 0, 0);
        for _ in 0..requests {
            let (router, request) = self.request(way);
            let before = HEAP.stats();
            let response = router.oneshot(request).await.expect("infallible");
            black_box(support::read_body(response).await);
            let after = HEAP.stats();
            allocations += after.allocations - before.allocations;
            bytes += after.bytes_allocated - before.bytes_allocated;
            reallocations += after.reallocations - before.reallocations;
        }
        let per = |n: usize| n as f64 / f64::from(requests);
        Counted {
            allocations: per(allocations),
            bytes: per(bytes),
            reallocations: per(reallocations),
        }
    }
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let requests = if full { 20_000 } else { 200 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut bench = Bench::new();
        // The first replay's record, and every way warmed once.
        for way in Way::ALL {
            bench.count(way, 10).await;
        }
        let only = std::env::var("IDEM_BENCH_WAY").ok();
        let mut counted = Vec::new();
        for way in Way::ALL {
            if only.as_deref().is_some_and(|only| only != way.name()) {
                continue;
            }
            counted.push((way, bench.count(way, requests).await));
        }
        let plain = counted[0].1;
        let plain_name = counted[0].0.name();
        println!("allocations per request, 100 B body, {requests} requests a way");
        println!(
            "{:<8} {:>12} {:>10} {:>10} {:>14} {:>12}",
            "way", "allocations", "bytes", "reallocs", "+allocations", "+bytes"
        );
        println!("(+ is against {plain_name})");
        for (way, c) in counted {
            println!(
                "{:<8} {:>12.2} {:>10.0} {:>10.2} {:>14.2} {:>12.0}",
                way.name(),
                c.allocations,
                c.bytes,
                c.reallocations,
                c.allocations - plain.allocations,
                c.bytes - plain.bytes,
            );
        }
    });
}
