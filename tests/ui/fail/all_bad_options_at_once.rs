use idem::idempotent;

#[idempotent(
    post,
    post,
    required = true,
    ttl,
    lease = "soon",
    header = "idempotency key",
    conflict = "wait",
    store_server_errors = "no",
    max_body_bytes = -1,
    scope = "tenant",
    crate = idem,
    cache
)]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
