use idem::idempotent;

#[idempotent(post, keep = "no_server_errors")]
async fn create_charge() -> &'static str {
    "created"
}

#[idempotent(post, keep)]
async fn create_refund() -> &'static str {
    "created"
}

fn main() {}
