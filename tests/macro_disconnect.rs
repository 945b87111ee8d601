//! A client that goes away does not cancel the handler: it runs to completion, its answer is
//! stored, and the retry after the connection error gets the replay.

#![allow(missing_docs)]

mod support;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use support::{Probe, app, post as post_request, send};

// `conflict = wait`, so that a retry arriving while the first request still runs waits for its
// answer instead of getting a 409.
#[idempotent(post, conflict = wait)]
async fn transfer(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    let run = probe.run_gated().await;
    format!("transferred {amount} in run {run}")
}

#[tokio::test]
async fn a_dropped_request_completes_and_its_retry_is_a_replay() {
    let probe = Probe::default();
    let app = app(Router::new().route("/transfers", post(transfer)), &probe);

    // The client hangs up once the handler has started: the request future is dropped.
    let request = send(&app, post_request("/transfers", Some("t-1"), "40"));
    tokio::select! {
        _ = request => panic!("the handler is gated; the request cannot finish yet"),
        () = probe.started() => {}
    }

    probe.open();
    let retry = send(&app, post_request("/transfers", Some("t-1"), "40")).await;
    assert!(
        retry.is_replay(),
        "status {}: {}",
        retry.status,
        retry.text()
    );
    assert_eq!(retry.status, 200);
    assert_eq!(retry.text(), "transferred 40 in run 1");
    assert_eq!(
        probe.runs(),
        1,
        "the dropped request's handler was not run again"
    );
}
