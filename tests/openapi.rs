//! With the `utoipa` feature, `idem::openapi::Idempotent` documents each `#[idempotent]` handler's
//! operation — the key header, the replay marker, the layer's answers in the handler's error
//! format — and leaves every other operation as it was.

#![allow(missing_docs)]

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use idem::idempotent;
use idem::openapi::Idempotent;
use idem::problem::{Problem, Stripe};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

#[derive(Deserialize, Serialize, ToSchema)]
struct NewCharge {
    amount: u64,
}

#[derive(Serialize, ToSchema)]
struct ValidationError {
    field: String,
}

/// Creates a charge.
#[idempotent(post, required, max_key_len = 64, header = "X-Request-Key")]
#[utoipa::path(
    post,
    path = "/charges",
    request_body = NewCharge,
    responses(
        (status = 201, description = "Charge created", body = NewCharge),
        (status = 400, description = "Invalid charge", body = ValidationError),
    )
)]
async fn create_charge(Json(charge): Json<NewCharge>) -> Json<NewCharge> {
    Json(charge)
}

/// Refunds a charge.
#[idempotent(post, errors = idem::problem::Stripe)]
#[utoipa::path(
    post,
    path = "/refunds",
    operation_id = "refund",
    responses((status = 201, description = "Refund created"))
)]
async fn create_refund(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

/// The API's own format: plain text.
fn plain(problem: &Problem) -> Response {
    (problem.status(), problem.detail().to_owned()).into_response()
}

/// Creates a quote.
#[idempotent(post, errors = plain)]
#[utoipa::path(post, path = "/quotes", responses((status = 201, description = "Quote created")))]
async fn create_quote(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

/// Creates a payout, with the runtime-wide defaults.
#[idempotent(post)]
#[utoipa::path(post, path = "/payouts", responses((status = 201, description = "Payout created")))]
async fn create_payout(Json(amount): Json<u64>) -> String {
    amount.to_string()
}

#[derive(Deserialize, Serialize, utoipa::IntoParams)]
struct Charging {
    /// Whether to capture at once.
    capture: Option<bool>,
}

// What utoipa reads from the handler's arguments (the path parameter's type, the body's schema)
// is not written out.
/// Charges a customer.
#[idempotent(post)]
#[utoipa::path(
    post,
    path = "/customers/{customer}/charges",
    responses((status = 201, description = "Charged"))
)]
async fn charge_customer(
    Path(customer): Path<String>,
    Query(charging): Query<Charging>,
    Json(charge): Json<NewCharge>,
) -> String {
    format!("{customer} {:?} {}", charging.capture, charge.amount)
}

// `charge_customer` without the attribute.
/// Charges a customer.
#[utoipa::path(
    post,
    path = "/plain/customers/{customer}/charges",
    operation_id = "charge_customer",
    responses((status = 201, description = "Charged"))
)]
async fn charge_customer_plain(
    Path(customer): Path<String>,
    Query(charging): Query<Charging>,
    Json(charge): Json<NewCharge>,
) -> String {
    format!("{customer} {:?} {}", charging.capture, charge.amount)
}

/// Lists the charges: no idempotency.
#[utoipa::path(get, path = "/charges", responses((status = 200, description = "The charges")))]
async fn list_charges() -> StatusCode {
    StatusCode::OK
}

/// Creates a transfer: a POST without the attribute.
#[utoipa::path(post, path = "/transfers", responses((status = 201, description = "Transfer created")))]
async fn create_transfer() -> StatusCode {
    StatusCode::CREATED
}

#[derive(OpenApi)]
#[openapi(paths(
    create_charge,
    create_refund,
    create_quote,
    create_payout,
    list_charges,
    create_transfer,
    charge_customer,
    charge_customer_plain
))]
struct Api;

fn documented(idempotent: &Idempotent) -> (Value, Value) {
    let before = serde_json::to_value(Api::openapi()).expect("JSON");
    let mut api = Api::openapi();
    idempotent.document(&mut api);
    (before, serde_json::to_value(api).expect("JSON"))
}

fn handlers() -> Idempotent {
    Idempotent::new()
        .handler(create_charge)
        .handler(create_refund)
        .handler(create_quote)
}

