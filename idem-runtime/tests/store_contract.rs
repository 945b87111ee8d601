//! The store contract: what every `IdempotencyStore` must do, written once over
//! `Arc<dyn IdempotencyStore>` and run against the memory store, the Redis store, the Redis store
//! with its local tier, the Redis store on a three-master Redis Cluster, and the Postgres store.

#![allow(missing_docs)]

#[path = "support/claims.rs"]
mod claims;
#[cfg(feature = "postgres")]
#[path = "support/postgres_server.rs"]
mod postgres_server;
#[cfg(feature = "redis")]
#[path = "support/redis_cluster.rs"]
mod redis_cluster;
#[cfg(feature = "redis")]
#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use idem_runtime::fingerprint::{Fingerprint, RequestDigest};
use idem_runtime::key::IdempotencyKey;
use idem_runtime::replay::StoredResponse;
use idem_runtime::scope::Scope;
use idem_runtime::store::{
    Claim, ClaimToken, Completed, Completion, IdempotencyStore, Record, StoreKey,
};

use crate::claims::{Claimed, Claims as _};

const LONG: Duration = Duration::from_secs(600);
const SHORT: Duration = Duration::from_millis(50);
/// The most polls waiting for something to expire: a bound, not a timing assertion.
const POLLS: usize = 2000;

fn key(name: &str) -> StoreKey {
    StoreKey::new(
        Scope::ANONYMOUS,
        IdempotencyKey::parse(name.as_bytes(), 255).unwrap(),
    )
}

fn fp(byte: u8) -> Fingerprint {
    Fingerprint::from_bytes([byte; 32])
}

fn response(body: &'static str) -> StoredResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    StoredResponse::new(
        StatusCode::CREATED,
        &headers,
        Bytes::from_static(body.as_bytes()),
    )
}

async fn fresh(
    store: &dyn IdempotencyStore,
    key: &StoreKey,
    fingerprint: &Fingerprint,
    lease: Duration,
) -> ClaimToken {
    match store.claim_new(key, fingerprint, lease).await.unwrap() {
        Claimed::Fresh(token) => token,
        Claimed::Existing(record) => panic!("expected a fresh claim, found {record:?}"),
    }
}

fn done(record: Option<Record>) -> (Fingerprint, StoredResponse) {
    match record {
        Some(Record::Done(completed)) => (completed.fingerprint, completed.response.clone()),
        other => panic!("expected a done record, found {other:?}"),
    }
}

