//! Several instances of one service sharing one Redis: one execution per key whichever instance a
//! request lands on, replays everywhere, waiting duplicates across instances, lease takeover.

#![cfg(feature = "redis")]
#![allow(missing_docs)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use idem::ConflictPolicy;
use idem::config::IdempotencyBuilder;
use idem::store::{IdempotencyStore, RedisStore};
use serde_json::json;
use support::redis_server::{RedisTarget, unique_prefix};
use support::store::{FaultyStore, Operation};
use support::{Answer, Probe, app_with, orders, post_json, send};

const DUPLICATES: usize = 16;
const STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// The lease of the lease-takeover test: a claim lapses quickly.
const SHORT_LEASE: Duration = Duration::from_millis(300);
/// The most attempts while waiting for a lease to lapse: a bound, not a timing assertion.
const ATTEMPTS: usize = 1000;

/// One instance of the service: the order handler on `store`, with `configure`'s settings.
fn instance(
    probe: &Probe,
    store: Arc<dyn IdempotencyStore>,
    configure: impl FnOnce(IdempotencyBuilder) -> IdempotencyBuilder,
) -> Router {
    app_with(orders(), probe, |b| {
        configure(b.shared_store(store).store_timeout(STORE_TIMEOUT))
    })
}

/// `POST /orders` with `key` and `{"amount": amount}` to `instance`.
async fn order(instance: &Router, key: &str, amount: u64) -> Answer {
    send(
        instance,
        post_json("/orders", Some(key), &json!({"amount": amount})),
    )
    .await
}

