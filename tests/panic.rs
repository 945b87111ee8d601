//! A handler that panics answers `500` and releases its key: the retry runs the handler again,
//! and the operation may be retried until it succeeds.

#![allow(missing_docs)]

mod support;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use serde_json::json;
use support::{Probe, app, orders, post as post_request, post_json, send};

#[idempotent(post)]
async fn flaky(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    let run = probe.run();
    assert!(run > 1, "the first attempt fails");
    format!("charged {amount} in run {run}")
}

#[tokio::test]
async fn a_panic_answers_500_and_the_key_can_be_retried() {
    let probe = Probe::default();
    let app = app(Router::new().route("/charges", post(flaky)), &probe);

    let first = send(&app, post_request("/charges", Some("p"), "3")).await;
    first.assert_problem(500, "handler-panicked");

    let retry = send(&app, post_request("/charges", Some("p"), "3")).await;
    assert_eq!(retry.status, 200);
    assert!(!retry.is_replay(), "the panic was not stored");
    assert_eq!(retry.text(), "charged 3 in run 2");

    let again = send(&app, post_request("/charges", Some("p"), "3")).await;
    assert!(again.is_replay());
    assert_eq!(again.body, retry.body);
    assert_eq!(probe.runs(), 2);
}

#[tokio::test]
async fn a_panic_releases_the_key_for_the_same_request_and_its_correction() {
    let probe = Probe::default();
    let app = app(orders(), &probe);
    let order = json!({"amount": 1, "panic": true});
    let answer = send(&app, post_json("/orders", Some("boom"), &order)).await;
    answer.assert_problem(500, "handler-panicked");
    assert!(!answer.is_replay());

    // The key is free again: the retry runs the handler (and panics again), it is not a replay
    // and not a 409.
    let retry = send(&app, post_json("/orders", Some("boom"), &order)).await;
    retry.assert_problem(500, "handler-panicked");
    assert_eq!(probe.runs(), 2);

    // The key is not stuck: the same request may be retried until it succeeds. The request must
    // keep its fingerprint, so the retry with another body is a fresh claim of the released key.
    let fixed = send(
        &app,
        post_json("/orders", Some("boom"), &json!({"amount": 1})),
    )
    .await;
    assert_eq!(fixed.status, 201);
    assert_eq!(probe.runs(), 3);
}
