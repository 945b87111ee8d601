//! A bad `Idempotency-Key`, or a missing one where the handler requires it, gets `400` before any
//! other extractor reads the request, and the handler does not run.

#![allow(missing_docs)]

mod support;

use axum::extract::State;
use axum::http::Method;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use support::{Probe, app, post as post_request, request, send};

#[idempotent(post)]
async fn create(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    probe.run();
    amount.to_string()
}

#[idempotent(post, required)]
async fn create_required(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    probe.run();
    amount.to_string()
}

fn router(probe: &Probe) -> Router {
    app(
        Router::new()
            .route("/optional", post(create))
            .route("/required", post(create_required)),
        probe,
    )
}

#[tokio::test]
async fn an_invalid_key_gets_400_and_the_handler_does_not_run() {
    let probe = Probe::default();
    let app = router(&probe);
    let too_long = "k".repeat(256);
    for key in ["", "\"\"", too_long.as_str(), "two words", "\"unterminated"] {
        let answer = send(&app, post_request("/optional", Some(key), "1")).await;
        answer.assert_problem(400, "key-invalid");
    }
    assert_eq!(probe.runs(), 0);
}

#[tokio::test]
async fn a_key_sent_twice_gets_400() {
    let probe = Probe::default();
    let app = router(&probe);
    let headers = [("idempotency-key", "a"), ("idempotency-key", "b")];
    send(&app, request(Method::POST, "/optional", &headers, "1"))
        .await
        .assert_problem(400, "key-invalid");
    assert_eq!(probe.runs(), 0);
}

#[tokio::test]
async fn a_bad_key_is_refused_before_the_body_is_read() {
    let probe = Probe::default();
    let app = router(&probe);
    // The body is not JSON: were it read first, axum's own rejection would answer.
    send(&app, post_request("/optional", Some(""), "not json"))
        .await
        .assert_problem(400, "key-invalid");
    send(&app, post_request("/required", None, "not json"))
        .await
        .assert_problem(400, "key-missing");
}

#[tokio::test]
async fn a_required_key_that_is_missing_gets_400() {
    let probe = Probe::default();
    let app = router(&probe);
    send(&app, post_request("/required", None, "1"))
        .await
        .assert_problem(400, "key-missing");
    assert_eq!(probe.runs(), 0);

    let with_key = send(&app, post_request("/required", Some("k"), "1")).await;
    assert_eq!(with_key.status, 200);
    let optional = send(&app, post_request("/optional", None, "1")).await;
    assert_eq!(
        optional.status, 200,
        "keys stay optional where not required"
    );
    assert_eq!(probe.runs(), 2);
}

#[tokio::test]
async fn a_rejected_body_is_not_stored() {
    let probe = Probe::default();
    let app = router(&probe);
    let rejected = send(&app, post_request("/optional", Some("k"), "not json")).await;
    assert_eq!(rejected.status, 400);
    assert!(
        !rejected.headers["content-type"]
            .to_str()
            .unwrap()
            .contains("problem")
    );

    // The client fixes the body and retries with the same key: it runs.
    let fixed = send(&app, post_request("/optional", Some("k"), "5")).await;
    assert_eq!(fixed.status, 200);
    assert!(!fixed.is_replay());
    assert_eq!(probe.runs(), 1);
}
