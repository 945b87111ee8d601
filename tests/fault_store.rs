//! Store faults under load: claims, completions and lookups that fail or stall (before or after
//! the store made the change) answer 503 and never run a handler without a claim; once the
//! faults clear, no key is stuck and every operation has run exactly once. With the `redis`
//! feature, Redis is killed and restarted in the middle of a run.
//!
//! `IDEM_SOAK=1` runs ten times as many operations.

#![allow(missing_docs)]

mod faults;

use std::sync::Arc;
use std::time::Duration;

use faults::store::{FaultyStore, Operation};
use faults::{
    Attempts, Definitive, Dice, Served, app, assert_each_charged_once, bounded, charge,
    charges_by_amount, client, payments_router, retry_until_definitive, seed, size,
};
use futures_util::StreamExt;
use futures_util::stream;
use idem::config::{ConflictPolicy, Idempotency};
use idem::store::{IdempotencyStore, MemoryStore};

const CONCURRENCY: usize = 8;
/// Share of the operations of each faulty kind that fail or stall.
const FAULT_RATE: f64 = 0.2;
/// How long the runtime waits for the store before answering 503.
const STORE_TIMEOUT: Duration = Duration::from_millis(100);
/// A claim whose answer was lost blocks its key this long.
const LEASE: Duration = Duration::from_millis(800);

async fn run_ops(
    server: &Served,
    ops: usize,
    dice: &Dice,
) -> (Vec<serde_json::Value>, Vec<Definitive>, Attempts) {
    let client = client();
    let url = server.url("/charges");
    let bodies: Vec<_> = (0..ops).map(|op| charge(op, dice.below(11))).collect();
    let results: Vec<(Definitive, Attempts)> = stream::iter(0..ops)
        .map(|op| {
            let (client, url, body) = (&client, &url, &bodies[op]);
            async move { retry_until_definitive(client, url, &format!("op-{op}"), body, dice).await }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut attempts = Attempts::default();
    for (_, a) in &results {
        attempts += *a;
    }
    (
        bodies,
        results.into_iter().map(|(answer, _)| answer).collect(),
        attempts,
    )
}

/// Once the faults are gone, every key answers definitively again (nothing stuck in flight past
/// its lease) and replays what its operation was answered.
async fn assert_nothing_stuck(
    server: &Served,
    bodies: &[serde_json::Value],
    answers: &[Definitive],
    dice: &Dice,
) {
    let client = client();
    for (op, answer) in answers.iter().enumerate() {
        let (again, _) = retry_until_definitive(
            &client,
            &server.url("/charges"),
            &format!("op-{op}"),
            &bodies[op],
            dice,
        )
        .await;
        assert!(again.replayed, "operation {op} ran again: {again:?}");
        assert_eq!(again.status, answer.status, "operation {op}");
        assert_eq!(again.body, answer.body, "operation {op}");
    }
}

async fn faulty_store_run(conflict: ConflictPolicy, ops: usize) {
    let dice = Arc::new(Dice::new(seed()));
    let memory: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::default());
    let store = Arc::new(FaultyStore::new(
        memory,
        Arc::clone(&dice),
        STORE_TIMEOUT * 3,
    ));
    for operation in [Operation::Claim, Operation::Complete, Operation::Lookup] {
        store.fault(operation, FAULT_RATE);
    }
    let payments = app::Payments::default();
    let idempotency = Idempotency::builder()
        .shared_store(store.clone())
        .conflict(conflict)
        .store_timeout(STORE_TIMEOUT)
        .lease(LEASE)
        .build()
        .expect("valid settings");
    let server = Served::start(payments_router(&payments, idempotency)).await;

    store.set_active(true);
    let (bodies, answers, attempts) = run_ops(&server, ops, &dice).await;
    store.set_active(false);

    // A handler never ran without a fresh claim for its key.
    for op in 0..ops {
        let key = format!("op-{op}");
        assert!(
            store.fresh_claims(&key) >= 1,
            "operation {op} ran without a claim"
        );
    }
    assert_nothing_stuck(&server, &bodies, &answers, &dice).await;
    // And it ran exactly once.
    assert_each_charged_once(&charges_by_amount(&client(), &server).await, &answers);
    assert_eq!(payments.executions(), ops as u64);

    eprintln!(
        "store faults ({conflict:?}): {ops} operations, {} attempts, {} store faults injected \
         (claim {}, complete {}, lookup {}) over {} store calls, {} answered 503, {} 409s, \
         {} executions; by kind: {:?}",
        attempts.total,
        store.injected_total(),
        store.injected_into(Operation::Claim),
        store.injected_into(Operation::Complete),
        store.injected_into(Operation::Lookup),
        store.calls(),
        attempts.unavailable,
        attempts.conflicts,
        payments.executions(),
        store.injected(),
    );
    assert!(
        store.injected_into(Operation::Claim) > 0 && store.injected_into(Operation::Complete) > 0
    );
    assert!(
        attempts.unavailable > 0,
        "no fault ever reached a client as a 503"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_faults_409_policy_fail_closed_and_leave_nothing_stuck() {
    bounded(faulty_store_run(ConflictPolicy::Reject, size(120, 1200))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_faults_wait_policy_fail_closed_and_leave_nothing_stuck() {
    bounded(faulty_store_run(ConflictPolicy::Wait, size(120, 1200))).await;
}
