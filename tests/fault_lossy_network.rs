//! A lossy network between a retrying client and the payments API: every operation is charged
//! exactly once, gets one definitive answer, and every answer for its key is the same.
//!
//! `IDEM_SOAK=1` runs ten times as many operations.

#![allow(missing_docs)]

mod faults;
mod support;

use std::sync::Arc;

use faults::lossy_proxy::LossyProxy;
use faults::{
    Attempts, Definitive, Dice, Served, app, assert_each_charged_once, bounded, charge,
    charges_by_amount, client, payments_router, retry_until_definitive, seed, size,
};
use futures_util::StreamExt;
use futures_util::stream;
use idem::config::{ConflictPolicy, Idempotency};

/// Share of connections the proxy breaks.
const FAULT_RATE: f64 = 0.35;
/// Clients running at once.
const CONCURRENCY: usize = 8;

async fn lossy_run(conflict: ConflictPolicy, ops: usize) {
    let dice = Arc::new(Dice::new(seed()));
    let payments = app::Payments::default();
    let idempotency = Idempotency::builder()
        .conflict(conflict)
        .build()
        .expect("valid settings");
    let server = Served::start(payments_router(&payments, idempotency)).await;
    let proxy = LossyProxy::start(server.addr, FAULT_RATE, Arc::clone(&dice)).await;
    let client = client();
    let url = proxy.url("/charges");

    // Handlers take 0-20 ms, so that cuts land before, during and after them.
    let bodies: Vec<_> = (0..ops).map(|op| charge(op, dice.below(21))).collect();
    let results: Vec<(Definitive, Attempts)> = stream::iter(0..ops)
        .map(|op| {
            let (client, url, dice, body) = (&client, &url, &dice, &bodies[op]);
            async move { retry_until_definitive(client, url, &format!("op-{op}"), body, dice).await }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;

    // Exactly one execution per operation, and the answer each got is its charge.
    assert_eq!(payments.executions(), ops as u64, "handler executions");
    let answers: Vec<Definitive> = results.iter().map(|(a, _)| a.clone()).collect();
    assert_each_charged_once(&charges_by_amount(&client, &server).await, &answers);

    // Every later answer for a key is the one the client got, byte for byte.
    for (op, first) in answers.iter().enumerate() {
        let again = client
            .post(server.url("/charges"))
            .header("idempotency-key", format!("op-{op}"))
            .json(&bodies[op])
            .send()
            .await
            .expect("direct request");
        assert_eq!(again.status(), first.status, "operation {op}");
        assert!(again.headers().contains_key("idempotent-replayed"));
        assert_eq!(again.text().await.unwrap(), first.body, "operation {op}");
    }
    assert_eq!(payments.executions(), ops as u64, "replays ran nothing");

    let mut attempts = Attempts::default();
    for (_, a) in &results {
        attempts += *a;
    }
    let lost_first_answers = answers.iter().filter(|a| a.replayed).count();
    let [pass, refused, dropped, cut_both, cut_mid] = proxy.counts.snapshot();
    eprintln!(
        "lossy network ({conflict:?}): {ops} operations, {} attempts, {} connection faults \
         (refused {refused}, response dropped {dropped}, both sides cut {cut_both}, cut mid-response \
         {cut_mid}; {pass} passed), {} connection errors seen, {} 409s, {} executions, \
         {lost_first_answers} operations answered by a replay after losing the first answer",
        attempts.total,
        proxy.counts.faults(),
        attempts.connection_errors,
        attempts.conflicts,
        payments.executions(),
    );
    // The faults did happen, and the path this test is about — a lost answer recovered by a
    // replay — was taken.
    assert!(refused > 0 && dropped > 0 && cut_both > 0 && cut_mid > 0);
    assert!(lost_first_answers > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_network_409_policy_runs_each_operation_once() {
    bounded(lossy_run(ConflictPolicy::Reject, size(300, 3000))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_network_wait_policy_runs_each_operation_once() {
    bounded(lossy_run(ConflictPolicy::Wait, size(300, 3000))).await;
}
