#![deny(warnings)]

extern crate idem as payments_idem;

mod facade {
    pub use ::idem as idem_again;
}

use axum::routing::post;
use axum::{Json, Router};

#[payments_idem::idempotent(post, crate = "::payments_idem")]
async fn create(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

#[payments_idem::idempotent(post, crate = "crate::facade::idem_again")]
async fn update(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

fn main() {
    let _app: Router = Router::new()
        .route("/charges", post(create))
        .route("/updates", post(update));
}
