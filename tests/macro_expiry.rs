//! `ttl = ".."` bounds how long an answer is kept: after it, the key is forgotten and the same
//! request runs again.

#![allow(missing_docs)]

mod support;

use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use support::{Probe, app, post as post_request, send};

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
