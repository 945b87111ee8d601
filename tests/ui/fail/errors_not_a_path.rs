use idem::idempotent;

#[idempotent(post, errors = "stripe")]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
