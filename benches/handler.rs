//! What an idempotent handler costs, in process, through the router.
//!
//! The same trivial JSON handler is mounted twice: as a plain axum handler, and with idempotency.
//! Each request goes through `Router` with `tower::ServiceExt::oneshot` and its response body is
//! read to the end. The ways through:
//!
//! - `plain`: the plain handler, on a router without any idempotency;
//! - `first`: the idempotent handler with a fresh key every request (claim, run, capture, store),
//!   on a store of the default 64 MiB filled to its bound before the run, so that every first
//!   execution evicts a record, as in a service that has run for a while;
//! - `roomy`: the same on a store of 4 GiB that the run never fills, installed with an
//!   `Extension` layer (the full store is the process-wide configuration, so its routes have
//!   none: the layer costs `roomy` about a fifth of `plain` more);
//! - `forget`: the same as `first`, on the same store, under keys whose completion the store
//!   forgets ([`support::Forgetting`]): the first execution without moka's insertion of its record
//!   and without what the insertion causes later (an eviction, a deferred free, the rebuilds of
//!   moka's table); every other step is the same;
//! - `vacant`: the same as `forget`, under keys the store hands to an empty store of its own: the
//!   first execution without moka's insertion and without the look of a new key into moka's full
//!   table (its probe of slots and records far from the caches); the calls are the same;
//! - `replay`: the idempotent handler with the same key every request (the stored answer);
//! - `floor`: not the layer, but the least any replay can do, written straight against axum, moka
//!   and the record's code ([`support::floor`]): the key, the body read, its SHA-256 digest, one
//!   moka `get` in a full cache, the stored answer built. `replay - floor` is the layer's
//!   plumbing; `floor - plain` what a replay costs beyond a plain request whoever writes it;
//! - `no_key`: the idempotent handler without a key (it just runs);
//! - `store`: no request, only what a first execution asks of the full store: a claim and a
//!   completion of a fresh key, with a record like the handler's;
//! - `moka`: no store either, only moka's own insertion of such a record into a bare moka cache
//!   configured as the store's (LRU, weighed as the store weighs) and filled to the same bound.
//!
//! `forget` and `vacant` split what `first` adds to `plain` in place: moka's insertion with all it
//! causes (`first - forget`), the look of a new key into moka's full table (`forget - vacant`), and
//! everything else (`vacant - plain`). The last two ways split it again outside a request, into
//! moka's insertion at the bound, the rest of the store, and the rest of the layer.
//!
//! Request bodies of 100 B, 10 KiB and 1 MiB. After criterion's own report, the bench measures
//! the ways side by side — interleaved rounds, so that a noisy neighbour slows all of them alike —
//! and prints each one's time and CPU time as a ratio of `plain`'s (see `BENCHMARKS.md`).
//!
//! `cargo bench --bench handler`. Environment: `IDEM_BENCH_RATIOS_ONLY=1` skips criterion's part,
//! `IDEM_BENCH_BODIES=100B,10KiB` limits the side-by-side part to those bodies, and
//! `IDEM_BENCH_PROFILE=first/100B` runs one way alone for five seconds, for a profiler.

// A benchmark's report is its output.
#![allow(clippy::print_stdout, missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::post;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use http::{HeaderValue, Request, StatusCode};
use idem::config::Idempotency;
use idem::store::MemoryStore;
use tokio::runtime::Runtime;
use tower::ServiceExt;

mod support;

use support::{FLOOR_KEY, FORGET, Forgetting, Item, NewCharge, Receipt, Split, VACANT, charge};

/// A JSON body of exactly `size` bytes: line items up to the size, the description pads the rest.
fn body(size: usize) -> Bytes {
    let mut charge = NewCharge {
        amount: 1999,
        currency: "eur".into(),
        customer: "cus_4fQx9Lb2".into(),
        description: String::new(),
        items: Vec::new(),
    };
    let json_len = |charge: &NewCharge| serde_json::to_vec(charge).expect("serializable").len();
    // Grow the item list, counting each item's bytes (and its comma) instead of serializing
    // the whole charge again: a megabyte of items is twenty thousand of them.
    let mut total = json_len(&charge);
    loop {
        let n = charge.items.len();
        let item = Item {
            sku: format!("sku-{n:06}"),
            quantity: 1 + (n % 7) as u32,
            unit_price: 100 + n as u64 * 13,
        };
        let item_len = serde_json::to_vec(&item).expect("serializable").len() + usize::from(n > 0);
        if total + item_len > size {
            break;
        }
        total += item_len;
        charge.items.push(item);
    }
    charge.description = "x".repeat(size - json_len(&charge));
    let bytes = serde_json::to_vec(&charge).expect("serializable");
    assert_eq!(bytes.len(), size);
    Bytes::from(bytes)
}

