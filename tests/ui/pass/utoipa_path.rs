#![deny(warnings)]

use axum::extract::Path;
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

#[derive(Deserialize, Serialize, ToSchema)]
struct NewCharge {
    amount: u64,
}

/// Creates a charge.
#[idempotent(post)]
#[utoipa::path(
    post,
    path = "/customers/{customer}/charges",
    params(("customer" = String, Path, description = "The customer")),
    request_body = NewCharge,
    responses((status = 201, description = "Charge created", body = NewCharge))
)]
pub async fn create_charge(
    Path(_customer): Path<String>,
    Json(charge): Json<NewCharge>,
) -> Json<NewCharge> {
    Json(charge)
}

#[derive(OpenApi)]
#[openapi(paths(create_charge))]
struct Api;

fn main() {
    let spec = Api::openapi();
    assert!(spec.paths.paths.contains_key("/customers/{customer}/charges"));
    let _app: Router = Router::new().route("/customers/{customer}/charges", post(create_charge));
}
