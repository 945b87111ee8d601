//! With the `metrics` feature, an outcome is counted by whichever recorder is in effect when it
//! happens: one installed after the first requests, a thread's local recorder, the next local
//! recorder after that one (made where the first was), and the global one again once the local one is gone. The crate keeps
//! each metric's key from one request to the next, never a recorder's metric.

#![allow(missing_docs)]

use axum::body::Body;
use axum::routing::post;
use axum::{Json, Router};
use http::{Request, StatusCode};
use idem::idempotent;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::ServiceExt;

#[idempotent(post)]
async fn charge(Json(amount): Json<u64>) -> String {
    format!("charged {amount}")
}

/// A new key on every request, so that each one runs the handler.
async fn send(app: &Router, key: &str) {
    let request = Request::post("/recorders/charges")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from("5"))
        .expect("a valid request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
}

/// The `executed` requests the snapshot holds for the route.
fn executed(snapshotter: &Snapshotter) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            let key = key.key();
            key.name() == "idem_requests_total"
                && key
                    .labels()
                    .any(|label| label.value() == "/recorders/charges")
                && key.labels().any(|label| label.value() == "executed")
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(count) => count,
            other => panic!("a counter, not {other:?}"),
        })
        .sum()
}

// One test, on one thread (the runtime of `#[tokio::test]` has a single thread, so a local
// recorder sees the handlers run): the recorders follow one another in this order.
#[tokio::test]
async fn each_outcome_goes_to_the_recorder_in_effect() {
    let app = Router::new().route("/recorders/charges", post(charge));
    // No recorder yet: counted nowhere, and the keys are kept all the same.
    send(&app, "before-any").await;
    send(&app, "before-any-2").await;

    // Two local recorders one after the other, each made in the same place, so that the second
    // is likely to live where the first did: neither may see the other's requests.
    let mut earlier: Option<Snapshotter> = None;
    for round in 1..=2 {
        let local = DebuggingRecorder::new();
        let snapshots = local.snapshotter();
        {
            let _local = metrics::set_default_local_recorder(&local);
            for n in 0..round {
                send(&app, &format!("local-{round}-{n}")).await;
            }
        }
        assert_eq!(executed(&snapshots), round, "round {round}");
        if let Some(earlier) = &earlier {
            assert_eq!(
                executed(earlier),
                0,
                "nothing more reached the earlier recorder"
            );
        }
        earlier = Some(snapshots);
    }

    let global = DebuggingRecorder::new();
    let global_snapshots = global.snapshotter();
    global.install().expect("the only global recorder");
    send(&app, "global").await;
    assert_eq!(executed(&global_snapshots), 1);
    let last_local = earlier.expect("two rounds");
    assert_eq!(
        executed(&last_local),
        0,
        "nothing more reached the local recorder"
    );
}
