use axum::extract::State;
use idem::idempotent;

#[idempotent]
async fn create_charge<S: Clone + Send + Sync + 'static>(State(_state): State<S>) -> &'static str {
    "created"
}

fn main() {}
