//! Requests that extractors reject never reach the store: the client fixes them and retries.

mod support;

use axum::body::Body;
use axum::http::Request;
use serde_json::json;
use support::{Harness, post_json};

fn raw(body: &'static str, content_type: &'static str) -> Request<Body> {
    Request::post("/orders")
        .header("content-type", content_type)
        .header("idempotency-key", "fix-me")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn an_extractor_rejection_is_not_stored() {
    let app = Harness::new();
    assert_eq!(
        app.send(raw("{not json", "application/json")).await.status,
        400
    );
    assert_eq!(
        app.send(raw(r#"{"amunt": 1}"#, "application/json"))
            .await
            .status,
        422
    );
    assert_eq!(
        app.send(raw(r#"{"amount": 1}"#, "text/plain")).await.status,
        415
    );
    assert_eq!(app.executions(), 0);

    let fixed = app
        .send(post_json("/orders", Some("fix-me"), &json!({"amount": 1})))
        .await;
    assert_eq!(fixed.status, 201);
    assert!(!fixed.is_replay());
    assert_eq!(app.executions(), 1);
}

#[tokio::test]
async fn the_key_is_checked_before_the_body() {
    let app = Harness::new();
    let request = Request::post("/orders")
        .header("content-type", "application/json")
        .header("idempotency-key", "")
        .body(Body::from("{not json"))
        .unwrap();
    app.send(request).await.assert_problem(400, "key-invalid");
}
