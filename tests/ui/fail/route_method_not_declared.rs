use idem::idempotent;

#[idempotent(post)]
#[utoipa::path(put, path = "/charges/{id}", responses((status = 200, description = "Replaced")))]
async fn replace_charge() -> &'static str {
    "replaced"
}

fn main() {}
