//! A retry with the same key gets the first answer again, byte for byte, without running the
//! handler twice.

#![allow(missing_docs)]

mod support;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use serde_json::{Value, json};
use support::{Probe, app, post as post_request, send};

#[idempotent(post)]
async fn create_charge(State(probe): State<Probe>, Json(charge): Json<Value>) -> impl IntoResponse {
    let run = probe.run();
    (
        StatusCode::CREATED,
        [("x-run", run.to_string())],
        // Not canonical JSON on purpose: the replay must repeat these exact bytes.
        format!("{{ \"run\":{run},  \"amount\": {} }}", charge["amount"]),
    )
}

fn router(probe: &Probe) -> Router {
    app(Router::new().route("/charges", post(create_charge)), probe)
}

#[tokio::test]
async fn a_retry_replays_the_first_answer_byte_for_byte() {
    let probe = Probe::default();
    let app = router(&probe);
    let body = json!({"amount": 100}).to_string();

    let first = send(&app, post_request("/charges", Some("charge-1"), &body)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.is_replay(), "the first answer is not a replay");
    assert_eq!(first.text(), r#"{ "run":1,  "amount": 100 }"#);

    let retry = send(&app, post_request("/charges", Some("charge-1"), &body)).await;
    assert!(retry.is_replay());
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.body, first.body, "same bytes");
    assert_eq!(
        retry.headers["x-run"], "1",
        "the handler's headers are replayed"
    );
    assert_eq!(probe.runs(), 1, "the handler ran once");
}

#[tokio::test]
async fn another_key_runs_the_handler_again() {
    let probe = Probe::default();
    let app = router(&probe);
    let body = json!({"amount": 5}).to_string();

    send(&app, post_request("/charges", Some("a"), &body)).await;
    let other = send(&app, post_request("/charges", Some("b"), &body)).await;
    assert!(!other.is_replay());
    assert_eq!(other.headers["x-run"], "2");
    assert_eq!(probe.runs(), 2);
}

#[tokio::test]
async fn without_a_key_every_request_runs() {
    let probe = Probe::default();
    let app = router(&probe);
    let body = json!({"amount": 5}).to_string();

    for run in 1..=2 {
        let answer = send(&app, post_request("/charges", None, &body)).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        assert!(!answer.is_replay());
        assert_eq!(answer.headers["x-run"], run.to_string());
    }
}