/// Claims until the claim is fresh: the previous one's lease has run out.
async fn claim_after_lease(
    store: &dyn IdempotencyStore,
    key: &StoreKey,
    fingerprint: &Fingerprint,
) -> ClaimToken {
    for _ in 0..POLLS {
        if let Claimed::Fresh(token) = store.claim_new(key, fingerprint, LONG).await.unwrap() {
            return token;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the lease never ran out");
}

// ---- the contract ----

async fn concurrent_claims_on_a_free_key_give_exactly_one_fresh(store: Arc<dyn IdempotencyStore>) {
    const CLAIMS: usize = 32;
    let k = key("race");
    let tasks: Vec<_> = (0..CLAIMS)
        .map(|_| {
            let store = Arc::clone(&store);
            let k = k.clone();
            tokio::spawn(async move { store.claim_new(&k, &fp(1), LONG).await.unwrap() })
        })
        .collect();
    let mut fresh = 0;
    for task in tasks {
        match task.await.unwrap() {
            Claimed::Fresh(_) => fresh += 1,
            Claimed::Existing(record) => {
                assert_eq!(record, Record::InFlight { fingerprint: fp(1) });
            }
        }
    }
    assert_eq!(fresh, 1, "exactly one of {CLAIMS} concurrent claims wins");
}

async fn a_claimed_key_answers_the_in_flight_record_with_its_fingerprint(
    store: Arc<dyn IdempotencyStore>,
) {
    let k = key("claimed");
    fresh(&*store, &k, &fp(1), LONG).await;
    for other in [fp(1), fp(2)] {
        assert_eq!(
            store.claim_new(&k, &other, LONG).await.unwrap(),
            Claimed::Existing(Record::InFlight { fingerprint: fp(1) })
        );
    }
    assert_eq!(
        store.lookup(&k).await.unwrap(),
        Some(Record::InFlight { fingerprint: fp(1) })
    );
}

async fn complete_stores_under_the_claim_token_and_claims_then_see_it(
    store: Arc<dyn IdempotencyStore>,
) {
    let k = key("complete");
    let token = fresh(&*store, &k, &fp(1), LONG).await;
    let stored = response(r#"{"id":"ch_1"}"#);
    assert_eq!(
        store
            .complete_response(&k, token, &fp(1), &stored, LONG)
            .await
            .unwrap(),
        Completion::Stored
    );

    let (fingerprint, kept) = done(store.lookup(&k).await.unwrap());
    assert_eq!((fingerprint, &kept), (fp(1), &stored));
    match store.claim_new(&k, &fp(2), LONG).await.unwrap() {
        Claimed::Existing(Record::Done(completed)) => {
            assert_eq!(
                (completed.fingerprint, &completed.response),
                (fp(1), &stored)
            );
        }
        other => panic!("a completed key answers its record, found {other:?}"),
    }
}

async fn complete_with_another_token_is_refused_and_writes_nothing(
    store: Arc<dyn IdempotencyStore>,
) {
    let k = key("complete-cas");
    let token = fresh(&*store, &k, &fp(1), LONG).await;
    let stranger = ClaimToken::random();
    assert_ne!(stranger, token);
    assert_eq!(
        store
            .complete_response(&k, stranger, &fp(1), &response("stolen"), LONG)
            .await
            .unwrap(),
        Completion::LeaseLost
    );
    assert_eq!(
        store.lookup(&k).await.unwrap(),
        Some(Record::InFlight { fingerprint: fp(1) })
    );

    // A completed record is never overwritten, not even by its own token.
    assert_eq!(
        store
            .complete_response(&k, token, &fp(1), &response("first"), LONG)
            .await
            .unwrap(),
        Completion::Stored
    );
    assert_eq!(
        store
            .complete_response(&k, token, &fp(1), &response("second"), LONG)
            .await
            .unwrap(),
        Completion::LeaseLost
    );
    assert_eq!(
        done(store.lookup(&k).await.unwrap()).1.body(),
        response("first").body()
    );
}

async fn complete_without_a_record_stores(store: Arc<dyn IdempotencyStore>) {
    // The lease lapsed and nobody claimed the key since: keeping the result saves a re-run.
    let k = key("complete-lapsed");
    let token = fresh(&*store, &k, &fp(1), SHORT).await;
    for _ in 0..POLLS {
        if store.lookup(&k).await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(store.lookup(&k).await.unwrap(), None, "the lease ran out");
    assert_eq!(
        store
            .complete_response(&k, token, &fp(1), &response("late"), LONG)
            .await
            .unwrap(),
        Completion::Stored
    );
    assert_eq!(
        done(store.lookup(&k).await.unwrap()).1.body(),
        response("late").body()
    );
}

async fn release_frees_the_key_only_under_the_claim_token(store: Arc<dyn IdempotencyStore>) {
    let k = key("release");
    let token = fresh(&*store, &k, &fp(1), LONG).await;
    store.release(&k, ClaimToken::random()).await.unwrap();
    assert_eq!(
        store.lookup(&k).await.unwrap(),
        Some(Record::InFlight { fingerprint: fp(1) })
    );

    store.release(&k, token).await.unwrap();
    assert_eq!(store.lookup(&k).await.unwrap(), None);
    let next = fresh(&*store, &k, &fp(2), LONG).await;

    // The first claim's token no longer releases anything.
    store.release(&k, token).await.unwrap();
    assert_eq!(
        store.lookup(&k).await.unwrap(),
        Some(Record::InFlight { fingerprint: fp(2) })
    );

    // Nor does any token release a completed record.
    store
        .complete_response(&k, next, &fp(2), &response("kept"), LONG)
        .await
        .unwrap();
    store.release(&k, next).await.unwrap();
    assert!(matches!(
        store.lookup(&k).await.unwrap(),
        Some(Record::Done(_))
    ));
}

async fn lookup_of_an_unknown_key_is_none(store: Arc<dyn IdempotencyStore>) {
    assert_eq!(store.lookup(&key("never-seen")).await.unwrap(), None);
}

async fn a_lapsed_lease_is_taken_over_and_the_late_owner_loses(store: Arc<dyn IdempotencyStore>) {
    let k = key("takeover");
    let late = fresh(&*store, &k, &fp(1), SHORT).await;
    let owner = claim_after_lease(&*store, &k, &fp(1)).await;
    assert_ne!(late, owner);

    assert_eq!(
        store
            .complete_response(&k, late, &fp(1), &response("late"), LONG)
            .await
            .unwrap(),
        Completion::LeaseLost,
        "the late owner must not write over the new claim"
    );
    store.release(&k, late).await.unwrap();
    assert_eq!(
        store.lookup(&k).await.unwrap(),
        Some(Record::InFlight { fingerprint: fp(1) })
    );

    assert_eq!(
        store
            .complete_response(&k, owner, &fp(1), &response("owner"), LONG)
            .await
            .unwrap(),
        Completion::Stored
    );
    assert_eq!(
        store
            .complete_response(&k, late, &fp(1), &response("late"), LONG)
            .await
            .unwrap(),
        Completion::LeaseLost,
        "nor over the new owner's result"
    );
    assert_eq!(
        done(store.lookup(&k).await.unwrap()).1.body(),
        response("owner").body()
    );
}

async fn a_result_is_forgotten_after_its_ttl(store: Arc<dyn IdempotencyStore>) {
    let k = key("ttl");
    let token = fresh(&*store, &k, &fp(1), LONG).await;
    store
        .complete_response(&k, token, &fp(1), &response("short-lived"), SHORT)
        .await
        .unwrap();
    for _ in 0..POLLS {
        if store.lookup(&k).await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(store.lookup(&k).await.unwrap(), None, "the TTL ran out");
    fresh(&*store, &k, &fp(2), LONG).await;
}

async fn responses_come_back_exactly_as_stored(store: Arc<dyn IdempotencyStore>) {
    let mut headers = HeaderMap::new();
    headers.append("x-charge", HeaderValue::from_static("a"));
    headers.append("x-charge", HeaderValue::from_static("b"));
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("set-cookie", HeaderValue::from_static("session=1"));
    let binary: Vec<u8> = (0..=255).chain(0..=255).collect();
    let cases = [
        StoredResponse::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            &headers.clone(),
            Bytes::from(binary),
        ),
        StoredResponse::new(StatusCode::NO_CONTENT, &HeaderMap::new(), Bytes::new()),
        StoredResponse::without_body(StatusCode::OK, &headers, 10 * 1024 * 1024),
    ];
    for (i, stored) in cases.iter().enumerate() {
        let k = key(&format!("round-trip-{i}"));
        let token = fresh(&*store, &k, &fp(3), LONG).await;
        store
            .complete_response(&k, token, &fp(3), stored, LONG)
            .await
            .unwrap();
        let (_, kept) = done(store.lookup(&k).await.unwrap());
        assert_eq!(&kept, stored);
        assert!(kept.headers().get("set-cookie").is_none());
        assert_eq!(
            kept.headers().get_all("x-charge").iter().count(),
            if i == 1 { 0 } else { 2 }
        );
    }
}

async fn a_claim_repeated_under_its_own_token_is_fresh_again(store: Arc<dyn IdempotencyStore>) {
    let k = key("repeated-claim");
    let token = ClaimToken::random();
    // The first claim's answer may be lost on the way back; the same request claims again.
    assert_eq!(
        store.claim(&k, &fp(1), token, LONG).await.unwrap(),
        Claim::Fresh
    );
    assert_eq!(
        store.claim(&k, &fp(1), token, LONG).await.unwrap(),
        Claim::Fresh,
        "a claim recognises its own record"
    );
    assert_eq!(
        store.claim_new(&k, &fp(1), LONG).await.unwrap(),
        Claimed::Existing(Record::InFlight { fingerprint: fp(1) }),
        "another request still finds the key held"
    );
    let completed = Arc::new(Completed {
        fingerprint: fp(1),
        request_digest: None,
        response: response("once"),
    });
    assert_eq!(
        store.complete(&k, token, completed, LONG).await.unwrap(),
        Completion::Stored
    );
    assert!(
        matches!(
            store.claim(&k, &fp(1), token, LONG).await.unwrap(),
            Claim::Existing(Record::Done(_))
        ),
        "a completed key is never claimed again, not even by its own token"
    );
}

async fn the_request_digest_is_kept_beside_the_response(store: Arc<dyn IdempotencyStore>) {
    let k = key("digest");
    let token = fresh(&*store, &k, &fp(1), LONG).await;
    let digest = RequestDigest::from_bytes([0x5a; 32]);
    let completed = Arc::new(Completed {
        fingerprint: fp(1),
        request_digest: Some(digest),
        response: response("digested"),
    });
    store.complete(&k, token, completed, LONG).await.unwrap();
    match store.lookup(&k).await.unwrap() {
        Some(Record::Done(kept)) => {
            assert_eq!(kept.request_digest, Some(digest));
            assert_eq!(kept.response, response("digested"));
        }
        other => panic!("expected the completed record, found {other:?}"),
    }
}

async fn scopes_keep_equal_keys_apart(store: Arc<dyn IdempotencyStore>) {
    let name = IdempotencyKey::parse(b"shared-name", 255).unwrap();
    let alice = StoreKey::new(Scope::from_identity("alice"), name.clone());
    let bob = StoreKey::new(Scope::from_identity("bob"), name);
    let token = fresh(&*store, &alice, &fp(1), LONG).await;
    store
        .complete_response(&alice, token, &fp(1), &response("alice's"), LONG)
        .await
        .unwrap();
    assert_eq!(store.lookup(&bob).await.unwrap(), None);
    fresh(&*store, &bob, &fp(1), LONG).await;
}

/// Runs every contract function against each store, as one test per pair.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(std::sync::Arc::new(idem_runtime::store::MemoryStore::default())).await;
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(target) = crate::redis_server::RedisTarget::get() else { return };
                    super::$name(std::sync::Arc::new(target.store().await)).await;
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod redis_store_with_local_tier {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(target) = crate::redis_server::RedisTarget::get() else { return };
                    let store = target.builder().local_tier(1024 * 1024).build().await.unwrap();
                    assert!(store.has_local_tier());
                    super::$name(std::sync::Arc::new(store)).await;
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod redis_cluster_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(cluster) = crate::redis_cluster::RedisCluster::start() else { return };
                    super::$name(std::sync::Arc::new(cluster.store().await)).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(store) = crate::postgres_store().await else { return };
                    super::$name(std::sync::Arc::new(store)).await;
                }
            )*
        }
    };
}

