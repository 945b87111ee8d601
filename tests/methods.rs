//! A handler applies idempotency to the methods it declares; a request with another method passes
//! through untouched, its key ignored.

#![allow(missing_docs)]

mod support;

use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use serde_json::json;
use support::{Order, Probe, app, order_response, post_json, request, send};

#[idempotent(post)]
async fn upsert(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    format!("run {} for {amount}", probe.run())
}

#[idempotent]
async fn any_method(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    format!("run {} for {amount}", probe.run())
}

#[idempotent(put)]
async fn put_only(State(probe): State<Probe>, Json(order): Json<Order>) -> Response {
    order_response(&probe, order).await
}

fn router(probe: &Probe) -> Router {
    app(
        Router::new()
            .route("/items", post(upsert).put(upsert).patch(upsert))
            .route("/all", post(any_method).put(any_method).patch(any_method))
            .route("/puts", post(put_only).put(put_only)),
        probe,
    )
}

fn keyed(method: Method, uri: &str, key: &str) -> axum::http::Request<axum::body::Body> {
    request(method, uri, &[("idempotency-key", key)], "1")
}

#[tokio::test]
async fn an_undeclared_method_passes_through() {
    let probe = Probe::default();
    let app = router(&probe);
    for run in 1..=2 {
        let answer = send(&app, keyed(Method::PUT, "/items", "k")).await;
        assert_eq!(answer.status, 200);
        assert!(!answer.is_replay());
        assert_eq!(answer.text(), format!("run {run} for 1"));
    }
    // Not even a bad key is looked at.
    let bad = send(&app, keyed(Method::PATCH, "/items", "")).await;
    assert_eq!(bad.status, 200);
    assert_eq!(probe.runs(), 3);
}

#[tokio::test]
async fn a_declared_method_is_idempotent() {
    let probe = Probe::default();
    let app = router(&probe);
    let first = send(&app, keyed(Method::POST, "/items", "k")).await;
    let retry = send(&app, keyed(Method::POST, "/items", "k")).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn without_declared_methods_post_put_and_patch_are_idempotent() {
    let probe = Probe::default();
    let app = router(&probe);
    for (method, key) in [
        (Method::POST, "a"),
        (Method::PUT, "b"),
        (Method::PATCH, "c"),
    ] {
        let first = send(&app, keyed(method.clone(), "/all", key)).await;
        let retry = send(&app, keyed(method.clone(), "/all", key)).await;
        assert!(retry.is_replay(), "{method} is covered");
        assert_eq!(retry.body, first.body);
    }
    assert_eq!(probe.runs(), 3);
}

#[tokio::test]
async fn a_put_only_handler_lets_post_pass_through() {
    let probe = Probe::default();
    let app = router(&probe);
    let order = json!({"amount": 1});
    for _ in 0..2 {
        let answer = send(&app, post_json("/puts", Some("same"), &order)).await;
        assert_eq!(answer.status, 201);
        assert!(!answer.is_replay(), "POST is not covered by this handler");
    }
    assert_eq!(probe.runs(), 2);
    let put = || {
        request(
            Method::PUT,
            "/puts",
            &[("idempotency-key", "same")],
            &order.to_string(),
        )
    };
    send(&app, put()).await;
    assert!(send(&app, put()).await.is_replay());
    assert_eq!(probe.runs(), 3);
}
