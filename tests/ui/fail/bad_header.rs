use idem::idempotent;

#[idempotent(header = "Idempotency Key")]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