/// A Postgres store on a table of its own, on this test binary's cluster.
#[cfg(feature = "postgres")]
async fn postgres_store() -> Option<idem_runtime::store::PostgresStore> {
    let server = postgres_server::PostgresServer::shared()?;
    let store = idem_runtime::store::PostgresStore::builder()
        .url(server.url())
        .table(postgres_server::unique_table("contract"))
        .migrate(true)
        .build()
        .await
        .expect("connects to the test cluster");
    Some(store)
}

contract!(
    concurrent_claims_on_a_free_key_give_exactly_one_fresh,
    a_claimed_key_answers_the_in_flight_record_with_its_fingerprint,
    complete_stores_under_the_claim_token_and_claims_then_see_it,
    complete_with_another_token_is_refused_and_writes_nothing,
    complete_without_a_record_stores,
    release_frees_the_key_only_under_the_claim_token,
    lookup_of_an_unknown_key_is_none,
    a_lapsed_lease_is_taken_over_and_the_late_owner_loses,
    a_result_is_forgotten_after_its_ttl,
    responses_come_back_exactly_as_stored,
    a_claim_repeated_under_its_own_token_is_fresh_again,
    the_request_digest_is_kept_beside_the_response,
    scopes_keep_equal_keys_apart,
);

// ---- Redis only: record layout and versioning ----

