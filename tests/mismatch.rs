//! A key reused for a different request (body, path, query, route or a fingerprinted extractor)
//! gets `422` and the handler does not run; inputs marked `#[idem(skip)]`, non-inputs, a JSON
//! object's member order and whitespace do not count. An input that cannot be fingerprinted is
//! refused with `500` before the handler runs.

#![allow(missing_docs)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use idem::fingerprint::{FingerprintInput, Fingerprinter};
use idem::idempotent;
use serde::ser::Error as _;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Value, json};
use support::{Probe, app, orders, post as post_request, post_json, request, send};

#[derive(Deserialize, Serialize)]
struct Options {
    #[serde(default)]
    capture: bool,
}

/// The `X-Customer` header: a client input the fingerprint must cover.
struct Customer(String);

impl<S: Send + Sync> FromRequestParts<S> for Customer {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, StatusCode> {
        let value = parts
            .headers
            .get("x-customer")
            .ok_or(StatusCode::BAD_REQUEST)?;
        Ok(Customer(
            value
                .to_str()
                .map_err(|_| StatusCode::BAD_REQUEST)?
                .to_owned(),
        ))
    }
}

impl FingerprintInput for Customer {
    fn fingerprint(&self, fp: &mut Fingerprinter) {
        fp.bytes(self.0.as_bytes());
    }
}

/// A trace id: read from the request, but deliberately not part of the fingerprint.
struct TraceId(String);

impl<S: Send + Sync> FromRequestParts<S> for TraceId {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, StatusCode> {
        let value = parts
            .headers
            .get("x-trace")
            .map(|v| v.to_str().unwrap_or_default());
        Ok(TraceId(value.unwrap_or_default().to_owned()))
    }
}

#[idempotent(post)]
async fn charge(
    State(probe): State<Probe>,
    Path(account): Path<String>,
    Query(options): Query<Options>,
    Customer(customer): Customer,
    #[idem(skip)] TraceId(trace): TraceId,
    Json(body): Json<Value>,
) -> String {
    let run = probe.run();
    format!(
        "{run} {account} {} {customer} {trace} {body}",
        options.capture
    )
}

/// A map body, whose iteration order must not matter.
#[idempotent(post)]
async fn create_tally(
    State(probe): State<Probe>,
    Json(tally): Json<HashMap<String, u64>>,
) -> (StatusCode, String) {
    let n = probe.run();
    (
        StatusCode::CREATED,
        format!("tally {n} of {} entries", tally.len()),
    )
}

/// An amount whose `Serialize` fails when it is negative: such a request cannot be fingerprinted.
#[derive(Deserialize)]
struct Amount(i64);

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 < 0 {
            return Err(S::Error::custom("a negative amount cannot be encoded"));
        }
        serializer.serialize_i64(self.0)
    }
}

#[idempotent(post)]
async fn transfer(State(probe): State<Probe>, Json(Amount(amount)): Json<Amount>) -> String {
    format!("run {} for {amount}", probe.run())
}

fn router(probe: &Probe) -> Router {
    app(
        orders()
            .route("/accounts/{account}/charges", post(charge))
            .route("/accounts/{account}/refunds", post(charge))
            .route("/tallies", post(create_tally))
            .route("/transfers", post(transfer)),
        probe,
    )
}

fn charge_request(
    uri: &str,
    customer: &str,
    trace: &str,
    body: &str,
) -> axum::http::Request<axum::body::Body> {
    request(
        Method::POST,
        uri,
        &[
            ("idempotency-key", "k"),
            ("x-customer", customer),
            ("x-trace", trace),
        ],
        body,
    )
}

