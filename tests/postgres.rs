//! The transactional mode, through the real attribute on real servers and a real Postgres: a
//! handler's writes and its stored answer commit together or not at all.

#![cfg(feature = "postgres")]
#![allow(missing_docs)]

mod postgres_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::future::join_all;
use idem::config::{Idempotency, IdempotencyBuilder};
use idem::idempotent;
use idem::postgres::{Transaction, sqlx};
use postgres_support::{charges_table, client, rows, serve, serve_router, store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone)]
struct Shop {
    charges: Arc<str>,
    executions: Arc<AtomicUsize>,
}

impl Shop {
    fn executions(&self) -> usize {
        self.executions.load(Ordering::SeqCst)
    }
}

/// What the handler is asked to do.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Order {
    amount: i64,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    panic: bool,
    #[serde(default)]
    status: Option<u16>,
}

/// Inserts the charge through the request's transaction, then waits, panics or answers.
async fn charge(shop: &Shop, tx: &Transaction, order: Order) -> Response {
    let execution = shop.executions.fetch_add(1, Ordering::SeqCst) + 1;
    let id: i64 = {
        let mut conn = tx.lock().await;
        sqlx::query_scalar(&format!(
            "INSERT INTO {} (amount, tag) VALUES ($1, $2) RETURNING id",
            shop.charges
        ))
        .bind(order.amount)
        .bind(order.tag)
        .fetch_one(&mut *conn)
        .await
        .expect("charge inserted")
    };
    if order.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(order.delay_ms)).await;
    }
    assert!(!order.panic, "the order asked for a panic");
    let status = StatusCode::from_u16(order.status.unwrap_or(201)).expect("a status");
    let body = json!({
        "id": id,
        "execution": execution,
        "downstream": tx.downstream_key("processor"),
    });
    (status, Json(body)).into_response()
}

#[idempotent(post)]
async fn create(State(shop): State<Shop>, tx: Transaction, Json(order): Json<Order>) -> Response {
    charge(&shop, &tx, order).await
}

#[idempotent(post, conflict = wait, wait_timeout = "20s")]
async fn create_waiting(
    State(shop): State<Shop>,
    tx: Transaction,
    Json(order): Json<Order>,
) -> Response {
    charge(&shop, &tx, order).await
}

#[idempotent(post, store_server_errors = false)]
async fn create_unstored(
    State(shop): State<Shop>,
    tx: Transaction,
    Json(order): Json<Order>,
) -> Response {
    charge(&shop, &tx, order).await
}

fn router(shop: &Shop) -> Router {
    Router::new()
        .route("/orders", post(create))
        .route("/waiting-orders", post(create_waiting))
        .route("/unstored-orders", post(create_unstored))
        .with_state(shop.clone())
}

struct Fixture {
    base: String,
    shop: Shop,
    pool: sqlx::PgPool,
    client: reqwest::Client,
}

/// A server on a store and a charges table of their own; `None` when the tests are skipped.
async fn fixture(
    configure: impl FnOnce(IdempotencyBuilder) -> IdempotencyBuilder,
) -> Option<Fixture> {
    let store = store().await?;
    let pool = store.pool().clone();
    let shop = Shop {
        charges: charges_table(&pool).await.into(),
        executions: Arc::new(AtomicUsize::new(0)),
    };
    let addr = serve(router(&shop), store, configure).await;
    Some(Fixture {
        base: format!("http://{addr}"),
        shop,
        pool,
        client: client(),
    })
}

/// A response, read whole.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    replayed: bool,
    body: Value,
}

impl Fixture {
    async fn send(&self, path: &str, key: Option<&str>, order: &Value) -> Answer {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(order);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.expect("an answer");
        Answer {
            status: response.status().as_u16(),
            replayed: response.headers().contains_key("idempotent-replayed"),
            body: response.json().await.expect("a JSON body"),
        }
    }

    async fn rows(&self) -> i64 {
        rows(&self.pool, &self.shop.charges).await
    }

    async fn insert_tag(&self, tag: &str) {
        sqlx::query(&format!(
            "INSERT INTO {} (amount, tag) VALUES (0, $1)",
            self.shop.charges
        ))
        .bind(tag)
        .execute(&self.pool)
        .await
        .expect("inserted");
    }
}

