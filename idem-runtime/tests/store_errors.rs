//! A failing or stalled store fails closed: 503, and the handler never runs without a claim.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::store::{
    Claim, ClaimToken, Completed, Completion, IdempotencyStore, MemoryStore, Record, StoreError,
    StoreKey,
};
use serde_json::json;
use support::{Harness, post_json};

/// A memory store whose operations fail or stall while a switch is on.
#[derive(Default)]
struct Faulty {
    inner: MemoryStore,
    fail_claim: AtomicBool,
    stall_claim: AtomicBool,
    fail_complete: AtomicBool,
    fail_release: AtomicBool,
    fail_lookup: AtomicBool,
}

impl Faulty {
    async fn check(flag: &AtomicBool, stall: Option<&AtomicBool>) -> Result<(), StoreError> {
        if stall.is_some_and(|s| s.load(Ordering::SeqCst)) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if flag.load(Ordering::SeqCst) {
            return Err(StoreError::new("injected fault"));
        }
        Ok(())
    }
}

#[async_trait]
impl IdempotencyStore for Faulty {
    async fn claim(
        &self,
        key: &StoreKey,
        fp: &Fingerprint,
        token: ClaimToken,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        Self::check(&self.fail_claim, Some(&self.stall_claim)).await?;
        self.inner.claim(key, fp, token, lease).await
    }
    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        completed: Arc<Completed>,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        Self::check(&self.fail_complete, None).await?;
        self.inner.complete(key, token, completed, ttl).await
    }
    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
        Self::check(&self.fail_release, None).await?;
        self.inner.release(key, token).await
    }
    async fn lookup(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        Self::check(&self.fail_lookup, None).await?;
        self.inner.lookup(key).await
    }
}

fn harness(store: &Arc<Faulty>) -> Harness {
    Harness::with_store(store.clone(), |b| {
        b.store_timeout(Duration::from_millis(100))
    })
}

#[tokio::test]
async fn a_failing_claim_answers_503_and_runs_nothing() {
    let store = Arc::new(Faulty::default());
    let app = harness(&store);
    let order = json!({"amount": 1});
    store.fail_claim.store(true, Ordering::SeqCst);
    let answer = app.send(post_json("/orders", Some("k"), &order)).await;
    answer.assert_problem(503, "store-unavailable");
    assert_eq!(answer.headers["retry-after"], "1");
    assert_eq!(app.executions(), 0);

    // When the store recovers, the same key works: nothing was left behind.
    store.fail_claim.store(false, Ordering::SeqCst);
    assert_eq!(
        app.send(post_json("/orders", Some("k"), &order))
            .await
            .status,
        201
    );
    assert!(
        app.send(post_json("/orders", Some("k"), &order))
            .await
            .is_replay()
    );
    assert_eq!(app.executions(), 1);
}

#[tokio::test]
async fn a_stalled_claim_times_out_with_503() {
    let store = Arc::new(Faulty::default());
    let app = harness(&store);
    store.stall_claim.store(true, Ordering::SeqCst);
    app.send(post_json("/orders", Some("k"), &json!({"amount": 1})))
        .await
        .assert_problem(503, "store-unavailable");
    assert_eq!(app.executions(), 0);
}

/// Sends `order` with key `k` until the answer is not a 409 (the key is no longer in flight); a
/// bound on attempts, not on time.
async fn until_not_in_flight(app: &Harness, order: &serde_json::Value) -> support::Answer {
    for _ in 0..500 {
        let answer = app.send(post_json("/orders", Some("k"), order)).await;
        if answer.status != 409 {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the key stayed in flight after the store recovered");
}

#[tokio::test]
async fn a_failed_completion_is_retried_until_it_lands() {
    let store = Arc::new(Faulty::default());
    let app = harness(&store);
    let order = json!({"amount": 1});
    store.fail_complete.store(true, Ordering::SeqCst);
    let first = app.send(post_json("/orders", Some("k"), &order)).await;
    assert_eq!(
        first.status, 201,
        "the handler ran; its answer is not withheld"
    );
    // While the store fails, the record stays in flight: retries are told to wait, never run twice.
    app.send(post_json("/orders", Some("k"), &order))
        .await
        .assert_problem(409, "request-in-flight");

    // Once the store recovers, the completion lands without waiting for the (5 minute) lease, and
    // the retry is the replay of the first answer.
    store.fail_complete.store(false, Ordering::SeqCst);
    let retry = until_not_in_flight(&app, &order).await;
    assert!(retry.is_replay(), "status {}", retry.status);
    assert_eq!(retry.body, first.body);
    assert_eq!(app.executions(), 1);
}

#[tokio::test]
async fn a_failed_release_is_retried_so_the_key_is_not_stuck() {
    let store = Arc::new(Faulty::default());
    let app = harness(&store);
    let order = json!({"amount": 1, "panic": true});
    store.fail_release.store(true, Ordering::SeqCst);
    app.send(post_json("/orders", Some("k"), &order))
        .await
        .assert_problem(500, "handler-panicked");
    app.send(post_json("/orders", Some("k"), &order))
        .await
        .assert_problem(409, "request-in-flight");

    // Once the store recovers the key is released, well before its lease runs out: the retry
    // runs the handler again.
    store.fail_release.store(false, Ordering::SeqCst);
    until_not_in_flight(&app, &order)
        .await
        .assert_problem(500, "handler-panicked");
    assert_eq!(app.executions(), 2);
}

#[tokio::test]
async fn a_failing_lookup_in_wait_mode_answers_503() {
    let store = Arc::new(Faulty::default());
    let app = Harness::with_store(store.clone(), |b| {
        b.store_timeout(Duration::from_millis(100))
            .conflict(idem_runtime::ConflictPolicy::Wait)
    });
    let order = json!({"amount": 1, "delay_ms": 300});
    let first = app.send(post_json("/orders", Some("k"), &order));
    let second = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.fail_lookup.store(true, Ordering::SeqCst);
        app.send(post_json("/orders", Some("k"), &order)).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 201);
    second.assert_problem(503, "store-unavailable");
    assert_eq!(app.executions(), 1);
}