#[tokio::test]
async fn each_input_is_part_of_the_fingerprint() {
    let probe = Probe::default();
    let app = router(&probe);
    let first = send(
        &app,
        charge_request("/accounts/a1/charges", "c1", "t1", r#"{"amount":1}"#),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);

    for (what, uri, customer, body) in [
        ("body", "/accounts/a1/charges", "c1", r#"{"amount":2}"#),
        ("path", "/accounts/a2/charges", "c1", r#"{"amount":1}"#),
        (
            "query",
            "/accounts/a1/charges?capture=true",
            "c1",
            r#"{"amount":1}"#,
        ),
        ("route", "/accounts/a1/refunds", "c1", r#"{"amount":1}"#),
        (
            "custom extractor",
            "/accounts/a1/charges",
            "c2",
            r#"{"amount":1}"#,
        ),
    ] {
        let answer = send(&app, charge_request(uri, customer, "t1", body)).await;
        assert_eq!(
            answer.status, 422,
            "a different {what} must not be replayed"
        );
        answer.assert_problem(422, "key-reused");
    }
    assert_eq!(probe.runs(), 1, "no mismatching request ran the handler");
}

#[tokio::test]
async fn skipped_inputs_and_json_member_order_do_not_count() {
    let probe = Probe::default();
    let app = router(&probe);
    let body = r#"{"amount":1,"currency":"eur"}"#;
    let first = send(
        &app,
        charge_request("/accounts/a1/charges", "c1", "t1", body),
    )
    .await;

    let reordered = r#"{ "currency": "eur", "amount": 1 }"#;
    let retry = send(
        &app,
        charge_request("/accounts/a1/charges", "c1", "t2", reordered),
    )
    .await;
    assert!(
        retry.is_replay(),
        "status {}: {}",
        retry.status,
        retry.text()
    );
    assert_eq!(
        retry.body, first.body,
        "the first answer, with the first trace id"
    );
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn a_mismatch_is_not_stored() {
    let probe = Probe::default();
    let app = router(&probe);
    let first = send(&app, charge_request("/accounts/a1/charges", "c1", "t", "1")).await;
    assert_eq!(first.status, StatusCode::OK);
    send(&app, charge_request("/accounts/a1/charges", "c1", "t", "2"))
        .await
        .assert_problem(422, "key-reused");
    let retry = send(&app, charge_request("/accounts/a1/charges", "c1", "t", "1")).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
}

#[tokio::test]
async fn another_body_with_the_same_key_is_refused() {
    let probe = Probe::default();
    let app = router(&probe);
    send(
        &app,
        post_json("/orders", Some("k"), &json!({"amount": 500})),
    )
    .await;
    let other = send(
        &app,
        post_json("/orders", Some("k"), &json!({"amount": 501})),
    )
    .await;
    other.assert_problem(422, "key-reused");
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn another_path_with_the_same_key_is_refused() {
    let probe = Probe::default();
    let app = router(&probe);
    let order = json!({"amount": 5});
    send(&app, post_json("/orders/a", Some("k"), &order)).await;
    send(&app, post_json("/orders/b", Some("k"), &order))
        .await
        .assert_problem(422, "key-reused");
    send(&app, post_json("/orders/a?x=1", Some("k"), &order))
        .await
        .assert_problem(422, "key-reused");
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn another_route_with_the_same_key_is_refused() {
    let probe = Probe::default();
    let app = router(&probe);
    let order = json!({"amount": 5});
    send(&app, post_json("/orders", Some("k"), &order)).await;
    send(&app, post_json("/other-orders", Some("k"), &order))
        .await
        .assert_problem(422, "key-reused");
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn a_different_request_during_execution_is_refused() {
    let probe = Probe::default();
    let app = router(&probe);
    let slow = send(
        &app,
        post_json("/orders", Some("k"), &json!({"amount": 1, "delay_ms": 300})),
    );
    let other = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(&app, post_json("/orders", Some("k"), &json!({"amount": 2}))).await
    };
    let (first, other) = tokio::join!(slow, other);
    assert_eq!(first.status, 201);
    other.assert_problem(422, "key-reused");
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn member_order_and_whitespace_do_not_make_a_different_request() {
    let probe = Probe::default();
    let app = router(&probe);
    let tally = |body: &str| send(&app, post_request("/tallies", Some("tally"), body));
    let first = tally(r#"{"a":1,"b":2,"c":3}"#).await;
    assert_eq!(first.status, 201);
    let reordered = tally("{ \"c\": 3,\n \"a\": 1, \"b\": 2 }").await;
    assert!(reordered.is_replay());
    tally(r#"{"a":1,"b":2,"c":4}"#)
        .await
        .assert_problem(422, "key-reused");
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn an_input_that_cannot_be_fingerprinted_gets_500_and_the_handler_does_not_run() {
    let probe = Probe::default();
    let app = router(&probe);
    let refused = send(&app, post_request("/transfers", Some("t"), "-5")).await;
    refused.assert_problem(500, "fingerprint-failed");
    assert!(
        refused
            .text()
            .contains("a negative amount cannot be encoded"),
        "the problem says why: {}",
        refused.text()
    );
    assert!(!refused.is_replay());
    assert_eq!(probe.runs(), 0, "the handler did not run");

    // Nothing was claimed nor stored: the key is free for the corrected request.
    let fixed = send(&app, post_request("/transfers", Some("t"), "5")).await;
    assert_eq!(fixed.status, StatusCode::OK);
    assert!(!fixed.is_replay());
    assert_eq!(fixed.text(), "run 1 for 5");
    // Without a key nothing is fingerprinted, so nothing is refused.
    let keyless = send(&app, post_request("/transfers", None, "-5")).await;
    assert_eq!(keyless.text(), "run 2 for -5");
    assert_eq!(probe.runs(), 2);
}
