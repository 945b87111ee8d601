//! A failing, stalled or unreachable store fails closed: `503` with `Retry-After`, and the handler
//! never runs without a claim. Once the store recovers, nothing is stuck: a completion or release
//! that failed lands, and the service serves again without a restart — with the `redis` feature,
//! against a real Redis that is stopped, frozen and brought back.

#![allow(missing_docs)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use idem::ConflictPolicy;
use serde_json::json;
use support::store::{Fault, FaultyStore, Operation};
use support::{Answer, Probe, app_with, orders, post_json, send};

fn faulty_app(store: &Arc<FaultyStore>, probe: &Probe) -> Router {
    app_with(orders(), probe, |b| {
        b.shared_store(store.clone())
            .store_timeout(Duration::from_millis(100))
    })
}

/// The wrapper of a fresh memory store, twice: asked asynchronously, and answering at once
/// (the runtime takes another way for each).
fn both_ways() -> [Arc<FaultyStore>; 2] {
    [
        Arc::new(FaultyStore::memory()),
        Arc::new(FaultyStore::memory().answering_at_once()),
    ]
}

#[tokio::test]
async fn a_failing_claim_answers_503_and_runs_nothing() {
    for store in both_ways() {
        let probe = Probe::default();
        let app = faulty_app(&store, &probe);
        let order = json!({"amount": 1});
        store.force(Operation::Claim, Some(Fault::FailBefore));
        let answer = send(&app, post_json("/orders", Some("k"), &order)).await;
        answer.assert_problem(503, "store-unavailable");
        assert_eq!(answer.headers["retry-after"], "1");
        assert_eq!(probe.runs(), 0);

        // When the store recovers, the same key works: nothing was left behind.
        store.force(Operation::Claim, None);
        assert_eq!(
            send(&app, post_json("/orders", Some("k"), &order))
                .await
                .status,
            201
        );
        assert!(
            send(&app, post_json("/orders", Some("k"), &order))
                .await
                .is_replay()
        );
        assert_eq!(probe.runs(), 1);
    }
}

#[tokio::test]
async fn a_claim_whose_answer_was_lost_leaves_its_key_free() {
    for store in both_ways() {
        let probe = Probe::default();
        let app = faulty_app(&store, &probe);
        let order = json!({"amount": 1});
        // The claim is made, but the runtime hears a failure: it answers 503 and releases its own
        // claim, so the retry runs at once instead of waiting out the lease.
        store.force(Operation::Claim, Some(Fault::FailAfter));
        send(&app, post_json("/orders", Some("k"), &order))
            .await
            .assert_problem(503, "store-unavailable");
        store.force(Operation::Claim, None);
        let retry = until_not_in_flight(&app, &order).await;
        assert_eq!(retry.status, 201);
        assert_eq!(probe.runs(), 1);
    }
}

#[tokio::test]
async fn a_store_that_panics_never_runs_a_handler_twice() {
    for store in both_ways() {
        let probe = Probe::default();
        let app = faulty_app(&store, &probe);
        let order = json!({"amount": 1});
        store.force(Operation::Claim, Some(Fault::Panic));
        send(&app, post_json("/orders", Some("k"), &order))
            .await
            .assert_problem(500, "handler-panicked");
        assert_eq!(probe.runs(), 0, "no claim, no handler");
        store.force(Operation::Claim, None);

        // A panic in the completion, after the handler ran: its answer still goes out, and the
        // key stays in flight until its lease runs out, so no retry runs the handler meanwhile.
        store.force(Operation::Complete, Some(Fault::Panic));
        let first = send(&app, post_json("/orders", Some("j"), &order)).await;
        assert_eq!(first.status, 201);
        assert_eq!(probe.runs(), 1);
        store.force(Operation::Complete, None);
        send(&app, post_json("/orders", Some("j"), &order))
            .await
            .assert_problem(409, "request-in-flight");
        assert_eq!(probe.runs(), 1);

        // The first key was left free.
        assert_eq!(
            send(&app, post_json("/orders", Some("k"), &order))
                .await
                .status,
            201
        );
    }
}

#[tokio::test]
async fn a_stalled_claim_times_out_with_503() {
    let store = Arc::new(FaultyStore::memory());
    let probe = Probe::default();
    let app = faulty_app(&store, &probe);
    store.force(Operation::Claim, Some(Fault::StallBefore));
    send(&app, post_json("/orders", Some("k"), &json!({"amount": 1})))
        .await
        .assert_problem(503, "store-unavailable");
    assert_eq!(probe.runs(), 0);
}

