//! Keys are scoped: one caller never receives another caller's stored answer. The default scope is
//! the `Authorization` header; `scope = ..` names another one per handler, and the runtime can
//! name one for every handler.

#![allow(missing_docs)]

mod support;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method};
use axum::routing::post;
use axum::{Json, Router};
use idem::{Scope, idempotent};
use serde_json::json;
use support::{Probe, app, app_with, orders, post_json, request, send};

#[idempotent(post)]
async fn create(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    format!("run {} for {amount}", probe.run())
}

/// Callers are told apart by the `X-Tenant` header.
fn tenant(parts: &Parts) -> Scope {
    match parts.headers.get("x-tenant") {
        Some(tenant) => Scope::from_identity(tenant.as_bytes()),
        None => Scope::ANONYMOUS,
    }
}

#[idempotent(post, scope = tenant)]
async fn create_for_tenant(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    format!("run {} for {amount}", probe.run())
}

fn router(probe: &Probe) -> Router {
    app(
        orders()
            .route("/charges", post(create))
            .route("/tenant-charges", post(create_for_tenant)),
        probe,
    )
}

fn with(uri: &str, header: &str, value: &str) -> axum::http::Request<axum::body::Body> {
    request(
        Method::POST,
        uri,
        &[("idempotency-key", "shared"), (header, value)],
        "1",
    )
}

/// An order of `amount` with `key`, as the caller `token` (anonymous without one).
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
async fn another_authorization_does_not_see_the_stored_answer() {
    let probe = Probe::default();
    let app = router(&probe);

    let alice = send(&app, as_caller(Some("Bearer alice"), "shared", 1)).await;
    let bob = send(&app, as_caller(Some("Bearer bob"), "shared", 2)).await;
    let anonymous = send(&app, as_caller(None, "shared", 3)).await;
    for answer in [&alice, &bob, &anonymous] {
        assert_eq!(answer.status, 201);
        assert!(!answer.is_replay(), "each caller's request is its own");
    }
    assert_eq!(alice.json()["execution"], 1);
    assert_eq!(bob.json()["execution"], 2);
    assert_eq!(probe.runs(), 3);

    let alice_again = send(&app, as_caller(Some("Bearer alice"), "shared", 1)).await;
    assert!(alice_again.is_replay());
    assert_eq!(alice_again.body, alice.body);
    // Bob guessing Alice's key with Alice's body still gets nothing of hers.
    let bob_guess = send(&app, as_caller(Some("Bearer bob"), "shared", 1)).await;
    bob_guess.assert_problem(422, "key-reused");
    assert_eq!(probe.runs(), 3);
}

#[tokio::test]
async fn a_handler_scope_source_replaces_the_authorization_header() {
    let probe = Probe::default();
    let app = router(&probe);

    let acme = send(&app, with("/tenant-charges", "x-tenant", "acme")).await;
    let globex = send(&app, with("/tenant-charges", "x-tenant", "globex")).await;
    assert!(!globex.is_replay());
    assert_eq!(globex.text(), "run 2 for 1");

    // Same tenant, another credential: the handler's scope is the tenant, so this is a retry.
    let headers = [
        ("idempotency-key", "shared"),
        ("x-tenant", "acme"),
        ("authorization", "Bearer someone-else"),
    ];
    let retry = send(
        &app,
        request(Method::POST, "/tenant-charges", &headers, "1"),
    )
    .await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, acme.body);
    assert_eq!(probe.runs(), 2);
}

#[tokio::test]
async fn a_runtime_wide_scope_source_decides_who_shares_keys() {
    let probe = Probe::default();
    let app = app_with(orders(), &probe, |b| b.scope(tenant));
    let tenant = |tenant: &'static str, auth: &'static str| {
        let mut request = as_caller(Some(auth), "k", 1);
        request
            .headers_mut()
            .insert("x-tenant", HeaderValue::from_static(tenant));
        request
    };
    send(&app, tenant("acme", "Bearer one")).await;
    // Another credential of the same tenant: same scope, so a replay.
    assert!(send(&app, tenant("acme", "Bearer two")).await.is_replay());
    assert!(!send(&app, tenant("globex", "Bearer one")).await.is_replay());
    assert_eq!(probe.runs(), 2);
}
