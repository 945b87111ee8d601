use idem::idempotent;

#[idempotent(options)]
async fn allowed_methods() -> &'static str {
    "ok"
}

fn main() {}
