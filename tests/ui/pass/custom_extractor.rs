#![deny(warnings)]

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use idem::fingerprint::{FingerprintInput, Fingerprinter};
use idem::idempotent;

/// The `X-Customer` header.
struct Customer(String);

impl<S: Send + Sync> FromRequestParts<S> for Customer {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, StatusCode> {
        let value = parts.headers.get("x-customer").ok_or(StatusCode::BAD_REQUEST)?;
        let value = value.to_str().map_err(|_| StatusCode::BAD_REQUEST)?;
        Ok(Customer(value.to_owned()))
    }
}

impl FingerprintInput for Customer {
    fn fingerprint(&self, fp: &mut Fingerprinter) {
        fp.bytes(self.0.as_bytes());
    }
}

#[idempotent(post)]
async fn create(Customer(customer): Customer, body: String) -> String {
    format!("{customer}: {body}")
}

fn main() {
    let _app: Router = Router::new().route("/orders", post(create));
}
