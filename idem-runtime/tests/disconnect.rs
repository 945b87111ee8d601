//! A client that goes away does not cancel the handler: its result is stored and replayed.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Harness, post_json};
use tower::ServiceExt;

#[tokio::test]
async fn a_dropped_request_still_completes_and_is_replayed() {
    let app = Harness::new();
    let order = json!({"amount": 7, "delay_ms": 200});

    // The client gives up after 50 ms: the request future is dropped mid-flight.
    let request = app
        .router
        .clone()
        .oneshot(post_json("/orders", Some("gone"), &order));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), request)
            .await
            .is_err()
    );
    assert_eq!(app.executions(), 1, "the handler started");

    // While it still runs, a retry is told to come back.
    let early = app.send(post_json("/orders", Some("gone"), &order)).await;
    early.assert_problem(409, "request-in-flight");

    tokio::time::sleep(Duration::from_millis(400)).await;
    let retry = app.send(post_json("/orders", Some("gone"), &order)).await;
    assert_eq!(retry.status, 201);
    assert!(
        retry.is_replay(),
        "the handler ran to completion and its answer was kept"
    );
    assert_eq!(retry.json()["amount"], 7);
    assert_eq!(app.executions(), 1);
}
