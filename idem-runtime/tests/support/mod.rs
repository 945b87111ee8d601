//! A router whose handlers call the runtime exactly as `#[idempotent]` expansions do, plus request
//! helpers. Every behaviour test drives it through `tower::ServiceExt::oneshot`.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use http_body_util::BodyExt;
use idem_runtime::__private::{Context, HandlerConfig, HandlerOptions, Methods};
use idem_runtime::Idempotency;
use idem_runtime::config::IdempotencyBuilder;
use idem_runtime::store::{IdempotencyStore, MemoryStore};
use serde::Deserialize;
use tower::ServiceExt;

/// Handler options: every method, nothing overridden.
pub struct Defaults;
impl HandlerConfig for Defaults {
    const OPTIONS: HandlerOptions = HandlerOptions::DEFAULT;
}

/// Handler options: a key is required.
pub struct Required;
impl HandlerConfig for Required {
    const OPTIONS: HandlerOptions = HandlerOptions {
        required: Some(true),
        ..HandlerOptions::DEFAULT
    };
}

/// Handler options: only `PUT` is idempotent.
pub struct PutOnly;
impl HandlerConfig for PutOnly {
    const OPTIONS: HandlerOptions = HandlerOptions {
        methods: Methods::PUT,
        ..HandlerOptions::DEFAULT
    };
}

/// What the test handler should do, sent as its JSON body.
#[derive(Debug, Deserialize, serde::Serialize)]
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

#[derive(Clone)]
pub struct App {
    pub executions: Arc<AtomicUsize>,
}

async fn order_body(app: App, order: Order) -> Response {
    let n = app.executions.fetch_add(1, Ordering::SeqCst) + 1;
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

/// `POST /orders`: the shape of an expansion of `#[idempotent] async fn(State<App>, Json<Order>)`.
async fn create_order(
    mut ctx: Context<Defaults>,
    state: State<App>,
    body: Json<Order>,
) -> Response {
    async fn handler(State(app): State<App>, Json(order): Json<Order>) -> impl IntoResponse {
        order_body(app, order).await
    }
    ctx.input(&state);
    ctx.input(&body);
    ctx.run(handler(state, body)).await
}

/// `POST /orders/{id}`: a path parameter as an input.
async fn update_order(
    mut ctx: Context<Defaults>,
    state: State<App>,
    id: Path<String>,
    body: Json<Order>,
) -> Response {
    async fn handler(
        State(app): State<App>,
        Path(_id): Path<String>,
        Json(order): Json<Order>,
    ) -> Response {
        order_body(app, order).await
    }
    ctx.input(&state);
    ctx.input(&id);
    ctx.input(&body);
    ctx.run(handler(state, id, body)).await
}

/// `POST /refunds`: the same handler with a required key.
async fn create_refund(
    mut ctx: Context<Required>,
    state: State<App>,
    body: Json<Order>,
) -> Response {
    ctx.input(&state);
    ctx.input(&body);
    let (State(app), Json(order)) = (state, body);
    ctx.run(order_body(app, order)).await
}

/// `POST|PUT /puts`: idempotent for `PUT` only.
async fn put_only(mut ctx: Context<PutOnly>, state: State<App>, body: Json<Order>) -> Response {
    ctx.input(&state);
    ctx.input(&body);
    let (State(app), Json(order)) = (state, body);
    ctx.run(order_body(app, order)).await
}

/// `POST /tallies`: a map body, whose iteration order must not matter.
async fn create_tally(
    mut ctx: Context<Defaults>,
    state: State<App>,
    body: Json<HashMap<String, u64>>,
) -> Response {
    ctx.input(&state);
    ctx.input(&body);
    let (State(app), Json(tally)) = (state, body);
    ctx.run(async move {
        let n = app.executions.fetch_add(1, Ordering::SeqCst) + 1;
        (
            StatusCode::CREATED,
            format!("tally {n} of {} entries", tally.len()),
        )
    })
    .await
}

/// A test application: the router, its execution counter, and the store behind it.
pub struct Harness {
    pub router: Router,
    pub executions: Arc<AtomicUsize>,
    pub store: Arc<dyn IdempotencyStore>,
}

impl Harness {
    /// A fresh in-memory store and default settings.
    pub fn new() -> Self {
        Self::configured(|b| b)
    }

    /// A fresh in-memory store and settings changed by `configure`.
    pub fn configured(configure: impl FnOnce(IdempotencyBuilder) -> IdempotencyBuilder) -> Self {
        Self::with_store(Arc::new(MemoryStore::default()), configure)
    }

    /// `store` and settings changed by `configure`.
    pub fn with_store(
        store: Arc<dyn IdempotencyStore>,
        configure: impl FnOnce(IdempotencyBuilder) -> IdempotencyBuilder,
    ) -> Self {
        let idempotency = configure(Idempotency::builder().shared_store(Arc::clone(&store)))
            .build()
            .expect("valid test configuration");
        let app = App {
            executions: Arc::new(AtomicUsize::new(0)),
        };
        let router = Router::new()
            .route("/orders", post(create_order))
            .route("/orders/{id}", post(update_order))
            .route("/other-orders", post(create_order))
            .route("/refunds", post(create_refund))
            .route("/puts", post(put_only).put(put_only))
            .route("/tallies", post(create_tally))
            .layer(Extension(idempotency))
            .with_state(app.clone());
        Self {
            router,
            executions: app.executions,
            store,
        }
    }

    pub fn executions(&self) -> usize {
        self.executions.load(Ordering::SeqCst)
    }

    /// Sends `request` and reads the whole answer.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        Answer::read(response).await
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub async fn read(response: Response) -> Self {
        let (parts, body) = response.into_parts();
        Self {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn is_replay(&self) -> bool {
        self.headers.get("idempotent-replayed") == Some(&HeaderValue::from_static("true"))
    }

    /// Asserts a problem+json answer of `status` whose `type` ends in `#slug`.
    pub fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.headers["content-type"], "application/problem+json");
        let problem = self.json();
        assert_eq!(problem["status"], status);
        let ty = problem["type"].as_str().unwrap();
        assert!(ty.ends_with(&format!("#{slug}")), "type {ty} is not {slug}");
        assert!(problem["title"].is_string());
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

/// A `POST` to `path` with `body` as JSON, and the key if any.
pub fn post_json(path: &str, key: Option<&str>, body: &serde_json::Value) -> Request<Body> {
    request("POST", path, key, body)
}

/// A request of `method` to `path` with `body` as JSON, and the key if any.
pub fn request(
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &serde_json::Value,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}
