use idem::idempotent;

// 1024 is `idem::key::MAX_KEY_LEN_LIMIT`: the largest value accepted.
#[idempotent(max_key_len = 1024)]
async fn longest() -> &'static str {
    "created"
}

#[idempotent(max_key_len = 1025)]
async fn too_long() -> &'static str {
    "created"
}

fn main() {}
