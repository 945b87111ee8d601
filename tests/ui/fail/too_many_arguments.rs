use axum::http::{HeaderMap, Method, Uri};
use idem::idempotent;

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
    _p: Method,
    _q: String,
) -> &'static str {
    "created"
}

fn main() {}
