#![deny(warnings)]

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use serde::{Deserialize, Serialize};

#[derive(Clone)]
struct App {
    currency: &'static str,
}

#[derive(Deserialize, Serialize)]
struct NewCharge {
    amount: u64,
}

/// Creates a charge for a customer.
#[idempotent(post)]
pub async fn create_charge(
    State(app): State<App>,
    Path(customer): Path<String>,
    Json(charge): Json<NewCharge>,
) -> Json<String> {
    Json(format!("{customer}: {} {}", charge.amount, app.currency))
}

fn main() {
    let _app: Router = Router::new()
        .route("/customers/{customer}/charges", post(create_charge))
        .with_state(App { currency: "eur" });
}
