//! A duplicate of a request that is still running gets `409` with `Retry-After`, and the running
//! request is not disturbed: one execution, whatever the number of duplicates. In wait mode the
//! duplicates get the first request's answer instead.

#![allow(missing_docs)]

mod support;

use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use futures_util::future::join_all;
use idem::{ConflictPolicy, idempotent};
use serde_json::json;
use support::{Probe, app, app_with, orders, post as post_request, post_json, send};

const DUPLICATES: usize = 16;

#[idempotent(post)]
async fn slow_charge(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    let run = probe.run_gated().await;
    format!("charge {amount}, run {run}")
}

fn charges() -> Router<Probe> {
    Router::new().route("/charges", post(slow_charge))
}

#[tokio::test]
async fn a_concurrent_duplicate_gets_409_and_the_first_completes() {
    let probe = Probe::default();
    let app = app(charges(), &probe);

    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/charges", Some("k"), "7")).await }
    });
    probe.started().await;

    let duplicate = send(&app, post_request("/charges", Some("k"), "7")).await;
    duplicate.assert_problem(409, "request-in-flight");
    assert!(duplicate.headers.contains_key("retry-after"));

    probe.open();
    let first = first.await.expect("first request");
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "charge 7, run 1");

    let retry = send(&app, post_request("/charges", Some("k"), "7")).await;
    assert!(retry.is_replay());
    assert_eq!(retry.text(), "charge 7, run 1");
    assert_eq!(probe.runs(), 1, "the duplicate did not run the handler");
}

#[tokio::test]
async fn the_runtime_wide_retry_after_is_sent_with_409() {
    let probe = Probe::default();
    let app = app_with(charges(), &probe, |b| b.retry_after(Duration::from_secs(7)));

    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/charges", Some("k"), "7")).await }
    });
    probe.started().await;

    let duplicate = send(&app, post_request("/charges", Some("k"), "7")).await;
    duplicate.assert_problem(409, "request-in-flight");
    assert_eq!(duplicate.headers["retry-after"], "7");

    probe.open();
    assert_eq!(first.await.expect("first request").status, 200);
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn a_different_request_with_the_key_of_a_running_one_gets_422() {
    let probe = Probe::default();
    let app = app(charges(), &probe);

    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/charges", Some("k"), "7")).await }
    });
    probe.started().await;

    let other = send(&app, post_request("/charges", Some("k"), "8")).await;
    other.assert_problem(422, "key-reused");

    probe.open();
    assert_eq!(first.await.expect("first request").status, 200);
    assert_eq!(probe.runs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_run_once_and_the_rest_get_409() {
    let probe = Probe::default();
    let app = app(orders(), &probe);
    let order = json!({"amount": 1, "delay_ms": 300});
    let answers =
        join_all((0..DUPLICATES).map(|_| send(&app, post_json("/orders", Some("dup"), &order))))
            .await;

    let created: Vec<_> = answers.iter().filter(|a| a.status == 201).collect();
    let conflicts: Vec<_> = answers.iter().filter(|a| a.status == 409).collect();
    assert_eq!(created.len(), 1, "exactly one request runs the handler");
    assert_eq!(conflicts.len(), DUPLICATES - 1);
    for conflict in conflicts {
        conflict.assert_problem(409, "request-in-flight");
        assert_eq!(conflict.headers["retry-after"], "1");
    }
    assert_eq!(probe.runs(), 1);

    // Once the first completes, a retry gets its answer.
    let retry = send(&app, post_json("/orders", Some("dup"), &order)).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, created[0].body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_wait_mode_every_duplicate_gets_the_same_answer() {
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| b.conflict(ConflictPolicy::Wait));
    let order = json!({"amount": 1, "delay_ms": 200});
    let answers =
        join_all((0..DUPLICATES).map(|_| send(&app, post_json("/orders", Some("wait"), &order))))
            .await;

    assert_eq!(probe.runs(), 1);
    let first = &answers[0];
    for answer in &answers {
        assert_eq!(answer.status, 201);
        assert_eq!(answer.body, first.body);
    }
    assert_eq!(
        answers.iter().filter(|a| !a.is_replay()).count(),
        1,
        "one original, the rest replays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_answers_409_when_the_first_outlasts_the_wait() {
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| {
        b.conflict(ConflictPolicy::Wait)
            .wait_timeout(Duration::from_millis(50))
    });
    let order = json!({"amount": 1, "delay_ms": 1000});
    let slow = send(&app, post_json("/orders", Some("long"), &order));
    let duplicate = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&app, post_json("/orders", Some("long"), &order)).await
    };
    let (first, duplicate) = tokio::join!(slow, duplicate);
    assert_eq!(first.status, 201);
    duplicate.assert_problem(409, "request-in-flight");
    assert_eq!(probe.runs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_runs_the_handler_when_the_first_released_the_key() {
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| {
        b.conflict(ConflictPolicy::Wait).store_server_errors(false)
    });
    let order = json!({"amount": 1, "delay_ms": 200, "status": 503});
    let first = send(&app, post_json("/orders", Some("released"), &order));
    let second = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(&app, post_json("/orders", Some("released"), &order)).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 503);
    assert_eq!(second.status, 503);
    assert!(
        !second.is_replay(),
        "the waiter claimed the released key and ran the handler itself"
    );
    assert_eq!(probe.runs(), 2);
}