fn assert_problem(answer: &Answer, status: u16, slug: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    let ty = answer.body["type"].as_str().expect("a problem type");
    assert!(ty.ends_with(&format!("#{slug}")), "{ty} is not {slug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_commit_once_and_the_others_get_409() {
    const DUPLICATES: usize = 8;
    let Some(app) = fixture(|b| b).await else {
        return;
    };
    let order = json!({"amount": 100, "delay_ms": 500});
    let answers = join_all((0..DUPLICATES).map(|_| app.send("/orders", Some("dup"), &order))).await;
    let created: Vec<_> = answers.iter().filter(|a| a.status == 201).collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    for answer in answers.iter().filter(|a| a.status != 201) {
        assert_problem(answer, 409, "request-in-flight");
    }
    assert_eq!(app.shop.executions(), 1);
    assert_eq!(app.rows().await, 1);
    let replay = app.send("/orders", Some("dup"), &order).await;
    assert!(replay.replayed);
    assert_eq!(replay.body, created[0].body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_conflict_wait_every_duplicate_gets_the_same_answer() {
    const DUPLICATES: usize = 8;
    let Some(app) = fixture(|b| b).await else {
        return;
    };
    let order = json!({"amount": 200, "delay_ms": 300});
    let answers =
        join_all((0..DUPLICATES).map(|_| app.send("/waiting-orders", Some("wait"), &order))).await;
    for answer in &answers {
        assert_eq!(answer.status, 201, "{answer:?}");
        assert_eq!(answer.body, answers[0].body);
    }
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);
    assert_eq!(app.shop.executions(), 1);
    assert_eq!(app.rows().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_rolls_the_handlers_writes_back_and_frees_the_key() {
    let Some(app) = fixture(|b| b).await else {
        return;
    };
    let panicked = app
        .send("/orders", Some("p"), &json!({"amount": 1, "panic": true}))
        .await;
    assert_problem(&panicked, 500, "handler-panicked");
    assert_eq!(app.rows().await, 0, "the insert was rolled back");
    let retried = app.send("/orders", Some("p"), &json!({"amount": 1})).await;
    assert_eq!((retried.status, retried.replayed), (201, false));
    assert_eq!(app.rows().await, 1);
    assert_eq!(app.shop.executions(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_that_is_not_stored_rolls_back_and_frees_the_key() {
    let Some(app) = fixture(|b| b).await else {
        return;
    };
    let order = json!({"amount": 5, "status": 503});
    for run in 1..=2 {
        let failed = app.send("/unstored-orders", Some("u"), &order).await;
        assert_eq!((failed.status, failed.replayed), (503, false), "run {run}");
        assert_eq!(app.rows().await, 0, "run {run}: rolled back");
        assert_eq!(app.shop.executions(), run, "the key was free again");
    }
    // The same key's downstream key is the same on every run.
    let first = app.send("/unstored-orders", Some("u"), &order).await;
    let again = app.send("/unstored-orders", Some("u"), &order).await;
    assert_eq!(first.body["downstream"], again.body["downstream"]);
    assert!(first.body["downstream"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_answers_503_keeps_nothing_and_frees_the_key() {
    let Some(app) = fixture(|b| b).await else {
        return;
    };
    app.insert_tag("taken").await;
    let order = json!({"amount": 7, "tag": "taken"});
    for run in 1..=2 {
        let failed = app.send("/orders", Some("c"), &order).await;
        assert_problem(&failed, 503, "commit-failed");
        assert_eq!(
            app.rows().await,
            1,
            "run {run}: only the row that was there"
        );
        assert_eq!(app.shop.executions(), run, "the key was free again");
    }
    let fixed = app
        .send("/orders", Some("c"), &json!({"amount": 7, "tag": "fresh"}))
        .await;
    assert_eq!((fixed.status, fixed.replayed), (201, false), "{fixed:?}");
    assert_eq!(app.rows().await, 2);
    let replay = app
        .send("/orders", Some("c"), &json!({"amount": 7, "tag": "fresh"}))
        .await;
    assert!(replay.replayed);
    assert_eq!(replay.body, fixed.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_key_gets_a_transaction_of_its_own() {
    let Some(app) = fixture(|b| b).await else {
        return;
    };
    let created = app
        .send("/orders", None, &json!({"amount": 3, "tag": "a"}))
        .await;
    assert_eq!((created.status, created.replayed), (201, false));
    assert_eq!(
        created.body["downstream"],
        Value::Null,
        "no key, no downstream key"
    );
    assert_eq!(app.rows().await, 1, "committed");
    let again = app
        .send("/orders", None, &json!({"amount": 3, "tag": "b"}))
        .await;
    assert_eq!(
        (again.status, again.replayed),
        (201, false),
        "no key: runs again"
    );
    assert_eq!(app.rows().await, 2);
    let failed = app
        .send("/orders", None, &json!({"amount": 3, "tag": "a"}))
        .await;
    assert_problem(&failed, 503, "commit-failed");
    let panicked = app
        .client
        .post(format!("{}/orders", app.base))
        .json(&json!({"amount": 3, "tag": "c", "panic": true}))
        .send()
        .await;
    assert!(
        panicked.is_err() || panicked.is_ok_and(|r| r.status().is_server_error()),
        "a panic without a key is not answered as a success"
    );
    assert_eq!(
        app.rows().await,
        2,
        "neither the failed nor the panicked one kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_keys_are_stable_per_key_and_differ_between_keys() {
    let Some(app) = fixture(|b| b).await else {
        return;
    };
    let order = json!({"amount": 9});
    let first = app.send("/orders", Some("d1"), &order).await;
    let replay = app.send("/orders", Some("d1"), &order).await;
    let other = app.send("/orders", Some("d2"), &order).await;
    assert_eq!(first.body["downstream"], replay.body["downstream"]);
    assert_ne!(first.body["downstream"], other.body["downstream"]);
    assert_eq!(first.body["downstream"].as_str().map(str::len), Some(36));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_without_a_postgres_store_is_a_500_that_names_the_fix() {
    let shop = Shop {
        charges: "unused".into(),
        executions: Arc::new(AtomicUsize::new(0)),
    };
    let idempotency = Idempotency::builder().build().expect("defaults");
    let addr = serve_router(router(&shop).layer(axum::Extension(idempotency))).await;
    for key in [Some("m"), None] {
        let mut request = client()
            .post(format!("http://{addr}/orders"))
            .json(&json!({"amount": 1}));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.expect("an answer");
        assert_eq!(response.status(), 500);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.expect("problem+json");
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("#transaction-unavailable"))
        );
        let detail = problem["detail"].as_str().expect("a detail");
        assert!(
            detail.contains("PostgresStore") && detail.contains("Idempotency::builder().store("),
            "{detail}"
        );
    }
    assert_eq!(shop.executions(), 0, "the handler did not run");
}
