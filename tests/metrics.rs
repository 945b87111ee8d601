//! With the `metrics` feature, each request that takes part in idempotency is counted once in
//! `idem_requests_total{route, outcome}`, and each store operation is timed in
//! `idem_store_seconds{operation}`.

#![allow(missing_docs)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::store::{Fault, FaultyStore, Operation};
use support::{Probe, app_with, post as post_request, send};

/// A metric's name and its labels, sorted.
type Id = (String, Vec<(String, String)>);

/// What the recorder saw, added up across snapshots (a snapshot drains it).
#[derive(Default)]
struct Seen {
    counters: HashMap<Id, u64>,
    histograms: HashMap<Id, Vec<f64>>,
}

fn recorder() -> &'static (Snapshotter, Mutex<Seen>) {
    static RECORDER: OnceLock<(Snapshotter, Mutex<Seen>)> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder");
        idem::metrics::describe();
        (snapshotter, Mutex::new(Seen::default()))
    })
}

/// Everything recorded so far.
fn seen() -> std::sync::MutexGuard<'static, Seen> {
    let (snapshotter, seen) = recorder();
    let mut seen = seen.lock().expect("not poisoned");
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|label| (label.key().to_owned(), label.value().to_owned()))
            .collect();
        labels.sort();
        let id = (key.name().to_owned(), labels);
        match (kind, value) {
            (MetricKind::Counter, DebugValue::Counter(count)) => {
                *seen.counters.entry(id).or_default() += count;
            }
            (MetricKind::Histogram, DebugValue::Histogram(values)) => seen
                .histograms
                .entry(id)
                .or_default()
                .extend(values.into_iter().map(|value| value.0)),
            other => panic!("unexpected metric {other:?}"),
        }
    }
    seen
}

/// `idem_requests_total` of `route` and `outcome`.
fn requests(route: &str, outcome: &str) -> u64 {
    let labels = vec![
        ("outcome".to_owned(), outcome.to_owned()),
        ("route".to_owned(), route.to_owned()),
    ];
    seen()
        .counters
        .get(&("idem_requests_total".to_owned(), labels))
        .copied()
        .unwrap_or(0)
}

/// Every outcome counted for `route`.
fn outcomes(route: &str) -> HashMap<String, u64> {
    let seen = seen();
    seen.counters
        .iter()
        .filter(|((name, labels), _)| {
            name == "idem_requests_total"
                && labels.contains(&("route".to_owned(), route.to_owned()))
        })
        .map(|((_, labels), count)| {
            let outcome = labels
                .iter()
                .find(|(key, _)| key == "outcome")
                .map(|(_, value)| value.clone())
                .expect("an outcome");
            (outcome, *count)
        })
        .collect()
}

#[idempotent(post)]
async fn charge(Path(_customer): Path<String>, Json(amount): Json<u64>) -> String {
    format!("charged {amount}")
}

#[idempotent(post, required)]
async fn required(Json(amount): Json<u64>) -> String {
    format!("charged {amount}")
}

#[idempotent(post)]
async fn slow(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    probe.run_gated().await;
    format!("charged {amount}")
}

#[idempotent(post, conflict = wait)]
async fn waits(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    probe.run_gated().await;
    format!("charged {amount}")
}

#[idempotent(post)]
async fn panics(Json(amount): Json<u64>) -> String {
    panic!("the handler panics for {amount}");
}

#[idempotent(post, keep = no_server_errors)]
async fn fails(Json(_amount): Json<u64>) -> StatusCode {
    StatusCode::BAD_GATEWAY
}

#[idempotent(post, lease = "30ms")]
async fn loses_lease(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    probe.run_gated().await;
    format!("charged {amount}")
}

