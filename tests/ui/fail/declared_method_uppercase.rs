use idem::idempotent;

#[idempotent(POST)]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
