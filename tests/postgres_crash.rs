//! Processes killed with SIGKILL around a charge, with the payments example on Postgres: a retry
//! on another instance (or the restarted one) is answered definitively at once, and exactly one
//! charge row exists afterwards.
//!
//! Each instance is a child process: this test binary started again with `IDEM_PAYMENTS_CHILD`
//! set, which serves the payments example's router on 127.0.0.1:0 with its charges and keys in
//! the database named by `DATABASE_URL` (as the example's `main` does), and prints its address.

#![cfg(feature = "postgres")]
#![allow(missing_docs)]

#[path = "../examples/payments/app.rs"]
mod app;
mod postgres_support;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idem::postgres::sqlx;
use postgres_support::{PostgresServer, client, unique_table};
use serde_json::{Value, json};

/// The instance's line on stdout that carries its address.
const LISTENING: &str = "payments child listening on ";
/// How soon after the crash the retry must be answered definitively.
const RECOVERY: Duration = Duration::from_secs(2);

/// Not a test: the body of a child process (see the module docs). Returns at once otherwise.
#[test]
fn payments_child() {
    let Ok(url) = std::env::var("IDEM_PAYMENTS_CHILD") else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let store = idem::store::PostgresStore::builder()
            .url(url.as_str())
            .table("payments_idem_keys")
            .migrate(true)
            .build()
            .await
            .expect("store");
        let payments = app::Payments::in_database(store.pool().clone(), "payments_charges")
            .await
            .expect("charges table");
        let idempotency = idem::config::Idempotency::builder()
            .store(store)
            .build()
            .expect("settings");
        let router = app::router(payments).layer(axum::Extension(idempotency));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        // The parent reads this line; nothing else of this process's output matters.
        #[allow(clippy::print_stdout)]
        {
            println!("{LISTENING}{addr}");
        }
        axum::serve(listener, router).await.expect("serves");
    });
}

/// An instance of the payments example on the database at `url`.
struct Instance {
    child: Child,
    addr: SocketAddr,
}

