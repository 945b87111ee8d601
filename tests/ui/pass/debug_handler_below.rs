#![deny(warnings)]

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;

#[derive(Clone)]
struct App;

#[idempotent(post)]
#[axum::debug_handler]
async fn create(State(_app): State<App>, Json(amount): Json<u64>) -> String {
    amount.to_string()
}

fn main() {
    let _app: Router = Router::new().route("/charges", post(create)).with_state(App);
}
