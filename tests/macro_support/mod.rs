//! What the `macro_*` behaviour tests share: a probe that handlers report to, a router with its
//! own store, requests and collected answers.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use idem::{Idempotency, IdempotencyBuilder};
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

/// Shared by a test and its handlers: how often they ran, and a gate that holds them.
#[derive(Clone, Default)]
pub struct Probe(Arc<Inner>);

struct Inner {
    runs: AtomicUsize,
    started: Notify,
    gate: Semaphore,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            runs: AtomicUsize::new(0),
            started: Notify::new(),
            gate: Semaphore::new(0),
        }
    }
}

impl Probe {
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
}

/// `router` with its state and a runtime configuration of its own (a fresh in-memory store), so
/// that tests never share keys.
pub fn app(router: Router<Probe>, probe: &Probe) -> Router {
    app_with(router, probe, |builder| builder)
}

/// Like [`app`], with the configuration adjusted by `configure`.
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

/// A response, read to the end.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
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

    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    /// Asserts a problem+json answer with `status` and the `type` anchor `slug`.
    pub fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(self.headers["content-type"], "application/problem+json");
        let problem: serde_json::Value = serde_json::from_slice(&self.body).expect("JSON problem");
        let kind = problem["type"].as_str().expect("a type");
        assert!(
            kind.ends_with(&format!("#{slug}")),
            "type {kind}, expected #{slug}"
        );
        assert_eq!(problem["status"], status);
    }
}

/// Sends `request` through `router` and reads the answer.
pub async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}
