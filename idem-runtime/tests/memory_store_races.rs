//! The in-memory store under races: claims of one key from many threads at once, and claims that
//! run while the key's completion moves it from the claim table into the cache.

#![allow(missing_docs)]

#[path = "support/claims.rs"]
mod claims;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::key::IdempotencyKey;
use idem_runtime::replay::StoredResponse;
use idem_runtime::scope::Scope;
use idem_runtime::store::{Completion, IdempotencyStore, MemoryStore, Record, StoreKey};

use crate::claims::{Claimed, Claims as _};
use tokio::sync::Barrier;

const LONG: Duration = Duration::from_secs(600);

fn key(name: &str) -> StoreKey {
    StoreKey::new(
        Scope::ANONYMOUS,
        IdempotencyKey::parse(name.as_bytes(), 255).unwrap(),
    )
}

fn fp(byte: u8) -> Fingerprint {
    Fingerprint::from_bytes([byte; 32])
}

fn response() -> StoredResponse {
    StoredResponse::new(StatusCode::CREATED, HeaderMap::new(), "{}".into())
}

/// Claims `k` from `tasks` tasks released at once; returns how many were fresh.
async fn claim_together(store: &Arc<MemoryStore>, k: &StoreKey, tasks: usize) -> usize {
    let start = Arc::new(Barrier::new(tasks));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (store, k, start) = (Arc::clone(store), k.clone(), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                store.claim_new(&k, &fp(1), LONG).await.unwrap()
            })
        })
        .collect();
    let mut fresh = 0;
    for handle in handles {
        match handle.await.unwrap() {
            Claimed::Fresh(_) => fresh += 1,
            Claimed::Existing(record) => {
                assert_eq!(record, Record::InFlight { fingerprint: fp(1) });
            }
        }
    }
    fresh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_many_concurrent_claims_on_a_free_key_exactly_one_is_fresh() {
    let store = Arc::new(MemoryStore::default());
    for round in 0..10 {
        let k = key(&format!("crowd-{round}"));
        assert_eq!(claim_together(&store, &k, 200).await, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_many_concurrent_claims_on_a_lapsed_key_exactly_one_is_fresh() {
    let store = Arc::new(MemoryStore::default());
    for round in 0..10 {
        let k = key(&format!("lapsed-{round}"));
        let Claimed::Fresh(_) = store
            .claim_new(&k, &fp(1), Duration::from_millis(1))
            .await
            .unwrap()
        else {
            panic!("a new key is free");
        };
        // Nobody completes nor releases it: its lease runs out.
        tokio::time::sleep(Duration::from_millis(3)).await;
        assert_eq!(store.lookup(&k).await.unwrap(), None);
        assert_eq!(claim_together(&store, &k, 200).await, 1, "round {round}");
    }
}

/// A runtime of its own for one thread of a race.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_claim_racing_the_completion_never_finds_the_key_free() {
    const ROUNDS: usize = 500;
    /// The most claims one round makes while waiting to see the completed record.
    const CLAIMS: usize = 1_000_000;
    let store = MemoryStore::default();
    // Two threads, so that the claims and the completion truly run at the same time: one claims
    // each round's key and completes it, the other claims it without pause until it sees the
    // completed record. Each round starts when both reach the barrier; a thread that found a fault
    // keeps meeting the other there, so that neither waits forever, and reports it at the end.
    let start = std::sync::Barrier::new(2);
    let (completed, claimed) = std::thread::scope(|scope| {
        let completer = scope.spawn(|| {
            runtime().block_on(async {
                let mut fault = None;
                for round in 0..ROUNDS {
                    let k = key(&format!("moving-{round}"));
                    let claim = store.claim_new(&k, &fp(1), LONG).await.unwrap();
                    start.wait();
                    let Claimed::Fresh(token) = claim else {
                        fault.get_or_insert(format!("round {round}: the new key was taken"));
                        continue;
                    };
                    let done = store
                        .complete_response(&k, token, &fp(1), &response(), LONG)
                        .await;
                    if done.unwrap() != Completion::Stored {
                        fault.get_or_insert(format!("round {round}: the completion was refused"));
                    }
                }
                fault.map_or(Ok(()), Err)
            })
        });
        let claimer = scope.spawn(|| {
            runtime().block_on(async {
                let mut in_flight = 0;
                let mut fault = None;
                for round in 0..ROUNDS {
                    let k = key(&format!("moving-{round}"));
                    start.wait();
                    if fault.is_some() {
                        continue;
                    }
                    if let Err(why) = claim_until_done(&store, &k, CLAIMS, &mut in_flight).await {
                        fault = Some(format!("round {round}: {why}"));
                    }
                }
                fault.map_or(Ok(in_flight), Err)
            })
        });
        (completer.join().unwrap(), claimer.join().unwrap())
    });
    completed.unwrap();
    let in_flight = claimed.unwrap();
    // Not an assertion on timing: what the rounds exercised, for whoever reads the output.
    eprintln!("{in_flight} claims answered in flight while the completion ran");
}

/// Claims `k` until the claim answers its completed record, at most `claims` times; counts the
/// in-flight answers on the way. Any other answer is a fault.
async fn claim_until_done(
    store: &MemoryStore,
    k: &StoreKey,
    claims: usize,
    in_flight: &mut usize,
) -> Result<(), String> {
    for _ in 0..claims {
        match store.claim_new(k, &fp(2), LONG).await.unwrap() {
            Claimed::Fresh(_) => return Err("a claim found the key free mid-completion".into()),
            Claimed::Existing(Record::InFlight { fingerprint }) if fingerprint == fp(1) => {
                *in_flight += 1;
            }
            Claimed::Existing(Record::Done(completed)) if completed.fingerprint == fp(1) => {
                // The lookup sees the move the same way.
                return match store.lookup(k).await.unwrap() {
                    Some(Record::Done(_)) => Ok(()),
                    other => Err(format!("the lookup after the claim found {other:?}")),
                };
            }
            Claimed::Existing(other) => return Err(format!("a claim found {other:?}")),
        }
    }
    Err("the completion never landed".into())
}
