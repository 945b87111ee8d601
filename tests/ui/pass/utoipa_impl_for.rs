#![deny(warnings)]

use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use utoipa::openapi::path::PathsBuilder;

/// The type a `#[utoipa::path]` of the application's own implements `utoipa::Path` for.
struct ChargeDocs;

/// Creates a charge.
#[idempotent(post)]
#[utoipa::path(post, path = "/charges", impl_for = ChargeDocs, responses((status = 201)))]
async fn create_charge(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

fn main() {
    let paths = PathsBuilder::new().path_from::<ChargeDocs>().build();
    assert!(paths.paths.contains_key("/charges"));
    let _app: Router = Router::new().route("/charges", post(create_charge));
}