/// Sends `order` with key `k` until the answer is not a 409 (the key is no longer in flight); a
/// bound on attempts, not on time.
async fn until_not_in_flight(app: &Router, order: &serde_json::Value) -> Answer {
    for _ in 0..500 {
        let answer = send(app, post_json("/orders", Some("k"), order)).await;
        if answer.status != 409 {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the key stayed in flight after the store recovered");
}

#[tokio::test]
async fn a_failed_completion_is_retried_until_it_lands() {
    for store in both_ways() {
        let probe = Probe::default();
        let app = faulty_app(&store, &probe);
        let order = json!({"amount": 1});
        store.force(Operation::Complete, Some(Fault::FailBefore));
        let first = send(&app, post_json("/orders", Some("k"), &order)).await;
        assert_eq!(
            first.status, 201,
            "the handler ran; its answer is not withheld"
        );
        // While the store fails, the record stays in flight: retries are told to wait, never run twice.
        send(&app, post_json("/orders", Some("k"), &order))
            .await
            .assert_problem(409, "request-in-flight");

        // Once the store recovers, the completion lands without waiting for the (5 minute) lease, and
        // the retry is the replay of the first answer.
        store.force(Operation::Complete, None);
        let retry = until_not_in_flight(&app, &order).await;
        assert!(retry.is_replay(), "status {}", retry.status);
        assert_eq!(retry.body, first.body);
        assert_eq!(probe.runs(), 1);
    }
}

#[tokio::test]
async fn a_failed_release_is_retried_so_the_key_is_not_stuck() {
    for store in both_ways() {
        let probe = Probe::default();
        let app = faulty_app(&store, &probe);
        let order = json!({"amount": 1, "panic": true});
        store.force(Operation::Release, Some(Fault::FailBefore));
        send(&app, post_json("/orders", Some("k"), &order))
            .await
            .assert_problem(500, "handler-panicked");
        send(&app, post_json("/orders", Some("k"), &order))
            .await
            .assert_problem(409, "request-in-flight");

        // Once the store recovers the key is released, well before its lease runs out: the retry
        // runs the handler again.
        store.force(Operation::Release, None);
        until_not_in_flight(&app, &order)
            .await
            .assert_problem(500, "handler-panicked");
        assert_eq!(probe.runs(), 2);
    }
}

#[tokio::test]
async fn a_failing_lookup_in_wait_mode_answers_503() {
    let store = Arc::new(FaultyStore::memory());
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| {
        b.shared_store(store.clone())
            .store_timeout(Duration::from_millis(100))
            .conflict(ConflictPolicy::Wait)
    });
    let order = json!({"amount": 1, "delay_ms": 300});
    let first = send(&app, post_json("/orders", Some("k"), &order));
    let second = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.force(Operation::Lookup, Some(Fault::FailBefore));
        send(&app, post_json("/orders", Some("k"), &order)).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 201);
    second.assert_problem(503, "store-unavailable");
    assert_eq!(probe.runs(), 1);
}

/// Redis down or slow: the layer fails closed (503 problem+json, the handler not run), and serves
/// again on its own once Redis is back, without a restart of the service.
#[cfg(feature = "redis")]
mod redis {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use idem::store::RedisStore;
    use serde_json::json;

    use crate::support::redis_server::RedisServer;
    use crate::support::{Answer, Probe, app_with, orders, post_json, send};

    /// The most attempts while waiting for the store to come back: a bound, not a timing
    /// assertion.
    const ATTEMPTS: usize = 400;

    /// A bound on one request: generous, only there so that a hang fails the test instead of
    /// stalling the run.
    const HANG: Duration = Duration::from_secs(60);

    /// An instance of the service on `store`, whose operations may take `store_timeout`.
    fn instance(probe: &Probe, store: RedisStore, store_timeout: Duration) -> Router {
        app_with(orders(), probe, |b| {
            b.shared_store(Arc::new(store)).store_timeout(store_timeout)
        })
    }

    /// An order of 100 with `key`, answered within [`HANG`].
    async fn order(instance: &Router, key: &str) -> Answer {
        let request = post_json("/orders", Some(key), &json!({"amount": 100}));
        tokio::time::timeout(HANG, send(instance, request))
            .await
            .expect("the request was answered rather than left hanging")
    }

    /// Sends until the answer is not a 503 (the store is reachable again), and answers that.
    async fn until_served(instance: &Router, key: &str) -> Answer {
        for _ in 0..ATTEMPTS {
            let answer = order(instance, key).await;
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
        let probe = Probe::default();
        let store = store(&server, Duration::from_secs(1)).await;
        let instance = instance(&probe, store, Duration::from_secs(2));

        let before = order(&instance, "before").await;
        assert_eq!(before.status, 201);
        assert_eq!(probe.runs(), 1);

        server.stop();
        for key in ["during-1", "during-2", "before"] {
            let answer = order(&instance, key).await;
            answer.assert_problem(503, "store-unavailable");
            assert!(answer.headers.contains_key("retry-after"));
        }
        assert_eq!(probe.runs(), 1, "no handler runs without a claim");

        server.restart();
        let after = until_served(&instance, "during-1").await;
        assert_eq!((after.status.as_u16(), after.is_replay()), (201, false));
        assert_eq!(probe.runs(), 2);
        let replay = order(&instance, "during-1").await;
        assert!(replay.is_replay());
        assert_eq!(replay.body, after.body);
        assert_eq!(probe.runs(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_redis_is_cut_off_by_the_clients_own_timeout() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let probe = Probe::default();
        // The runtime's own bound is far away: only the client's response timeout can answer in
        // time.
        let store = store(&server, Duration::from_millis(200)).await;
        let instance = instance(&probe, store, Duration::from_secs(3600));

        assert_eq!(order(&instance, "warm").await.status, 201);
        server.pause();
        let answer = order(&instance, "frozen").await;
        server.resume();
        answer.assert_problem(503, "store-unavailable");
        assert_eq!(probe.runs(), 1, "no handler runs without a claim");

        // The frozen claim may still have been applied once Redis thawed: that key waits for its
        // lease. Another key is served as soon as the connection is back.
        let after = until_served(&instance, "thawed").await;
        assert_eq!((after.status.as_u16(), after.is_replay()), (201, false));
        assert_eq!(probe.runs(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_redis_is_cut_off_by_the_runtimes_store_timeout() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let probe = Probe::default();
        let store = store(&server, Duration::from_secs(3600)).await;
        let instance = instance(&probe, store, Duration::from_millis(200));

        assert_eq!(order(&instance, "warm").await.status, 201);
        server.pause();
        let answer = order(&instance, "frozen").await;
        server.resume();
        answer.assert_problem(503, "store-unavailable");
        assert_eq!(probe.runs(), 1);
    }
}
