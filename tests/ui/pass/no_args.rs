#![deny(warnings)]

use axum::Router;
use axum::routing::post;
use idem::idempotent;

#[idempotent]
async fn ping() -> &'static str {
    "pong"
}

#[idempotent]
async fn nothing() {}

fn main() {
    let _app: Router = Router::new()
        .route("/ping", post(ping))
        .route("/nothing", post(nothing));
}
