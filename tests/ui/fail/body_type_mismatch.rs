use idem::idempotent;

#[idempotent(post)]
async fn create_charge() -> String {
    42
}

fn main() {}
