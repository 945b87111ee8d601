//! Redis down or slow: the layer fails closed (503 problem+json, the handler not run), and serves
//! again on its own once Redis is back, without a restart of the service.

#![cfg(feature = "redis")]
#![allow(missing_docs)]

#[path = "support/instances.rs"]
mod instances;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use idem_runtime::store::RedisStore;
use instances::{Answer, Service, post_charge};
use redis_server::RedisServer;

/// The most attempts while waiting for the store to come back: a bound, not a timing assertion.
const ATTEMPTS: usize = 400;

/// A bound on one request: generous, only there so that a hang fails the test instead of
/// stalling the run.
const HANG: Duration = Duration::from_secs(60);

async fn bounded(answer: impl Future<Output = Answer>) -> Answer {
    tokio::time::timeout(HANG, answer)
        .await
        .expect("the request was answered rather than left hanging")
}

/// Sends until the answer is not a 503 (the store is reachable again), and answers that.
async fn until_served(instance: &Router, key: &str) -> Answer {
    for _ in 0..ATTEMPTS {
        let answer = bounded(post_charge(instance, "/charges", key, 100)).await;
        if answer.status != 503 {
            return answer;
        }
        answer.assert_problem(503, "store-unavailable");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the service never came back after Redis did");
}

async fn store(server: &RedisServer, response_timeout: Duration) -> RedisStore {
    RedisStore::builder()
        .url(server.url())
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(response_timeout)
        .build()
        .await
        .expect("connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_answers_503_without_running_and_recovers_when_it_returns() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let service = Service::new();
    let store = store(&server, Duration::from_secs(1)).await;
    let instance = service.instance(Arc::new(store), Duration::from_secs(2));

    let before = bounded(post_charge(&instance, "/charges", "before", 100)).await;
    assert_eq!(before.status, 201);
    assert_eq!(service.executions(), 1);

    server.stop();
    for key in ["during-1", "during-2", "before"] {
        let answer = bounded(post_charge(&instance, "/charges", key, 100)).await;
        answer.assert_problem(503, "store-unavailable");
        assert!(answer.headers.contains_key("retry-after"));
    }
    assert_eq!(service.executions(), 1, "no handler runs without a claim");

    server.restart();
    let after = until_served(&instance, "during-1").await;
    assert_eq!((after.status.as_u16(), after.is_replay()), (201, false));
    assert_eq!(service.executions(), 2);
    let replay = bounded(post_charge(&instance, "/charges", "during-1", 100)).await;
    assert!(replay.is_replay());
    assert_eq!(replay.body, after.body);
    assert_eq!(service.executions(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_cut_off_by_the_clients_own_timeout() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let service = Service::new();
    // The runtime's own bound is far away: only the client's response timeout can answer in time.
    let store = store(&server, Duration::from_millis(200)).await;
    let instance = service.instance(Arc::new(store), Duration::from_secs(3600));

    assert_eq!(
        bounded(post_charge(&instance, "/charges", "warm", 100))
            .await
            .status,
        201
    );
    server.pause();
    let answer = bounded(post_charge(&instance, "/charges", "frozen", 100)).await;
    server.resume();
    answer.assert_problem(503, "store-unavailable");
    assert_eq!(service.executions(), 1, "no handler runs without a claim");

    // The frozen claim may still have been applied once Redis thawed: that key waits for its
    // lease. Another key is served as soon as the connection is back.
    let after = until_served(&instance, "thawed").await;
    assert_eq!((after.status.as_u16(), after.is_replay()), (201, false));
    assert_eq!(service.executions(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_cut_off_by_the_runtimes_store_timeout() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let service = Service::new();
    let store = store(&server, Duration::from_secs(3600)).await;
    let instance = service.instance(Arc::new(store), Duration::from_millis(200));

    assert_eq!(
        bounded(post_charge(&instance, "/charges", "warm", 100))
            .await
            .status,
        201
    );
    server.pause();
    let answer = bounded(post_charge(&instance, "/charges", "frozen", 100)).await;
    server.resume();
    answer.assert_problem(503, "store-unavailable");
    assert_eq!(service.executions(), 1);
}
