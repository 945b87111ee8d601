//! Keys are scoped by caller: one caller never receives another's stored response.

mod support;

use axum::http::HeaderValue;
use serde_json::json;
use support::{Harness, post_json};

fn as_caller(
    token: Option<&'static str>,
    key: &str,
    amount: u64,
) -> axum::http::Request<axum::body::Body> {
    let mut request = post_json("/orders", Some(key), &json!({"amount": amount}));
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", HeaderValue::from_static(token));
    }
    request
}

#[tokio::test]
async fn the_same_key_from_two_callers_is_two_requests() {
    let app = Harness::new();
    let alice = app.send(as_caller(Some("Bearer alice"), "shared", 1)).await;
    let bob = app.send(as_caller(Some("Bearer bob"), "shared", 2)).await;
    let anonymous = app.send(as_caller(None, "shared", 3)).await;
    for answer in [&alice, &bob, &anonymous] {
        assert_eq!(answer.status, 201);
        assert!(!answer.is_replay());
    }
    assert_eq!(app.executions(), 3);

    let alice_again = app.send(as_caller(Some("Bearer alice"), "shared", 1)).await;
    assert!(alice_again.is_replay());
    assert_eq!(alice_again.body, alice.body);
    // Bob guessing Alice's key with Alice's body still gets nothing of hers.
    let bob_guess = app.send(as_caller(Some("Bearer bob"), "shared", 1)).await;
    bob_guess.assert_problem(422, "key-reused");
    assert_eq!(app.executions(), 3);
}

#[tokio::test]
async fn a_custom_scope_source_decides_who_shares_keys() {
    use idem_runtime::scope::Scope;
    let app = Harness::configured(|b| {
        b.scope(
            |parts: &axum::http::request::Parts| match parts.headers.get("x-tenant") {
                Some(tenant) => Scope::from_identity(tenant.as_bytes()),
                None => Scope::ANONYMOUS,
            },
        )
    });
    let tenant = |tenant: &'static str, auth: &'static str| {
        let mut request = as_caller(Some(auth), "k", 1);
        request
            .headers_mut()
            .insert("x-tenant", HeaderValue::from_static(tenant));
        request
    };
    app.send(tenant("acme", "Bearer one")).await;
    // Another credential of the same tenant: same scope, so a replay.
    assert!(app.send(tenant("acme", "Bearer two")).await.is_replay());
    assert!(!app.send(tenant("globex", "Bearer one")).await.is_replay());
    assert_eq!(app.executions(), 2);
}
