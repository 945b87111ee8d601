#![deny(warnings)]

use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;

// Compiled out together with the type that carries its options.
#[idempotent(post)]
#[cfg(any())]
async fn never_compiled(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

#[idempotent(post)]
#[cfg(all())]
async fn compiled(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

fn main() {
    let _app: Router = Router::new().route("/charges", post(compiled));
}