#[tokio::test]
async fn each_request_is_counted_once_by_route_and_outcome() {
    recorder();
    let probe = Probe::default();
    // Forwarding `peek`, so that the byte-identical retry below is replayed before its body is
    // parsed, and counted there.
    let store = Arc::new(FaultyStore::memory().forwarding_peek());
    let app = app_with(
        Router::new()
            .route("/metrics/customers/{customer}/charges", post(charge))
            .route("/metrics/required", post(required))
            .route("/metrics/slow", post(slow))
            .route("/metrics/panics", post(panics))
            .route("/metrics/fails", post(fails)),
        &probe,
        |builder| builder.shared_store(store.clone()),
    );
    let charges = "/metrics/customers/{customer}/charges";

    // Executed, replayed (byte for byte, and spelled differently), reused for another body.
    send(
        &app,
        post_request("/metrics/customers/c1/charges", Some("a"), "1"),
    )
    .await;
    send(
        &app,
        post_request("/metrics/customers/c1/charges", Some("a"), "1"),
    )
    .await;
    send(
        &app,
        post_request("/metrics/customers/c1/charges", Some("a"), " 1"),
    )
    .await;
    send(
        &app,
        post_request("/metrics/customers/c1/charges", Some("a"), "2"),
    )
    .await;
    // Another customer: another concrete path, the same route.
    send(
        &app,
        post_request("/metrics/customers/c2/charges", Some("b"), "1"),
    )
    .await;
    // No key: no idempotency, not counted.
    send(
        &app,
        post_request("/metrics/customers/c2/charges", None, "1"),
    )
    .await;
    // An invalid key, and a missing one where it is required.
    send(
        &app,
        post_request("/metrics/customers/c1/charges", Some(""), "1"),
    )
    .await;
    send(&app, post_request("/metrics/required", None, "1")).await;
    // The store fails the claim.
    store.force(Operation::Claim, Some(Fault::FailBefore));
    let unavailable = send(
        &app,
        post_request("/metrics/customers/c1/charges", Some("c"), "1"),
    )
    .await;
    assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
    store.force(Operation::Claim, Some(Fault::Panic));
    send(
        &app,
        post_request("/metrics/customers/c1/charges", Some("d"), "1"),
    )
    .await;
    store.force(Operation::Claim, None);

    assert_eq!(
        outcomes(charges),
        HashMap::from([
            ("executed".to_owned(), 2),
            ("replayed".to_owned(), 2),
            ("mismatch".to_owned(), 1),
            ("invalid_key".to_owned(), 1),
            ("store_error".to_owned(), 1),
            ("aborted".to_owned(), 1),
        ])
    );
    assert_eq!(requests("/metrics/required", "invalid_key"), 1);

    // A duplicate of a request still running.
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/metrics/slow", Some("e"), "1")).await }
    });
    probe.started().await;
    send(&app, post_request("/metrics/slow", Some("e"), "1")).await;
    probe.open();
    first.await.expect("first");
    assert_eq!(
        outcomes("/metrics/slow"),
        HashMap::from([("conflict".to_owned(), 1), ("executed".to_owned(), 1)])
    );

    // A panic, and a 5xx that the keep policy does not keep.
    send(&app, post_request("/metrics/panics", Some("f"), "1")).await;
    send(&app, post_request("/metrics/fails", Some("g"), "1")).await;
    send(&app, post_request("/metrics/fails", Some("g"), "1")).await;
    assert_eq!(requests("/metrics/panics", "panicked"), 1);
    assert_eq!(requests("/metrics/fails", "executed"), 2, "ran twice");
}

#[tokio::test]
async fn a_lost_lease_and_a_failed_wait_are_counted() {
    recorder();
    let probe = Probe::default();
    let store = Arc::new(FaultyStore::memory());
    let app = app_with(
        Router::new()
            .route("/metrics/loses-lease", post(loses_lease))
            .route("/metrics/waits", post(waits))
            .route("/metrics/panics-too", post(panics)),
        &probe,
        |builder| builder.shared_store(store.clone()),
    );

    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/metrics/loses-lease", Some("h"), "1")).await }
    });
    probe.started().await;
    store.force(Operation::Claim, Some(Fault::TakenOver));
    tokio::time::sleep(Duration::from_millis(60)).await;
    probe.open();
    assert_eq!(first.await.expect("first").status, StatusCode::OK);
    store.force(Operation::Claim, None);
    assert_eq!(
        outcomes("/metrics/loses-lease"),
        HashMap::from([("lease_lost".to_owned(), 1)])
    );

    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/metrics/waits", Some("i"), "1")).await }
    });
    probe.started().await;
    store.force(Operation::Lookup, Some(Fault::FailBefore));
    send(&app, post_request("/metrics/waits", Some("i"), "1")).await;
    store.force(Operation::Lookup, None);
    probe.open();
    first.await.expect("first");
    assert_eq!(
        outcomes("/metrics/waits"),
        HashMap::from([("store_error".to_owned(), 1), ("executed".to_owned(), 1)])
    );

    // A panic releases its key.
    send(&app, post_request("/metrics/panics-too", Some("j"), "1")).await;

    // Every kind of store operation was timed, the failed ones too.
    let seen = seen();
    for operation in ["claim", "renew", "lookup", "complete", "release"] {
        let labels = vec![("operation".to_owned(), operation.to_owned())];
        let times = seen
            .histograms
            .get(&("idem_store_seconds".to_owned(), labels))
            .unwrap_or_else(|| panic!("no {operation} timed"));
        assert!(
            times.iter().all(|seconds| (0.0..1.0).contains(seconds)),
            "{operation}: {times:?}"
        );
    }
}
