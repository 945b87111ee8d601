//! A handler that panics, a client that vanishes and a process that dies, at every await point a
//! test can reach: the key always ends released or completed — never stuck in flight past its
//! lease.
//!
//! The handler runs `steps` steps, each an await point, and reports each step; a test panics it
//! at step k, drops the client's connection at step k, or shuts down the whole server runtime at
//! step k.

#![allow(missing_docs)]

mod faults;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use faults::{Served, bounded};
use futures_util::StreamExt;
use idem::__private::{Context, HandlerConfig, HandlerOptions, Methods};
use idem::config::Idempotency;
use idem::fingerprint::Fingerprint;
use idem::store::{
    Claim, ClaimToken, Completed, Completion, IdempotencyStore, MemoryStore, Record, StoreError,
    StoreKey,
};
use reqwest::Client;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

/// Steps of the handler: each one is an await point where it can be hit.
const STEPS: u32 = 5;
/// The most polls while waiting for a key to come free: a bound, not a timing assertion.
const POLLS: usize = 1000;

/// What the handler is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    id: u64,
    #[serde(default)]
    panic_at: Option<u32>,
    /// A response body of three chunks, the given one of which panics.
    #[serde(default)]
    body_panics_at: Option<u32>,
    /// A response body of three chunks, the given one of which fails.
    #[serde(default)]
    body_fails_at: Option<u32>,
}

#[derive(Clone)]
struct Jobs {
    executions: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    /// The job and step the handler last reached.
    progress: Arc<watch::Sender<(u64, u32)>>,
}

impl Jobs {
    fn new() -> Self {
        Self {
            executions: Arc::new(AtomicUsize::new(0)),
            finished: Arc::new(AtomicUsize::new(0)),
            progress: Arc::new(watch::channel((u64::MAX, 0)).0),
        }
    }

    fn executions(&self) -> usize {
        self.executions.load(Ordering::SeqCst)
    }

    /// Waits until job `id` reaches `step`.
    async fn reached(&self, id: u64, step: u32) {
        let mut progress = self.progress.subscribe();
        progress
            .wait_for(|&(job, at)| job == id && at >= step)
            .await
            .expect("handler state alive");
    }
}

fn chunks(job: &Job) -> Body {
    let (panics, fails) = (job.body_panics_at, job.body_fails_at);
    let stream = futures_util::stream::iter(0..3u32).then(move |chunk| async move {
        tokio::task::yield_now().await;
        assert_ne!(Some(chunk), panics, "the body asked for a panic");
        if Some(chunk) == fails {
            return Err(std::io::Error::other("the body asked for a failure"));
        }
        Ok(Bytes::from(format!("chunk {chunk};")))
    });
    Body::from_stream(stream)
}

