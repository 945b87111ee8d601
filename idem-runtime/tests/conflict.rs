//! Concurrent duplicates: one execution; the others get 409 (or, in wait mode, the same answer).

mod support;

use futures_util::future::join_all;
use idem_runtime::ConflictPolicy;
use serde_json::json;
use support::{Harness, post_json};

const DUPLICATES: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_run_once_and_the_rest_get_409() {
    let app = Harness::new();
    let order = json!({"amount": 1, "delay_ms": 300});
    let answers =
        join_all((0..DUPLICATES).map(|_| app.send(post_json("/orders", Some("dup"), &order))))
            .await;

    let created: Vec<_> = answers.iter().filter(|a| a.status == 201).collect();
    let conflicts: Vec<_> = answers.iter().filter(|a| a.status == 409).collect();
    assert_eq!(created.len(), 1, "exactly one request runs the handler");
    assert_eq!(conflicts.len(), DUPLICATES - 1);
    for conflict in conflicts {
        conflict.assert_problem(409, "request-in-flight");
        assert_eq!(conflict.headers["retry-after"], "1");
    }
    assert_eq!(app.executions(), 1);

    // Once the first completes, a retry gets its answer.
    let retry = app.send(post_json("/orders", Some("dup"), &order)).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, created[0].body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_wait_mode_every_duplicate_gets_the_same_answer() {
    let app = Harness::configured(|b| b.conflict(ConflictPolicy::Wait));
    let order = json!({"amount": 1, "delay_ms": 200});
    let answers =
        join_all((0..DUPLICATES).map(|_| app.send(post_json("/orders", Some("wait"), &order))))
            .await;

    assert_eq!(app.executions(), 1);
    let first = &answers[0];
    for answer in &answers {
        assert_eq!(answer.status, 201);
        assert_eq!(answer.body, first.body);
    }
    assert_eq!(
        answers.iter().filter(|a| !a.is_replay()).count(),
        1,
        "one original, the rest replays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_answers_409_when_the_first_outlasts_the_wait() {
    let app = Harness::configured(|b| {
        b.conflict(ConflictPolicy::Wait)
            .wait_timeout(std::time::Duration::from_millis(50))
    });
    let slow = app.send(post_json(
        "/orders",
        Some("long"),
        &json!({"amount": 1, "delay_ms": 1000}),
    ));
    let duplicate = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        app.send(post_json(
            "/orders",
            Some("long"),
            &json!({"amount": 1, "delay_ms": 1000}),
        ))
        .await
    };
    let (first, duplicate) = tokio::join!(slow, duplicate);
    assert_eq!(first.status, 201);
    duplicate.assert_problem(409, "request-in-flight");
    assert_eq!(app.executions(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_runs_the_handler_when_the_first_released_the_key() {
    let app = Harness::configured(|b| b.conflict(ConflictPolicy::Wait).store_server_errors(false));
    let order = json!({"amount": 1, "delay_ms": 200, "status": 503});
    let first = app.send(post_json("/orders", Some("released"), &order));
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        app.send(post_json("/orders", Some("released"), &order))
            .await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 503);
    assert_eq!(second.status, 503);
    assert!(
        !second.is_replay(),
        "the waiter claimed the released key and ran the handler itself"
    );
    assert_eq!(app.executions(), 2);
}
