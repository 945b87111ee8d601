#![deny(warnings)]

use axum::{Json, Router};
use axum_typed_routing::{TypedRouter, route};
use idem::idempotent;

#[idempotent(post)]
#[route(POST "/charges")]
async fn create(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

fn main() {
    let _app: Router = Router::new().typed_route(create);
}
