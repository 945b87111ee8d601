use idem::idempotent;

#[idempotent(
    post,
    replay_only = "content-type",
    replay_except = [x_request_id, "x request id", "x-ratelimit-remaining"]
)]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
