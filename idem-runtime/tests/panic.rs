//! A handler that panics answers 500 and releases its key: the operation may be retried.

mod support;

use serde_json::json;
use support::{Harness, post_json};

#[tokio::test]
async fn a_panic_answers_500_and_releases_the_key() {
    let app = Harness::new();
    let order = json!({"amount": 1, "panic": true});
    let answer = app.send(post_json("/orders", Some("boom"), &order)).await;
    answer.assert_problem(500, "handler-panicked");
    assert!(!answer.is_replay());

    // The key is free again: the retry runs the handler (and panics again), it is not a replay
    // and not a 409.
    let retry = app.send(post_json("/orders", Some("boom"), &order)).await;
    retry.assert_problem(500, "handler-panicked");
    assert_eq!(app.executions(), 2);

    // The key is not stuck: the same request may be retried until it succeeds. The request must
    // keep its fingerprint, so the retry with another body is a fresh claim of the released key.
    let fixed = app
        .send(post_json("/orders", Some("boom"), &json!({"amount": 1})))
        .await;
    assert_eq!(fixed.status, 201);
    assert_eq!(app.executions(), 3);
}
