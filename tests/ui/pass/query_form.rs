#![deny(warnings)]

use axum::extract::{Form, Query};
use axum::routing::post;
use axum::Router;
use idem::idempotent;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
struct Page {
    dry_run: bool,
}

#[derive(Deserialize, Serialize)]
struct Signup {
    email: String,
}

#[idempotent(post)]
async fn signup(Query(page): Query<Page>, Form(signup): Form<Signup>) -> String {
    format!("{} {}", page.dry_run, signup.email)
}

fn main() {
    let _app: Router = Router::new().route("/signups", post(signup));
}
