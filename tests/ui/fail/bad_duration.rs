use idem::idempotent;

#[idempotent(ttl = "10 parsecs")]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
