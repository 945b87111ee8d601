//! A client that goes away does not cancel the handler: it runs to completion, its answer is
//! stored, and the retry after the connection error gets the replay — even when the client hangs
//! up while the claim is still on its way to the store.

#![allow(missing_docs)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use serde_json::json;
use support::store::{FaultyStore, Operation};
use support::{Probe, app, app_with, orders, post as post_request, post_json, send};
use tower::ServiceExt;

// `conflict = wait`, so that a retry arriving while the first request still runs waits for its
// answer instead of getting a 409.
#[idempotent(post, conflict = wait)]
async fn transfer(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    let run = probe.run_gated().await;
    format!("transferred {amount} in run {run}")
}

#[tokio::test]
async fn a_dropped_request_completes_and_its_retry_is_a_replay() {
    let probe = Probe::default();
    let app = app(Router::new().route("/transfers", post(transfer)), &probe);

    // The client hangs up once the handler has started: the request future is dropped.
    let request = send(&app, post_request("/transfers", Some("t-1"), "40"));
    tokio::select! {
        _ = request => panic!("the handler is gated; the request cannot finish yet"),
        () = probe.started() => {}
    }

    probe.open();
    let retry = send(&app, post_request("/transfers", Some("t-1"), "40")).await;
    assert!(
        retry.is_replay(),
        "status {}: {}",
        retry.status,
        retry.text()
    );
    assert_eq!(retry.status, 200);
    assert_eq!(retry.text(), "transferred 40 in run 1");
    assert_eq!(
        probe.runs(),
        1,
        "the dropped request's handler was not run again"
    );
}

#[tokio::test]
async fn a_dropped_request_still_completes_and_a_retry_meanwhile_gets_409() {
    let probe = Probe::default();
    let app = app(orders(), &probe);
    let order = json!({"amount": 7, "delay_ms": 200});

    // The client gives up after 50 ms: the request future is dropped mid-flight.
    let request = app
        .clone()
        .oneshot(post_json("/orders", Some("gone"), &order));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), request)
            .await
            .is_err()
    );
    assert_eq!(probe.runs(), 1, "the handler started");

    // While it still runs, a retry is told to come back.
    let early = send(&app, post_json("/orders", Some("gone"), &order)).await;
    early.assert_problem(409, "request-in-flight");

    tokio::time::sleep(Duration::from_millis(400)).await;
    let retry = send(&app, post_json("/orders", Some("gone"), &order)).await;
    assert_eq!(retry.status, 201);
    assert!(
        retry.is_replay(),
        "the handler ran to completion and its answer was kept"
    );
    assert_eq!(retry.json()["amount"], 7);
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn a_request_dropped_during_its_claim_does_not_leave_the_key_stuck() {
    let store = Arc::new(FaultyStore::memory());
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| b.shared_store(store.clone()));
    let order = json!({"amount": 3});

    // The client hangs up while the claim is still on its way to the store.
    store.hold(Operation::Claim);
    let request = app
        .clone()
        .oneshot(post_json("/orders", Some("mid-claim"), &order));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), request)
            .await
            .is_err()
    );
    store.release(Operation::Claim);

    // The claim and the handler still finish, so the retry is a replay, not a 409 until the lease
    // runs out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let retry = send(&app, post_json("/orders", Some("mid-claim"), &order)).await;
    assert!(retry.is_replay(), "status {}", retry.status);
    assert_eq!(probe.runs(), 1);
}
