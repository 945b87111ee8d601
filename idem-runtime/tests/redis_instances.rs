//! Several instances of one service sharing one Redis: one execution per key whichever instance a
//! request lands on, replays everywhere, waiting duplicates across instances, lease takeover.

#![cfg(feature = "redis")]
#![allow(missing_docs)]

#[path = "support/instances.rs"]
mod instances;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::store::{
    Claim, ClaimToken, Completed, Completion, IdempotencyStore, Record, RedisStore, StoreError,
    StoreKey,
};
use instances::{Service, post_charge};
use redis_server::{RedisTarget, unique_prefix};
use tokio::sync::Notify;

const DUPLICATES: usize = 16;
const STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most attempts while waiting for a lease to lapse: a bound, not a timing assertion.
const ATTEMPTS: usize = 1000;

/// Waits until the held first execution runs: its request holds the key from then on.
async fn started(service: &Service) {
    for _ in 0..ATTEMPTS {
        if service.executions() == 1 {
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
    let service = Service::held();
    let instances = [
        service.instance(Arc::new(a), STORE_TIMEOUT),
        service.instance(Arc::new(b), STORE_TIMEOUT),
    ];

    let mut answers: FuturesUnordered<_> = (0..DUPLICATES)
        .map(|i| {
            let instance = instances[i % 2].clone();
            tokio::spawn(async move { post_charge(&instance, "/charges", "dup-1", 500).await })
        })
        .collect();
    // The one execution is held, so every other duplicate answers first, on both instances.
    for _ in 1..DUPLICATES {
        let answer = answers.next().await.unwrap().unwrap();
        answer.assert_problem(409, "request-in-flight");
    }
    assert_eq!(service.executions(), 1);
    service.open();
    let first = answers.next().await.unwrap().unwrap();
    assert_eq!(first.status, 201);
    assert!(!first.is_replay());
    assert_eq!(first.body["id"], "ch_1");

    // A retry at either instance is a replay of that one execution.
    for instance in &instances {
        let retry = post_charge(instance, "/charges", "dup-1", 500).await;
        assert_eq!(retry.status, 201);
        assert!(retry.is_replay());
        assert_eq!(retry.body, first.body);
    }
    assert_eq!(service.executions(), 1);

    // The same key with another body is refused on both.
    for instance in &instances {
        post_charge(instance, "/charges", "dup-1", 999)
            .await
            .assert_problem(422, "key-reused");
    }
    assert_eq!(service.executions(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_at_another_instance_is_replayed() {
    let Some(target) = RedisTarget::get() else {
        return;
    };
    let (a, b) = two_stores(&target).await;
    let service = Service::new();
    let one = service.instance(Arc::new(a), STORE_TIMEOUT);
    let two = service.instance(Arc::new(b), STORE_TIMEOUT);

    let first = post_charge(&one, "/charges", "retry-1", 700).await;
    assert_eq!((first.status.as_u16(), first.is_replay()), (201, false));
    let retry = post_charge(&two, "/charges", "retry-1", 700).await;
    assert_eq!((retry.status.as_u16(), retry.is_replay()), (201, true));
    assert_eq!(retry.body, first.body);
    assert_eq!(service.executions(), 1);
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
    let service = Service::new();
    let one = service.instance(Arc::new(a), STORE_TIMEOUT);
    let two = service.instance(Arc::new(b), STORE_TIMEOUT);

    let first = post_charge(&one, "/charges", "tier-1", 300).await;
    for _ in 0..3 {
        for instance in [&one, &two] {
            let retry = post_charge(instance, "/charges", "tier-1", 300).await;
            assert!(retry.is_replay());
            assert_eq!(retry.body, first.body);
            post_charge(instance, "/charges", "tier-1", 301)
                .await
                .assert_problem(422, "key-reused");
        }
    }
    assert_eq!(service.executions(), 1);
}

/// A store that says when it is asked to look a record up: the runtime's wait mode polls lookup.
struct Observed {
    inner: RedisStore,
    looked_up: Arc<Notify>,
}

#[async_trait]
impl IdempotencyStore for Observed {
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
        self.inner.complete(key, token, completed, ttl).await
    }

    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        self.inner.release(key, token).await
    }

    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        let record = self.inner.lookup(key).await;
        self.looked_up.notify_one();
        record
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_duplicate_at_another_instance_gets_the_first_answer() {
    let Some(target) = RedisTarget::get() else {
        return;
    };
    let (a, b) = two_stores(&target).await;
    let looked_up = Arc::new(Notify::new());
    let service = Service::held();
    let one = service.instance(Arc::new(a), STORE_TIMEOUT);
    let two = service.instance(
        Arc::new(Observed {
            inner: b,
            looked_up: Arc::clone(&looked_up),
        }),
        STORE_TIMEOUT,
    );

    let first = tokio::spawn({
        let one = one.clone();
        async move { post_charge(&one, "/charges/wait", "wait-1", 900).await }
    });
    started(&service).await;

    let waiting = tokio::spawn({
        let two = two.clone();
        async move { post_charge(&two, "/charges/wait", "wait-1", 900).await }
    });
    // It found the key in flight and is polling for the result on the other instance.
    tokio::time::timeout(Duration::from_secs(30), looked_up.notified())
        .await
        .expect("the duplicate polls for the result");
    assert!(!waiting.is_finished());
    service.open();

    let first = first.await.unwrap();
    let waited = waiting.await.unwrap();
    assert_eq!((first.status.as_u16(), first.is_replay()), (201, false));
    assert_eq!((waited.status.as_u16(), waited.is_replay()), (201, true));
    assert_eq!(waited.body, first.body);
    assert_eq!(service.executions(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_owner_is_taken_over_after_its_lease_and_cannot_overwrite() {
    let Some(target) = RedisTarget::get() else {
        return;
    };
    let (a, b) = two_stores(&target).await;
    let service = Service::held();
    let one = service.instance(Arc::new(a), STORE_TIMEOUT);
    let two = service.instance(Arc::new(b), STORE_TIMEOUT);

    // Instance one's execution hangs past its lease.
    let stuck = tokio::spawn({
        let one = one.clone();
        async move { post_charge(&one, "/charges/short-lease", "lease-1", 100).await }
    });
    started(&service).await;
    // Instance two gets 409 while the lease holds, then takes the key over and runs.
    let mut takeover = None;
    for _ in 0..ATTEMPTS {
        let answer = post_charge(&two, "/charges/short-lease", "lease-1", 100).await;
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
    assert_eq!(takeover.body["id"], "ch_2");

    // The late owner still answers its own caller, but its result is not stored over the new one.
    service.open();
    let late = stuck.await.unwrap();
    assert_eq!((late.status.as_u16(), late.is_replay()), (201, false));
    assert_eq!(late.body["id"], "ch_1");
    for instance in [&one, &two] {
        let retry = post_charge(instance, "/charges/short-lease", "lease-1", 100).await;
        assert!(retry.is_replay());
        assert_eq!(retry.body["id"], "ch_2", "the new owner's result stands");
    }
    assert_eq!(service.executions(), 2);
}
