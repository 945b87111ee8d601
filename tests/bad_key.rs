//! A bad `Idempotency-Key` (malformed, too long, sent twice), or a missing one where the handler
//! requires it, gets `400` problem+json before any other extractor reads the request; the handler
//! does not run and nothing is stored.

#![allow(missing_docs)]

mod support;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use serde_json::json;
use support::{Probe, app, app_with, orders, post as post_request, post_json, send};

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

fn routes() -> Router<Probe> {
    orders()
        .route("/optional", post(create))
        .route("/required", post(create_required))
}

fn router(probe: &Probe) -> Router {
    app(routes(), probe)
}

/// An order with the raw bytes `key` as its key.
fn with_key_bytes(path: &str, key: &[u8]) -> Request<Body> {
    let mut request = post_json(path, None, &json!({"amount": 1}));
    request
        .headers_mut()
        .insert("idempotency-key", HeaderValue::from_bytes(key).unwrap());
    request
}

#[tokio::test]
async fn an_invalid_key_gets_400_and_the_handler_does_not_run() {
    let probe = Probe::default();
    let app = router(&probe);
    let too_long = "k".repeat(256);
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b"\"\"", "empty"),
        (too_long.as_bytes(), "256 characters"),
        (b"a b", "space"),
        (b"two words", "space"),
        (b"a\tb", "control character"),
        (b"caf\xc3\xa9", "non-ASCII"),
        (b"\"abc", "no closing"),
        (b"\"unterminated", "no closing"),
        (b"\"a\\bc\"", "may only escape"),
        (b"\"abc\"x", "nothing may follow"),
        (b"\"a\tc\"", "control character"),
        (b"\"caf\xc3\xa9\"", "non-ASCII"),
    ];
    for (key, why) in cases {
        let answer = send(&app, with_key_bytes("/orders", key)).await;
        answer.assert_problem(400, "key-invalid");
        let detail = answer.json()["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains(why),
            "{key:?}: {detail:?} should mention {why:?}"
        );
    }
    assert_eq!(probe.runs(), 0);
}

#[tokio::test]
async fn the_longest_allowed_key_is_accepted() {
    let probe = Probe::default();
    let app = router(&probe);
    let key = "k".repeat(255);
    assert_eq!(
        send(&app, with_key_bytes("/orders", key.as_bytes()))
            .await
            .status,
        201
    );
    let quoted_with_space = b"\"a key with spaces and \\\"quotes\\\"\"";
    assert_eq!(
        send(&app, with_key_bytes("/orders", quoted_with_space))
            .await
            .status,
        201
    );
    assert_eq!(probe.runs(), 2);
}

#[tokio::test]
async fn a_key_sent_twice_gets_400() {
    let probe = Probe::default();
    let app = router(&probe);
    let mut request = post_json("/orders", Some("one"), &json!({"amount": 1}));
    request
        .headers_mut()
        .append("idempotency-key", HeaderValue::from_static("two"));
    let answer = send(&app, request).await;
    answer.assert_problem(400, "key-invalid");
    assert!(
        answer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("more than once")
    );
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
    send(&app, post_request("/orders", Some(""), "{not json"))
        .await
        .assert_problem(400, "key-invalid");
    send(&app, post_request("/required", None, "not json"))
        .await
        .assert_problem(400, "key-missing");
}

#[tokio::test]
async fn a_bad_key_is_not_stored() {
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| b.max_key_len(8));
    let order = json!({"amount": 1});
    send(&app, post_json("/orders", Some("too-long-key"), &order))
        .await
        .assert_problem(400, "key-invalid");
    // The client shortens the key and retries: a normal first execution.
    let fixed = send(&app, post_json("/orders", Some("short"), &order)).await;
    assert_eq!(fixed.status, 201);
    assert!(!fixed.is_replay());
    assert_eq!(probe.runs(), 1);
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
    assert!(
        send(&app, post_request("/required", Some("k"), "1"))
            .await
            .is_replay()
    );
    assert_eq!(probe.runs(), 1);
    let optional = send(&app, post_request("/optional", None, "1")).await;
    assert_eq!(
        optional.status, 200,
        "keys stay optional where not required"
    );
    assert_eq!(probe.runs(), 2);
}

#[tokio::test]
async fn a_runtime_wide_required_key_applies_to_every_handler() {
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| b.required(true));
    send(&app, post_json("/orders", None, &json!({"amount": 1})))
        .await
        .assert_problem(400, "key-missing");
    assert_eq!(probe.runs(), 0);
}

#[tokio::test]
async fn a_custom_header_name_carries_the_key() {
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| {
        b.header(HeaderName::from_static("x-request-key"))
    });
    let order = json!({"amount": 1});
    let request = || {
        support::request(
            Method::POST,
            "/orders",
            &[("x-request-key", "custom")],
            &order.to_string(),
        )
    };
    send(&app, request()).await;
    assert!(send(&app, request()).await.is_replay());
    assert_eq!(probe.runs(), 1);
}
