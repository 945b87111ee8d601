#![deny(warnings)]

use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;

macro_rules! echo_handler {
    ($name:ident, $ty:ty) => {
        #[idempotent(post)]
        async fn $name(Json(value): Json<$ty>) -> Json<$ty> {
            Json(value)
        }
    };
}

echo_handler!(echo_number, u64);
echo_handler!(echo_text, String);

fn main() {
    let _app: Router = Router::new()
        .route("/numbers", post(echo_number))
        .route("/texts", post(echo_text));
}
