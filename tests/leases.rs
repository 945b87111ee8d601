//! Leases: a running handler keeps its key by renewing its claim, for at most `max_hold`; a claim
//! that is taken over stores nothing.

#![allow(missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use axum::{Extension, Json, Router};
use http_body_util::BodyExt;
use idem::{Idempotency, idempotent};
use serde::Deserialize;
use tower::ServiceExt;

#[derive(Clone, Default)]
struct Runs(Arc<AtomicUsize>);

#[derive(Deserialize, serde::Serialize)]
struct Job {
    id: u64,
}

/// Sleeps for the `x-sleep-ms` header's milliseconds: a header, so that requests that sleep for
/// different times are still the same request to idem.
#[idempotent(post)]
async fn slow_job(
    State(runs): State<Runs>,
    headers: HeaderMap,
    Json(_job): Json<Job>,
) -> (StatusCode, String) {
    let run = runs.0.fetch_add(1, Ordering::SeqCst) + 1;
    let sleep_ms = headers
        .get("x-sleep-ms")
        .and_then(|value| value.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    (StatusCode::CREATED, format!("run {run}"))
}

fn app(runs: &Runs, lease: Duration, max_hold: Duration) -> Router {
    let idempotency = Idempotency::builder()
        .lease(lease)
        .max_hold(max_hold)
        .build()
        .expect("valid settings");
    Router::new()
        .route("/jobs", post(slow_job))
        .with_state(runs.clone())
        .layer(Extension(idempotency))
}

/// Sends a job with `key` and answers the status, whether it is a replay, and the body.
async fn send(app: &Router, key: &str, sleep_ms: u64) -> (u16, bool, String) {
    let request = Request::post("/jobs")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .header("x-sleep-ms", sleep_ms.to_string())
        .body(Body::from(r#"{"id":1}"#))
        .expect("valid request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        replayed,
        String::from_utf8(body.to_vec()).expect("UTF-8"),
    )
}

/// The `outcome` of every `idem` event with a `key`, as `(outcome, key)`: a subscriber of the
/// whole process, since a handler's events come from whichever thread runs it.
fn events() -> &'static Mutex<Vec<(String, String)>> {
    static EVENTS: OnceLock<Mutex<Vec<(String, String)>>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        tracing::subscriber::set_global_default(Recorder).expect("the only subscriber");
        Mutex::new(Vec::new())
    })
}

fn saw(outcome: &str, key: &str) -> bool {
    events()
        .lock()
        .unwrap()
        .iter()
        .any(|(o, k)| o == outcome && k == key)
}

struct Recorder;

#[derive(Default)]
struct Fields {
    outcome: Option<String>,
    key: Option<String>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record_debug(field, &value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}").trim_matches('"').to_owned();
        match field.name() {
            "outcome" => self.outcome = Some(text),
            "key" => self.key = Some(text),
            _ => {}
        }
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "idem"
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let (Some(outcome), Some(key)) = (fields.outcome, fields.key) {
            events().lock().unwrap().push((outcome, key));
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_running_three_leases_keeps_its_key_and_is_replayed_after() {
    let _ = events();
    let runs = Runs::default();
    let lease = Duration::from_millis(600);
    let app = app(&runs, lease, Duration::from_secs(60));

    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, "renewed", 3 * 600).await }
    });
    // Past two leases: without renewals the key would be free by now.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let duplicate = send(&app, "renewed", 3 * 600).await;
    assert_eq!(
        duplicate.0, 409,
        "the running handler still holds its key: {duplicate:?}"
    );

    let first = first.await.expect("first request");
    assert_eq!((first.0, first.1), (201, false));
    let retry = send(&app, "renewed", 3 * 600).await;
    assert_eq!(retry, (201, true, first.2.clone()), "the stored answer");
    assert_eq!(runs.0.load(Ordering::SeqCst), 1);
    assert!(!saw("lease_lost", "renewed"));
    assert!(!saw("max_hold", "renewed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_hold_the_key_is_taken_over_and_the_first_answer_is_not_stored() {
    let _ = events();
    let runs = Runs::default();
    let lease = Duration::from_millis(300);
    let max_hold = Duration::from_millis(600);
    let app = app(&runs, lease, max_hold);

    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, "hung", 2500).await }
    });
    // The claim is renewed up to `max_hold` and no further; once its last lease ran out, the key
    // is free again although the first handler still runs.
    let mut takeover = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = send(&app, "hung", 0).await;
        if answer.0 != 409 {
            takeover = Some(answer);
            break;
        }
    }
    let takeover = takeover.expect("the key is taken over once max_hold and its lease ran out");
    assert_eq!(
        (takeover.0, takeover.1, takeover.2.as_str()),
        (201, false, "run 2")
    );
    assert!(saw("max_hold", "hung"), "the warning was emitted");

    // The first handler's answer still reaches its client, but the key's answer is the second's.
    let first = first.await.expect("first request");
    assert_eq!((first.0, first.1, first.2.as_str()), (201, false, "run 1"));
    assert!(saw("lease_lost", "hung"));
    let retry = send(&app, "hung", 0).await;
    assert_eq!((retry.0, retry.1, retry.2.as_str()), (201, true, "run 2"));
    assert_eq!(runs.0.load(Ordering::SeqCst), 2);
}
