//! The payments example, black box: its router on a real port, driven over real HTTP.
//!
//! Each test starts its own server (own ledger, own in-memory store) on `127.0.0.1:0`.

#![allow(missing_docs)]

#[allow(
    dead_code,
    reason = "the example's database mode is driven by the Postgres tests"
)]
#[path = "../examples/payments/app.rs"]
mod app;

use std::time::Duration;

use axum::Extension;
use idem::config::Idempotency;
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const REPLAYED: &str = "idempotent-replayed";
const PROBLEM_JSON: &str = "application/problem+json";

/// How long a polling loop may wait for the server before the test gives up.
const PATIENCE: Duration = Duration::from_secs(60);

struct Server {
    addr: std::net::SocketAddr,
    client: Client,
    payments: app::Payments,
}

impl Server {
    async fn start() -> Self {
        let payments = app::Payments::default();
        let idempotency = Idempotency::builder()
            .build()
            .expect("default settings are valid");
        let router = app::router(payments.clone()).layer(Extension(idempotency));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        let client = Client::builder().no_proxy().build().expect("client");
        Self {
            addr,
            client,
            payments,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn post(&self, path: &str, key: Option<&str>, body: &Value) -> RequestBuilder {
        let request = self.client.post(self.url(path)).json(body);
        match key {
            Some(key) => request.header("idempotency-key", key),
            None => request,
        }
    }

    fn patch(&self, path: &str, key: &str, body: &Value) -> RequestBuilder {
        self.client
            .patch(self.url(path))
            .header("idempotency-key", key)
            .json(body)
    }

    async fn charges(&self) -> Vec<Value> {
        let response = self.client.get(self.url("/charges")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn executions(&self) -> u64 {
        let response = self.client.get(self.url("/stats")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let stats: Value = response.json().await.unwrap();
        let executions = stats["executions"]
            .as_u64()
            .expect("executions is a number");
        assert_eq!(executions, self.payments.executions());
        executions
    }

    /// Waits until `n` idempotent handler bodies have started.
    async fn wait_for_executions(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.payments.executions() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the handler never started"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A response read whole: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    async fn of(request: RequestBuilder) -> Self {
        Self::read(request.send().await.expect("request sent")).await
    }

    async fn read(response: Response) -> Self {
        Self {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.expect("body read"),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    fn is_replay(&self) -> bool {
        match self.header(REPLAYED) {
            None => false,
            Some("true") => true,
            Some(other) => panic!("unexpected {REPLAYED}: {other}"),
        }
    }

    /// Asserts a problem+json answer of the layer, of the given status and `type` section.
    fn assert_problem(&self, status: StatusCode, section: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.header("content-type"), Some(PROBLEM_JSON));
        let problem = self.json();
        assert_eq!(problem["status"], status.as_u16());
        let kind = problem["type"].as_str().expect("a type");
        assert!(kind.ends_with(&format!("#{section}")), "type {kind}");
        assert!(problem["title"].is_string() && problem["detail"].is_string());
        assert!(!self.is_replay());
    }
}

fn charge(amount: u64) -> Value {
    json!({"amount": amount, "currency": "eur"})
}

#[tokio::test]
async fn a_retried_charge_is_replayed_with_the_header_and_runs_once() {
    let server = Server::start().await;

    let first = Answer::of(server.post("/charges", Some("k-replay"), &charge(1200))).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.is_replay());
    assert_eq!(
        first.json(),
        json!({"id": "ch_1", "amount": 1200, "currency": "eur"})
    );

    // The same body written differently (member order, whitespace) is the same request.
    let retry = server
        .client
        .post(server.url("/charges"))
        .header("idempotency-key", "\"k-replay\"")
        .header("content-type", "application/json")
        .body(r#"{ "currency": "eur",  "amount": 1200 }"#);
    let retry = Answer::of(retry).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.header("content-type"), Some("application/json"));

    assert_eq!(server.executions().await, 1);
    assert_eq!(server.charges().await.len(), 1);
}

#[tokio::test]
async fn requests_without_a_key_run_every_time() {
    let server = Server::start().await;
    for n in 1..=2 {
        let answer = Answer::of(server.post("/charges", None, &charge(500))).await;
        assert_eq!(answer.status, StatusCode::CREATED);
        assert!(!answer.is_replay());
        assert_eq!(answer.json()["id"], format!("ch_{n}"));
    }
    assert_eq!(server.executions().await, 2);
}

#[tokio::test]
async fn a_duplicate_of_a_charge_in_flight_gets_409_with_retry_after() {
    let server = Server::start().await;
    let slow = json!({"amount": 700, "currency": "eur", "delay_ms": 5000});

    let first = tokio::spawn(server.post("/charges", Some("k-busy"), &slow).send());
    server.wait_for_executions(1).await;

    let duplicate = Answer::of(server.post("/charges", Some("k-busy"), &slow)).await;
    duplicate.assert_problem(StatusCode::CONFLICT, "request-in-flight");
    let retry_after: u64 = duplicate
        .header("retry-after")
        .expect("409 carries Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1);

    // A different body under the busy key is a misuse of the key, not a conflict.
    let other = Answer::of(server.post("/charges", Some("k-busy"), &charge(1))).await;
    other.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "key-reused");

    let first = Answer::read(first.await.unwrap().unwrap()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.is_replay());

    let after = Answer::of(server.post("/charges", Some("k-busy"), &slow)).await;
    assert!(after.is_replay());
    assert_eq!(after.body, first.body);
    assert_eq!(server.executions().await, 1);
}

#[tokio::test]
async fn a_key_reused_for_another_request_gets_422() {
    let server = Server::start().await;
    let first = Answer::of(server.post("/charges", Some("k-reuse"), &charge(100))).await;
    assert_eq!(first.status, StatusCode::CREATED);

    let changed = Answer::of(server.post("/charges", Some("k-reuse"), &charge(200))).await;
    changed.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "key-reused");

    // Same key on another route is another request too.
    let quote = Answer::of(server.post("/quotes", Some("k-reuse"), &json!({"amount": 100}))).await;
    quote.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "key-reused");

    assert_eq!(server.executions().await, 1);
    assert_eq!(server.charges().await.len(), 1);

    // The stored answer is still there for the real retry.
    let retry = Answer::of(server.post("/charges", Some("k-reuse"), &charge(100))).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
}

#[tokio::test]
async fn a_bad_key_gets_400_and_runs_nothing() {
    let server = Server::start().await;
    let too_long = "k".repeat(256);
    for key in ["", "with space", "\"unterminated", too_long.as_str()] {
        let answer = Answer::of(server.post("/charges", Some(key), &charge(100))).await;
        answer.assert_problem(StatusCode::BAD_REQUEST, "key-invalid");
    }

    let twice = server
        .post("/charges", Some("k-one"), &charge(100))
        .header("idempotency-key", "k-two");
    Answer::of(twice)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "key-invalid");

    // The longest key allowed is fine.
    let longest = "k".repeat(255);
    let answer = Answer::of(server.post("/charges", Some(&longest), &charge(100))).await;
    assert_eq!(answer.status, StatusCode::CREATED);

    assert_eq!(server.executions().await, 1);
    assert_eq!(server.charges().await.len(), 1);
}

#[tokio::test]
async fn a_refund_requires_a_key() {
    let server = Server::start().await;
    let created = Answer::of(server.post("/charges", None, &charge(900))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let refund = json!({"charge": "ch_1"});

    let keyless = Answer::of(server.post("/refunds", None, &refund)).await;
    keyless.assert_problem(StatusCode::BAD_REQUEST, "key-missing");
    assert_eq!(server.executions().await, 1);

    let first = Answer::of(server.post("/refunds", Some("k-refund"), &refund)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.json(), json!({"id": "re_1", "charge": "ch_1"}));

    let retry = Answer::of(server.post("/refunds", Some("k-refund"), &refund)).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);

    let unknown = json!({"charge": "ch_404"});
    let missing = Answer::of(server.post("/refunds", Some("k-refund-404"), &unknown)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"]["code"], "resource_missing");

    assert_eq!(server.executions().await, 3);
}

#[tokio::test]
async fn keys_are_scoped_by_authorization() {
    let server = Server::start().await;
    let as_caller = |authorization: Option<&str>| {
        let request = server.post("/charges", Some("k-shared"), &charge(300));
        match authorization {
            Some(value) => request.header("authorization", value),
            None => request,
        }
    };

    let alice = Answer::of(as_caller(Some("Bearer sk_alice"))).await;
    let bob = Answer::of(as_caller(Some("Bearer sk_bob"))).await;
    let anonymous = Answer::of(as_caller(None)).await;
    for answer in [&alice, &bob, &anonymous] {
        assert_eq!(answer.status, StatusCode::CREATED);
        assert!(!answer.is_replay());
    }
    let ids: Vec<Value> = [&alice, &bob, &anonymous]
        .iter()
        .map(|answer| answer.json()["id"].clone())
        .collect();
    assert_eq!(ids, [json!("ch_1"), json!("ch_2"), json!("ch_3")]);

    // Each caller's retry replays its own charge.
    let alice_again = Answer::of(as_caller(Some("Bearer sk_alice"))).await;
    assert!(alice_again.is_replay());
    assert_eq!(alice_again.body, alice.body);
    let bob_again = Answer::of(as_caller(Some("Bearer sk_bob"))).await;
    assert!(bob_again.is_replay());
    assert_eq!(bob_again.body, bob.body);

    assert_eq!(server.executions().await, 3);
}

#[tokio::test]
async fn a_quote_is_forgotten_after_its_two_second_ttl() {
    let server = Server::start().await;
    let body = json!({"amount": 4200});

    let first = Answer::of(server.post("/quotes", Some("k-quote"), &body)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.json(), json!({"id": "q_1", "amount": 4200}));

    tokio::time::sleep(Duration::from_millis(2500)).await;

    let later = Answer::of(server.post("/quotes", Some("k-quote"), &body)).await;
    assert_eq!(later.status, StatusCode::CREATED);
    assert!(!later.is_replay(), "the key should have expired");
    assert_eq!(later.json(), json!({"id": "q_2", "amount": 4200}));
    assert_eq!(server.executions().await, 2);
}

#[tokio::test]
async fn a_declined_charge_is_stored_and_replayed() {
    let server = Server::start().await;
    let big = charge(app::DECLINED_FROM);

    let first = Answer::of(server.post("/charges", Some("k-decline"), &big)).await;
    assert_eq!(first.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.json()["error"]["code"], "card_declined");
    assert!(!first.is_replay());

    let retry = Answer::of(server.post("/charges", Some("k-decline"), &big)).await;
    assert_eq!(retry.status, StatusCode::PAYMENT_REQUIRED);
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);

    assert_eq!(server.executions().await, 1);
    assert!(server.charges().await.is_empty());
}

#[tokio::test]
async fn a_failed_charge_is_stored_and_replayed() {
    let server = Server::start().await;
    let failing = json!({"amount": 100, "currency": "eur", "fail": true});

    let first = Answer::of(server.post("/charges", Some("k-fail"), &failing)).await;
    assert_eq!(first.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(first.json()["error"]["code"], "processor_unavailable");
    assert!(!first.is_replay());

    let retry = Answer::of(server.post("/charges", Some("k-fail"), &failing)).await;
    assert_eq!(retry.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);

    assert_eq!(server.executions().await, 1);
    assert!(server.charges().await.is_empty());
}

#[tokio::test]
async fn a_rejected_body_is_not_stored() {
    let server = Server::start().await;
    let too_slow = json!({"amount": 100, "currency": "eur", "delay_ms": app::MAX_DELAY_MS + 1});

    let refused = Answer::of(server.post("/charges", Some("k-fixed"), &too_slow)).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_ne!(refused.header("content-type"), Some(PROBLEM_JSON));
    assert!(refused.body.contains("delay_ms"), "body: {}", refused.body);
    assert_eq!(server.executions().await, 0);

    // The client fixes the body and retries with the same key: it runs.
    let fixed = Answer::of(server.post("/charges", Some("k-fixed"), &charge(100))).await;
    assert_eq!(fixed.status, StatusCode::CREATED);
    assert!(!fixed.is_replay());
    assert_eq!(server.executions().await, 1);
}

#[tokio::test]
async fn a_charge_update_is_idempotent_too() {
    let server = Server::start().await;
    Answer::of(server.post("/charges", None, &charge(100))).await;
    let update = json!({"description": "order 17"});

    let first = Answer::of(server.patch("/charges/ch_1", "k-patch", &update)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json()["description"], "order 17");
    assert!(!first.is_replay());

    let retry = Answer::of(server.patch("/charges/ch_1", "k-patch", &update)).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);

    let other = json!({"description": "order 18"});
    Answer::of(server.patch("/charges/ch_1", "k-patch", &other))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "key-reused");

    let unknown = Answer::of(server.patch("/charges/ch_9", "k-patch-404", &update)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let unknown_again = Answer::of(server.patch("/charges/ch_9", "k-patch-404", &update)).await;
    assert_eq!(unknown_again.status, StatusCode::NOT_FOUND);
    assert!(unknown_again.is_replay());

    assert_eq!(server.executions().await, 3);
    assert_eq!(server.charges().await[0]["description"], "order 17");
}

#[tokio::test]
async fn get_routes_ignore_idempotency_keys() {
    let server = Server::start().await;
    Answer::of(server.post("/charges", Some("k-get"), &charge(100))).await;

    for key in ["k-get", "not a valid key"] {
        let listed = server
            .client
            .get(server.url("/charges"))
            .header("idempotency-key", key);
        let listed = Answer::of(listed).await;
        assert_eq!(listed.status, StatusCode::OK);
        assert!(!listed.is_replay());
        assert_eq!(listed.json().as_array().map(Vec::len), Some(1));
    }
    let stats = server
        .client
        .get(server.url("/stats"))
        .header("idempotency-key", "k-get");
    let stats = Answer::of(stats).await;
    assert_eq!(stats.status, StatusCode::OK);
    assert!(!stats.is_replay());
    assert_eq!(stats.json(), json!({"executions": 1}));
}

#[tokio::test]
async fn a_charge_completes_after_its_client_hangs_up_and_the_retry_gets_the_replay() {
    let server = Server::start().await;
    let body = json!({"amount": 2500, "currency": "usd", "delay_ms": 1500}).to_string();
    let request = format!(
        "POST /charges HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         idempotency-key: k-hangup\r\ncontent-length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    );

    // Send the whole request, wait until the handler is running, then hang up without reading.
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    server.wait_for_executions(1).await;
    drop(socket);

    // Retry as a client would after a connection error: until the answer is no longer a 409.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let retry = loop {
        let retry = server
            .client
            .post(server.url("/charges"))
            .header("idempotency-key", "k-hangup")
            .header("content-type", "application/json")
            .body(body.clone());
        let answer = Answer::of(retry).await;
        if answer.status != StatusCode::CONFLICT {
            break answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the abandoned charge never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    assert_eq!(retry.status, StatusCode::CREATED, "body: {}", retry.body);
    assert!(retry.is_replay());
    assert_eq!(
        retry.json(),
        json!({"id": "ch_1", "amount": 2500, "currency": "usd"})
    );
    assert_eq!(server.executions().await, 1);
    assert_eq!(server.charges().await.len(), 1);
}