#[cfg(feature = "redis")]
mod redis_records {
    use ::redis::AsyncCommands;

    use super::*;
    use crate::redis_server::RedisTarget;

    #[tokio::test]
    async fn records_live_at_prefix_scope_and_key_with_a_version() {
        let Some(target) = RedisTarget::get() else {
            return;
        };
        let store = target
            .builder()
            .prefix("layout-test:")
            .build()
            .await
            .unwrap();
        let mut raw = target.raw().await;
        let k = StoreKey::new(
            Scope::from_identity("alice"),
            IdempotencyKey::parse(b"order-1", 255).unwrap(),
        );
        let redis_key = format!("layout-test:{}:order-1", Scope::from_identity("alice"));
        assert_eq!(store.redis_key(&k), redis_key);

        let token = fresh(&store, &k, &fp(1), LONG).await;
        let fields: std::collections::HashMap<String, Vec<u8>> =
            raw.hgetall(&redis_key).await.unwrap();
        assert_eq!(fields["v"], b"1");
        assert_eq!(fields["state"], b"in_flight");
        assert_eq!(fields["token"], token.to_string().as_bytes());
        assert_eq!(fields["fp"], fp(1).to_string().as_bytes());
        let lease: i64 = raw.pttl(&redis_key).await.unwrap();
        assert!(
            lease > 0 && lease <= 600_000,
            "the lease is the record's expiry: {lease}"
        );

        let stored = response("{}");
        store
            .complete_response(&k, token, &fp(1), &stored, Duration::from_secs(3600))
            .await
            .unwrap();
        let fields: std::collections::HashMap<String, Vec<u8>> =
            raw.hgetall(&redis_key).await.unwrap();
        assert_eq!(fields["state"], b"done");
        assert!(!fields.contains_key("token"));
        assert_eq!(fields["response"], stored.encode());
        let ttl: i64 = raw.pttl(&redis_key).await.unwrap();
        assert!(
            ttl > 600_000 && ttl <= 3_600_000,
            "the TTL is the record's expiry: {ttl}"
        );
        let _: () = raw.del(&redis_key).await.unwrap();
    }

