//! Each per-handler option of `#[idempotent(..)]` takes effect: `header`, `max_key_len`,
//! `store_server_errors`, `conflict`, `wait_timeout`, `lease` and `max_body_bytes`.

#![allow(missing_docs)]

mod support;

use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use support::{Probe, app, post as post_request, request, send};

#[idempotent(post, header = "X-Request-Key")]
async fn custom_header(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    format!("run {} for {amount}", probe.run())
}

#[tokio::test]
async fn header_names_the_key_header() {
    let probe = Probe::default();
    let app = app(Router::new().route("/x", post(custom_header)), &probe);
    let keyed = || request(Method::POST, "/x", &[("x-request-key", "k")], "1");

    let first = send(&app, keyed()).await;
    let retry = send(&app, keyed()).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);

    // The standard header means nothing to this handler.
    let standard = send(&app, post_request("/x", Some("k"), "1")).await;
    assert!(!standard.is_replay());
    assert_eq!(probe.runs(), 2);

    let bad = send(
        &app,
        request(Method::POST, "/x", &[("x-request-key", "")], "1"),
    )
    .await;
    bad.assert_problem(400, "key-invalid");
    assert!(
        bad.text().contains("x-request-key"),
        "the problem names the header: {}",
        bad.text()
    );
}

#[idempotent(post, max_key_len = 8)]
async fn short_keys(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    format!("run {} for {amount}", probe.run())
}

#[tokio::test]
async fn max_key_len_bounds_the_key() {
    let probe = Probe::default();
    let app = app(Router::new().route("/x", post(short_keys)), &probe);

    let longest = send(&app, post_request("/x", Some("12345678"), "1")).await;
    assert_eq!(longest.status, 200);
    send(&app, post_request("/x", Some("123456789"), "1"))
        .await
        .assert_problem(400, "key-invalid");
    assert_eq!(probe.runs(), 1);
}

async fn failing(probe: &Probe) -> (StatusCode, String) {
    let run = probe.run();
    if run == 1 {
        (StatusCode::SERVICE_UNAVAILABLE, "upstream down".to_owned())
    } else {
        (StatusCode::CREATED, format!("run {run}"))
    }
}

#[idempotent(post, store_server_errors = false)]
async fn server_errors_released(State(probe): State<Probe>) -> (StatusCode, String) {
    failing(&probe).await
}

#[idempotent(post)]
async fn server_errors_stored(State(probe): State<Probe>) -> (StatusCode, String) {
    failing(&probe).await
}

#[tokio::test]
async fn store_server_errors_false_releases_the_key_on_5xx() {
    let probe = Probe::default();
    let app = app(
        Router::new().route("/x", post(server_errors_released)),
        &probe,
    );

    let first = send(&app, post_request("/x", Some("k"), "")).await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    let retry = send(&app, post_request("/x", Some("k"), "")).await;
    assert_eq!(
        retry.status,
        StatusCode::CREATED,
        "the retry ran the handler again"
    );
    assert!(!retry.is_replay());
    let again = send(&app, post_request("/x", Some("k"), "")).await;
    assert!(again.is_replay(), "a success is stored as usual");
    assert_eq!(probe.runs(), 2);
}

#[tokio::test]
async fn by_default_a_5xx_is_stored_and_replayed() {
    let probe = Probe::default();
    let app = app(
        Router::new().route("/x", post(server_errors_stored)),
        &probe,
    );

    send(&app, post_request("/x", Some("k"), "")).await;
    let retry = send(&app, post_request("/x", Some("k"), "")).await;
    assert_eq!(retry.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry.is_replay());
    assert_eq!(retry.text(), "upstream down");
    assert_eq!(probe.runs(), 1);
}

#[idempotent(post, conflict = wait)]
async fn waits(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    format!("run {} for {amount}", probe.run_gated().await)
}

#[idempotent(post, conflict = wait, wait_timeout = "100ms")]
async fn waits_briefly(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    format!("run {} for {amount}", probe.run_gated().await)
}

// The clock is paused: the test's own short sleep ends only once every other task is idle, that is
// once the duplicate is polling for the first request's answer. No assertion depends on speed.
#[tokio::test(start_paused = true)]
async fn conflict_wait_gives_a_duplicate_the_first_answer() {
    let probe = Probe::default();
    let app = app(Router::new().route("/x", post(waits)), &probe);

    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/x", Some("k"), "1")).await }
    });
    probe.started().await;
    let duplicate = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/x", Some("k"), "1")).await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(
        !duplicate.is_finished(),
        "the duplicate waits instead of answering 409"
    );

    probe.open();
    let first = first.await.expect("first");
    let duplicate = duplicate.await.expect("duplicate");
    assert_eq!(duplicate.status, 200);
    assert!(duplicate.is_replay());
    assert_eq!(duplicate.body, first.body);
    assert_eq!(probe.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn wait_timeout_bounds_the_wait_then_answers_409() {
    let probe = Probe::default();
    let app = app(Router::new().route("/x", post(waits_briefly)), &probe);

    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/x", Some("k"), "1")).await }
    });
    probe.started().await;
    let duplicate = send(&app, post_request("/x", Some("k"), "1")).await;
    duplicate.assert_problem(409, "request-in-flight");

    probe.open();
    assert_eq!(first.await.expect("first").status, 200);
    assert_eq!(probe.runs(), 1);
}

#[idempotent(post, lease = "1s", max_hold = "1s")]
async fn short_lease(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    format!("run {} for {amount}", probe.run_gated().await)
}

#[tokio::test]
async fn lease_and_max_hold_bound_how_long_an_unfinished_claim_holds_its_key() {
    let probe = Probe::default();
    let app = app(Router::new().route("/x", post(short_lease)), &probe);

    let stuck = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/x", Some("k"), "1")).await }
    });
    probe.started().await;
    send(&app, post_request("/x", Some("k"), "1"))
        .await
        .assert_problem(409, "request-in-flight");

    // The claim is renewed while its handler runs, but not past `max_hold`: once that and its
    // last lease are over, the claim no longer holds the key, and a retry takes it over and runs.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let takeover = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/x", Some("k"), "1")).await }
    });
    probe.started().await;
    probe.open();
    probe.open();
    let (stuck, takeover) = (
        stuck.await.expect("stuck"),
        takeover.await.expect("takeover"),
    );
    assert_eq!(stuck.status, 200);
    assert_eq!(takeover.status, 200);
    assert_eq!(probe.runs(), 2);
}

#[idempotent(post, max_body_bytes = 16)]
async fn big_answer(State(probe): State<Probe>, Json(len): Json<usize>) -> String {
    probe.run();
    "x".repeat(len)
}

#[tokio::test]
async fn max_body_bytes_bounds_what_is_kept_for_replay() {
    let probe = Probe::default();
    let app = app(Router::new().route("/x", post(big_answer)), &probe);

    let small = send(&app, post_request("/x", Some("small"), "16")).await;
    assert_eq!(small.text().len(), 16);
    assert!(
        send(&app, post_request("/x", Some("small"), "16"))
            .await
            .is_replay()
    );

    let big = send(&app, post_request("/x", Some("big"), "17")).await;
    assert_eq!(big.status, 200);
    assert_eq!(big.text().len(), 17, "the first caller gets the whole body");
    let retry = send(&app, post_request("/x", Some("big"), "17")).await;
    retry.assert_problem(410, "response-not-kept");
    assert_eq!(probe.runs(), 2, "the handler is not silently run again");
}
