use idem::idempotent;

#[idempotent]
#[utoipa::path(method(post, delete), path = "/charges/{id}", responses((status = 200, description = "Done")))]
async fn charge_action() -> &'static str {
    "done"
}

fn main() {}
