use idem::idempotent;

#[idempotent]
#[utoipa::path(get, path = "/charges", responses((status = 200, description = "All charges")))]
async fn list_charges() -> &'static str {
    "[]"
}

fn main() {}
