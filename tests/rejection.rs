//! A request that an extractor rejects (invalid JSON, a missing field, the wrong content type)
//! gets the extractor's own answer and never reaches the store: the client fixes the body and
//! retries with the same key.

#![allow(missing_docs)]

mod support;

use axum::body::Body;
use axum::http::Request;
use serde_json::json;
use support::{Probe, app, orders, post_json, send};

fn raw(body: &'static str, content_type: &'static str) -> Request<Body> {
    Request::post("/orders")
        .header("content-type", content_type)
        .header("idempotency-key", "fix-me")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn an_extractor_rejection_is_not_stored() {
    let probe = Probe::default();
    let app = app(orders(), &probe);
    let rejected = send(&app, raw("{not json", "application/json")).await;
    assert_eq!(rejected.status, 400);
    assert!(
        !rejected.headers["content-type"]
            .to_str()
            .unwrap()
            .contains("problem"),
        "the extractor's own answer, not one of idem's"
    );
    assert_eq!(
        send(&app, raw(r#"{"amunt": 1}"#, "application/json"))
            .await
            .status,
        422
    );
    assert_eq!(
        send(&app, raw(r#"{"amount": 1}"#, "text/plain"))
            .await
            .status,
        415
    );
    assert_eq!(probe.runs(), 0);

    // The client fixes the body and retries with the same key: it runs.
    let fixed = send(
        &app,
        post_json("/orders", Some("fix-me"), &json!({"amount": 1})),
    )
    .await;
    assert_eq!(fixed.status, 201);
    assert!(!fixed.is_replay());
    assert_eq!(probe.runs(), 1);
}
