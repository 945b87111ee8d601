use idem::idempotent;

#[idempotent(get)]
async fn list_charges() -> &'static str {
    "[]"
}

fn main() {}
