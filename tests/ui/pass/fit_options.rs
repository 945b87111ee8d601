#![deny(warnings)]

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use idem::idempotent;
use idem::problem::{ErrorFormat, Problem};

/// The API's own error format, as a function.
fn api_errors(problem: &Problem) -> Response {
    (problem.status(), problem.detail().to_owned()).into_response()
}

/// A format as a unit struct.
struct Terse;

impl ErrorFormat for Terse {
    fn render(&self, problem: &Problem) -> Response {
        problem.status().into_response()
    }
}

/// A format as a static.
static TERSE: Terse = Terse;

/// Keeps every answer but a `429`.
fn not_throttled(status: StatusCode) -> bool {
    status != StatusCode::TOO_MANY_REQUESTS
}

#[idempotent(
    post,
    errors = idem::problem::Stripe,
    keep = no_server_errors,
    replay_only = ["content-type", "Location"],
    replay_except = ["x-request-id", "x-ratelimit-remaining"]
)]
async fn stripe(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

#[idempotent(post, errors = api_errors, keep = not_throttled, replay_except = [])]
async fn own(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

#[idempotent(post, errors = Terse, keep = all, replay_only = [])]
async fn terse(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

#[idempotent(post, errors = TERSE, store_server_errors = false)]
async fn terse_static(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

#[idempotent(post, errors = idem::problem::ProblemJson)]
async fn problem_json(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

fn main() {
    let _app: Router = Router::new()
        .route("/stripe", post(stripe))
        .route("/own", post(own))
        .route("/terse", post(terse))
        .route("/terse-static", post(terse_static))
        .route("/problem-json", post(problem_json));
}