    /// Writes `fields` at the record of `k` and checks that claim and lookup fail closed.
    async fn refused(fields: &[(&str, &[u8])], why: &str) {
        let Some(target) = RedisTarget::get() else {
            return;
        };
        let store = target.store().await;
        let mut raw = target.raw().await;
        let k = key("tampered");
        let _: () = raw
            .hset_multiple(store.redis_key(&k), fields)
            .await
            .unwrap();

        let claim = store.claim_new(&k, &fp(1), LONG).await;
        let error = claim
            .expect_err("an unreadable record must not be claimed over")
            .to_string();
        assert!(error.contains(why), "{error}");
        let error = store.lookup(&k).await.expect_err("nor read").to_string();
        assert!(error.contains(why), "{error}");
        let token = ClaimToken::random();
        assert_eq!(
            store
                .complete_response(&k, token, &fp(1), &response("x"), LONG)
                .await
                .unwrap(),
            Completion::LeaseLost,
            "nor overwritten"
        );
    }

    #[tokio::test]
    async fn a_record_of_an_unknown_format_version_fails_closed() {
        let fingerprint = fp(1).to_string();
        refused(
            &[
                ("v", b"2"),
                ("state", b"done"),
                ("fp", fingerprint.as_bytes()),
            ],
            "version",
        )
        .await;
    }

    #[tokio::test]
    async fn a_record_whose_response_does_not_decode_fails_closed() {
        let fingerprint = fp(1).to_string();
        let mut future = response("{}").encode();
        future[0] = 9;
        refused(
            &[
                ("v", b"1"),
                ("state", b"done"),
                ("fp", fingerprint.as_bytes()),
                ("response", &future),
            ],
            "version 9",
        )
        .await;
    }

    #[tokio::test]
    async fn a_record_with_an_unknown_state_fails_closed() {
        let fingerprint = fp(1).to_string();
        refused(
            &[
                ("v", b"1"),
                ("state", b"paused"),
                ("fp", fingerprint.as_bytes()),
            ],
            "state",
        )
        .await;
    }

    #[tokio::test]
    async fn a_key_of_another_type_fails_closed() {
        let Some(target) = RedisTarget::get() else {
            return;
        };
        let store = target.store().await;
        let mut raw = target.raw().await;
        let k = key("not-a-hash");
        let _: () = raw.set(store.redis_key(&k), "plain string").await.unwrap();
        assert!(store.claim_new(&k, &fp(1), LONG).await.is_err());
        assert!(store.lookup(&k).await.is_err());
        assert!(store.release(&k, ClaimToken::random()).await.is_err());
    }

    #[tokio::test]
    async fn prefixes_keep_stores_apart() {
        let Some(target) = RedisTarget::get() else {
            return;
        };
        let a = target.store().await;
        let b = target.store().await;
        let k = key("same");
        fresh(&a, &k, &fp(1), LONG).await;
        fresh(&b, &k, &fp(1), LONG).await;
    }

