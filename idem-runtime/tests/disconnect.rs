//! A client that goes away does not cancel the handler: its result is stored and replayed.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Harness, post_json};
use tower::ServiceExt;

#[tokio::test]
async fn a_dropped_request_still_completes_and_is_replayed() {
    let app = Harness::new();
    let order = json!({"amount": 7, "delay_ms": 200});

    // The client gives up after 50 ms: the request future is dropped mid-flight.
    let request = app
        .router
        .clone()
        .oneshot(post_json("/orders", Some("gone"), &order));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), request)
            .await
            .is_err()
    );
    assert_eq!(app.executions(), 1, "the handler started");

    // While it still runs, a retry is told to come back.
    let early = app.send(post_json("/orders", Some("gone"), &order)).await;
    early.assert_problem(409, "request-in-flight");

    tokio::time::sleep(Duration::from_millis(400)).await;
    let retry = app.send(post_json("/orders", Some("gone"), &order)).await;
    assert_eq!(retry.status, 201);
    assert!(
        retry.is_replay(),
        "the handler ran to completion and its answer was kept"
    );
    assert_eq!(retry.json()["amount"], 7);
    assert_eq!(app.executions(), 1);
}

/// A memory store whose claims take a while, like a round trip to a remote store.
struct SlowClaims(idem_runtime::store::MemoryStore);

#[async_trait::async_trait]
impl idem_runtime::store::IdempotencyStore for SlowClaims {
    async fn claim(
        &self,
        key: &idem_runtime::store::StoreKey,
        fp: &idem_runtime::Fingerprint,
        token: idem_runtime::store::ClaimToken,
        lease: Duration,
    ) -> Result<idem_runtime::store::Claim, idem_runtime::store::StoreError> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.0.claim(key, fp, token, lease).await
    }
    async fn complete(
        &self,
        key: &idem_runtime::store::StoreKey,
        token: idem_runtime::store::ClaimToken,
        completed: std::sync::Arc<idem_runtime::store::Completed>,
        ttl: Duration,
    ) -> Result<idem_runtime::store::Completion, idem_runtime::store::StoreError> {
        self.0.complete(key, token, completed, ttl).await
    }
    async fn release(
        &self,
        key: &idem_runtime::store::StoreKey,
        token: idem_runtime::store::ClaimToken,
    ) -> Result<(), idem_runtime::store::StoreError> {
        self.0.release(key, token).await
    }
    async fn lookup(
        &self,
        key: &idem_runtime::store::StoreKey,
    ) -> Result<Option<idem_runtime::store::Record>, idem_runtime::store::StoreError> {
        self.0.lookup(key).await
    }
}

#[tokio::test]
async fn a_request_dropped_during_its_claim_does_not_leave_the_key_stuck() {
    let store = std::sync::Arc::new(SlowClaims(idem_runtime::store::MemoryStore::default()));
    let app = Harness::with_store(store, |b| b);
    let order = json!({"amount": 3});

    // The client hangs up while the claim is still on its way to the store.
    let request = app
        .router
        .clone()
        .oneshot(post_json("/orders", Some("mid-claim"), &order));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), request)
            .await
            .is_err()
    );

    // The claim and the handler still finish, so the retry is a replay, not a 409 until the lease
    // runs out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let retry = app
        .send(post_json("/orders", Some("mid-claim"), &order))
        .await;
    assert!(retry.is_replay(), "status {}", retry.status);
    assert_eq!(app.executions(), 1);
}
