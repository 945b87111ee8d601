//! What the fault tests share: the payments router on a real port, a fault-injecting TCP proxy,
//! a retrying client, and the run sizes. The fault-injecting store wrapper and the seeded
//! generator are the behaviour tests' own (`support::store`, `support::Dice`): a fault test
//! declares `mod support;` next to `mod faults;`.
//!
//! Every test is bounded: a fixed number of operations, a fixed number of attempts per operation,
//! and a deadline around the whole run. Random choices come from a seeded generator
//! (`IDEM_FAULT_SEED`, default below) so that a failing run can be repeated with the same fault
//! sequence; thread scheduling still varies from run to run, which is the point of a race test.

#![allow(dead_code, unreachable_pub)]

#[path = "../../examples/payments/app.rs"]
pub mod app;
pub mod lossy_proxy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::{Extension, Router};
use idem::config::Idempotency;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use crate::support::Dice;

/// The seed used when `IDEM_FAULT_SEED` is not set.
const DEFAULT_SEED: u64 = 0x1de3_5eed;

/// The deadline of one whole fault test: generous, so that a loaded CI machine never trips it,
/// yet a hang still fails instead of blocking CI.
pub const DEADLINE: Duration = Duration::from_secs(240);

/// The most attempts one logical operation may take before the test fails.
pub const MAX_ATTEMPTS: usize = 200;

/// Whether the long runs are asked for (`IDEM_SOAK=1`).
pub fn soak() -> bool {
    std::env::var("IDEM_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `ci` operations normally, `soak` under `IDEM_SOAK=1`.
pub fn size(ci: usize, soak_size: usize) -> usize {
    if soak() { soak_size } else { ci }
}

/// The run's seed, printed so that a failure can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("IDEM_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("fault seed: {seed} (set IDEM_FAULT_SEED to repeat)");
    seed
}

/// A server on `127.0.0.1:0`, stopped when dropped.
pub struct Served {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Served {
    pub async fn start(router: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("server runs");
        });
        Self { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The payments example's router with `idempotency` installed.
pub fn payments_router(payments: &app::Payments, idempotency: Idempotency) -> Router {
    app::router(payments.clone()).layer(Extension(idempotency))
}

/// An HTTP client with no connection reuse, so that every attempt is a connection of its own
/// and a fault of the proxy hits exactly one attempt.
pub fn client() -> Client {
    Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The body of operation `op`: a charge whose amount names the operation.
pub fn charge(op: usize, delay_ms: u64) -> Value {
    json!({"amount": amount(op), "currency": "eur", "delay_ms": delay_ms})
}

/// The amount of operation `op` (never 0, always under the declined threshold).
pub fn amount(op: usize) -> u64 {
    op as u64 + 1
}

/// The one answer an operation ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definitive {
    pub status: StatusCode,
    pub replayed: bool,
    pub body: String,
}

/// What the retrying client went through.
#[derive(Debug, Default, Clone, Copy)]
pub struct Attempts {
    pub total: usize,
    pub connection_errors: usize,
    pub conflicts: usize,
    pub unavailable: usize,
}

impl std::ops::AddAssign for Attempts {
    fn add_assign(&mut self, other: Self) {
        self.total += other.total;
        self.connection_errors += other.connection_errors;
        self.conflicts += other.conflicts;
        self.unavailable += other.unavailable;
    }
}

/// Sends `body` to `url` with `key` until a definitive answer comes back: retries on connection
/// errors (including a body cut short), `409` and `503`, with capped exponential back-off and
/// jitter. Panics after [`MAX_ATTEMPTS`].
pub async fn retry_until_definitive(
    client: &Client,
    url: &str,
    key: &str,
    body: &Value,
    dice: &Dice,
) -> (Definitive, Attempts) {
    let mut attempts = Attempts::default();
    let mut pause = Duration::from_millis(2);
    loop {
        assert!(
            attempts.total < MAX_ATTEMPTS,
            "key {key}: no definitive answer after {MAX_ATTEMPTS} attempts ({attempts:?})"
        );
        attempts.total += 1;
        let sent = client
            .post(url)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await;
        match sent {
            Err(_) => attempts.connection_errors += 1,
            Ok(response) if response.status() == StatusCode::CONFLICT => attempts.conflicts += 1,
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                attempts.unavailable += 1;
            }
            Ok(response) => {
                let status = response.status();
                let replayed = response.headers().contains_key("idempotent-replayed");
                match response.text().await {
                    Ok(body) => {
                        return (
                            Definitive {
                                status,
                                replayed,
                                body,
                            },
                            attempts,
                        );
                    }
                    Err(_) => attempts.connection_errors += 1,
                }
            }
        }
        tokio::time::sleep(pause + dice.millis(pause.as_millis() as u64)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The ledger, read over HTTP: how many charges exist for each amount, and their ids.
pub async fn charges_by_amount(client: &Client, base: &Served) -> HashMap<u64, Vec<String>> {
    let response = client.get(base.url("/charges")).send().await.expect("list");
    assert_eq!(response.status(), StatusCode::OK);
    let charges: Vec<Value> = response.json().await.expect("charges");
    let mut by_amount: HashMap<u64, Vec<String>> = HashMap::new();
    for charge in charges {
        by_amount
            .entry(charge["amount"].as_u64().expect("amount"))
            .or_default()
            .push(charge["id"].as_str().expect("id").to_owned());
    }
    by_amount
}

/// Asserts that each of `ops` operations charged exactly once and that its definitive answer is
/// that charge.
pub fn assert_each_charged_once(by_amount: &HashMap<u64, Vec<String>>, answers: &[Definitive]) {
    assert_eq!(
        by_amount.len(),
        answers.len(),
        "charges for amounts that were never asked for"
    );
    for (op, answer) in answers.iter().enumerate() {
        let ids = by_amount
            .get(&amount(op))
            .unwrap_or_else(|| panic!("operation {op} never charged"));
        assert_eq!(ids.len(), 1, "operation {op} charged {} times", ids.len());
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "operation {op}: {answer:?}"
        );
        let body: Value = serde_json::from_str(&answer.body).expect("a charge");
        assert_eq!(body["id"], ids[0].as_str(), "operation {op}");
        assert_eq!(body["amount"], amount(op));
    }
}

/// Runs `f` under [`DEADLINE`].
pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("the fault test did not finish before its deadline")
}