/// The same handler with idempotency.
#[idem::idempotent(post)]
async fn idempotent_charge(body: Json<NewCharge>) -> Json<Receipt> {
    charge(body).await
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    Plain,
    First,
    Forget,
    Vacant,
    Roomy,
    Replay,
    Floor,
    NoKey,
    Store,
    Moka,
}

impl Way {
    const ALL: [Way; 10] = [
        Way::Plain,
        Way::First,
        Way::Forget,
        Way::Vacant,
        Way::Roomy,
        Way::Replay,
        Way::Floor,
        Way::NoKey,
        Way::Store,
        Way::Moka,
    ];

    fn name(self) -> &'static str {
        match self {
            Way::Plain => "plain",
            Way::First => "first",
            Way::Forget => "forget",
            Way::Vacant => "vacant",
            Way::Roomy => "roomy",
            Way::Replay => "replay",
            Way::Floor => "floor",
            Way::NoKey => "no_key",
            Way::Store => "store",
            Way::Moka => "moka",
        }
    }
}

/// The store of the `first`, `forget`, `replay` and `no_key` ways, shared by every body size:
/// filled to its bound once, with records like the handler's answer, and installed as the
/// process-wide configuration (`Idempotency::install`), so that their router needs no `Extension`
/// layer. It is installed inside [`Forgetting`], which forgets the completions of `forget`'s keys
/// and hands `vacant`'s to an empty store.
fn full_store(receipt: &'static [u8]) -> MemoryStore {
    static FULL: std::sync::OnceLock<MemoryStore> = std::sync::OnceLock::new();
    FULL.get_or_init(|| {
        let store = MemoryStore::default();
        support::prefill(&store, StatusCode::OK, receipt);
        Idempotency::builder()
            .store(Forgetting::new(store.clone()))
            .build()
            .expect("defaults are valid")
            .install()
            .expect("installed once");
        store
    })
    .clone()
}

/// Everything one body size needs: the routers, the full store, the bare cache and the body.
#[derive(Clone)]
struct Bench {
    plain: Router,
    idempotent: Router,
    roomy: Router,
    /// The `floor` way, on a full bare cache of its own.
    floor: Router,
    /// The `store` and `moka` ways.
    split: Split,
    body: Bytes,
    /// The `replay` way's key: one per body size, as the full store is shared by every size.
    replay_key: HeaderValue,
}

impl Bench {
    fn new(size: usize) -> Self {
        let layer = |store: MemoryStore| {
            Extension(
                Idempotency::builder()
                    .store(store)
                    .build()
                    .expect("defaults are valid"),
            )
        };
        let body = body(size);
        // The handler's answer to this body, as the store keeps it.
        let request: NewCharge = serde_json::from_slice(&body).expect("valid");
        let receipt = serde_json::to_vec(&Receipt {
            id: "ch_1",
            amount: request.amount,
            items: request.items.len(),
        })
        .expect("serializable");
        let receipt: &'static [u8] = Box::leak(receipt.into_boxed_slice());
        let split = Split::new(full_store(receipt), receipt);
        Self {
            plain: Router::new().route("/charges", post(charge)),
            // The full store is the process-wide configuration: no layer.
            idempotent: Router::new().route("/charges", post(idempotent_charge)),
            roomy: Router::new()
                .route("/charges", post(idempotent_charge))
                .layer(layer(MemoryStore::builder().max_bytes(4 << 30).build())),
            floor: support::floor_router(
                "/charges",
                &full_store(receipt),
                &body,
                StatusCode::OK,
                receipt,
            ),
            split,
            body,
            replay_key: HeaderValue::from_str(&format!("replayed-{size}")).expect("ascii"),
        }
    }

    /// A key no request of this process sent before. The full store is shared by every body
    /// size, so the count is too: a key that one size completed would answer another's `422`.
    fn fresh_key(&self) -> u64 {
        static NEXT_KEY: AtomicU64 = AtomicU64::new(1 << 40);
        NEXT_KEY.fetch_add(1, Ordering::Relaxed)
    }

    fn request(&self, key: Option<HeaderValue>) -> Request<Body> {
        let mut request = Request::post("/charges")
            .header("content-type", "application/json")
            .body(Body::from(self.body.clone()))
            .expect("valid request");
        if let Some(key) = key {
            request.headers_mut().insert("idempotency-key", key);
        }
        request
    }

