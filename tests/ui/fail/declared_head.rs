use idem::idempotent;

#[idempotent(head)]
async fn charge_exists() -> &'static str {
    "ok"
}

fn main() {}
