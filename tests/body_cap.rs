//! A body over the cap reaches the first caller in full; a retry is told it was not kept, and the
//! handler is not run again.

#![allow(missing_docs)]

mod support;

use serde_json::json;
use support::{Probe, app_with, orders, post_json, send};

#[tokio::test]
async fn an_oversized_body_is_sent_once_and_never_replayed_truncated() {
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| b.max_body_bytes(1024));
    let order = json!({"amount": 1, "body_bytes": 4096});
    let first = send(&app, post_json("/orders", Some("big"), &order)).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.body.len(), 4096, "the first caller gets all of it");

    let retry = send(&app, post_json("/orders", Some("big"), &order)).await;
    retry.assert_problem(410, "response-not-kept");
    let problem = retry.json();
    assert_eq!(problem["original_status"], 201);
    assert_eq!(problem["body_bytes"], 4096);
    assert!(problem["detail"].as_str().unwrap().contains("201"));
    assert_eq!(probe.runs(), 1, "the handler is not run again");
}

#[tokio::test]
async fn a_body_at_the_cap_is_replayed() {
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| b.max_body_bytes(1024));
    let order = json!({"amount": 1, "body_bytes": 1024});
    let first = send(&app, post_json("/orders", Some("fits"), &order)).await;
    let retry = send(&app, post_json("/orders", Some("fits"), &order)).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
}