    /// One request the given way; returns the response's status and whether it was a replay.
    async fn once(&self, way: Way) -> (StatusCode, bool) {
        let (router, key) = match way {
            Way::Plain => (&self.plain, None),
            Way::NoKey => (&self.idempotent, None),
            Way::Replay => (&self.idempotent, Some(self.replay_key.clone())),
            Way::Floor => (&self.floor, Some(HeaderValue::from_static(FLOOR_KEY))),
            Way::First | Way::Forget | Way::Vacant | Way::Roomy => {
                // Keys of the same length every way: each prefix is seven characters.
                let prefix = match way {
                    Way::Forget => FORGET,
                    Way::Vacant => VACANT,
                    _ => "charge-",
                };
                let key = HeaderValue::from_str(&format!("{prefix}{}", self.fresh_key()));
                let router = if way == Way::Roomy {
                    &self.roomy
                } else {
                    &self.idempotent
                };
                (router, Some(key.expect("ascii")))
            }
            Way::Store | Way::Moka => unreachable!("no request"),
        };
        self.send(router, key).await
    }

    /// One request to `router` with `key`, if any; its status and whether it was a replay.
    async fn send(&self, router: &Router, key: Option<HeaderValue>) -> (StatusCode, bool) {
        let response = router
            .clone()
            .oneshot(self.request(key))
            .await
            .expect("infallible");
        let status = response.status();
        let replayed = response.headers().contains_key("idempotent-replayed");
        black_box(support::read_body(response).await);
        (status, replayed)
    }

    /// `iters` of the given way inside a task of the runtime (as a server would run them); the
    /// wall time they took.
    fn run(&self, runtime: &Runtime, way: Way, iters: u64) -> Duration {
        let bench = self.clone();
        runtime
            .block_on(runtime.spawn(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    match way {
                        Way::Store => bench.split.store_once(),
                        Way::Moka => bench.split.moka_once(),
                        _ => {
                            black_box(bench.once(way).await);
                        }
                    }
                }
                start.elapsed()
            }))
            .expect("bench task")
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

const SIZES: [(usize, &str); 3] = [(100, "100B"), (10 * 1024, "10KiB"), (1024 * 1024, "1MiB")];

/// Checks that each way does what its name says before anything is timed.
fn check(runtime: &Runtime, bench: &Bench) {
    runtime.block_on(async {
        assert_eq!(bench.once(Way::Plain).await, (StatusCode::OK, false));
        assert_eq!(bench.once(Way::NoKey).await, (StatusCode::OK, false));
        assert_eq!(bench.once(Way::First).await, (StatusCode::OK, false));
        assert_eq!(bench.once(Way::Forget).await, (StatusCode::OK, false));
        assert_eq!(bench.once(Way::Vacant).await, (StatusCode::OK, false));
        // A key `forget` or `vacant` uses is not kept: sent again, it runs again.
        for prefix in [FORGET, VACANT] {
            let key = HeaderValue::from_str(&format!("{prefix}checked")).expect("ascii");
            for _ in 0..2 {
                let sent = bench.send(&bench.idempotent, Some(key.clone())).await;
                assert_eq!(sent, (StatusCode::OK, false));
            }
        }
        assert_eq!(bench.once(Way::Roomy).await, (StatusCode::OK, false));
        // The first replay request stores the answer; every later one is a replay.
        bench.once(Way::Replay).await;
        assert_eq!(bench.once(Way::Replay).await, (StatusCode::OK, true));
        assert_eq!(bench.once(Way::Floor).await, (StatusCode::OK, true));
    });
}

