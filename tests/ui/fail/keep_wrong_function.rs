use idem::idempotent;

fn keeps(status: u16) -> bool {
    status < 500
}

#[idempotent(post, keep = keeps)]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
