use idem::idempotent;

struct NotAFormat;

fn wrong_signature(status: u16) -> String {
    status.to_string()
}

#[idempotent(post, errors = NotAFormat)]
async fn create_charge() -> &'static str {
    "created"
}

#[idempotent(post, errors = wrong_signature)]
async fn create_refund() -> &'static str {
    "created"
}

fn main() {}