fn criterion_benches(c: &mut Criterion, runtime: &Runtime) {
    for (size, label) in SIZES {
        let bench = Bench::new(size);
        check(runtime, &bench);
        let mut group = c.benchmark_group(format!("handler/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        if size >= 1024 * 1024 {
            group.sample_size(10);
        }
        for way in Way::ALL {
            group.bench_function(BenchmarkId::from_parameter(way.name()), |b| {
                b.iter_custom(|iters| bench.run(runtime, way, iters));
            });
        }
        group.finish();
    }
}

/// This process's CPU time so far (user + system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; Linux counts
    // them in USER_HZ = 100 ticks per second.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Interleaved rounds of each way; prints median time per request and total CPU per request,
/// each also as a ratio of the plain handler's.
fn side_by_side(runtime: &Runtime, quick: bool) {
    println!("\nside by side (interleaved rounds; ratio = way / plain)");
    println!(
        "{:<6} {:<7} {:>12} {:>7} {:>9} {:>12} {:>7}",
        "body", "way", "median/req", "ratio", "range", "cpu/req", "ratio"
    );
    let bodies = std::env::var("IDEM_BENCH_BODIES").unwrap_or_default();
    for (size, label) in SIZES {
        if !bodies.is_empty() && !bodies.split(',').any(|b| b == label) {
            continue;
        }
        let bench = Bench::new(size);
        check(runtime, &bench);
        // Calibrate each way to about 40 ms per round: a way much faster than plain (a replay of
        // a large body) would otherwise run for too short a time for the CPU clock, which
        // counts in hundredths of a second.
        let iters: Vec<u64> = Way::ALL
            .iter()
            .map(|&way| {
                if quick {
                    return 2;
                }
                let probe = bench.run(runtime, way, 20);
                let per_request = probe.as_secs_f64() / 20.0;
                ((0.04 / per_request) as u64).clamp(3, 200_000)
            })
            .collect();
        let rounds = if quick { 1 } else { 21 };
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); Way::ALL.len()];
        let mut cpu = vec![Duration::ZERO; Way::ALL.len()];
        for round in 0..rounds {
            for i in 0..Way::ALL.len() {
                // Rotate the order so that no way always follows another.
                let w = (i + round) % Way::ALL.len();
                let before = cpu_time();
                let elapsed = bench.run(runtime, Way::ALL[w], iters[w]);
                cpu[w] += cpu_time() - before;
                times[w].push(elapsed.as_secs_f64() / iters[w] as f64);
            }
        }
        let total = |w: usize| (iters[w] * rounds as u64) as f64;
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let plain_cpu = cpu[0].as_secs_f64() / total(0);
        for (w, way) in Way::ALL.iter().enumerate() {
            let ratios: Vec<f64> = times[w].iter().zip(&times[0]).map(|(t, p)| t / p).collect();
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(0.0, f64::max);
            let cpu_per = cpu[w].as_secs_f64() / total(w);
            println!(
                "{:<6} {:<7} {:>10.2}µs {:>6.2}x {:>4.2}-{:<4.2} {:>10.2}µs {:>6.2}x",
                label,
                way.name(),
                median(&times[w]) * 1e6,
                median(&ratios),
                lo,
                hi,
                cpu_per * 1e6,
                if plain_cpu > 0.0 {
                    cpu_per / plain_cpu
                } else {
                    f64::NAN
                },
            );
        }
        let at = |way: Way| {
            let w = Way::ALL.iter().position(|&w| w == way).expect("a way");
            median(&times[w]) * 1e6
        };
        let (plain, first, forget, vacant, store, moka) = (
            at(Way::Plain),
            at(Way::First),
            at(Way::Forget),
            at(Way::Vacant),
            at(Way::Store),
            at(Way::Moka),
        );
        println!(
            "{label:<6} first at the bound adds {:.2}µs to plain. In place: moka's insertion and \
             what it causes {:.2}µs (first - forget), the look of a new key into moka's full \
             table {:.2}µs (forget - vacant), the rest {:.2}µs (vacant - plain); first without \
             moka's insertion is {:.2}x plain, without its look too {:.2}x. Outside a request: the \
             store's claim and completion {store:.2}µs, of which moka's insertion {moka:.2}µs.",
            first - plain,
            first - forget,
            forget - vacant,
            vacant - plain,
            forget / plain,
            vacant / plain,
        );
    }
}

/// `IDEM_BENCH_PROFILE=<way>/<body>` (`first/100B`, say): only that way, for about five seconds,
/// for a profiler (`perf record`, `valgrind --tool=callgrind`) to watch.
fn profile(runtime: &Runtime, what: &str) {
    let (way, label) = what
        .split_once('/')
        .expect("IDEM_BENCH_PROFILE=<way>/<body>");
    let way = *Way::ALL
        .iter()
        .find(|w| w.name() == way)
        .expect("a way: plain, first, forget, vacant, roomy, replay, floor, no_key, store or moka");
    let (size, _) = *SIZES
        .iter()
        .find(|(_, l)| *l == label)
        .expect("a body: 100B, 10KiB or 1MiB");
    let bench = Bench::new(size);
    check(runtime, &bench);
    let until = Instant::now() + Duration::from_secs(5);
    let mut requests = 0;
    while Instant::now() < until {
        bench.run(runtime, way, 1000);
        requests += 1000;
    }
    println!("{requests} requests {what}");
    // Not dropped: a full store's teardown would show in the profile.
    std::mem::forget(bench);
}

fn main() {
    #[cfg(feature = "metrics")]
    support::install_recorder();
    let runtime = runtime();
    if let Ok(what) = std::env::var("IDEM_BENCH_PROFILE") {
        return profile(&runtime, &what);
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and gets one quick pass.
    let benching = std::env::args().any(|arg| arg == "--bench");
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    if std::env::var_os("IDEM_BENCH_RATIOS_ONLY").is_none() {
        criterion_benches(&mut criterion, &runtime);
        criterion.final_summary();
    }
    side_by_side(&runtime, !benching);
}
