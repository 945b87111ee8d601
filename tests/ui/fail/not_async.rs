use idem::idempotent;

#[idempotent]
fn create_charge() -> &'static str {
    "created"
}

fn main() {}
