use axum::extract::FromRequestParts;
use idem::idempotent;

#[idempotent]
async fn create_charge(_customer: impl FromRequestParts<()>) -> &'static str {
    "created"
}

fn main() {}
