use idem::idempotent;

#[idempotent(ttl = 600)]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
