#![deny(warnings)]

use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use idem::{idempotent, Scope};

/// Keys belong to the tenant named by `X-Tenant`.
fn tenant_scope(parts: &Parts) -> Scope {
    match parts.headers.get("x-tenant") {
        Some(tenant) => Scope::from_identity(tenant.as_bytes()),
        None => Scope::ANONYMOUS,
    }
}

#[idempotent(
    post,
    put,
    patch,
    ttl = "10m",
    lease = "90s",
    max_hold = "2h",
    wait_timeout = "1500ms",
    max_key_len = 64,
    max_body_bytes = 65_536,
    required,
    header = "X-Request-Key",
    scope = tenant_scope,
    store_server_errors = false,
    conflict = wait,
    crate = "::idem"
)]
async fn create(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

#[idempotent(conflict = reject, ttl = "7d", store_server_errors = true)]
async fn other(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

fn main() {
    let _app: Router = Router::new()
        .route("/charges", post(create).put(create).patch(create))
        .route("/others", post(other));
}
