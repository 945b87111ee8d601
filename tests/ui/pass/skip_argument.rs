#![deny(warnings)]

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use std::convert::Infallible;

/// Something read from the request that the fingerprint does not know about.
struct RequestId(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok());
        Ok(RequestId(id.map(str::to_owned)))
    }
}

#[idempotent(post)]
async fn create(#[idem(skip)] RequestId(id): RequestId, Json(amount): Json<u64>) -> String {
    format!("{id:?} {amount}")
}

fn main() {
    let _app: Router = Router::new().route("/charges", post(create));
}
