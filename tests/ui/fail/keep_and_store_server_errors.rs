use idem::idempotent;

#[idempotent(post, store_server_errors = false, keep = no_server_errors)]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
