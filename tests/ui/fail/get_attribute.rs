// `#[get("..")]` is the route attribute of actix-web, rocket and others; none is a dependency of
// this test, so the compiler also says that it cannot find it. The first error is the one that
// matters: `#[idempotent]` reads the method from the attribute's name.
use idem::idempotent;

#[idempotent]
#[get("/charges")]
async fn list_charges() -> &'static str {
    "[]"
}

fn main() {}