    #[tokio::test]
    async fn the_local_tier_answers_replays_without_redis() {
        let Some(target) = RedisTarget::get() else {
            return;
        };
        let store = target
            .builder()
            .local_tier(1024 * 1024)
            .build()
            .await
            .unwrap();
        let mut raw = target.raw().await;
        let k = key("tiered");
        let token = fresh(&store, &k, &fp(1), LONG).await;
        store
            .complete_response(&k, token, &fp(1), &response("kept"), LONG)
            .await
            .unwrap();

        // With the Redis record gone, only the local tier can still answer.
        let _: () = raw.del(store.redis_key(&k)).await.unwrap();
        assert_eq!(
            done(store.lookup(&k).await.unwrap()).1.body(),
            response("kept").body()
        );
        match store.claim_new(&k, &fp(2), LONG).await.unwrap() {
            Claimed::Existing(Record::Done(completed)) => assert_eq!(completed.fingerprint, fp(1)),
            other => panic!("the tier answers the done record, found {other:?}"),
        }

        // A store without the tier goes to Redis.
        let plain = target
            .builder()
            .prefix(store.prefix())
            .build()
            .await
            .unwrap();
        assert_eq!(plain.lookup(&k).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_local_tier_keeps_records_another_instance_completed() {
        let Some(target) = RedisTarget::get() else {
            return;
        };
        let writer = target.store().await;
        let reader = target
            .builder()
            .prefix(writer.prefix())
            .local_tier(1024 * 1024)
            .build()
            .await
            .unwrap();
        let mut raw = target.raw().await;
        let k = key("seen-once");
        let token = fresh(&writer, &k, &fp(1), LONG).await;
        assert!(matches!(
            reader.lookup(&k).await.unwrap(),
            Some(Record::InFlight { .. })
        ));
        writer
            .complete_response(&k, token, &fp(1), &response("theirs"), LONG)
            .await
            .unwrap();
        assert!(matches!(
            reader.claim_new(&k, &fp(1), LONG).await.unwrap(),
            Claimed::Existing(Record::Done(_))
        ));

        let _: () = raw.del(writer.redis_key(&k)).await.unwrap();
        assert_eq!(
            done(reader.lookup(&k).await.unwrap()).1.body(),
            response("theirs").body()
        );
    }

    #[tokio::test]
    async fn build_refuses_a_missing_or_bad_target_and_an_unreachable_server() {
        let error = idem_runtime::store::RedisStore::builder()
            .build()
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("a URL, a client or cluster nodes"),
            "{error}"
        );
        let error = idem_runtime::store::RedisStore::builder()
            .cluster(Vec::<String>::new())
            .build()
            .await
            .unwrap_err();
        assert!(error.to_string().contains("at least one node"), "{error}");
        let error = idem_runtime::store::RedisStore::builder()
            .cluster(["not a url"])
            .build()
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("invalid Redis Cluster nodes"),
            "{error}"
        );
        let error = idem_runtime::store::RedisStore::builder()
            .cluster(["redis://127.0.0.1:1"])
            .connect_timeout(Duration::from_millis(200))
            .build()
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("could not connect to the Redis Cluster"),
            "{error}"
        );
        let error = idem_runtime::store::RedisStore::builder()
            .url("not a url")
            .build()
            .await
            .unwrap_err();
        assert!(error.to_string().contains("invalid Redis URL"), "{error}");
        let error = idem_runtime::store::RedisStore::builder()
            .url("redis+unix:///nonexistent/idem-test.sock")
            .build()
            .await
            .unwrap_err();
        assert!(error.to_string().contains("could not connect"), "{error}");
        let error = idem_runtime::store::RedisStore::builder()
            .url("redis://127.0.0.1:1")
            .response_timeout(Duration::ZERO)
            .build()
            .await
            .unwrap_err();
        assert!(error.to_string().contains("longer than zero"), "{error}");
    }
}

// ---- Postgres only: crashes, the sweep, the pool, the table name ----

#[cfg(feature = "postgres")]
mod postgres_records {
    use std::time::Instant;

    use idem_runtime::store::PostgresStore;

    use super::*;
    use crate::postgres_server::{PostgresServer, unique_table};

