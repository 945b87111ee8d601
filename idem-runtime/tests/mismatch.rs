//! A key reused for a different request is refused with 422, and the handler does not run.

mod support;

use serde_json::json;
use support::{Harness, post_json};

#[tokio::test]
async fn another_body_with_the_same_key_is_refused() {
    let app = Harness::new();
    app.send(post_json("/orders", Some("k"), &json!({"amount": 500})))
        .await;
    let other = app
        .send(post_json("/orders", Some("k"), &json!({"amount": 501})))
        .await;
    other.assert_problem(422, "key-reused");
    assert_eq!(app.executions(), 1);
}

#[tokio::test]
async fn another_path_with_the_same_key_is_refused() {
    let app = Harness::new();
    let order = json!({"amount": 5});
    app.send(post_json("/orders/a", Some("k"), &order)).await;
    app.send(post_json("/orders/b", Some("k"), &order))
        .await
        .assert_problem(422, "key-reused");
    app.send(post_json("/orders/a?x=1", Some("k"), &order))
        .await
        .assert_problem(422, "key-reused");
    assert_eq!(app.executions(), 1);
}

#[tokio::test]
async fn another_route_with_the_same_key_is_refused() {
    let app = Harness::new();
    let order = json!({"amount": 5});
    app.send(post_json("/orders", Some("k"), &order)).await;
    app.send(post_json("/other-orders", Some("k"), &order))
        .await
        .assert_problem(422, "key-reused");
    assert_eq!(app.executions(), 1);
}

#[tokio::test]
async fn a_different_request_during_execution_is_refused() {
    let app = Harness::new();
    let slow = app.send(post_json(
        "/orders",
        Some("k"),
        &json!({"amount": 1, "delay_ms": 300}),
    ));
    let other = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        app.send(post_json("/orders", Some("k"), &json!({"amount": 2})))
            .await
    };
    let (first, other) = tokio::join!(slow, other);
    assert_eq!(first.status, 201);
    other.assert_problem(422, "key-reused");
    assert_eq!(app.executions(), 1);
}

#[tokio::test]
async fn member_order_and_whitespace_do_not_make_a_different_request() {
    let app = Harness::new();
    let send = |body: &'static str| {
        let request = axum::http::Request::post("/tallies")
            .header("content-type", "application/json")
            .header("idempotency-key", "tally")
            .body(axum::body::Body::from(body))
            .unwrap();
        app.send(request)
    };
    let first = send(r#"{"a":1,"b":2,"c":3}"#).await;
    assert_eq!(first.status, 201);
    let reordered = send("{ \"c\": 3,\n \"a\": 1, \"b\": 2 }").await;
    assert!(reordered.is_replay());
    send(r#"{"a":1,"b":2,"c":4}"#)
        .await
        .assert_problem(422, "key-reused");
    assert_eq!(app.executions(), 1);
}
