use idem::idempotent;

#[idempotent(ttl = "500000000y", lease = "400d", max_hold = "2years", wait_timeout = "367d")]
async fn handler() {}

fn main() {}
