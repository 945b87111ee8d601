//! Races: many keys, each sent by many concurrent duplicates at random moments, under both
//! conflict policies — against one server on the memory store and, with the `redis` feature,
//! against two servers sharing one Redis, or one three-master Redis Cluster. Exactly one
//! execution per key, and every duplicate ends with the same answer.
//!
//! `IDEM_SOAK=1` runs ten times as many keys.

#![allow(missing_docs)]

mod faults;
mod support;

use std::sync::Arc;
#[cfg(feature = "redis")]
use std::time::Duration;

use faults::{
    Attempts, Definitive, Dice, Served, app, assert_each_charged_once, bounded, charge,
    charges_by_amount, client, payments_router, retry_until_definitive, seed, size,
};
use futures_util::future::join_all;
use idem::config::{ConflictPolicy, Idempotency};
use idem::store::{IdempotencyStore, MemoryStore};

/// Concurrent duplicates of each key.
const DUPLICATES: usize = 8;
/// Keys raced at once.
const WAVE: usize = 40;

/// Sends every key `DUPLICATES` times at once, spread over `servers`, each duplicate after a
/// random pause; returns the answers of each key's duplicates.
async fn race(
    servers: &[&Served],
    payments: &app::Payments,
    keys: usize,
    dice: &Dice,
) -> Vec<Vec<Definitive>> {
    let client = client();
    let bodies: Vec<_> = (0..keys).map(|op| charge(op, dice.below(31))).collect();
    let mut answers = Vec::new();
    // Waves of at most WAVE keys: a soak run is more waves, not a bigger stampede (a stampede of
    // thousands of requests on a 2-core machine measures overload, not races).
    for wave in (0..keys).collect::<Vec<_>>().chunks(WAVE) {
        let sends = wave
            .iter()
            .flat_map(|&op| (0..DUPLICATES).map(move |dup| (op, dup)));
        let plans: Vec<_> = sends.map(|(op, dup)| (op, dup, dice.millis(30))).collect();
        answers.extend(
            join_all(plans.into_iter().map(|(op, dup, pause)| {
                let (client, body) = (&client, &bodies[op]);
                let url = servers[(op + dup) % servers.len()].url("/charges");
                async move {
                    tokio::time::sleep(pause).await;
                    let (answer, attempts): (Definitive, Attempts) =
                        retry_until_definitive(client, &url, &format!("race-{op}"), body, dice)
                            .await;
                    (op, answer, attempts)
                }
            }))
            .await,
        );
    }

    let mut by_key: Vec<Vec<Definitive>> = vec![Vec::new(); keys];
    let mut attempts = Attempts::default();
    for (op, answer, a) in answers {
        by_key[op].push(answer);
        attempts += a;
    }
    assert_eq!(payments.executions(), keys as u64, "handler executions");
    for (op, answers) in by_key.iter().enumerate() {
        let first = &answers[0];
        for answer in answers {
            assert_eq!(
                (answer.status, &answer.body),
                (first.status, &first.body),
                "key race-{op}: duplicates got different answers"
            );
        }
        let originals = answers.iter().filter(|a| !a.replayed).count();
        assert_eq!(originals, 1, "key race-{op}: {originals} original answers");
    }
    eprintln!(
        "races: {} servers, {keys} keys x {DUPLICATES} duplicates = {} requests, {} attempts, \
         {} 409s, {} 503s, {} executions",
        servers.len(),
        keys * DUPLICATES,
        attempts.total,
        attempts.conflicts,
        attempts.unavailable,
        payments.executions()
    );
    by_key
}

async fn memory_race(conflict: ConflictPolicy) {
    let dice = Dice::new(seed());
    let payments = app::Payments::default();
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::default());
    let idempotency = Idempotency::builder()
        .shared_store(store)
        .conflict(conflict)
        .build()
        .expect("valid settings");
    let server = Served::start(payments_router(&payments, idempotency)).await;
    let keys = size(40, 400);
    let by_key = race(&[&server], &payments, keys, &dice).await;
    let firsts: Vec<Definitive> = by_key.into_iter().map(|a| a[0].clone()).collect();
    assert_each_charged_once(&charges_by_amount(&client(), &server).await, &firsts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_on_the_memory_store_409_policy_run_each_key_once() {
    bounded(memory_race(ConflictPolicy::Reject)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_on_the_memory_store_wait_policy_run_each_key_once() {
    bounded(memory_race(ConflictPolicy::Wait)).await;
}

#[cfg(feature = "redis")]
/// Where a Redis race runs: one server, or a three-master cluster.
#[cfg(feature = "redis")]
enum Redis {
    Server(support::redis_server::RedisTarget),
    Cluster(support::redis_cluster::RedisCluster),
}

#[cfg(feature = "redis")]
impl Redis {
    fn builder(&self) -> idem::store::RedisStoreBuilder {
        match self {
            Self::Server(target) => target.builder(),
            Self::Cluster(cluster) => cluster.builder(),
        }
    }
}

#[cfg(feature = "redis")]
async fn redis_race(conflict: ConflictPolicy, cluster: bool) {
    let target = if cluster {
        support::redis_cluster::RedisCluster::start().map(Redis::Cluster)
    } else {
        support::redis_server::RedisTarget::get().map(Redis::Server)
    };
    let Some(target) = target else {
        return;
    };
    let dice = Dice::new(seed());
    // One ledger behind two instances, each with its own connection to the shared Redis.
    let payments = app::Payments::default();
    let prefix = support::redis_server::unique_prefix();
    let mut servers = Vec::new();
    for _ in 0..2 {
        // Generous timeouts: this test is about races, not about a loaded machine's timeouts
        // (fault_store.rs has those).
        let store = target
            .builder()
            .prefix(prefix.clone())
            .response_timeout(Duration::from_secs(10))
            .build()
            .await
            .expect("connects to the test Redis");
        let idempotency = Idempotency::builder()
            .store(store)
            .conflict(conflict)
            .store_timeout(Duration::from_secs(10))
            .build()
            .expect("valid settings");
        servers.push(Served::start(payments_router(&payments, idempotency)).await);
    }
    let keys = size(30, 300);
    let by_key = race(&[&servers[0], &servers[1]], &payments, keys, &dice).await;
    let firsts: Vec<Definitive> = by_key.into_iter().map(|a| a[0].clone()).collect();
    assert_each_charged_once(&charges_by_amount(&client(), &servers[0]).await, &firsts);
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_across_two_instances_on_redis_409_policy_run_each_key_once() {
    bounded(redis_race(ConflictPolicy::Reject, false)).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_across_two_instances_on_redis_wait_policy_run_each_key_once() {
    bounded(redis_race(ConflictPolicy::Wait, false)).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_across_two_instances_on_a_redis_cluster_409_policy_run_each_key_once() {
    bounded(redis_race(ConflictPolicy::Reject, true)).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_across_two_instances_on_a_redis_cluster_wait_policy_run_each_key_once() {
    bounded(redis_race(ConflictPolicy::Wait, true)).await;
}
