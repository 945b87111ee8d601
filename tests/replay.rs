//! A retry with the same key gets the first answer again — status, headers and body byte for
//! byte, marked as a replay — without running the handler twice, whatever that answer's status.

#![allow(missing_docs)]

mod support;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use serde_json::{Value, json};
use support::{Probe, app, app_with, orders, post as post_request, post_json, send};

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
    app(orders().route("/charges", post(create_charge)), probe)
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
async fn a_retry_replays_the_status_headers_and_body() {
    let probe = Probe::default();
    let app = router(&probe);
    let order = json!({"amount": 500});

    let first = send(&app, post_json("/orders", Some("k-1"), &order)).await;
    assert_eq!(first.status, 201);
    assert!(
        !first.is_replay(),
        "the first answer is never marked as a replay"
    );

    let retry = send(&app, post_json("/orders", Some("k-1"), &order)).await;
    assert_eq!(retry.status, 201);
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.headers["content-type"], "application/json");
    assert_eq!(retry.headers["x-execution"], "1");
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn quoted_and_bare_forms_name_the_same_key() {
    let probe = Probe::default();
    let app = router(&probe);
    let order = json!({"amount": 1});
    let first = send(&app, post_json("/orders", Some("abc-123"), &order)).await;
    let retry = send(&app, post_json("/orders", Some("\"abc-123\""), &order)).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(probe.runs(), 1);
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
    let order = json!({"amount": 500});
    for n in 1..=3 {
        let answer = send(&app, post_json("/orders", None, &order)).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        assert!(!answer.is_replay());
        assert_eq!(answer.json()["execution"], n);
        assert_eq!(answer.headers["x-execution"], n.to_string());
    }
    assert_eq!(probe.runs(), 3);
}

#[tokio::test]
async fn set_cookie_reaches_the_first_caller_only() {
    let probe = Probe::default();
    let app = router(&probe);
    let order = json!({"amount": 500});
    let first = send(&app, post_json("/orders", Some("cookie"), &order)).await;
    assert_eq!(first.headers["set-cookie"], "session=abc");
    let retry = send(&app, post_json("/orders", Some("cookie"), &order)).await;
    assert!(retry.is_replay());
    assert!(retry.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn client_and_server_errors_are_stored_and_replayed() {
    let probe = Probe::default();
    let app = router(&probe);
    for (key, status) in [
        ("s200", 200),
        ("s402", 402),
        ("s409", 409),
        ("s500", 500),
        ("s503", 503),
    ] {
        let order = json!({"amount": 1, "status": status});
        let first = send(&app, post_json("/orders", Some(key), &order)).await;
        assert_eq!(first.status, status);
        let retry = send(&app, post_json("/orders", Some(key), &order)).await;
        assert_eq!(retry.status, status, "{key}");
        assert!(retry.is_replay(), "{key}");
        assert_eq!(retry.body, first.body);
    }
    assert_eq!(probe.runs(), 5);
}

#[tokio::test]
async fn server_errors_release_the_key_when_not_stored() {
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| b.store_server_errors(false));
    let failing = json!({"amount": 1, "status": 500});
    assert_eq!(
        send(&app, post_json("/orders", Some("retry-5xx"), &failing))
            .await
            .status,
        500
    );
    let again = send(&app, post_json("/orders", Some("retry-5xx"), &failing)).await;
    assert_eq!(again.status, 500);
    assert!(!again.is_replay(), "a released key runs the handler again");
    assert_eq!(probe.runs(), 2);

    // Client errors are still stored under this setting.
    let declined = json!({"amount": 1, "status": 402});
    send(&app, post_json("/orders", Some("keep-4xx"), &declined)).await;
    assert!(
        send(&app, post_json("/orders", Some("keep-4xx"), &declined))
            .await
            .is_replay()
    );
    assert_eq!(probe.runs(), 3);
}
