//! A first execution and a replay through the idempotency layer on each store — memory, Redis
//! and Postgres, both on this machine — next to the same handler without the layer, in one run so
//! that the ratios compare like with like.
//!
//! Every case sends one keyed `POST` with a small JSON body through a router in process
//! (`tower::ServiceExt::oneshot`), to a handler written the way `#[idempotent]` expands:
//!
//! - `plain`: the handler without the layer (no key, nothing stored), the reference;
//! - `first/<store>`: a new key each time: claim, handler, completion;
//! - `replay/<store>`: the same key each time: the stored answer.
//!
//! Redis runs on a unix socket, Postgres on TCP over loopback (both throw-away servers started by
//! the bench, as the tests start theirs). The handler's options leave
//! `HandlerConfig::exact_replay` off, so that every store takes the same path (the memory store's
//! byte-identical shortcut is measured by the `handler` bench of the `idem` crate).
//!
//! `cargo bench -p idem-runtime --features redis,postgres --bench store_backends`. Without
//! `--bench` (as `cargo test --benches` runs it) every case runs once.

#![allow(missing_docs)]

#[path = "../tests/support/postgres_server.rs"]
mod postgres_server;
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use criterion::Criterion;
use idem_runtime::__private::{Arguments, HandlerConfig, HandlerOptions};
use idem_runtime::Idempotency;
use idem_runtime::store::{IdempotencyStore, MemoryStore, PostgresStore, RedisStore};
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

const BODY: &str = r#"{"amount":1999,"currency":"eur","customer":"cus_4711"}"#;

struct Defaults;
impl HandlerConfig for Defaults {
    fn options() -> &'static HandlerOptions {
        static DEFAULTS: HandlerOptions = HandlerOptions::DEFAULT;
        &DEFAULTS
    }
}

async fn charge(Json(body): Json<serde_json::Value>) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn idempotent_charge(arguments: Arguments<Defaults, (Json<serde_json::Value>,)>) -> Response {
    let (mut ctx, (body,)) = arguments.into_parts();
    ctx.input(&body);
    ctx.run(charge(body)).await
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

fn request(key: Option<&str>) -> Request<Body> {
    let mut builder = Request::post("/charges").header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(Body::from(BODY)).expect("request")
}

async fn send(router: &Router, key: Option<&str>) -> StatusCode {
    let response = router.clone().oneshot(request(key)).await.expect("answer");
    let status = response.status();
    black_box(
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body"),
    );
    status
}

fn main() {
    let Some(redis) = redis_server::RedisServer::start() else {
        return;
    };
    let Some(postgres) = postgres_server::PostgresServer::shared() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stores: Vec<(&str, Arc<dyn IdempotencyStore>)> = rt.block_on(async {
        let redis = RedisStore::builder()
            .url(redis.url())
            .build()
            .await
            .expect("connects to Redis");
        let postgres = PostgresStore::builder()
            .url(postgres.url())
            .table(postgres_server::unique_table("bench"))
            .migrate(true)
            .build()
            .await
            .expect("connects to Postgres");
        vec![
            (
                "memory",
                Arc::new(MemoryStore::default()) as Arc<dyn IdempotencyStore>,
            ),
            ("redis", Arc::new(redis)),
            ("postgres", Arc::new(postgres)),
        ]
    });
    let mut criterion = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    bench(&mut criterion, &rt, &stores);
    criterion.final_summary();
    drop(redis);
}

fn bench(c: &mut Criterion, rt: &Runtime, stores: &[(&str, Arc<dyn IdempotencyStore>)]) {
    let mut group = c.benchmark_group("store_backends");
    let plain = Router::new().route("/charges", post(charge));
    group.bench_function("plain", |b| {
        b.to_async(rt).iter(|| async {
            assert_eq!(send(&plain, None).await, StatusCode::CREATED);
        });
    });
    for (name, store) in stores {
        let idempotency = Idempotency::builder()
            .shared_store(Arc::clone(store))
            .build()
            .expect("settings");
        let router = Router::new()
            .route("/charges", post(idempotent_charge))
            .layer(Extension(idempotency));
        group.bench_function(format!("first/{name}"), |b| {
            b.to_async(rt).iter(|| async {
                let key = format!("first-{}", NEXT_KEY.fetch_add(1, Ordering::Relaxed));
                assert_eq!(send(&router, Some(&key)).await, StatusCode::CREATED);
            });
        });
        let key = format!("replay-{name}");
        rt.block_on(send(&router, Some(&key)));
        group.bench_function(format!("replay/{name}"), |b| {
            b.to_async(rt).iter(|| async {
                assert_eq!(send(&router, Some(&key)).await, StatusCode::CREATED);
            });
        });
    }
    group.finish();
}
