//! A request that an extractor rejects (invalid JSON, a missing field, the wrong content type)
//! gets the extractor's own answer and never reaches the store: the client fixes the body and
//! retries with the same key.

#![allow(missing_docs)]

mod support;

use axum::body::Body;
use axum::http::Request;
use serde_json::json;
use support::{Probe, app, orders, post_json, send};

/// A `POST` of `body` to `uri` as `content_type`, under `key`.
fn post_as(
    uri: &'static str,
    key: &'static str,
    body: &'static str,
    content_type: &'static str,
) -> Request<Body> {
    Request::post(uri)
        .header("content-type", content_type)
        .header("idempotency-key", key)
        .body(Body::from(body))
        .unwrap()
}

fn raw(body: &'static str, content_type: &'static str) -> Request<Body> {
    post_as("/orders", "fix-me", body, content_type)
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

#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct Page {
    page: u32,
}

/// A handler of four arguments: three extracted from the request's parts, the body last.
#[idem::idempotent(post)]
async fn create_paged_order(
    axum::extract::State(probe): axum::extract::State<Probe>,
    axum::extract::Path(_id): axum::extract::Path<u32>,
    axum::extract::Query(_page): axum::extract::Query<Page>,
    axum::Json(order): axum::Json<support::Order>,
) -> axum::response::Response {
    support::order_response(&probe, order).await
}

fn paged(uri: &'static str, content_type: &'static str) -> Request<Body> {
    post_as(uri, "fix-me-too", r#"{"amount": 1}"#, content_type)
}

#[tokio::test]
async fn the_first_extractor_that_rejects_answers_and_nothing_is_stored() {
    let probe = Probe::default();
    let router = axum::Router::new().route("/orders/{id}", axum::routing::post(create_paged_order));
    let app = app(router, &probe);
    // Path, query and content type all wrong: the path's extractor answers, the first of them.
    let path = send(&app, paged("/orders/abc?page=x", "text/plain")).await;
    assert_eq!(path.status, 400);
    assert!(
        path.text().contains("abc"),
        "the path's rejection: {}",
        path.text()
    );
    // The path fixed: the query's extractor answers, before the body's.
    let query = send(&app, paged("/orders/7?page=x", "text/plain")).await;
    assert_eq!(query.status, 400);
    assert!(
        query.text().contains("query"),
        "the query's rejection: {}",
        query.text()
    );
    // Only the body's content type left wrong: its extractor answers.
    assert_eq!(
        send(&app, paged("/orders/7?page=1", "text/plain"))
            .await
            .status,
        415
    );
    assert_eq!(probe.runs(), 0);

    // Everything fixed, under the same key: it runs once, and its retry is replayed.
    let fixed = send(&app, paged("/orders/7?page=1", "application/json")).await;
    assert_eq!(fixed.status, 201);
    assert!(!fixed.is_replay());
    let retry = send(&app, paged("/orders/7?page=1", "application/json")).await;
    assert_eq!(retry.status, 201);
    assert!(retry.is_replay());
    assert_eq!(probe.runs(), 1);
}
