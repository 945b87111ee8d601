use axum_typed_routing::route;
use idem::idempotent;

#[idempotent]
#[route(GET "/charges")]
async fn list_charges() -> &'static str {
    "[]"
}

fn main() {}
