use idem::idempotent;

#[idempotent(max_key_len = 0)]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
