//! A completed key is forgotten after its TTL, counted from completion: reuse is a new request.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Harness, post_json};

#[tokio::test]
async fn after_the_ttl_the_key_is_a_new_request() {
    let app = Harness::configured(|b| b.ttl(Duration::from_millis(300)));
    let order = json!({"amount": 1});
    app.send(post_json("/orders", Some("ttl"), &order)).await;
    assert!(
        app.send(post_json("/orders", Some("ttl"), &order))
            .await
            .is_replay()
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = app.send(post_json("/orders", Some("ttl"), &order)).await;
    assert_eq!(later.status, 201);
    assert!(!later.is_replay());
    assert_eq!(app.executions(), 2);

    // After expiry the key may even carry a different request.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let other = app
        .send(post_json("/orders", Some("ttl"), &json!({"amount": 2})))
        .await;
    assert_eq!(other.status, 201);
    assert_eq!(app.executions(), 3);
}

#[tokio::test]
async fn the_ttl_counts_from_completion_not_from_the_claim() {
    let app = Harness::configured(|b| b.ttl(Duration::from_millis(400)));
    // The handler runs longer than the TTL; the record must still live a full TTL after it ends.
    let order = json!({"amount": 1, "delay_ms": 500});
    app.send(post_json("/orders", Some("slow"), &order)).await;
    assert!(
        app.send(post_json("/orders", Some("slow"), &order))
            .await
            .is_replay()
    );
    assert_eq!(app.executions(), 1);
}

#[tokio::test]
async fn a_lapsed_lease_frees_the_key() {
    // A lease shorter than the handler: a duplicate after the lease is a new claim (this is why the
    // default lease is generous).
    let app = Harness::configured(|b| b.lease(Duration::from_millis(100)));
    let order = json!({"amount": 1, "delay_ms": 400});
    let first = app.send(post_json("/orders", Some("lease"), &order));
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.send(post_json("/orders", Some("lease"), &order)).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!((first.status.as_u16(), second.status.as_u16()), (201, 201));
    assert_eq!(app.executions(), 2);
}
