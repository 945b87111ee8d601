use idem::idempotent;

#[idempotent(ttl = "10m", post, ttl = "1h")]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