    async fn store_on(table: &str) -> Option<PostgresStore> {
        let server = PostgresServer::shared()?;
        Some(
            PostgresStore::builder()
                .url(server.url())
                .table(table)
                .migrate(true)
                .build()
                .await
                .expect("connects to the test cluster"),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_whose_connection_died_is_taken_over_at_once() {
        let table = unique_table("crash");
        let Some(dying) = store_on(&table).await else {
            return;
        };
        let survivor = store_on(&table).await.unwrap();
        let k = key("crashed");
        fresh(&dying, &k, &fp(1), LONG).await;
        assert_eq!(
            survivor.claim_new(&k, &fp(1), LONG).await.unwrap(),
            Claimed::Existing(Record::InFlight { fingerprint: fp(1) }),
            "a live holder keeps its key"
        );
        // The process dies: its connections close, and nothing gives the key up politely.
        drop(dying);
        let died = Instant::now();
        let mut taken = None;
        for _ in 0..POLLS {
            if let Claimed::Fresh(token) = survivor.claim_new(&k, &fp(1), LONG).await.unwrap() {
                taken = Some(token);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let token = taken.expect("the orphaned claim is taken over");
        assert!(
            died.elapsed() < Duration::from_secs(2),
            "taken over {:?} after the holder died, with a lease of {LONG:?}",
            died.elapsed()
        );
        assert_eq!(
            survivor
                .complete_response(&k, token, &fp(1), &response("survivor"), LONG)
                .await
                .unwrap(),
            Completion::Stored
        );
    }

    /// A key's lock held by a session with no row behind it (as a claim looks to another from the
    /// moment its statement takes the lock to the moment it commits the row) is waited for, then
    /// refused with a clear error: the claim neither takes the key nor waits for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lock_held_without_its_row_fails_the_claim_after_its_patience() {
        let table = unique_table("lockonly");
        let Some(holder) = store_on(&table).await else {
            return;
        };
        let claimer = store_on(&table).await.unwrap();
        let k = key("lock-only");
        let token = fresh(&holder, &k, &fp(1), LONG).await;
        // The row goes; the holder's connection keeps the key's lock.
        let server = PostgresServer::shared().unwrap();
        let pool = sqlx::PgPool::connect(&server.url()).await.unwrap();
        let deleted = sqlx::query(&format!("DELETE FROM {table} WHERE key = $1"))
            .bind("lock-only")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(deleted.rows_affected(), 1);
        let started = Instant::now();
        let error = claimer.claim_new(&k, &fp(1), LONG).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("is held but no claim row appeared"),
            "{error}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "refused after {:?}, before its patience ran out",
            started.elapsed()
        );
        assert_eq!(claimer.held_claims(), 0, "the claimer holds nothing");
        // Once the holder lets the key go, the key is free again.
        holder.release(&k, token).await.unwrap();
        fresh(&claimer, &k, &fp(2), LONG).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sweep_deletes_expired_rows_only() {
        let Some(store) = store_on(&unique_table("sweep")).await else {
            return;
        };
        for i in 0..5 {
            let k = key(&format!("short-{i}"));
            let token = fresh(&store, &k, &fp(1), LONG).await;
            store
                .complete_response(&k, token, &fp(1), &response("short"), SHORT)
                .await
                .unwrap();
        }
        let kept = key("kept");
        let token = fresh(&store, &kept, &fp(1), LONG).await;
        store
            .complete_response(&kept, token, &fp(1), &response("kept"), LONG)
            .await
            .unwrap();
        let held = key("held");
        fresh(&store, &held, &fp(1), SHORT).await;
        tokio::time::sleep(SHORT * 3).await;
        // Five done rows past their TTL; the claim past its lease is given up by its own timer.
        let mut swept = 0;
        for _ in 0..POLLS {
            swept += store.sweep().await.unwrap();
            if swept >= 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(swept, 5);
        assert!(matches!(
            store.lookup(&kept).await.unwrap(),
            Some(Record::Done(_))
        ));
        assert_eq!(store.sweep().await.unwrap(), 0, "nothing left to sweep");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exhausted_pool_fails_a_claim_within_its_acquire_timeout() {
        let Some(server) = PostgresServer::shared() else {
            return;
        };
        let store = PostgresStore::builder()
            .url(server.url())
            .table(unique_table("pool"))
            .migrate(true)
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(300))
            .build()
            .await
            .unwrap();
        // The one connection is held by the first claim.
        fresh(&store, &key("first"), &fp(1), LONG).await;
        let started = Instant::now();
        let error = store
            .claim_new(&key("second"), &fp(1), LONG)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{error}");
        assert_eq!(store.held_claims(), 1);
    }

    #[tokio::test]
    async fn a_table_name_that_is_not_an_identifier_is_refused() {
        for bad in ["idem keys", "x; DROP TABLE charges", "a.b.c", "9lives", ""] {
            let error = PostgresStore::builder()
                .url("postgres://nobody@127.0.0.1:1/none")
                .table(bad)
                .build()
                .await
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("invalid Postgres table name"),
                "{bad:?}: {error}"
            );
        }
    }
}