/// The header parameters of an operation, by name.
fn header(operation: &Value, name: &str) -> Value {
    operation["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|parameter| parameter["in"] == "header" && parameter["name"] == name)
        .unwrap_or_else(|| panic!("no {name} header in {operation:#}"))
        .clone()
}

#[test]
fn an_idempotent_operation_documents_its_key_replays_and_problem_answers() {
    let (_, api) = documented(&handlers());
    let operation = &api["paths"]["/charges"]["post"];

    let key = header(operation, "X-Request-Key");
    assert_eq!(key["required"], true);
    assert_eq!(key["schema"]["type"], "string");
    assert_eq!(key["schema"]["minLength"], 1);
    assert_eq!(key["schema"]["maxLength"], 64);

    let responses = &operation["responses"];
    assert_eq!(
        responses["201"]["headers"]["Idempotent-Replayed"]["schema"]["enum"],
        json!(["true"])
    );
    for status in ["409", "410", "422", "500", "503"] {
        let content = &responses[status]["content"]["application/problem+json"];
        assert_eq!(
            content["schema"]["$ref"], "#/components/schemas/IdempotencyProblem",
            "{status}: {responses:#}"
        );
    }
    assert!(responses["409"]["headers"]["Retry-After"].is_object());
    assert!(responses["503"]["headers"]["Retry-After"].is_object());
    assert!(responses["422"]["headers"]["Retry-After"].is_null());
    let in_flight = &responses["409"]["content"]["application/problem+json"]["examples"]["request-in-flight"]
        ["value"];
    assert_eq!(in_flight["status"], 409);
    assert_eq!(in_flight["title"], "Request in progress");
    let servers = &responses["500"]["content"]["application/problem+json"]["examples"];
    for slug in ["handler-panicked", "response-failed", "fingerprint-failed"] {
        assert!(servers[slug].is_object(), "{slug}");
    }

    // The handler's own 400 stays, and gains the layer's two.
    let bad = &responses["400"];
    assert!(
        bad["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Invalid charge; or: ")),
        "{bad:#}"
    );
    assert_eq!(
        bad["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ValidationError"
    );
    let problems = &bad["content"]["application/problem+json"]["examples"];
    assert!(problems["key-invalid"].is_object() && problems["key-missing"].is_object());

    assert!(api["components"]["schemas"]["IdempotencyProblem"].is_object());
}

#[test]
fn the_format_of_the_handler_gives_the_statuses_and_bodies() {
    let (_, api) = documented(&handlers());
    let operation = &api["paths"]["/refunds"]["post"];
    let key = header(operation, "Idempotency-Key");
    assert_eq!(key["required"], false);
    assert_eq!(key["schema"]["maxLength"], 255);

    let responses = &operation["responses"];
    assert!(
        responses["422"].is_null(),
        "Stripe answers a reused key with 400"
    );
    let bad = &responses["400"]["content"]["application/json"];
    assert_eq!(
        bad["schema"]["$ref"],
        "#/components/schemas/IdempotencyStripeError"
    );
    assert_eq!(
        bad["examples"]["key-reused"]["value"]["error"]["type"],
        "idempotency_error"
    );
    assert!(
        bad["examples"]["key-missing"].is_null(),
        "the key is optional"
    );
    assert_eq!(
        responses["409"]["content"]["application/json"]["examples"]["request-in-flight"]["value"]["error"]
            ["code"],
        "idempotency_key_in_use"
    );
    assert!(api["components"]["schemas"]["IdempotencyStripeError"].is_object());

    // A format without a schema: its content type and examples, no schema.
    let quotes = &api["paths"]["/quotes"]["post"]["responses"]["422"]["content"];
    let text = &quotes["text/plain"];
    assert!(text["schema"].is_null());
    assert!(
        text["examples"]["key-reused"]["value"]
            .as_str()
            .is_some_and(|body| body.starts_with("this idempotency key was already used"))
    );
}

#[test]
fn other_operations_are_left_as_they_were() {
    let (before, after) = documented(&handlers());
    assert_eq!(
        after["paths"]["/charges"]["get"],
        before["paths"]["/charges"]["get"]
    );
    assert_eq!(after["paths"]["/transfers"], before["paths"]["/transfers"]);
    // An idempotent handler that was not given is not documented either.
    assert_eq!(after["paths"]["/payouts"], before["paths"]["/payouts"]);
    // And documenting nothing changes nothing.
    let (before, after) = documented(&Idempotent::new());
    assert_eq!(after, before);
}

#[test]
fn runtime_wide_defaults_are_documented_where_the_handler_sets_none() {
    let idempotency = idem::Idempotency::builder()
        .required(true)
        .errors(Stripe)
        .build()
        .expect("valid");
    let (_, api) = documented(&Idempotent::with_defaults(&idempotency).handler(create_payout));
    let operation = &api["paths"]["/payouts"]["post"];
    assert_eq!(header(operation, "Idempotency-Key")["required"], true);
    let bad = &operation["responses"]["400"]["content"]["application/json"]["examples"];
    assert!(bad["key-missing"].is_object() && bad["key-reused"].is_object());
}

#[test]
fn utoipa_reads_the_arguments_of_the_handler_as_written() {
    let api = serde_json::to_value(Api::openapi()).expect("JSON");
    let idempotent = &api["paths"]["/customers/{customer}/charges"]["post"];
    let plain = &api["paths"]["/plain/customers/{customer}/charges"]["post"];
    assert_eq!(
        idempotent, plain,
        "the same operation as without the attribute"
    );
    let names: Vec<_> = idempotent["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|parameter| (parameter["name"].clone(), parameter["in"].clone()))
        .collect();
    assert_eq!(names, [(json!("customer"), json!("path"))]);
    assert_eq!(
        idempotent["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/NewCharge"
    );
    assert_eq!(idempotent["summary"], "Charges a customer.");
}

#[test]
fn the_documented_handlers_are_routed_as_usual() {
    use axum::routing::post;
    let _app: axum::Router = axum::Router::new()
        .route("/charges", post(create_charge).get(list_charges))
        .route("/refunds", post(create_refund))
        .route("/quotes", post(create_quote))
        .route("/payouts", post(create_payout))
        .route("/transfers", post(create_transfer))
        .route("/customers/{customer}/charges", post(charge_customer))
        .route(
            "/plain/customers/{customer}/charges",
            post(charge_customer_plain),
        );
}
