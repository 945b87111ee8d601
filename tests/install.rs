//! `Idempotency::install`: the process-wide configuration serves every router without an
//! `Extension(Idempotency)` of its own, and can be installed only once. A test binary of its own,
//! since it sets the process's configuration.

#![allow(missing_docs)]

mod support;

use std::time::Duration;

use idem::Idempotency;
use idem::store::MemoryStore;
use serde_json::json;
use support::{Probe, app, orders, post_json, send};

#[tokio::test]
async fn an_installed_configuration_serves_routers_without_an_extension() {
    let store = MemoryStore::default();
    Idempotency::builder()
        .store(store.clone())
        .ttl(Duration::from_secs(60))
        .build()
        .expect("valid")
        .install()
        .expect("the first install");

    // No extension: the installed store keeps the answer and replays it.
    let probe = Probe::default();
    let bare = orders().with_state(probe.clone());
    let order = json!({"amount": 1});
    let first = send(&bare, post_json("/orders", Some("k"), &order)).await;
    assert_eq!(first.status, 201);
    assert_eq!(store.entry_count(), 1, "kept by the installed store");
    let retry = send(&bare, post_json("/orders", Some("k"), &order)).await;
    assert!(retry.is_replay());
    assert_eq!(probe.runs(), 1);

    // A router with an extension keeps its own: the same key is new there.
    let layered = app(orders(), &probe);
    let own = send(&layered, post_json("/orders", Some("k"), &order)).await;
    assert!(!own.is_replay());
    assert_eq!(probe.runs(), 2);
    assert_eq!(store.entry_count(), 1);

    // Once only, with an error that says why.
    let again = Idempotency::builder().build().expect("valid").install();
    let error = again.expect_err("a second install").to_string();
    assert!(error.contains("set already"), "{error}");
}
