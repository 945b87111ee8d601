//! Keys are scoped: one caller never receives another caller's stored answer. The default scope is
//! the `Authorization` header; `scope = ..` names another one per handler.

#![allow(missing_docs)]

mod support;

use axum::extract::State;
use axum::http::Method;
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use idem::{Scope, idempotent};
use support::{Probe, app, request, send};

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
        Router::new()
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

#[tokio::test]
async fn another_authorization_does_not_see_the_stored_answer() {
    let probe = Probe::default();
    let app = router(&probe);

    let alice = send(&app, with("/charges", "authorization", "Bearer alice")).await;
    let bob = send(&app, with("/charges", "authorization", "Bearer bob")).await;
    assert!(!bob.is_replay(), "bob's request is his own");
    assert_eq!(alice.text(), "run 1 for 1");
    assert_eq!(bob.text(), "run 2 for 1");

    let alice_again = send(&app, with("/charges", "authorization", "Bearer alice")).await;
    assert!(alice_again.is_replay());
    assert_eq!(alice_again.body, alice.body);
    assert_eq!(probe.runs(), 2);
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
