#![deny(warnings)]

use axum::response::IntoResponse;
use axum::routing::put;
use axum::{Json, Router};
use idem::idempotent;

#[idempotent(put)]
async fn replace(Json(name): Json<String>) -> impl IntoResponse {
    ([("x-name", name.clone())], name)
}

fn main() {
    let _app: Router = Router::new().route("/names", put(replace));
}
