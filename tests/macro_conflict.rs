//! A duplicate of a request that is still running gets `409` with `Retry-After`, and the running
//! request is not disturbed.

#![allow(missing_docs)]

mod support;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use support::{Probe, app, post as post_request, send};

#[idempotent(post)]
async fn slow_charge(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    let run = probe.run_gated().await;
    format!("charge {amount}, run {run}")
}

#[tokio::test]
async fn a_concurrent_duplicate_gets_409_and_the_first_completes() {
    let probe = Probe::default();
    let app = app(Router::new().route("/charges", post(slow_charge)), &probe);

    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/charges", Some("k"), "7")).await }
    });
    probe.started().await;

    let duplicate = send(&app, post_request("/charges", Some("k"), "7")).await;
    duplicate.assert_problem(409, "request-in-flight");
    assert!(duplicate.headers.contains_key("retry-after"));

    probe.open();
    let first = first.await.expect("first request");
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "charge 7, run 1");

    let retry = send(&app, post_request("/charges", Some("k"), "7")).await;
    assert!(retry.is_replay());
    assert_eq!(retry.text(), "charge 7, run 1");
    assert_eq!(probe.runs(), 1, "the duplicate did not run the handler");
}

#[tokio::test]
async fn a_different_request_with_the_key_of_a_running_one_gets_422() {
    let probe = Probe::default();
    let app = app(Router::new().route("/charges", post(slow_charge)), &probe);

    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/charges", Some("k"), "7")).await }
    });
    probe.started().await;

    let other = send(&app, post_request("/charges", Some("k"), "8")).await;
    other.assert_problem(422, "key-reused");

    probe.open();
    assert_eq!(first.await.expect("first request").status, 200);
    assert_eq!(probe.runs(), 1);
}
