//! "Instances" of one service for the Redis tests: routers whose handler is written the way
//! `#[idempotent]` expands, each with a store of its own, plus request helpers.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Extension, Json, Router};
use http_body_util::BodyExt;
use idem_runtime::__private::{
    ConflictPolicy, Context, HandlerConfig, HandlerOptions, Methods, Response,
};
use idem_runtime::Idempotency;
use idem_runtime::store::IdempotencyStore;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

/// `POST /charges`: 409 for concurrent duplicates.
pub struct Charge;
impl HandlerConfig for Charge {
    const OPTIONS: HandlerOptions = HandlerOptions {
        methods: Methods::POST,
        ..HandlerOptions::DEFAULT
    };
}

/// `POST /charges/wait`: concurrent duplicates wait for the first one's answer.
pub struct ChargeWaiting;
impl HandlerConfig for ChargeWaiting {
    const OPTIONS: HandlerOptions = HandlerOptions {
        methods: Methods::POST,
        conflict: Some(ConflictPolicy::Wait),
        wait_timeout: Some(Duration::from_secs(60)),
        ..HandlerOptions::DEFAULT
    };
}

/// The lease of `POST /charges/short-lease`.
pub const SHORT_LEASE: Duration = Duration::from_millis(300);

/// `POST /charges/short-lease`: a claim lapses quickly.
pub struct ChargeShortLease;
impl HandlerConfig for ChargeShortLease {
    const OPTIONS: HandlerOptions = HandlerOptions {
        methods: Methods::POST,
        lease: Some(SHORT_LEASE),
        ..HandlerOptions::DEFAULT
    };
}

/// What every instance of the service shares besides the store: the count of executions (as a
/// payment processor would see them) and a gate that holds the first execution until opened.
#[derive(Clone)]
pub struct Service {
    executions: Arc<AtomicUsize>,
    gate: Arc<watch::Sender<bool>>,
}

impl Default for Service {
    fn default() -> Self {
        Self::new()
    }
}

impl Service {
    /// A service whose first execution runs straight through (the gate is open).
    pub fn new() -> Self {
        Self {
            executions: Arc::default(),
            gate: Arc::new(watch::channel(true).0),
        }
    }

    /// A service whose first execution waits until [`Service::open`].
    pub fn held() -> Self {
        let service = Self::new();
        service.gate.send_replace(false);
        service
    }

    /// Lets the held execution finish.
    pub fn open(&self) {
        self.gate.send_replace(true);
    }

    /// How many times a handler body ran.
    pub fn executions(&self) -> usize {
        self.executions.load(Ordering::SeqCst)
    }

    /// One instance: a router on `store`.
    pub fn instance(&self, store: Arc<dyn IdempotencyStore>, store_timeout: Duration) -> Router {
        let idempotency = Idempotency::builder()
            .shared_store(store)
            .store_timeout(store_timeout)
            .build()
            .expect("valid settings");
        Router::new()
            .route("/charges", post(create_charge))
            .route("/charges/wait", post(create_charge_waiting))
            .route("/charges/short-lease", post(create_charge_short_lease))
            .with_state(self.clone())
            .layer(Extension(idempotency))
    }
}

#[derive(serde::Deserialize, serde::Serialize)]
pub struct NewCharge {
    amount: u64,
}

async fn charge(State(service): State<Service>, Json(new): Json<NewCharge>) -> impl IntoResponse {
    let execution = service.executions.fetch_add(1, Ordering::SeqCst) + 1;
    if execution == 1 {
        let mut gate = service.gate.subscribe();
        gate.wait_for(|open| *open)
            .await
            .expect("gate kept by the service");
    }
    (
        StatusCode::CREATED,
        Json(json!({"id": format!("ch_{execution}"), "amount": new.amount})),
    )
}

async fn create_charge(
    mut ctx: Context<Charge>,
    state: State<Service>,
    body: Json<NewCharge>,
) -> Response {
    ctx.input(&state);
    ctx.input(&body);
    ctx.run(charge(state, body)).await
}

async fn create_charge_waiting(
    mut ctx: Context<ChargeWaiting>,
    state: State<Service>,
    body: Json<NewCharge>,
) -> Response {
    ctx.input(&state);
    ctx.input(&body);
    ctx.run(charge(state, body)).await
}

async fn create_charge_short_lease(
    mut ctx: Context<ChargeShortLease>,
    state: State<Service>,
    body: Json<NewCharge>,
) -> Response {
    ctx.input(&state);
    ctx.input(&body);
    ctx.run(charge(state, body)).await
}

/// An answer, read in full.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Whether it carries `Idempotent-Replayed: true`.
    pub fn is_replay(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }

    /// Asserts a problem+json answer of `status` whose type ends in `slug`.
    pub fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.headers["content-type"], "application/problem+json");
        let kind = self.body["type"].as_str().unwrap_or_default();
        assert!(
            kind.ends_with(slug),
            "problem type {kind:?} is not {slug:?}"
        );
    }
}

/// `POST path` with `key` and `{"amount": amount}` to `instance`.
pub async fn post_charge(instance: &Router, path: &str, key: &str, amount: u64) -> Answer {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(json!({"amount": amount}).to_string()))
        .expect("valid request");
    let response = instance.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}
