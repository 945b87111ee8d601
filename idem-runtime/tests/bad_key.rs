//! Every malformed key is refused with 400 problem+json; the handler does not run, nothing is stored.

mod support;

use axum::body::Body;
use axum::http::{HeaderValue, Request};
use serde_json::json;
use support::{Harness, post_json};

fn with_key_bytes(path: &str, key: &[u8]) -> Request<Body> {
    let mut request = post_json(path, None, &json!({"amount": 1}));
    request
        .headers_mut()
        .insert("idempotency-key", HeaderValue::from_bytes(key).unwrap());
    request
}

#[tokio::test]
async fn malformed_keys_get_400() {
    let app = Harness::new();
    let too_long = "k".repeat(256);
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b"\"\"", "empty"),
        (too_long.as_bytes(), "256 characters"),
        (b"a b", "space"),
        (b"a\tb", "control character"),
        (b"caf\xc3\xa9", "non-ASCII"),
        (b"\"abc", "no closing"),
        (b"\"a\\bc\"", "may only escape"),
        (b"\"abc\"x", "nothing may follow"),
        (b"\"a\tc\"", "control character"),
        (b"\"caf\xc3\xa9\"", "non-ASCII"),
    ];
    for (key, why) in cases {
        let answer = app.send(with_key_bytes("/orders", key)).await;
        answer.assert_problem(400, "key-invalid");
        let detail = answer.json()["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains(why),
            "{key:?}: {detail:?} should mention {why:?}"
        );
    }
    assert_eq!(app.executions(), 0);
}

#[tokio::test]
async fn the_longest_allowed_key_is_accepted() {
    let app = Harness::new();
    let key = "k".repeat(255);
    assert_eq!(
        app.send(with_key_bytes("/orders", key.as_bytes()))
            .await
            .status,
        201
    );
    let quoted_with_space = b"\"a key with spaces and \\\"quotes\\\"\"";
    assert_eq!(
        app.send(with_key_bytes("/orders", quoted_with_space))
            .await
            .status,
        201
    );
    assert_eq!(app.executions(), 2);
}

#[tokio::test]
async fn a_repeated_header_gets_400() {
    let app = Harness::new();
    let mut request = post_json("/orders", Some("one"), &json!({"amount": 1}));
    request
        .headers_mut()
        .append("idempotency-key", HeaderValue::from_static("two"));
    let answer = app.send(request).await;
    answer.assert_problem(400, "key-invalid");
    assert!(
        answer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("more than once")
    );
    assert_eq!(app.executions(), 0);
}

#[tokio::test]
async fn a_bad_key_is_not_stored() {
    let app = Harness::configured(|b| b.max_key_len(8));
    let order = json!({"amount": 1});
    app.send(post_json("/orders", Some("too-long-key"), &order))
        .await
        .assert_problem(400, "key-invalid");
    // The client shortens the key and retries: a normal first execution.
    let fixed = app.send(post_json("/orders", Some("short"), &order)).await;
    assert_eq!(fixed.status, 201);
    assert!(!fixed.is_replay());
    assert_eq!(app.executions(), 1);
}

#[tokio::test]
async fn a_required_key_that_is_missing_gets_400() {
    let app = Harness::new();
    let order = json!({"amount": 1});
    app.send(post_json("/refunds", None, &order))
        .await
        .assert_problem(400, "key-missing");
    assert_eq!(app.executions(), 0);
    assert_eq!(
        app.send(post_json("/refunds", Some("r1"), &order))
            .await
            .status,
        201
    );
    assert!(
        app.send(post_json("/refunds", Some("r1"), &order))
            .await
            .is_replay()
    );
    assert_eq!(app.executions(), 1);
}

#[tokio::test]
async fn a_runtime_wide_required_key_applies_to_every_handler() {
    let app = Harness::configured(|b| b.required(true));
    app.send(post_json("/orders", None, &json!({"amount": 1})))
        .await
        .assert_problem(400, "key-missing");
    assert_eq!(app.executions(), 0);
}

#[tokio::test]
async fn a_custom_header_name_carries_the_key() {
    let app =
        Harness::configured(|b| b.header(axum::http::HeaderName::from_static("x-request-key")));
    let order = json!({"amount": 1});
    let request = || {
        let mut request = post_json("/orders", None, &order);
        request
            .headers_mut()
            .insert("x-request-key", HeaderValue::from_static("custom"));
        request
    };
    app.send(request()).await;
    assert!(app.send(request()).await.is_replay());
    assert_eq!(app.executions(), 1);
}
