//! The server `scripts/load.sh` measures: one charge handler, served twice in one binary with the
//! same route shape, once plain and once under `#[idempotent(post)]`:
//!
//! - `POST /plain/charges`: the plain axum handler;
//! - `POST /full/charges`: the same handler with the attribute, on a `MemoryStore` of the default
//!   64 MiB filled to its bound before serving, so that every first execution evicts a record, as
//!   it does in a service that has run for a while. It is the process-wide configuration
//!   (`Idempotency::install`), so the route has no layer. The store is installed inside
//!   `support::Forgetting`: a key that starts with `forget-` has its completion forgotten (the
//!   claim released, nothing kept), so that a first execution under it is one without moka's
//!   insertion of its record and all that insertion causes, on the same route and store; a key
//!   that starts with `vacant-` goes to an empty store of the same kind and is forgotten too, so
//!   that a first execution under it also lacks the look of a new key into moka's full table;
//! - `POST /roomy/charges`: the same again on a store of 4 GiB that the load never fills, as an
//!   `Extension` layer of its own route;
//! - `POST /busy/charges`: a control, the plain handler that also spins on the CPU for
//!   `LOAD_BUSY_MICROS` (default 11 µs, about what a first execution adds in process, bench 1)
//!   and touches no memory: what a handler that costs that much more does to the server's CPU per
//!   request over HTTP, the kernel's share included;
//! - `POST /store/charges` and `POST /moka/charges`: two more controls, the plain handler that
//!   also makes what a first execution asks of the full store (a claim and a completion of a
//!   fresh key, with a record like the handler's), or only moka's own insertion of such a record
//!   into a bare moka cache configured as the store's and filled to the same bound. With `plain`
//!   and `first` they split what a first execution adds over HTTP as bench 1 splits it in
//!   process: moka's insertion at the bound, the rest of the store, the rest of the layer;
//! - `POST /moka_roomy/charges`: the plain handler plus moka's own insertion of such a record into
//!   a bare cache of 4 GiB that the load never fills: `roomy`'s moka alone;
//! - `POST /floor/charges`: not the layer but the least any replay can do, written straight
//!   against axum, moka and the record's code (`support::floor`), on a full bare cache of its
//!   own: the key, the body, its SHA-256 digest, one moka `get` at the bound, the stored answer.
//!   Its record is kept under the key `floor-replayed` for the body
//!   `{"amount":1999,"currency":"eur"}`; a request with another key or body gets `404`.
//!
//! Environment: `LOAD_ADDR` (default `127.0.0.1:3917`), `LOAD_BUSY_MICROS`. It prints
//! `listening on ADDR` once it accepts connections.
//!
//! Built and started by `scripts/load.sh`; `cargo bench --bench load_server` runs it by hand.

// A server's report is its output.
#![allow(clippy::print_stdout, missing_docs)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use idem::store::MemoryStore;
use idem::{Idempotency, idempotent};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
struct NewCharge {
    amount: u64,
    currency: String,
}

#[derive(Serialize)]
struct Charge {
    id: String,
    amount: u64,
    currency: String,
}

/// The charge counter both handlers share.
#[derive(Clone, Default)]
struct Ledger(Arc<AtomicU64>);

impl Ledger {
    fn charge(&self, charge: NewCharge) -> (StatusCode, Json<Charge>) {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        let charge = Charge {
            id: format!("ch_{n}"),
            amount: charge.amount,
            currency: charge.currency,
        };
        (StatusCode::CREATED, Json(charge))
    }
}

async fn plain_charge(
    State(ledger): State<Ledger>,
    Json(charge): Json<NewCharge>,
) -> (StatusCode, Json<Charge>) {
    ledger.charge(charge)
}

/// What `/store/charges` and `/moka/charges` add to the plain handler.
static SPLIT: OnceLock<support::Split> = OnceLock::new();

fn split() -> &'static support::Split {
    SPLIT.get().expect("set before serving")
}

async fn store_charge(
    State(ledger): State<Ledger>,
    Json(charge): Json<NewCharge>,
) -> (StatusCode, Json<Charge>) {
    split().store_once();
    ledger.charge(charge)
}

async fn moka_roomy_charge(
    State(ledger): State<Ledger>,
    Json(charge): Json<NewCharge>,
) -> (StatusCode, Json<Charge>) {
    split().moka_roomy_once();
    ledger.charge(charge)
}

async fn moka_charge(
    State(ledger): State<Ledger>,
    Json(charge): Json<NewCharge>,
) -> (StatusCode, Json<Charge>) {
    split().moka_once();
    ledger.charge(charge)
}

/// How long `/busy/charges` spins.
static BUSY: OnceLock<Duration> = OnceLock::new();

async fn busy_charge(
    State(ledger): State<Ledger>,
    Json(charge): Json<NewCharge>,
) -> (StatusCode, Json<Charge>) {
    let busy = *BUSY.get().expect("set before serving");
    let started = Instant::now();
    while started.elapsed() < busy {
        std::hint::spin_loop();
    }
    ledger.charge(charge)
}

#[idempotent(post)]
async fn idempotent_charge(
    State(ledger): State<Ledger>,
    Json(charge): Json<NewCharge>,
) -> (StatusCode, Json<Charge>) {
    ledger.charge(charge)
}

fn main() {
    let addr = std::env::var("LOAD_ADDR").unwrap_or_else(|_| "127.0.0.1:3917".to_owned());
    let busy = std::env::var("LOAD_BUSY_MICROS").map_or(11, |micros| {
        micros
            .parse()
            .expect("LOAD_BUSY_MICROS is a whole number of microseconds")
    });
    BUSY.set(Duration::from_micros(busy)).expect("set once");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let full = MemoryStore::default();
        let receipt = br#"{"id":"ch_1000000","amount":1999,"currency":"eur"}"#;
        let n = support::prefill(&full, StatusCode::CREATED, receipt);
        println!(
            "prefilled {n} records, {} bytes of {}",
            full.weighted_size(),
            full.max_bytes()
        );
        let floor = support::floor_router(
            "/floor/charges",
            &full,
            br#"{"amount":1999,"currency":"eur"}"#,
            StatusCode::CREATED,
            receipt,
        );
        SPLIT
            .set(support::Split::new(full.clone(), receipt))
            .unwrap_or_else(|_| unreachable!("set once"));
        Idempotency::builder()
            .store(support::Forgetting::new(full))
            .build()
            .expect("valid settings")
            .install()
            .expect("installed once");
        let roomy = MemoryStore::builder().max_bytes(4 << 30).build();
        let layer = |store: MemoryStore| {
            Extension(
                Idempotency::builder()
                    .store(store)
                    .build()
                    .expect("valid settings"),
            )
        };
        let app = Router::new()
            .route("/plain/charges", post(plain_charge))
            .route("/busy/charges", post(busy_charge))
            .route("/store/charges", post(store_charge))
            .route("/moka/charges", post(moka_charge))
            .route("/moka_roomy/charges", post(moka_roomy_charge))
            // The process-wide configuration: no layer.
            .route("/full/charges", post(idempotent_charge))
            .route(
                "/roomy/charges",
                post(idempotent_charge).layer(layer(roomy)),
            )
            .with_state(Ledger::default())
            .merge(floor);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .expect("bind the load address");
        println!("listening on {}", listener.local_addr().expect("bound"));
        axum::serve(listener, app).await.expect("serve");
    });
}
