//! A retry with the same key gets the first answer back, byte for byte, marked as a replay.

mod support;

use serde_json::json;
use support::{Harness, post_json};

#[tokio::test]
async fn retry_replays_the_first_answer_byte_for_byte() {
    let app = Harness::new();
    let order = json!({"amount": 500});

    let first = app.send(post_json("/orders", Some("k-1"), &order)).await;
    assert_eq!(first.status, 201);
    assert!(
        !first.is_replay(),
        "the first answer is never marked as a replay"
    );

    let retry = app.send(post_json("/orders", Some("k-1"), &order)).await;
    assert_eq!(retry.status, 201);
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.headers["content-type"], "application/json");
    assert_eq!(retry.headers["x-execution"], "1");
    assert_eq!(app.executions(), 1);
}

#[tokio::test]
async fn quoted_and_bare_forms_name_the_same_key() {
    let app = Harness::new();
    let order = json!({"amount": 1});
    let first = app
        .send(post_json("/orders", Some("abc-123"), &order))
        .await;
    let retry = app
        .send(post_json("/orders", Some("\"abc-123\""), &order))
        .await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(app.executions(), 1);
}

#[tokio::test]
async fn without_a_key_the_handler_runs_every_time() {
    let app = Harness::new();
    let order = json!({"amount": 500});
    for n in 1..=3 {
        let answer = app.send(post_json("/orders", None, &order)).await;
        assert_eq!(answer.status, 201);
        assert!(!answer.is_replay());
        assert_eq!(answer.json()["execution"], n);
    }
    assert_eq!(app.executions(), 3);
}

#[tokio::test]
async fn set_cookie_reaches_the_first_caller_only() {
    let app = Harness::new();
    let order = json!({"amount": 500});
    let first = app.send(post_json("/orders", Some("cookie"), &order)).await;
    assert_eq!(first.headers["set-cookie"], "session=abc");
    let retry = app.send(post_json("/orders", Some("cookie"), &order)).await;
    assert!(retry.is_replay());
    assert!(retry.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn client_and_server_errors_are_stored_and_replayed() {
    let app = Harness::new();
    for (key, status) in [
        ("s200", 200),
        ("s402", 402),
        ("s409", 409),
        ("s500", 500),
        ("s503", 503),
    ] {
        let order = json!({"amount": 1, "status": status});
        let first = app.send(post_json("/orders", Some(key), &order)).await;
        assert_eq!(first.status, status);
        let retry = app.send(post_json("/orders", Some(key), &order)).await;
        assert_eq!(retry.status, status, "{key}");
        assert!(retry.is_replay(), "{key}");
        assert_eq!(retry.body, first.body);
    }
    assert_eq!(app.executions(), 5);
}

#[tokio::test]
async fn server_errors_release_the_key_when_not_stored() {
    let app = Harness::configured(|b| b.store_server_errors(false));
    let failing = json!({"amount": 1, "status": 500});
    assert_eq!(
        app.send(post_json("/orders", Some("retry-5xx"), &failing))
            .await
            .status,
        500
    );
    let again = app
        .send(post_json("/orders", Some("retry-5xx"), &failing))
        .await;
    assert_eq!(again.status, 500);
    assert!(!again.is_replay(), "a released key runs the handler again");
    assert_eq!(app.executions(), 2);

    // Client errors are still stored under this setting.
    let declined = json!({"amount": 1, "status": 402});
    app.send(post_json("/orders", Some("keep-4xx"), &declined))
        .await;
    assert!(
        app.send(post_json("/orders", Some("keep-4xx"), &declined))
            .await
            .is_replay()
    );
    assert_eq!(app.executions(), 3);
}

#[tokio::test]
async fn methods_the_handler_does_not_cover_pass_through() {
    let app = Harness::new();
    let order = json!({"amount": 1});
    for _ in 0..2 {
        let answer = app.send(post_json("/puts", Some("same"), &order)).await;
        assert_eq!(answer.status, 201);
        assert!(!answer.is_replay(), "POST is not covered by this handler");
    }
    assert_eq!(app.executions(), 2);
    let put = support::request("PUT", "/puts", Some("same"), &order);
    app.send(put).await;
    let put = support::request("PUT", "/puts", Some("same"), &order);
    assert!(app.send(put).await.is_replay());
    assert_eq!(app.executions(), 3);
}
