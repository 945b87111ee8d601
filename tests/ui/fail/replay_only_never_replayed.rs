use idem::idempotent;

#[idempotent(
    post,
    replay_only = [
        "content-type",
        "Set-Cookie",
        "date",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
)]
async fn create_charge() -> &'static str {
    "created"
}

fn main() {}
