//! What the behaviour tests share, those of how idem fits an API (error formats, metrics, the
//! storage policy) too: a probe that handlers report to, the order handler (written with
//! `#[idempotent]`, as every handler under test is), a router with a runtime configuration of its
//! own, requests and collected answers, a seeded generator, and the one fault-injecting store
//! wrapper ([`store::FaultyStore`]).

#![allow(dead_code, unreachable_pub)]

#[cfg(feature = "redis")]
#[path = "../../idem-runtime/tests/support/redis_cluster.rs"]
pub mod redis_cluster;
#[cfg(feature = "redis")]
#[path = "../../idem-runtime/tests/support/redis_server.rs"]
pub mod redis_server;
pub mod store;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router, routing};
use http_body_util::BodyExt;
use idem::{Idempotency, IdempotencyBuilder, idempotent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceExt;

/// Shared by a test and its handlers: how often they ran, a gate that holds them, and a hold on
/// the first execution.
#[derive(Clone, Default)]
pub struct Probe(Arc<Inner>);

struct Inner {
    runs: AtomicUsize,
    started: Notify,
    gate: Semaphore,
    /// Whether the first execution of [`Probe::run_first_held`] waits.
    first_held: watch::Sender<bool>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            runs: AtomicUsize::new(0),
            started: Notify::new(),
            gate: Semaphore::new(0),
            first_held: watch::channel(false).0,
        }
    }
}

impl Probe {
    /// A probe whose first execution through [`Probe::run_first_held`] waits until
    /// [`Probe::release_first`]; later executions run straight through.
    pub fn holding_first() -> Self {
        let probe = Self::default();
        probe.0.first_held.send_replace(true);
        probe
    }

    /// Counts one execution and returns its number, from 1.
    pub fn run(&self) -> usize {
        self.0.runs.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// How many times handlers ran.
    pub fn runs(&self) -> usize {
        self.0.runs.load(Ordering::SeqCst)
    }

    /// Counts one execution, says so, and waits until the test opens the gate once.
    pub async fn run_gated(&self) -> usize {
        let run = self.run();
        self.0.started.notify_one();
        self.0.gate.acquire().await.expect("never closed").forget();
        run
    }

    /// Waits until a gated handler has started.
    pub async fn started(&self) {
        self.0.started.notified().await;
    }

    /// Lets one gated handler go on.
    pub fn open(&self) {
        self.0.gate.add_permits(1);
    }

    /// Counts one execution; the first one waits while the probe holds it (see
    /// [`Probe::holding_first`]).
    pub async fn run_first_held(&self) -> usize {
        let run = self.run();
        if run == 1 {
            let mut held = self.0.first_held.subscribe();
            held.wait_for(|held| !*held)
                .await
                .expect("kept by the probe");
        }
        run
    }

    /// Lets the held first execution finish.
    pub fn release_first(&self) {
        self.0.first_held.send_replace(false);
    }
}

/// What the order handler should do, sent as its JSON body.
#[derive(Debug, Deserialize, Serialize)]
pub struct Order {
    pub amount: u64,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub panic: bool,
    #[serde(default)]
    pub body_bytes: Option<usize>,
}

/// The order handler's body, for handlers that need other attribute options than
/// [`create_order`]: counts the execution (the first one waits while the probe holds it), waits
/// `delay_ms`, panics if asked, and answers `status` (201) with `body_bytes` of `x` or
/// `{"execution":n,"amount":..}`, a `Set-Cookie` and `X-Execution: n`.
pub async fn order_response(probe: &Probe, order: Order) -> Response {
    let n = probe.run_first_held().await;
    if order.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(order.delay_ms)).await;
    }
    assert!(!order.panic, "the order asked for a panic");
    let status = StatusCode::from_u16(order.status.unwrap_or(201)).unwrap();
    let body = match order.body_bytes {
        Some(len) => "x".repeat(len),
        None => format!(r#"{{"execution":{n},"amount":{}}}"#, order.amount),
    };
    (
        status,
        [
            ("content-type", "application/json"),
            ("set-cookie", "session=abc"),
            ("x-execution", &n.to_string()),
        ],
        body,
    )
        .into_response()
}

/// The order handler: idempotent for `POST`, `PUT` and `PATCH`, every option from the runtime.
#[idempotent]
pub async fn create_order(State(probe): State<Probe>, Json(order): Json<Order>) -> Response {
    order_response(&probe, order).await
}

/// The order handler at `POST /orders`, `POST /orders/{id}` and `POST /other-orders`.
pub fn orders() -> Router<Probe> {
    Router::new()
        .route("/orders", routing::post(create_order))
        .route("/orders/{id}", routing::post(create_order))
        .route("/other-orders", routing::post(create_order))
}

/// `router` with its state and a runtime configuration of its own (a fresh in-memory store), so
/// that tests never share keys.
pub fn app(router: Router<Probe>, probe: &Probe) -> Router {
    app_with(router, probe, |builder| builder)
}

/// Like [`app`], with the configuration adjusted by `configure` (another store, other defaults).
pub fn app_with(
    router: Router<Probe>,
    probe: &Probe,
    configure: impl FnOnce(IdempotencyBuilder) -> IdempotencyBuilder,
) -> Router {
    let idempotency = configure(Idempotency::builder())
        .build()
        .expect("valid configuration");
    router
        .with_state(probe.clone())
        .layer(Extension(idempotency))
}

/// A JSON request with the given headers.
pub fn request(method: Method, uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Body::from(body.to_owned()))
        .expect("valid request")
}

/// A JSON `POST` with an `Idempotency-Key`, if `key` is given.
pub fn post(uri: &str, key: Option<&str>, body: &str) -> Request<Body> {
    match key {
        Some(key) => request(Method::POST, uri, &[("idempotency-key", key)], body),
        None => request(Method::POST, uri, &[], body),
    }
}

/// A `POST` of `body` as JSON, with an `Idempotency-Key` if `key` is given.
pub fn post_json(uri: &str, key: Option<&str>, body: &serde_json::Value) -> Request<Body> {
    post(uri, key, &body.to_string())
}

/// A response, read to the end.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// Reads `response` to the end.
    pub async fn read(response: Response) -> Self {
        let (parts, body) = response.into_parts();
        Self {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    /// Whether it carries `Idempotent-Replayed: true`.
    pub fn is_replay(&self) -> bool {
        match self.headers.get("idempotent-replayed") {
            None => false,
            Some(value) => {
                assert_eq!(value, "true");
                true
            }
        }
    }

    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("a text header"))
    }

    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a problem+json answer with `status` and the `type` anchor `slug`, a title and a
    /// detail.
    pub fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.headers["content-type"], "application/problem+json");
        let problem = self.json();
        let kind = problem["type"].as_str().expect("a type");
        assert!(
            kind.ends_with(&format!("#{slug}")),
            "type {kind}, expected #{slug}"
        );
        assert_eq!(problem["status"], status);
        assert!(problem["title"].is_string());
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

/// Sends `request` through `router` and reads the answer.
pub async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.expect("infallible");
    Answer::read(response).await
}

/// A seeded generator shared by the tasks of one test.
pub struct Dice(Mutex<StdRng>);

impl Dice {
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(StdRng::seed_from_u64(seed)))
    }

    pub fn chance(&self, p: f64) -> bool {
        self.0.lock().unwrap().random_bool(p)
    }

    pub fn below(&self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.0.lock().unwrap().random_range(0..n)
        }
    }

    pub fn millis(&self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}
