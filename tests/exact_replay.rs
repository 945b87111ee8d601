//! A retry that repeats a completed request byte for byte is replayed before its body is parsed;
//! anything else takes the full path, with the same answers as before.

#![allow(missing_docs)]

mod support;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use idem::{FingerprintInput, Fingerprinter, idempotent};
use serde_json::Value;
use support::{Answer, Probe, app, post as post_request, request, send};

/// How many times `Counted` was extracted, per idempotency key (tests run side by side).
static EXTRACTIONS: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Default::default);

fn extractions(key: &str) -> usize {
    EXTRACTIONS.lock().unwrap().get(key).copied().unwrap_or(0)
}

/// `Json<Value>` that counts how often it parses a body.
struct Counted(Value);

impl<S: Send + Sync> FromRequest<S> for Counted {
    type Rejection = JsonRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, JsonRejection> {
        let key = request
            .headers()
            .get("idempotency-key")
            .map_or("", |value| value.to_str().unwrap())
            .to_owned();
        *EXTRACTIONS.lock().unwrap().entry(key).or_default() += 1;
        let Json(value) = Json::<Value>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

impl FingerprintInput for Counted {
    const FROM_REQUEST_BYTES: bool = true;

    fn fingerprint(&self, fp: &mut Fingerprinter) {
        fp.value(&self.0);
    }
}

/// A body extractor that does not claim to be determined by the request's bytes (it could check
/// a signature header, say): `Counted`, without `FROM_REQUEST_BYTES`.
struct Checked(Value);

impl<S: Send + Sync> FromRequest<S> for Checked {
    type Rejection = JsonRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, JsonRejection> {
        let Counted(value) = Counted::from_request(request, state).await?;
        Ok(Self(value))
    }
}

impl FingerprintInput for Checked {
    fn fingerprint(&self, fp: &mut Fingerprinter) {
        fp.value(&self.0);
    }
}

/// The `X-Customer` header: an input the request's bytes do not cover.
struct Customer(String);

impl<S: Send + Sync> FromRequestParts<S> for Customer {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        let value = parts
            .headers
            .get("x-customer")
            .ok_or(StatusCode::BAD_REQUEST)?;
        Ok(Self(value.to_str().unwrap().to_owned()))
    }
}

impl FingerprintInput for Customer {
    fn fingerprint(&self, fp: &mut Fingerprinter) {
        fp.bytes(self.0.as_bytes());
    }
}

#[idempotent(post)]
async fn create_charge(State(probe): State<Probe>, Counted(charge): Counted) -> impl IntoResponse {
    let run = probe.run();
    (
        StatusCode::CREATED,
        format!("{{\"run\":{run},\"amount\":{}}}", charge["amount"]),
    )
}

#[idempotent(post)]
async fn charge_customer(
    State(probe): State<Probe>,
    Customer(customer): Customer,
    Counted(charge): Counted,
) -> impl IntoResponse {
    let run = probe.run();
    (
        StatusCode::CREATED,
        format!(
            "{{\"run\":{run},\"customer\":\"{customer}\",\"amount\":{}}}",
            charge["amount"]
        ),
    )
}

#[idempotent(post)]
async fn checked_charge(State(probe): State<Probe>, Checked(charge): Checked) -> impl IntoResponse {
    let run = probe.run();
    (
        StatusCode::CREATED,
        format!("{{\"run\":{run},\"amount\":{}}}", charge["amount"]),
    )
}

#[idempotent(post)]
async fn raw_upload(State(probe): State<Probe>, body: Bytes) -> impl IntoResponse {
    probe.run();
    (StatusCode::CREATED, format!("{} bytes", body.len()))
}

fn router(probe: &Probe) -> Router {
    app(
        Router::new()
            .route("/charges", post(create_charge))
            .route("/customer-charges", post(charge_customer))
            .route("/checked-charges", post(checked_charge))
            .route(
                "/uploads",
                post(raw_upload).layer(DefaultBodyLimit::max(16)),
            )
            .route("/big-uploads", post(raw_upload)),
        probe,
    )
}

#[tokio::test]
async fn a_byte_identical_retry_is_replayed_without_parsing_its_body() {
    let probe = Probe::default();
    let app = router(&probe);
    let body = r#"{"amount":100}"#;

    let first = send(&app, post_request("/charges", Some("exact-1"), body)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.is_replay());
    assert_eq!(extractions("exact-1"), 1);

    for _ in 0..3 {
        let retry = send(&app, post_request("/charges", Some("exact-1"), body)).await;
        assert!(retry.is_replay());
        assert_eq!(retry.status, StatusCode::CREATED);
        assert_eq!(retry.body, first.body);
    }
    assert_eq!(
        extractions("exact-1"),
        1,
        "the retries' bodies were not parsed"
    );
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn a_retry_spelled_differently_is_parsed_and_still_replayed() {
    let probe = Probe::default();
    let app = router(&probe);

    let first = send(
        &app,
        post_request("/charges", Some("exact-2"), r#"{"amount":100}"#),
    )
    .await;
    let retry = send(
        &app,
        post_request("/charges", Some("exact-2"), r#"{ "amount": 100 }"#),
    )
    .await;
    assert!(retry.is_replay(), "the same request, by its fingerprint");
    assert_eq!(retry.body, first.body);
    assert_eq!(
        extractions("exact-2"),
        2,
        "the differently spelled body was parsed"
    );
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn a_different_body_under_the_key_is_refused_as_before() {
    let probe = Probe::default();
    let app = router(&probe);

    send(
        &app,
        post_request("/charges", Some("exact-3"), r#"{"amount":100}"#),
    )
    .await;
    let other = send(
        &app,
        post_request("/charges", Some("exact-3"), r#"{"amount":101}"#),
    )
    .await;
    other.assert_problem(422, "key-reused");
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn an_input_outside_the_request_bytes_keeps_retries_on_the_full_path() {
    let probe = Probe::default();
    let app = router(&probe);
    let body = r#"{"amount":7}"#;
    let charge = |customer: &str| {
        request(
            Method::POST,
            "/customer-charges",
            &[("idempotency-key", "exact-4"), ("x-customer", customer)],
            body,
        )
    };

    let first = send(&app, charge("cus_a")).await;
    assert_eq!(first.status, StatusCode::CREATED);

    // Same bytes, another customer: a different request, whatever the body says.
    let other = send(&app, charge("cus_b")).await;
    other.assert_problem(422, "key-reused");

    let retry = send(&app, charge("cus_a")).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(extractions("exact-4"), 3, "every body was parsed");
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn a_last_input_outside_the_request_bytes_is_extracted_again_on_a_retry() {
    let probe = Probe::default();
    let app = router(&probe);
    let body = r#"{"amount":9}"#;

    let first = send(
        &app,
        post_request("/checked-charges", Some("exact-7"), body),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    for _ in 0..2 {
        let retry = send(
            &app,
            post_request("/checked-charges", Some("exact-7"), body),
        )
        .await;
        assert!(retry.is_replay(), "replayed through the claim");
        assert_eq!(retry.body, first.body);
    }
    assert_eq!(extractions("exact-7"), 3, "every body was parsed");
    assert_eq!(probe.runs(), 1);

    let other = send(
        &app,
        post_request("/checked-charges", Some("exact-7"), r#"{"amount":10}"#),
    )
    .await;
    other.assert_problem(422, "key-reused");
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn the_content_type_is_part_of_the_exact_request() {
    let probe = Probe::default();
    let app = router(&probe);
    let body = r#"{"amount":100}"#;

    send(&app, post_request("/charges", Some("exact-5"), body)).await;
    let as_text = Request::builder()
        .method(Method::POST)
        .uri("/charges")
        .header("idempotency-key", "exact-5")
        .header("content-type", "text/plain")
        .body(Body::from(body))
        .unwrap();
    let answer = send(&app, as_text).await;
    assert_eq!(
        answer.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "the extractor refuses it, as it would without a record"
    );
    assert!(!answer.is_replay());
    assert_eq!(probe.runs(), 1);
}

/// What a request to `/uploads` gets, under `key` and without a key.
async fn both_ways(app: &Router, key: &str, body: impl Fn() -> Body) -> (Answer, Answer) {
    let keyed = send(app, post_body("/uploads", Some(key), body())).await;
    let plain = send(app, post_body("/uploads", None, body())).await;
    (keyed, plain)
}

/// A `POST` of `body`, any kind of body, to `uri`, with `key` if any.
fn post_body(uri: &str, key: Option<&str>, body: Body) -> Request {
    let mut builder = Request::builder().method(Method::POST).uri(uri);
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(body).unwrap()
}

#[tokio::test]
async fn a_body_over_the_limit_gets_the_extractors_own_rejection() {
    let probe = Probe::default();
    let app = router(&probe);

    let (keyed, plain) = both_ways(&app, "exact-6", || Body::from(vec![b'x'; 100])).await;
    assert_eq!(keyed.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!((keyed.status, &keyed.body), (plain.status, &plain.body));
    assert_eq!(probe.runs(), 0);

    // Nothing was stored: the fixed request runs.
    let fixed = send(&app, post_request("/uploads", Some("exact-6"), "small")).await;
    assert_eq!(fixed.status, StatusCode::CREATED);
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn a_body_of_unknown_length_over_the_limit_gets_the_extractors_own_rejection() {
    let probe = Probe::default();
    let app = router(&probe);
    // A stream declares no length, so it is read under the route's limit.
    let stream = || {
        Body::from_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(
            Bytes::from(vec![b'x'; 100]),
        )]))
    };

    let (keyed, plain) = both_ways(&app, "exact-10", stream).await;
    assert_eq!(keyed.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!((keyed.status, &keyed.body), (plain.status, &plain.body));
    assert_eq!(probe.runs(), 0);

    let fixed = send(&app, post_request("/uploads", Some("exact-10"), "small")).await;
    assert_eq!(fixed.status, StatusCode::CREATED);
    assert!(
        !fixed.is_replay(),
        "nothing was stored for the refused body"
    );
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn a_body_longer_than_is_read_whole_is_read_under_the_limit_and_replayed() {
    let probe = Probe::default();
    let app = router(&probe);
    let long = || Body::from(vec![b'y'; 70 * 1024]);

    let first = send(&app, post_body("/big-uploads", Some("exact-11"), long())).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.body, format!("{} bytes", 70 * 1024));
    let retry = send(&app, post_body("/big-uploads", Some("exact-11"), long())).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(probe.runs(), 1);

    // The same body where the limit is 16 bytes: the extractor's own refusal.
    let (keyed, plain) = both_ways(&app, "exact-12", long).await;
    assert_eq!(keyed.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!((keyed.status, &keyed.body), (plain.status, &plain.body));
    assert_eq!(probe.runs(), 1);
}

/// A body that declares one exact length and yields `data`, whatever its length: a broken body,
/// which hyper never makes (it holds a body to its `Content-Length`).
struct Overrun {
    declared: u64,
    data: Option<Bytes>,
}

impl axum::body::HttpBody for Overrun {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.get_mut()
                .data
                .take()
                .map(|data| Ok(http_body::Frame::data(data))),
        )
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.declared)
    }
}

fn overrun(declared: u64, len: usize) -> Body {
    Body::new(Overrun {
        declared,
        data: Some(Bytes::from(vec![b'z'; len])),
    })
}

#[tokio::test]
async fn a_body_that_yields_more_than_it_declares_is_read_as_its_extractor_reads_it() {
    let probe = Probe::default();
    let app = router(&probe);

    // Within the limit: the same answer with a key and without, and the retry is replayed.
    let (keyed, plain) = both_ways(&app, "exact-13", || overrun(3, 10)).await;
    assert_eq!(keyed.status, StatusCode::CREATED);
    assert_eq!((keyed.status, &keyed.body), (plain.status, &plain.body));
    let retry = send(
        &app,
        post_body("/uploads", Some("exact-13"), overrun(3, 10)),
    )
    .await;
    assert!(retry.is_replay());
    assert_eq!(
        probe.runs(),
        2,
        "the keyed request once, the keyless one once"
    );

    // Over the limit: the extractor's refusal, with a key and without.
    let (keyed, plain) = both_ways(&app, "exact-14", || overrun(3, 100)).await;
    assert_eq!(keyed.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!((keyed.status, &keyed.body), (plain.status, &plain.body));
    assert_eq!(probe.runs(), 2);
}

#[tokio::test]
async fn a_body_that_yields_far_more_than_it_declares_is_stopped_at_64_kib() {
    let probe = Probe::default();
    let app = router(&probe);

    // Read whole for its declared 3 bytes, it is held to 64 KiB: past that, the length limit's
    // refusal, though the route would take 2 MiB. Nothing runs, nothing is stored.
    let keyed = send(
        &app,
        post_body("/big-uploads", Some("exact-15"), overrun(3, 64 * 1024 + 1)),
    )
    .await;
    assert_eq!(keyed.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!keyed.is_replay());
    assert_eq!(probe.runs(), 0);

    // At 64 KiB it is read, and runs.
    let at_most = send(
        &app,
        post_body("/big-uploads", Some("exact-15"), overrun(3, 64 * 1024)),
    )
    .await;
    assert_eq!(at_most.status, StatusCode::CREATED);
    assert_eq!(probe.runs(), 1);
}

#[tokio::test]
async fn a_body_that_fails_midway_gets_the_extractors_own_rejection() {
    let probe = Probe::default();
    let app = router(&probe);
    let broken = || {
        Body::from_stream(futures_util::stream::iter([
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("connection reset")),
        ]))
    };

    let (keyed, plain) = both_ways(&app, "exact-6", broken).await;
    assert_eq!(keyed.status, StatusCode::BAD_REQUEST);
    assert_eq!((keyed.status, &keyed.body), (plain.status, &plain.body));
    assert_eq!(probe.runs(), 0);
}

#[tokio::test]
async fn without_a_key_the_body_is_parsed_every_time() {
    let probe = Probe::default();
    let app = router(&probe);
    for _ in 0..2 {
        let answer = send(&app, post_request("/charges", None, r#"{"amount":1}"#)).await;
        assert_eq!(answer.status, StatusCode::CREATED);
    }
    assert_eq!(extractions(""), 2);
    assert_eq!(probe.runs(), 2);
}

/// An extractor that empties the request's extensions (as a badly behaved one might), and says
/// it is determined by the request's bytes.
struct Wipes;

impl<S: Send + Sync> FromRequestParts<S> for Wipes {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        parts.extensions = axum::http::Extensions::new();
        Ok(Self)
    }
}

impl FingerprintInput for Wipes {
    const FROM_REQUEST_BYTES: bool = true;

    fn fingerprint(&self, _fp: &mut Fingerprinter) {}
}

#[idempotent(post)]
async fn wiped_charge(
    State(probe): State<Probe>,
    _wipes: Wipes,
    Json(charge): Json<Value>,
) -> impl IntoResponse {
    probe.run();
    (StatusCode::CREATED, charge.to_string())
}

#[tokio::test]
async fn an_extractor_that_empties_the_extensions_cannot_take_the_key_away() {
    let probe = Probe::default();
    let app = app(
        Router::new().route("/wiped-charges", post(wiped_charge)),
        &probe,
    );
    let body = r#"{"amount":3}"#;

    let first = send(&app, post_request("/wiped-charges", Some("exact-9"), body)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = send(&app, post_request("/wiped-charges", Some("exact-9"), body)).await;
    assert!(retry.is_replay(), "the key read before any extractor ran");
    assert_eq!(retry.body, first.body);
    assert_eq!(probe.runs(), 1, "the handler ran once");

    let keyless = send(&app, post_request("/wiped-charges", None, body)).await;
    assert_eq!(
        keyless.status,
        StatusCode::CREATED,
        "without a key it just runs"
    );
    assert_eq!(probe.runs(), 2);
}

/// A body extractor that reports whether its body arrived already in memory (a body read ahead
/// knows its exact length; a stream, as sent here, does not), and whether it says it is
/// determined by the request's bytes (`EXACT`).
struct Arrival<const EXACT: bool>(bool);

impl<S: Send + Sync, const EXACT: bool> FromRequest<S> for Arrival<EXACT> {
    type Rejection = StatusCode;

    async fn from_request(request: Request, _: &S) -> Result<Self, StatusCode> {
        let read_ahead = axum::body::HttpBody::size_hint(request.body())
            .exact()
            .is_some();
        Ok(Self(read_ahead))
    }
}

impl<const EXACT: bool> FingerprintInput for Arrival<EXACT> {
    const FROM_REQUEST_BYTES: bool = EXACT;

    fn fingerprint(&self, _fp: &mut Fingerprinter) {}
}

#[idempotent(post)]
async fn arrival_exact(Arrival(read_ahead): Arrival<true>) -> String {
    read_ahead.to_string()
}

#[idempotent(post)]
async fn arrival_inexact(Arrival(read_ahead): Arrival<false>) -> String {
    read_ahead.to_string()
}

#[tokio::test]
async fn only_a_handler_whose_inputs_are_all_in_the_request_bytes_reads_its_body_ahead() {
    let probe = Probe::default();
    let app = app(
        Router::new()
            .route("/arrival-exact", post(arrival_exact))
            .route("/arrival-inexact", post(arrival_inexact)),
        &probe,
    );
    let streamed = |uri: &str, key: Option<&str>| {
        let chunks = [Ok::<_, std::io::Error>(Bytes::from_static(b"{}"))];
        post_body(
            uri,
            key,
            Body::from_stream(futures_util::stream::iter(chunks)),
        )
    };

    let exact = send(&app, streamed("/arrival-exact", Some("arrival-1"))).await;
    assert_eq!(
        exact.body, "true",
        "read ahead, to look for a byte-identical retry"
    );
    let inexact = send(&app, streamed("/arrival-inexact", Some("arrival-2"))).await;
    assert_eq!(inexact.body, "false", "handed the body as it came");
    let keyless = send(&app, streamed("/arrival-exact", None)).await;
    assert_eq!(keyless.body, "false", "without a key nothing is read ahead");
}
