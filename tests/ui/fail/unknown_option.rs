use idem::idempotent;

#[idempotent(post, time_to_live = "10m")]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
