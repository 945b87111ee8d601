use axum::Json;
use idem::idempotent;

#[idempotent(post)]
async fn create_charge(#[idem(ignore)] Json(amount): Json<u64>) -> String {
    amount.to_string()
}

fn main() {}
