//! What the tests of how idem fits its API share (`error_format`, `storage_policy`, `metrics`,
//! `openapi`): a gate for handlers to wait on, a store that fails on demand, requests and
//! collected answers.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use idem::fingerprint::Fingerprint;
use idem::store::{
    Claim, ClaimToken, Completed, Completion, IdempotencyStore, MemoryStore, Record, StoreError,
    StoreKey,
};
use idem::{Idempotency, IdempotencyBuilder};
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

/// Shared by a test and its handlers: how often they ran, and a gate that holds them.
#[derive(Clone)]
pub struct Gate(Arc<GateInner>);

struct GateInner {
    runs: AtomicUsize,
    started: Notify,
    gate: Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self(Arc::new(GateInner {
            runs: AtomicUsize::new(0),
            started: Notify::new(),
            gate: Semaphore::new(0),
        }))
    }
}

impl Gate {
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

/// What [`SwitchStore`] does with the next operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Every operation reaches the memory store.
    Normal,
    /// A claim fails.
    FailClaim,
    /// A lookup fails (what a duplicate waiting under `conflict = wait` does).
    FailLookup,
    /// A claim panics, at once.
    PanicClaim,
    /// A claim waits a moment, then panics.
    PanicClaimLater,
    /// A renewal (a claim repeated under the same token) finds the key taken over.
    LoseLease,
}

/// A memory store whose operations fail, panic or lose their lease while switched to.
pub struct SwitchStore {
    inner: MemoryStore,
    mode: AtomicU8,
}

impl SwitchStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::default(),
            mode: AtomicU8::new(Mode::Normal as u8),
        })
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn is(&self, mode: Mode) -> bool {
        self.mode.load(Ordering::SeqCst) == mode as u8
    }
}

#[async_trait]
impl IdempotencyStore for SwitchStore {
    async fn claim(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        if self.is(Mode::FailClaim) {
            return Err(StoreError::new("claim refused by the test"));
        }
        if self.is(Mode::PanicClaim) {
            panic!("claim panics in the test");
        }
        if self.is(Mode::PanicClaimLater) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            panic!("claim panics in the test, later");
        }
        let claim = self.inner.claim(key, fingerprint, token, lease).await?;
        if self.is(Mode::LoseLease) && claim == Claim::Fresh {
            // A renewal: the first claim was made before the switch.
            return Ok(Claim::Existing(Record::InFlight {
                fingerprint: *fingerprint,
            }));
        }
        Ok(claim)
    }

    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        self.inner.complete(key, token, completed, ttl).await
    }

    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        self.inner.release(key, token).await
    }

    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        if self.is(Mode::FailLookup) {
            return Err(StoreError::new("lookup refused by the test"));
        }
        self.inner.lookup(key).await
    }

    fn peek(&self, key: &StoreKey) -> Option<Arc<Completed>> {
        self.inner.peek(key)
    }
}

/// `router` with the gate as its state and a configuration of its own.
pub fn app(
    router: Router<Gate>,
    gate: &Gate,
    configure: impl FnOnce(IdempotencyBuilder) -> IdempotencyBuilder,
) -> Router {
    let idempotency = configure(Idempotency::builder())
        .build()
        .expect("valid configuration");
    router
        .with_state(gate.clone())
        .layer(Extension(idempotency))
}

/// A JSON `POST` with the given headers.
pub fn post(uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut builder = Request::post(uri).header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Body::from(body.to_owned()))
        .expect("valid request")
}

/// A JSON `POST` with an `Idempotency-Key`.
pub fn keyed(uri: &str, key: &str, body: &str) -> Request<Body> {
    post(uri, &[("idempotency-key", key)], body)
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
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|value| value == "true")
    }

    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: not JSON: {}", self.text()))
    }

    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("text"))
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