async fn job_body(State(jobs): State<Jobs>, Json(job): Json<Job>) -> Response {
    jobs.executions.fetch_add(1, Ordering::SeqCst);
    for step in 0..STEPS {
        jobs.progress.send_replace((job.id, step));
        assert_ne!(Some(step), job.panic_at, "the job asked for a panic");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    jobs.finished.fetch_add(1, Ordering::SeqCst);
    if job.body_panics_at.is_some() || job.body_fails_at.is_some() {
        return (StatusCode::CREATED, chunks(&job)).into_response();
    }
    (StatusCode::CREATED, format!("job {} done", job.id)).into_response()
}

struct JobOptions;
impl HandlerConfig for JobOptions {
    const OPTIONS: HandlerOptions = HandlerOptions {
        methods: Methods::POST,
        ..HandlerOptions::DEFAULT
    };
}

/// `POST /jobs`, written the way `#[idempotent]` expands.
async fn create_job(mut ctx: Context<JobOptions>, state: State<Jobs>, body: Json<Job>) -> Response {
    ctx.input(&state);
    ctx.input(&body);
    ctx.run(job_body(state, body)).await
}

fn router(jobs: &Jobs, store: Arc<dyn IdempotencyStore>, lease: Duration) -> Router {
    let idempotency = Idempotency::builder()
        .shared_store(store)
        .lease(lease)
        .build()
        .expect("valid settings");
    Router::new()
        .route("/jobs", post(create_job))
        .layer(Extension(idempotency))
        .with_state(jobs.clone())
}

fn client() -> Client {
    faults::client()
}

async fn send(
    client: &Client,
    server: &Served,
    key: &str,
    job: &serde_json::Value,
) -> (u16, bool, String) {
    let response = client
        .post(server.url("/jobs"))
        .header("idempotency-key", key)
        .json(job)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    (status, replayed, response.text().await.expect("body"))
}

/// Sends until the answer is not a 409; panics if the key stays in flight for [`POLLS`] tries.
async fn until_settled(
    client: &Client,
    server: &Served,
    key: &str,
    job: &serde_json::Value,
) -> (u16, bool, String) {
    for _ in 0..POLLS {
        let answer = send(client, server, key, job).await;
        if answer.0 != 409 {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("key {key} stayed in flight");
}

fn problem_type(body: &str) -> String {
    let problem: serde_json::Value = serde_json::from_str(body).expect("problem+json");
    problem["type"].as_str().expect("type").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_at_any_step_releases_the_key() {
    bounded(async {
        let jobs = Jobs::new();
        let server = Served::start(router(
            &jobs,
            Arc::new(MemoryStore::default()),
            Duration::from_secs(300),
        ))
        .await;
        let client = client();
        for k in 0..STEPS {
            let key = format!("panic-{k}");
            let job = json!({"id": k, "panic_at": k});
            let before = jobs.executions();
            let (status, _, body) = send(&client, &server, &key, &job).await;
            assert_eq!(status, 500);
            assert!(problem_type(&body).ends_with("#handler-panicked"));
            // Released: the same request runs again (and panics again), it is neither a 409 nor
            // a replay.
            let (status, replayed, _) = send(&client, &server, &key, &job).await;
            assert_eq!((status, replayed), (500, false), "step {k}");
            assert_eq!(jobs.executions(), before + 2, "step {k}");
            // And the operation can be retried until it succeeds.
            let fixed = json!({"id": k});
            let (status, replayed, _) = send(&client, &server, &key, &fixed).await;
            assert_eq!((status, replayed), (201, false), "step {k}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_panics_or_fails_releases_the_key() {
    bounded(async {
        let jobs = Jobs::new();
        let server = Served::start(router(
            &jobs,
            Arc::new(MemoryStore::default()),
            Duration::from_secs(300),
        ))
        .await;
        let client = client();
        for k in 0..3u32 {
            for (field, slug) in [
                ("body_panics_at", "#handler-panicked"),
                ("body_fails_at", "#response-failed"),
            ] {
                let key = format!("{field}-{k}");
                let job = json!({"id": 100 + k, field: k});
                let before = jobs.executions();
                let (status, _, body) = send(&client, &server, &key, &job).await;
                assert_eq!(status, 500, "{field} {k}: {body}");
                assert!(problem_type(&body).ends_with(slug), "{field} {k}: {body}");
                let (status, replayed, _) = send(&client, &server, &key, &job).await;
                assert_eq!((status, replayed), (500, false), "{field} {k}: released");
                assert_eq!(jobs.executions(), before + 2);
            }
        }
    })
    .await;
}

/// Sends the request on a raw connection and hangs up once the handler reaches `step`.
async fn hang_up_at(server: &Served, jobs: &Jobs, key: &str, id: u64, step: u32) {
    let body = json!({"id": id}).to_string();
    let mut connection = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!(
        "POST /jobs HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         idempotency-key: {key}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    connection
        .write_all(request.as_bytes())
        .await
        .expect("send");
    jobs.reached(id, step).await;
    drop(connection);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_at_any_step_leaves_a_completed_key() {
    bounded(async {
        let jobs = Jobs::new();
        let server = Served::start(router(
            &jobs,
            Arc::new(MemoryStore::default()),
            Duration::from_secs(300),
        ))
        .await;
        let client = client();
        for k in 0..STEPS {
            let id = 200 + u64::from(k);
            let key = format!("gone-{k}");
            let before = jobs.executions();
            hang_up_at(&server, &jobs, &key, id, k).await;
            let (status, replayed, body) =
                until_settled(&client, &server, &key, &json!({"id": id})).await;
            assert_eq!((status, replayed), (201, true), "step {k}: {body}");
            assert_eq!(body, format!("job {id} done"));
            assert_eq!(jobs.executions(), before + 1, "step {k}");
        }
    })
    .await;
}

/// A memory store whose completions wait while `hold` is set.
struct SlowCompletions {
    inner: MemoryStore,
    hold: AtomicBool,
    gate: Semaphore,
}

#[async_trait]
impl IdempotencyStore for SlowCompletions {
    async fn claim(
        &self,
        key: &StoreKey,
        fp: &Fingerprint,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.inner.claim(key, fp, token, lease).await
    }
    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        if self.hold.load(Ordering::SeqCst) {
            let _permit = self.gate.acquire().await.expect("gate open");
        }
        self.inner.complete(key, token, completed, ttl).await
    }
    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        self.inner.release(key, token).await
    }
    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.inner.lookup(key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_the_result_is_being_stored_leaves_a_completed_key() {
    bounded(async {
        let store = Arc::new(SlowCompletions {
            inner: MemoryStore::default(),
            hold: AtomicBool::new(true),
            gate: Semaphore::new(0),
        });
        let jobs = Jobs::new();
        let server = Served::start(router(&jobs, store.clone(), Duration::from_secs(300))).await;
        // The handler finishes, the completion waits at the gate, the client hangs up.
        hang_up_at(&server, &jobs, "storing", 300, STEPS - 1).await;
        while jobs.finished.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        store.hold.store(false, Ordering::SeqCst);
        store.gate.add_permits(1);
        let (status, replayed, _) =
            until_settled(&client(), &server, "storing", &json!({"id": 300})).await;
        assert_eq!((status, replayed), (201, true));
        assert_eq!(jobs.executions(), 1);
    })
    .await;
}

/// The whole server runtime is shut down at step k, as when the process is killed: the claim is
/// left in the (surviving) store. A new server on the same store answers 409 until the lease runs
/// out, then runs the job: the key is never stuck in flight past its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_at_any_step_frees_the_key_when_its_lease_runs_out() {
    bounded(async {
        let lease = Duration::from_millis(300);
        let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::default());
        let client = client();
        for k in 0..STEPS {
            let id = 400 + u64::from(k);
            let key = format!("killed-{k}");
            let doomed = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("server runtime");
            let jobs = Jobs::new();
            let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
            let app = router(&jobs, Arc::clone(&store), lease);
            doomed.spawn(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("address"))
                    .expect("test waits");
                axum::serve(listener, app).await.expect("serves");
            });
            let addr = addr_rx.await.expect("server started");
            let request = tokio::spawn({
                let client = client.clone();
                async move {
                    client
                        .post(format!("http://{addr}/jobs"))
                        .header("idempotency-key", key)
                        .json(&json!({"id": id}))
                        .send()
                        .await
                }
            });
            jobs.reached(id, k).await;
            doomed.shutdown_background();
            assert!(
                request.await.expect("client task").is_err(),
                "the dead server answered"
            );
            assert_eq!(
                jobs.finished.load(Ordering::SeqCst),
                0,
                "the handler was cut short"
            );

            let survivor_jobs = Jobs::new();
            let survivor = Served::start(router(&survivor_jobs, Arc::clone(&store), lease)).await;
            let key = format!("killed-{k}");
            let (status, replayed, body) =
                until_settled(&client, &survivor, &key, &json!({"id": id})).await;
            assert_eq!((status, replayed), (201, false), "step {k}: {body}");
            assert_eq!(survivor_jobs.executions(), 1);
        }
    })
    .await;
}
