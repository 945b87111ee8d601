use idem::idempotent;

#[idempotent(trace)]
async fn echo_request() -> &'static str {
    "ok"
}

fn main() {}
