use axum::Json;
use idem::idempotent;

struct Receipt {
    amount: u64,
}

#[idempotent(post)]
async fn create_charge(Json(amount): Json<u64>) -> Receipt {
    Receipt { amount }
}

fn main() {}
