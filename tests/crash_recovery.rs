//! A process that dies holding a claim frees its key within one lease: two instances of the
//! payments example share one Redis, the one running a slow charge is killed (SIGKILL), and the
//! retry on the other is answered definitively within the lease and a second.

#![cfg(feature = "redis")]
#![allow(missing_docs)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::json;
use support::redis_server::RedisServer;

/// The claims' lease in this test: short, so that the test is too.
const LEASE_MS: u64 = 2000;

/// The payments example, built by `cargo test` next to the test binaries.
fn example() -> PathBuf {
    let mut path = std::env::current_exe().expect("the test binary's path");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.join("examples").join("payments")
}

/// One instance of the example on a free port of 127.0.0.1, killed when dropped.
struct Instance {
    child: Child,
    url: String,
}

impl Instance {
    fn start(redis_url: &str) -> Self {
        let mut child = Command::new(example())
            .env("PAYMENTS_ADDR", "127.0.0.1:0")
            .env("REDIS_URL", redis_url)
            .env("PAYMENTS_LEASE_MS", LEASE_MS.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the payments example starts (cargo test builds it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the example says where it listens");
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self { child, url }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn charge(client: &Client, instance: &Instance) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{}/charges", instance.url))
        .header("idempotency-key", "crash-1")
        .json(&json!({"amount": 700, "currency": "eur", "delay_ms": 3000}))
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_frees_its_key_within_the_lease() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        let first = Instance::start(&redis.url());
        let second = Instance::start(&redis.url());
        let client = Client::new();

        // The slow charge runs on the first instance: the second sees its key in flight.
        let running = tokio::spawn({
            let client = client.clone();
            let url = first.url.clone();
            async move {
                let _ = client
                    .post(format!("{url}/charges"))
                    .header("idempotency-key", "crash-1")
                    .json(&json!({"amount": 700, "currency": "eur", "delay_ms": 3000}))
                    .send()
                    .await;
            }
        });
        // Its claim is in Redis before anything is sent to the second instance, so that the
        // second never claims the key first.
        let mut raw = redis::Client::open(redis.url().as_str())
            .expect("valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connects to the test Redis");
        let mut claimed = false;
        for _ in 0..500 {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("payments:idem:*")
                .query_async(&mut raw)
                .await
                .expect("KEYS");
            if !keys.is_empty() {
                claimed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(claimed, "the first instance claimed the key");
        assert_eq!(charge(&client, &second).await.unwrap().status(), 409);

        let mut first = first;
        first.kill();
        let killed = Instant::now();
        let _ = running.await;

        // Retries on the second instance until one is not a 409: that one runs the charge.
        let (answer, answered_after) = loop {
            let sent = killed.elapsed();
            let answer = charge(&client, &second).await.unwrap();
            if answer.status() != 409 {
                break (answer, sent);
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "the key is still blocked 30 s after the kill"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(answer.status(), 201);
        assert!(answer.headers().get("idempotent-replayed").is_none());
        eprintln!("the retry ran {answered_after:?} after the kill (lease {LEASE_MS} ms)");
        assert!(
            answered_after <= Duration::from_millis(LEASE_MS + 1000),
            "the key was free only {answered_after:?} after the kill; the lease is {LEASE_MS} ms"
        );
        let stats: serde_json::Value = client
            .get(format!("{}/stats", second.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["executions"], 1, "the second instance ran it once");
        let replay = charge(&client, &second).await.unwrap();
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
    })
    .await
    .expect("the test finishes within its deadline");
}
