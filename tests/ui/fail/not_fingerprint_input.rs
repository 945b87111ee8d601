use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::Json;
use idem::idempotent;
use std::convert::Infallible;

/// An extractor of the application's that says nothing about whether it reads client input.
struct Customer(String);

impl<S: Send + Sync> FromRequestParts<S> for Customer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Customer(parts.uri.to_string()))
    }
}

#[idempotent(post)]
async fn create_charge(Customer(customer): Customer, Json(amount): Json<u64>) -> String {
    format!("{customer} {amount}")
}

fn main() {}
