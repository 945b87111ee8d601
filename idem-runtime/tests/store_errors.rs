//! A failing or stalled store fails closed: 503, and the handler never runs without a claim.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::replay::StoredResponse;
use idem_runtime::store::{
    Claim, ClaimToken, Completion, IdempotencyStore, MemoryStore, Record, StoreError, StoreKey,
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
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        Self::check(&self.fail_claim, Some(&self.stall_claim)).await?;
        self.inner.claim(key, fp, lease).await
    }
    async fn complete(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        fp: &Fingerprint,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        Self::check(&self.fail_complete, None).await?;
        self.inner.complete(key, token, fp, response, ttl).await
    }
    async fn release(&self, key: &StoreKey, token: ClaimToken) -> Result<(), StoreError> {
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

#[tokio::test]
async fn a_failing_completion_still_answers_the_first_caller() {
    let store = Arc::new(Faulty::default());
    let app = harness(&store);
    let order = json!({"amount": 1});
    store.fail_complete.store(true, Ordering::SeqCst);
    let first = app.send(post_json("/orders", Some("k"), &order)).await;
    assert_eq!(
        first.status, 201,
        "the handler ran; its answer is not withheld"
    );
    store.fail_complete.store(false, Ordering::SeqCst);
    // The record stays in flight until its lease runs out: retries are told to wait, never run twice.
    app.send(post_json("/orders", Some("k"), &order))
        .await
        .assert_problem(409, "request-in-flight");
    assert_eq!(app.executions(), 1);
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
