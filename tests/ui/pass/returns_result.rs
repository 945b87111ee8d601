#![deny(warnings)]

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;

#[idempotent]
async fn create(Json(amount): Json<u64>) -> Result<String, StatusCode> {
    if amount == 0 {
        return Err(StatusCode::BAD_REQUEST);
    }
    Ok(amount.to_string())
}

fn main() {
    let _app: Router = Router::new().route("/charges", post(create));
}
