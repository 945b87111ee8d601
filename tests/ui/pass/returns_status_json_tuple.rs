#![deny(warnings)]

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
struct Charge {
    amount: u64,
}

#[idempotent(post)]
async fn create(Json(charge): Json<Charge>) -> (StatusCode, Json<Charge>) {
    (StatusCode::CREATED, Json(charge))
}

fn main() {
    let _app: Router = Router::new().route("/charges", post(create));
}
