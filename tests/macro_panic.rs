//! A handler that panics answers `500` and releases its key: the retry runs the handler again.

#![allow(missing_docs)]

mod support;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use support::{Probe, app, post as post_request, send};

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