/// Waits until the held first execution runs: its request holds the key from then on.
async fn started(probe: &Probe) {
    for _ in 0..ATTEMPTS {
        if probe.runs() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the first request never reached its handler");
}

/// Two stores on one Redis and one prefix, each with its own connection, as two processes have.
async fn two_stores(target: &RedisTarget) -> (RedisStore, RedisStore) {
    let prefix = unique_prefix();
    let a = target
        .builder()
        .prefix(prefix.clone())
        .build()
        .await
        .unwrap();
    let b = target.builder().prefix(prefix).build().await.unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_over_two_instances_run_once() {
    let Some(target) = RedisTarget::get() else {
        return;
    };
    let (a, b) = two_stores(&target).await;
    let probe = Probe::holding_first();
    let instances = [
        instance(&probe, Arc::new(a), |b| b),
        instance(&probe, Arc::new(b), |b| b),
    ];

    let mut answers: FuturesUnordered<_> = (0..DUPLICATES)
        .map(|i| {
            let instance = instances[i % 2].clone();
            tokio::spawn(async move { order(&instance, "dup-1", 500).await })
        })
        .collect();
    // The one execution is held, so every other duplicate answers first, on both instances.
    for _ in 1..DUPLICATES {
        let answer = answers.next().await.unwrap().unwrap();
        answer.assert_problem(409, "request-in-flight");
    }
    assert_eq!(probe.runs(), 1);
    probe.release_first();
    let first = answers.next().await.unwrap().unwrap();
    assert_eq!(first.status, 201);
    assert!(!first.is_replay());
    assert_eq!(first.json()["execution"], 1);

    // A retry at either instance is a replay of that one execution.
    for instance in &instances {
        let retry = order(instance, "dup-1", 500).await;
        assert_eq!(retry.status, 201);
        assert!(retry.is_replay());
        assert_eq!(retry.body, first.body);
    }
    assert_eq!(probe.runs(), 1);

    // The same key with another body is refused on both.
    for instance in &instances {
        order(instance, "dup-1", 999)
            .await
            .assert_problem(422, "key-reused");
    }
    assert_eq!(probe.runs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_at_another_instance_is_replayed() {
    let Some(target) = RedisTarget::get() else {
        return;
    };
    let (a, b) = two_stores(&target).await;
    let probe = Probe::default();
    let one = instance(&probe, Arc::new(a), |b| b);
    let two = instance(&probe, Arc::new(b), |b| b);

    let first = order(&one, "retry-1", 700).await;
    assert_eq!((first.status.as_u16(), first.is_replay()), (201, false));
    let retry = order(&two, "retry-1", 700).await;
    assert_eq!((retry.status.as_u16(), retry.is_replay()), (201, true));
    assert_eq!(retry.body, first.body);
    assert_eq!(probe.runs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_tier_replays_what_another_instance_stored() {
    let Some(target) = RedisTarget::get() else {
        return;
    };
    let prefix = unique_prefix();
    let a = target
        .builder()
        .prefix(prefix.clone())
        .local_tier(1 << 20)
        .build()
        .await
        .unwrap();
    let b = target
        .builder()
        .prefix(prefix)
        .local_tier(1 << 20)
        .build()
        .await
        .unwrap();
    let probe = Probe::default();
    let one = instance(&probe, Arc::new(a), |b| b);
    let two = instance(&probe, Arc::new(b), |b| b);

    let first = order(&one, "tier-1", 300).await;
    for _ in 0..3 {
        for instance in [&one, &two] {
            let retry = order(instance, "tier-1", 300).await;
            assert!(retry.is_replay());
            assert_eq!(retry.body, first.body);
            order(instance, "tier-1", 301)
                .await
                .assert_problem(422, "key-reused");
        }
    }
    assert_eq!(probe.runs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_duplicate_at_another_instance_gets_the_first_answer() {
    let Some(target) = RedisTarget::get() else {
        return;
    };
    let (a, b) = two_stores(&target).await;
    // The second instance's store says when it is asked to look a record up: the runtime's wait
    // mode polls lookup.
    let observed = Arc::new(FaultyStore::new(Arc::new(b)));
    let probe = Probe::holding_first();
    let waiting = |b: IdempotencyBuilder| {
        b.conflict(ConflictPolicy::Wait)
            .wait_timeout(Duration::from_secs(60))
    };
    let one = instance(&probe, Arc::new(a), waiting);
    let two = instance(&probe, observed.clone(), waiting);

    let first = tokio::spawn({
        let one = one.clone();
        async move { order(&one, "wait-1", 900).await }
    });
    started(&probe).await;

    let waiting = tokio::spawn({
        let two = two.clone();
        async move { order(&two, "wait-1", 900).await }
    });
    // It found the key in flight and is polling for the result on the other instance.
    tokio::time::timeout(
        Duration::from_secs(30),
        observed.called(Operation::Lookup, 1),
    )
    .await
    .expect("the duplicate polls for the result");
    assert!(!waiting.is_finished());
    probe.release_first();

    let first = first.await.unwrap();
    let waited = waiting.await.unwrap();
    assert_eq!((first.status.as_u16(), first.is_replay()), (201, false));
    assert_eq!((waited.status.as_u16(), waited.is_replay()), (201, true));
    assert_eq!(waited.body, first.body);
    assert_eq!(probe.runs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_owner_is_taken_over_after_its_lease_and_cannot_overwrite() {
    let Some(target) = RedisTarget::get() else {
        return;
    };
    let (a, b) = two_stores(&target).await;
    let probe = Probe::holding_first();
    // A claim is renewed while its handler runs, up to `max_hold`: here no longer than one lease.
    let short_lease = |b: IdempotencyBuilder| b.lease(SHORT_LEASE).max_hold(SHORT_LEASE);
    let one = instance(&probe, Arc::new(a), short_lease);
    let two = instance(&probe, Arc::new(b), short_lease);

    // Instance one's execution hangs past its lease and its hold.
    let stuck = tokio::spawn({
        let one = one.clone();
        async move { order(&one, "lease-1", 100).await }
    });
    started(&probe).await;
    // Instance two gets 409 while the lease holds, then takes the key over and runs.
    let mut takeover = None;
    for _ in 0..ATTEMPTS {
        let answer = order(&two, "lease-1", 100).await;
        if answer.status == 409 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        takeover = Some(answer);
        break;
    }
    let takeover = takeover.expect("the lease ran out");
    assert_eq!(
        (takeover.status.as_u16(), takeover.is_replay()),
        (201, false)
    );
    assert_eq!(takeover.json()["execution"], 2);

    // The late owner still answers its own caller, but its result is not stored over the new one.
    probe.release_first();
    let late = stuck.await.unwrap();
    assert_eq!((late.status.as_u16(), late.is_replay()), (201, false));
    assert_eq!(late.json()["execution"], 1);
    for instance in [&one, &two] {
        let retry = order(instance, "lease-1", 100).await;
        assert!(retry.is_replay());
        assert_eq!(
            retry.json()["execution"],
            2,
            "the new owner's result stands"
        );
    }
    assert_eq!(probe.runs(), 2);
}
