//! A lossy network between a retrying client and the payments example on Postgres: every
//! operation is executed once, charged once (one row), and gets one definitive answer.
//!
//! `IDEM_SOAK=1` runs ten times as many operations.

#![cfg(feature = "postgres")]
#![allow(missing_docs)]

mod faults;
mod postgres_support;

use std::sync::Arc;

use faults::lossy_proxy::LossyProxy;
use faults::{
    Attempts, Definitive, Dice, Served, app, assert_each_charged_once, bounded, charge,
    charges_by_amount, client, payments_router, retry_until_definitive, seed, size,
};
use futures_util::StreamExt;
use futures_util::stream;
use idem::config::Idempotency;
use idem::postgres::sqlx;
use postgres_support::{store, unique_table};

/// Share of connections the proxy breaks.
const FAULT_RATE: f64 = 0.35;
/// Clients running at once.
const CONCURRENCY: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_network_on_postgres_executes_and_charges_each_operation_once() {
    let Some(store) = store().await else {
        return;
    };
    bounded(async move {
        let ops = size(200, 2000);
        let dice = Arc::new(Dice::new(seed()));
        let charges = unique_table("charges");
        let payments = app::Payments::in_database(store.pool().clone(), &charges)
            .await
            .expect("charges table");
        let pool = store.pool().clone();
        let idempotency = Idempotency::builder()
            .store(store)
            .build()
            .expect("valid settings");
        let server = Served::start(payments_router(&payments, idempotency)).await;
        let proxy = LossyProxy::start(server.addr, FAULT_RATE, Arc::clone(&dice)).await;
        let client = client();
        let url = proxy.url("/charges");

        let bodies: Vec<_> = (0..ops).map(|op| charge(op, dice.below(21))).collect();
        let results: Vec<(Definitive, Attempts)> =
            stream::iter(0..ops)
                .map(|op| {
                    let (client, url, dice, body) = (&client, &url, &dice, &bodies[op]);
                    async move {
                        retry_until_definitive(client, url, &format!("op-{op}"), body, dice).await
                    }
                })
                .buffered(CONCURRENCY)
                .collect()
                .await;

        let answers: Vec<Definitive> = results.iter().map(|(a, _)| a.clone()).collect();
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {charges}"))
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(payments.executions(), ops as u64, "handler executions");
        assert_eq!(rows, ops as i64, "charge rows");
        assert_each_charged_once(&charges_by_amount(&client, &server).await, &answers);

        let mut attempts = Attempts::default();
        for (_, a) in &results {
            attempts += *a;
        }
        let replayed = answers.iter().filter(|a| a.replayed).count();
        eprintln!(
            "lossy network on Postgres: {ops} operations, {} attempts, {} connection faults, \
             {} 409s, {} 503s, {} executions, {rows} charge rows, {replayed} answered by a replay",
            attempts.total,
            proxy.counts.faults(),
            attempts.conflicts,
            attempts.unavailable,
            payments.executions(),
        );
        assert!(replayed > 0, "some first answers were lost and replayed");
    })
    .await;
}