impl Instance {
    fn start(url: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "payments_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("IDEM_PAYMENTS_CHILD", url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("child starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the child printed its address")
                .expect("a line");
            // The test harness may have written `test payments_child ... ` on the same line.
            if let Some((_, addr)) = line.split_once(LISTENING) {
                break addr.trim().parse().expect("an address");
            }
        };
        Self { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL, and waits until the process is gone.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database of its own on the test cluster: its URL, and a pool on it.
async fn database(server: &PostgresServer) -> (String, sqlx::PgPool) {
    let name = unique_table("payments");
    let admin = sqlx::PgPool::connect(&server.url()).await.expect("admin");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("database");
    let url = format!("postgres://postgres@127.0.0.1:{}/{name}", server.port());
    let pool = sqlx::PgPool::connect(&url).await.expect("pool");
    (url, pool)
}

async fn charge_rows(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payments_charges")
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn key_state(pool: &sqlx::PgPool, key: &str) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM payments_idem_keys WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
        .expect("key state")
}

/// Retries until an answer that is not `409`/`503` or a connection error; answers it with the
/// time it took.
async fn until_definitive(url: &str, key: &str, body: &Value) -> (u16, bool, Value, Duration) {
    let client = client();
    let started = Instant::now();
    for _ in 0..500 {
        let sent = client
            .post(url)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await;
        if let Ok(response) = sent
            && !matches!(response.status().as_u16(), 409 | 503)
        {
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let body = response.json().await.expect("JSON");
            return (status, replayed, body, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no definitive answer for {key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_charge_leaves_no_charge_and_the_retry_elsewhere_runs_at_once() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let (url, pool) = database(server).await;
    let mut doomed = Instance::start(&url);
    let survivor = Instance::start(&url);
    let charge = json!({"amount": 4200, "currency": "eur", "delay_ms": 5000});

    // The charge is inserted in the request's transaction, then the handler waits.
    let request = tokio::spawn({
        let (url, charge) = (doomed.url("/charges"), charge.clone());
        async move {
            client()
                .post(url)
                .header("idempotency-key", "crash-1")
                .json(&charge)
                .send()
                .await
        }
    });
    let mut polls = 0;
    while key_state(&pool, "crash-1").await.as_deref() != Some("in_flight") {
        polls += 1;
        assert!(polls < 500, "the charge never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The insert comes right after the claim; give it a moment, then the other instance sees
    // the key held.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = client()
        .post(survivor.url("/charges"))
        .header("idempotency-key", "crash-1")
        .json(&charge)
        .send()
        .await
        .expect("answer");
    assert_eq!(held.status(), 409, "a live holder keeps its key");

    doomed.kill();
    assert!(
        request.await.expect("task").is_err(),
        "the dead instance answered"
    );
    let (status, replayed, body, took) =
        until_definitive(&survivor.url("/charges"), "crash-1", &charge).await;
    eprintln!("retry after SIGKILL mid-handler answered in {took:?}");
    assert_eq!((status, replayed), (201, false), "{body}");
    // The retry runs the whole handler, delay_ms included: what must be short is the wait
    // before it could start.
    assert!(
        took < RECOVERY + Duration::from_millis(5000),
        "answered {took:?} after the crash"
    );
    assert_eq!(charge_rows(&pool).await, 1, "exactly one charge");
    let listed: Vec<Value> = client()
        .get(survivor.url("/charges"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("charges");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], body["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_crash_mid_charge_starts_within_two_seconds() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let (url, pool) = database(server).await;
    let mut doomed = Instance::start(&url);
    let survivor = Instance::start(&url);
    let slow = json!({"amount": 4300, "currency": "eur", "delay_ms": 5000});
    let request = tokio::spawn({
        let (url, slow) = (doomed.url("/charges"), slow.clone());
        async move {
            client()
                .post(url)
                .header("idempotency-key", "crash-2")
                .json(&slow)
                .send()
                .await
        }
    });
    while key_state(&pool, "crash-2").await.as_deref() != Some("in_flight") {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    doomed.kill();
    let killed = Instant::now();
    let _ = request.await;
    // The survivor's claim succeeds as soon as the dead connection's lock is gone: poll the key
    // until it is held again, by the survivor's run of the retry.
    let retry = tokio::spawn({
        let url = survivor.url("/charges");
        async move { until_definitive(&url, "crash-2", &slow).await }
    });
    let mut started = None;
    for _ in 0..400 {
        let executions: Value = client()
            .get(survivor.url("/stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("JSON");
        if executions["executions"] == 1 {
            started = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = started.expect("the retry ran on the survivor");
    eprintln!("retry's handler started {started:?} after SIGKILL");
    assert!(
        started < RECOVERY,
        "the retry waited {started:?} for the key"
    );
    let (status, replayed, _, _) = retry.await.expect("retry");
    assert_eq!((status, replayed), (201, false));
    assert_eq!(charge_rows(&pool).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_after_its_commit_is_replayed_by_the_restarted_instance() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let (url, pool) = database(server).await;
    let mut first = Instance::start(&url);
    let charge = json!({"amount": 4400, "currency": "eur"});
    let answered = client()
        .post(first.url("/charges"))
        .header("idempotency-key", "committed")
        .json(&charge)
        .send()
        .await
        .expect("answer");
    assert_eq!(answered.status(), 201);
    let original: Value = answered.json().await.expect("JSON");
    first.kill();

    let restarted = Instance::start(&url);
    let (status, replayed, body, took) =
        until_definitive(&restarted.url("/charges"), "committed", &charge).await;
    eprintln!("replay after SIGKILL past the commit answered in {took:?}");
    assert_eq!((status, replayed), (201, true));
    assert_eq!(body, original);
    assert!(took < RECOVERY, "{took:?}");
    assert_eq!(charge_rows(&pool).await, 1);
}
