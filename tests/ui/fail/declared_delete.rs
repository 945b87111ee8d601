use idem::idempotent;

#[idempotent(delete)]
async fn delete_charge() -> &'static str {
    "ok"
}

fn main() {}
