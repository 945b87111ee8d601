//! A completed key is forgotten after its TTL (`ttl = ".."` per handler, or the runtime's),
//! counted from completion: after it, the same request runs again. An in-flight claim holds its
//! key only for its lease.

#![allow(missing_docs)]

mod support;

use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use serde_json::json;
use support::{Probe, app, app_with, orders, post as post_request, post_json, send};

#[idempotent(post, ttl = "1s")]
async fn short_lived(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    format!("run {} for {amount}", probe.run())
}

#[idempotent(post)]
async fn default_ttl(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    format!("run {} for {amount}", probe.run())
}

#[tokio::test]
async fn an_answer_is_forgotten_after_its_ttl() {
    let probe = Probe::default();
    let app = app(
        Router::new()
            .route("/short", post(short_lived))
            .route("/default", post(default_ttl)),
        &probe,
    );

    let short = send(&app, post_request("/short", Some("short"), "1")).await;
    let long = send(&app, post_request("/default", Some("long"), "1")).await;
    assert_eq!(short.text(), "run 1 for 1");
    assert_eq!(long.text(), "run 2 for 1");

    // Expiry is measured from completion; wait until the 1 s TTL has certainly passed.
    tokio::time::sleep(Duration::from_millis(1300)).await;

    let after = send(&app, post_request("/short", Some("short"), "1")).await;
    assert!(!after.is_replay(), "the key was forgotten");
    assert_eq!(after.text(), "run 3 for 1");

    let kept = send(&app, post_request("/default", Some("long"), "1")).await;
    assert!(
        kept.is_replay(),
        "the default TTL (24 h) still holds the answer"
    );
    assert_eq!(kept.body, long.body);
    assert_eq!(probe.runs(), 3);
}

#[tokio::test]
async fn after_the_runtime_wide_ttl_the_key_is_a_new_request() {
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| b.ttl(Duration::from_millis(300)));
    let order = json!({"amount": 1});
    send(&app, post_json("/orders", Some("ttl"), &order)).await;
    assert!(
        send(&app, post_json("/orders", Some("ttl"), &order))
            .await
            .is_replay()
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = send(&app, post_json("/orders", Some("ttl"), &order)).await;
    assert_eq!(later.status, 201);
    assert!(!later.is_replay());
    assert_eq!(probe.runs(), 2);

    // After expiry the key may even carry a different request.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let other = send(
        &app,
        post_json("/orders", Some("ttl"), &json!({"amount": 2})),
    )
    .await;
    assert_eq!(other.status, 201);
    assert_eq!(probe.runs(), 3);
}

#[tokio::test]
async fn the_ttl_counts_from_completion_not_from_the_claim() {
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| b.ttl(Duration::from_millis(400)));
    // The handler runs longer than the TTL; the record must still live a full TTL after it ends.
    let order = json!({"amount": 1, "delay_ms": 500});
    send(&app, post_json("/orders", Some("slow"), &order)).await;
    assert!(
        send(&app, post_json("/orders", Some("slow"), &order))
            .await
            .is_replay()
    );
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn a_lapsed_lease_frees_the_key() {
    // A claim is renewed while its handler runs, but never past `max_hold`: with both shorter than
    // the handler, a duplicate after the lease is a new claim (leases.rs has the renewals).
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| {
        b.lease(Duration::from_millis(100))
            .max_hold(Duration::from_millis(100))
    });
    let order = json!({"amount": 1, "delay_ms": 400});
    let first = send(&app, post_json("/orders", Some("lease"), &order));
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        send(&app, post_json("/orders", Some("lease"), &order)).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!((first.status.as_u16(), second.status.as_u16()), (201, 201));
    assert_eq!(probe.runs(), 2);
}
