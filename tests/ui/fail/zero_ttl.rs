use idem::idempotent;

#[idempotent(ttl = "0s")]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
