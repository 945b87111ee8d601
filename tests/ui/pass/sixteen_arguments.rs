#![deny(warnings)]

use axum::http::{HeaderMap, Method, Uri};
use axum::routing::post;
use axum::Router;
use idem::idempotent;

/// As many arguments as axum extracts, the last one the body.
#[idempotent]
async fn create_charge(
    _a: Method,
    _b: Uri,
    _c: HeaderMap,
    _d: Method,
    _e: Uri,
    _f: HeaderMap,
    _g: Method,
    _h: Uri,
    _i: HeaderMap,
    _j: Method,
    _k: Uri,
    _l: HeaderMap,
    _m: Method,
    _n: Uri,
    _o: HeaderMap,
    body: String,
) -> String {
    body
}

fn main() {
    let _app: Router = Router::new().route("/charges", post(create_charge));
}
