//! Fingerprint throughput, against what the request costs anyway.
//!
//! For request bodies of 100 B, 10 KiB and 1 MiB (a charge with line items, as in the handler
//! bench), four measurements:
//!
//! - `sha256_raw`: `sha2` hashing the raw body bytes — the limit a fingerprint could reach;
//! - `json_extract`: axum's `Json<NewCharge>` extraction of the body — what the handler costs
//!   anyway, with or without idempotency;
//! - `fingerprint_typed`: the request's fingerprint over the extracted `Json<NewCharge>`;
//! - `fingerprint_value`: the same over a `Json<serde_json::Value>` (maps are sorted).
//!
//! After criterion's report, the four are measured side by side in interleaved rounds and printed
//! as ratios of `json_extract` (see `BENCHMARKS.md`).
//!
//! `cargo bench -p idem-runtime --bench fingerprint`.

// A benchmark's report is its output.
#![allow(clippy::print_stdout, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::FromRequest;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::FutureExt;
use http::{Method, Request};
use idem_runtime::fingerprint::Fingerprinter;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Serialize, Deserialize)]
struct NewCharge {
    amount: u64,
    currency: String,
    customer: String,
    description: String,
    items: Vec<Item>,
}

#[derive(Serialize, Deserialize)]
struct Item {
    sku: String,
    quantity: u32,
    unit_price: u64,
}

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

/// axum's `Json` extraction of `body`, as the extractor runs it on a request.
fn extract<T: serde::de::DeserializeOwned>(body: &Bytes) -> Json<T> {
    let request = Request::post("/charges")
        .header("content-type", "application/json")
        .body(Body::from(body.clone()))
        .expect("valid request");
    Json::<T>::from_request(request, &())
        .now_or_never()
        .expect("a full body is ready at once")
        .expect("valid JSON")
}

fn fingerprint<T: Serialize>(input: &Json<T>) -> [u8; 32] {
    let mut fp = Fingerprinter::new(&Method::POST, Some("/charges"), "/charges", None);
    fp.input(input);
    *fp.finish().expect("serializable").as_bytes()
}

#[derive(Clone, Copy)]
enum Work {
    Sha256Raw,
    JsonExtract,
    FingerprintTyped,
    FingerprintValue,
}

impl Work {
    const ALL: [Work; 4] = [
        Work::JsonExtract,
        Work::Sha256Raw,
        Work::FingerprintTyped,
        Work::FingerprintValue,
    ];

    fn name(self) -> &'static str {
        match self {
            Work::Sha256Raw => "sha256_raw",
            Work::JsonExtract => "json_extract",
            Work::FingerprintTyped => "fingerprint_typed",
            Work::FingerprintValue => "fingerprint_value",
        }
    }
}

struct Inputs {
    body: Bytes,
    typed: Json<NewCharge>,
    value: Json<serde_json::Value>,
}

impl Inputs {
    fn new(size: usize) -> Self {
        let body = body(size);
        Self {
            typed: extract(&body),
            value: extract(&body),
            body,
        }
    }

    fn once(&self, work: Work) {
        match work {
            Work::Sha256Raw => {
                black_box(Sha256::digest(&self.body));
            }
            Work::JsonExtract => {
                let _ = black_box(extract::<NewCharge>(&self.body));
            }
            Work::FingerprintTyped => {
                black_box(fingerprint(&self.typed));
            }
            Work::FingerprintValue => {
                black_box(fingerprint(&self.value));
            }
        }
    }

    fn run(&self, work: Work, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            self.once(work);
        }
        start.elapsed()
    }
}

const SIZES: [(usize, &str); 3] = [(100, "100B"), (10 * 1024, "10KiB"), (1024 * 1024, "1MiB")];

fn criterion_benches(c: &mut Criterion) {
    for (size, label) in SIZES {
        let inputs = Inputs::new(size);
        let mut group = c.benchmark_group(format!("fingerprint/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        if size >= 1024 * 1024 {
            group.sample_size(10);
        }
        for work in Work::ALL {
            group.bench_function(BenchmarkId::from_parameter(work.name()), |b| {
                b.iter_custom(|iters| inputs.run(work, iters));
            });
        }
        group.finish();
    }
}

/// Interleaved rounds of each measurement; prints the median time per body and its ratio to
/// `json_extract`.
fn side_by_side(quick: bool) {
    println!("\nside by side (interleaved rounds; ratio = work / json_extract)");
    println!(
        "{:<6} {:<18} {:>12} {:>10} {:>7}",
        "body", "work", "median", "MB/s", "ratio"
    );
    for (size, label) in SIZES {
        let inputs = Inputs::new(size);
        let probe = inputs.run(Work::JsonExtract, 10);
        let iters = if quick {
            1
        } else {
            ((0.03 / (probe.as_secs_f64() / 10.0)) as u64).clamp(2, 1_000_000)
        };
        let rounds = if quick { 1 } else { 21 };
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); Work::ALL.len()];
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); Work::ALL.len()];
        for round in 0..rounds {
            let mut this_round = [0.0; Work::ALL.len()];
            for i in 0..Work::ALL.len() {
                let w = (i + round) % Work::ALL.len();
                this_round[w] = inputs.run(Work::ALL[w], iters).as_secs_f64() / iters as f64;
            }
            for w in 0..Work::ALL.len() {
                times[w].push(this_round[w]);
                ratios[w].push(this_round[w] / this_round[0]);
            }
        }
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        for (w, work) in Work::ALL.iter().enumerate() {
            let t = median(&times[w]);
            println!(
                "{:<6} {:<18} {:>10.2}µs {:>10.0} {:>6.2}x",
                label,
                work.name(),
                t * 1e6,
                size as f64 / t / 1e6,
                median(&ratios[w]),
            );
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and gets one quick pass.
    let benching = std::env::args().any(|arg| arg == "--bench");
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    if std::env::var_os("IDEM_BENCH_RATIOS_ONLY").is_none() {
        criterion_benches(&mut criterion);
        criterion.final_summary();
    }
    side_by_side(!benching);
}
