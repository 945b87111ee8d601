//! Every answer idem makes itself is written in the error format the application chose —
//! problem+json by default (byte for byte as it always was), Stripe's envelope, or the
//! application's own — runtime-wide or per handler, from every place that makes one; `409` and
//! `503` carry `Retry-After` in every format.

#![allow(missing_docs)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use idem::problem::{ErrorFormat, Problem, ProblemKind, Stripe};
use idem::{IdempotencyBuilder, idempotent};
use serde::{Deserialize, Serialize, Serializer};
use support::store::{Fault, FaultyStore, Operation};
use support::{Answer, Probe, app_with, post as post_request, send};

#[idempotent(post)]
async fn charge(Json(amount): Json<u64>) -> String {
    format!("charged {amount}")
}

#[idempotent(post, required)]
async fn required(Json(amount): Json<u64>) -> String {
    format!("charged {amount}")
}

#[idempotent(post)]
async fn slow(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    probe.run_gated().await;
    format!("charged {amount}")
}

#[idempotent(post, conflict = wait)]
async fn waits(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    probe.run_gated().await;
    format!("charged {amount}")
}

#[idempotent(post, max_body_bytes = 4)]
async fn big(Json(amount): Json<u64>) -> (StatusCode, String) {
    (
        StatusCode::CREATED,
        format!("a body longer than four bytes: {amount}"),
    )
}

#[idempotent(post)]
async fn panics(Json(amount): Json<u64>) -> String {
    panic!("the handler panics for {amount}");
}

#[idempotent(post)]
async fn broken(Json(_amount): Json<u64>) -> Body {
    let chunks: [Result<Bytes, std::io::Error>; 2] = [
        Ok(Bytes::from_static(b"half")),
        Err(std::io::Error::other("the body fails")),
    ];
    Body::from_stream(futures_util::stream::iter(chunks))
}

/// Reads as any JSON number, but refuses to be serialized for the fingerprint.
#[derive(Deserialize)]
struct Unserializable(#[allow(dead_code)] u64);

impl Serialize for Unserializable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this input cannot be serialized"))
    }
}

#[idempotent(post)]
async fn unserializable(Json(_input): Json<Unserializable>) -> &'static str {
    "never"
}

#[idempotent(post, lease = "30ms")]
async fn loses_lease(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    probe.run_gated().await;
    panic!("the handler panics after losing its lease, for {amount}");
}

fn routes() -> Router<Probe> {
    Router::new()
        .route("/charge", post(charge))
        .route("/required", post(required))
        .route("/slow", post(slow))
        .route("/waits", post(waits))
        .route("/big", post(big))
        .route("/panics", post(panics))
        .route("/broken", post(broken))
        .route("/unserializable", post(unserializable))
        .route("/loses-lease", post(loses_lease))
}

/// One way of making idem answer on its own, through the place in the runtime that makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// An empty key (the key's extractor).
    KeyInvalid,
    /// No key where one is required (the key's extractor).
    KeyMissing,
    /// A duplicate of a request still running (the claim).
    InFlight,
    /// The key again, with another body (the claim).
    KeyReused,
    /// A byte-identical retry of an answer too large to keep (before the body is parsed).
    NotKeptExact,
    /// A retry of an answer too large to keep, spelled differently (the claim).
    NotKept,
    /// The store fails the claim.
    StoreClaim,
    /// The store fails while a duplicate waits for the first answer.
    StoreLookup,
    /// The handler panics.
    Panicked,
    /// The handler's body fails.
    ResponseFailed,
    /// An input cannot be serialized for the fingerprint.
    FingerprintFailed,
    /// The store panics during the exchange's first poll.
    AbortedAtOnce,
    /// The store panics once the exchange runs in a task of its own.
    AbortedLater,
    /// The handler panics after its lease was lost.
    LeaseLost,
}

const SCENARIOS: [Scenario; 14] = [
    Scenario::KeyInvalid,
    Scenario::KeyMissing,
    Scenario::InFlight,
    Scenario::KeyReused,
    Scenario::NotKeptExact,
    Scenario::NotKept,
    Scenario::StoreClaim,
    Scenario::StoreLookup,
    Scenario::Panicked,
    Scenario::ResponseFailed,
    Scenario::FingerprintFailed,
    Scenario::AbortedAtOnce,
    Scenario::AbortedLater,
    Scenario::LeaseLost,
];

impl Scenario {
    /// The kind of problem it provokes.
    fn kind(self) -> ProblemKind {
        match self {
            Self::KeyInvalid => ProblemKind::KeyInvalid,
            Self::KeyMissing => ProblemKind::KeyMissing,
            Self::InFlight => ProblemKind::RequestInFlight,
            Self::KeyReused => ProblemKind::KeyReused,
            Self::NotKeptExact | Self::NotKept => ProblemKind::ResponseNotKept,
            Self::StoreClaim | Self::StoreLookup => ProblemKind::StoreUnavailable,
            Self::Panicked | Self::AbortedAtOnce | Self::AbortedLater | Self::LeaseLost => {
                ProblemKind::HandlerPanicked
            }
            Self::ResponseFailed => ProblemKind::ResponseFailed,
            Self::FingerprintFailed => ProblemKind::FingerprintFailed,
        }
    }

    /// Provokes the answer, in an application of its own configured by `configure`.
    async fn provoke(
        self,
        configure: impl FnOnce(IdempotencyBuilder) -> IdempotencyBuilder,
    ) -> Answer {
        let probe = Probe::default();
        // Forwarding `peek`, so that the byte-identical retry of `NotKeptExact` is answered before
        // its body is parsed.
        let store = Arc::new(FaultyStore::memory().forwarding_peek());
        let app = app_with(routes(), &probe, |builder| {
            configure(builder.shared_store(store.clone()))
        });
        match self {
            Self::KeyInvalid => send(&app, post_request("/charge", Some(""), "1")).await,
            Self::KeyMissing => send(&app, post_request("/required", None, "1")).await,
            Self::InFlight | Self::StoreLookup => {
                let path = if self == Self::InFlight {
                    "/slow"
                } else {
                    "/waits"
                };
                let first = tokio::spawn({
                    let app = app.clone();
                    async move { send(&app, post_request(path, Some("k"), "1")).await }
                });
                probe.started().await;
                if self == Self::StoreLookup {
                    store.force(Operation::Lookup, Some(Fault::FailBefore));
                }
                let duplicate = send(&app, post_request(path, Some("k"), "1")).await;
                store.force(Operation::Lookup, None);
                probe.open();
                assert_eq!(first.await.expect("first").status, StatusCode::OK);
                duplicate
            }
            Self::KeyReused => {
                send(&app, post_request("/charge", Some("k"), "1")).await;
                send(&app, post_request("/charge", Some("k"), "2")).await
            }
            Self::NotKeptExact | Self::NotKept => {
                let first = send(&app, post_request("/big", Some("k"), "1")).await;
                assert_eq!(first.status, StatusCode::CREATED);
                let retry = if self == Self::NotKept { " 1" } else { "1" };
                send(&app, post_request("/big", Some("k"), retry)).await
            }
            Self::StoreClaim => {
                store.force(Operation::Claim, Some(Fault::FailBefore));
                send(&app, post_request("/charge", Some("k"), "1")).await
            }
            Self::Panicked => send(&app, post_request("/panics", Some("k"), "1")).await,
            Self::ResponseFailed => send(&app, post_request("/broken", Some("k"), "1")).await,
            Self::FingerprintFailed => {
                send(&app, post_request("/unserializable", Some("k"), "1")).await
            }
            Self::AbortedAtOnce | Self::AbortedLater => {
                let panic = if self == Self::AbortedAtOnce {
                    Fault::Panic
                } else {
                    Fault::PanicLater
                };
                store.force(Operation::Claim, Some(panic));
                send(&app, post_request("/charge", Some("k"), "1")).await
            }
            Self::LeaseLost => {
                let first = tokio::spawn({
                    let app = app.clone();
                    async move { send(&app, post_request("/loses-lease", Some("k"), "1")).await }
                });
                probe.started().await;
                store.force(Operation::Claim, Some(Fault::TakenOver));
                // A few renewal periods (a third of the 30 ms lease each) for one to find the key
                // taken over.
                tokio::time::sleep(Duration::from_millis(60)).await;
                probe.open();
                first.await.expect("first")
            }
        }
    }
}

const TYPES: &str = "https://docs.rs/idem/latest/idem/problem/index.html#";

/// The problem+json body each scenario always answered with, byte for byte (`None` for the `410`,
/// whose two extra members come in no fixed order).
fn problem_json_body(scenario: Scenario) -> Option<String> {
    let (slug, status, title, detail) = match scenario {
        Scenario::KeyInvalid => (
            "key-invalid",
            400,
            "Invalid idempotency key",
            "invalid `idempotency-key` header: the key is empty; send 1 or more visible ASCII characters",
        ),
        Scenario::KeyMissing => (
            "key-missing",
            400,
            "Idempotency key required",
            "this endpoint requires an `idempotency-key` header; send a unique key (a UUID, say) with each new request",
        ),
        Scenario::InFlight => (
            "request-in-flight",
            409,
            "Request in progress",
            "a request with this idempotency key is still being processed; retry later to receive its result",
        ),
        Scenario::KeyReused => (
            "key-reused",
            422,
            "Idempotency key reused",
            "this idempotency key was already used for a different request (method, path, query or body differ); use a new key for a new request",
        ),
        Scenario::NotKeptExact | Scenario::NotKept => return None,
        Scenario::StoreClaim | Scenario::StoreLookup => (
            "store-unavailable",
            503,
            "Idempotency store unavailable",
            "the request could not be recorded, so it was not processed; retry later with the same key",
        ),
        Scenario::Panicked
        | Scenario::AbortedAtOnce
        | Scenario::AbortedLater
        | Scenario::LeaseLost => (
            "handler-panicked",
            500,
            "Request failed",
            "the request failed unexpectedly and nothing was stored; it may be retried with the same key",
        ),
        Scenario::ResponseFailed => (
            "response-failed",
            500,
            "Response failed",
            "the response could not be produced and nothing was stored; it may be retried with the same key",
        ),
        Scenario::FingerprintFailed => (
            "fingerprint-failed",
            500,
            "Request could not be fingerprinted",
            "an input of this request could not be encoded for its idempotency fingerprint: this input cannot be serialized",
        ),
    };
    Some(format!(
        r#"{{"type":"{TYPES}{slug}","status":{status},"title":"{title}","detail":"{detail}"}}"#
    ))
}

const NOT_KEPT_DETAIL: &str = "the request with this idempotency key completed with status 201, but its 32-byte response body was too large to keep, so it cannot be replayed; the operation was not performed again";

/// Whether the kind's answer carries `Retry-After`.
fn retries(kind: ProblemKind) -> bool {
    matches!(
        kind,
        ProblemKind::RequestInFlight | ProblemKind::StoreUnavailable
    )
}

#[tokio::test]
async fn problem_json_is_the_default_and_its_bodies_are_unchanged() {
    for scenario in SCENARIOS {
        let answer = scenario.provoke(|builder| builder).await;
        let kind = scenario.kind();
        assert_eq!(
            answer.status,
            kind.status(),
            "{scenario:?}: {}",
            answer.text()
        );
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json"),
            "{scenario:?}"
        );
        assert_eq!(
            answer.header("content-length"),
            Some(answer.body.len().to_string().as_str()),
            "{scenario:?}"
        );
        match problem_json_body(scenario) {
            Some(body) => assert_eq!(answer.text(), body, "{scenario:?}"),
            None => assert_eq!(
                answer.json(),
                serde_json::json!({
                    "type": format!("{TYPES}response-not-kept"),
                    "status": 410,
                    "title": "Original response not kept",
                    "detail": NOT_KEPT_DETAIL,
                    "original_status": 201,
                    "body_bytes": 32,
                }),
                "{scenario:?}"
            ),
        }
        assert_eq!(
            answer.header("retry-after"),
            retries(kind).then_some("1"),
            "{scenario:?}"
        );
        assert!(!answer.is_replay());
    }
}

#[tokio::test]
async fn the_stripe_format_answers_with_stripes_types_and_statuses() {
    for scenario in SCENARIOS {
        let answer = scenario.provoke(|builder| builder.errors(Stripe)).await;
        let (status, kind, code) = match scenario.kind() {
            ProblemKind::KeyInvalid => (400, "invalid_request_error", "idempotency_key_invalid"),
            ProblemKind::KeyMissing => (400, "invalid_request_error", "idempotency_key_missing"),
            ProblemKind::RequestInFlight => {
                (409, "invalid_request_error", "idempotency_key_in_use")
            }
            ProblemKind::KeyReused => (400, "idempotency_error", "idempotency_key_reused"),
            ProblemKind::ResponseNotKept => {
                (410, "idempotency_error", "idempotency_response_not_kept")
            }
            ProblemKind::StoreUnavailable => (503, "api_error", "idempotency_store_unavailable"),
            ProblemKind::HandlerPanicked => (500, "api_error", "idempotency_handler_panicked"),
            ProblemKind::ResponseFailed => (500, "api_error", "idempotency_response_failed"),
            ProblemKind::FingerprintFailed => (500, "api_error", "idempotency_fingerprint_failed"),
            other => panic!("no scenario provokes {other:?}"),
        };
        assert_eq!(
            answer.status.as_u16(),
            status,
            "{scenario:?}: {}",
            answer.text()
        );
        assert_eq!(
            answer.header("content-type"),
            Some("application/json"),
            "{scenario:?}"
        );
        let body = answer.json();
        let error = &body["error"];
        assert_eq!(error["type"], kind, "{scenario:?}");
        assert_eq!(error["code"], code, "{scenario:?}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{scenario:?}: {body}"
        );
        if scenario.kind() == ProblemKind::ResponseNotKept {
            assert_eq!(error["message"], NOT_KEPT_DETAIL);
            assert_eq!(error["original_status"], 201);
            assert_eq!(error["body_bytes"], 32);
        } else {
            assert_eq!(
                error.as_object().map(|members| members.len()),
                Some(3),
                "{scenario:?}: {body}"
            );
        }
        assert_eq!(
            answer.header("retry-after"),
            retries(scenario.kind()).then_some("1"),
            "{scenario:?}"
        );
    }
}

/// The API's own format: plain text, the kind's slug in a header; no `Retry-After`.
fn plain(problem: &Problem) -> Response {
    (
        StatusCode::IM_A_TEAPOT,
        [("x-problem", problem.kind().slug())],
        format!("{}: {}", problem.title(), problem.detail()),
    )
        .into_response()
}

#[tokio::test]
async fn a_function_is_a_format_and_the_runtime_adds_retry_after() {
    for scenario in SCENARIOS {
        let answer = scenario.provoke(|builder| builder.errors(plain)).await;
        let kind = scenario.kind();
        assert_eq!(answer.status, StatusCode::IM_A_TEAPOT, "{scenario:?}");
        assert_eq!(
            answer.header("x-problem"),
            Some(kind.slug()),
            "{scenario:?}"
        );
        assert!(
            answer.text().starts_with(kind.title()),
            "{scenario:?}: {}",
            answer.text()
        );
        assert_eq!(
            answer.header("retry-after"),
            retries(kind).then_some("1"),
            "{scenario:?}"
        );
    }
}

/// A format with state of its own, which writes its own `Retry-After`.
struct Tagged {
    api: String,
}

impl ErrorFormat for Tagged {
    fn render(&self, problem: &Problem) -> Response {
        let body = serde_json::json!({
            "api": self.api,
            "kind": problem.kind().slug(),
            "status": problem.status().as_u16(),
            "retry_after": problem.retry_after().map(|after| after.as_secs()),
            "original_status": problem.original_status().map(|status| status.as_u16()),
            "body_bytes": problem.body_bytes(),
            "key_error": problem.key_error().map(ToString::to_string),
        });
        let mut response = (problem.status(), Json(body)).into_response();
        if problem.retry_after().is_some() {
            response
                .headers_mut()
                .insert("retry-after", "7".parse().expect("valid"));
        }
        response
    }
}

#[tokio::test]
async fn a_format_sees_every_member_of_the_problem_and_keeps_its_own_retry_after() {
    let tagged = || Tagged {
        api: "payments".to_owned(),
    };
    let answer = Scenario::InFlight
        .provoke(|builder| builder.errors(tagged()))
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.header("retry-after"), Some("7"), "not replaced");
    assert_eq!(answer.json()["api"], "payments");
    assert_eq!(answer.json()["retry_after"], 1);

    let answer = Scenario::NotKept
        .provoke(|builder| builder.errors(tagged()))
        .await;
    assert_eq!(answer.json()["original_status"], 201);
    assert_eq!(answer.json()["body_bytes"], 32);

    let answer = Scenario::KeyInvalid
        .provoke(|builder| builder.errors(tagged()))
        .await;
    assert_eq!(
        answer.json()["key_error"],
        "the key is empty; send 1 or more visible ASCII characters"
    );
    assert_eq!(answer.header("retry-after"), None);
}

// Per handler: the attribute's `errors` overrides the runtime-wide format, at each place that
// makes an answer.

#[idempotent(post, required, errors = idem::problem::Stripe)]
async fn stripe_required(Json(amount): Json<u64>) -> String {
    format!("charged {amount}")
}

#[idempotent(post, errors = plain)]
async fn plain_slow(State(probe): State<Probe>, Json(amount): Json<u64>) -> String {
    probe.run_gated().await;
    format!("charged {amount}")
}

#[idempotent(post, max_body_bytes = 4, errors = plain)]
async fn plain_big(Json(amount): Json<u64>) -> (StatusCode, String) {
    (
        StatusCode::CREATED,
        format!("a body longer than four bytes: {amount}"),
    )
}

#[idempotent(post, errors = plain)]
async fn plain_panics(Json(amount): Json<u64>) -> String {
    panic!("the handler panics for {amount}");
}

#[idempotent(post, errors = plain)]
async fn plain_unserializable(Json(_input): Json<Unserializable>) -> &'static str {
    "never"
}

/// The default, named: overrides a runtime-wide format for one handler.
#[idempotent(post, errors = idem::problem::ProblemJson)]
async fn problem_json_charge(Json(amount): Json<u64>) -> String {
    format!("charged {amount}")
}

#[tokio::test]
async fn the_attribute_chooses_the_format_of_one_handler() {
    let probe = Probe::default();
    // Forwarding `peek`, for the byte-identical retry below.
    let store = Arc::new(FaultyStore::memory().forwarding_peek());
    let app = app_with(
        Router::new()
            .route("/stripe-required", post(stripe_required))
            .route("/plain-slow", post(plain_slow))
            .route("/plain-big", post(plain_big))
            .route("/plain-panics", post(plain_panics))
            .route("/plain-unserializable", post(plain_unserializable))
            .route("/problem-json", post(problem_json_charge))
            .route("/charge", post(charge)),
        &probe,
        |builder| {
            builder.shared_store(store.clone()).errors(Tagged {
                api: "runtime-wide".to_owned(),
            })
        },
    );

    // The key's extractor.
    let missing = send(&app, post_request("/stripe-required", None, "1")).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.json()["error"]["code"], "idempotency_key_missing");

    // The claim: a duplicate in flight, and a reused key.
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_request("/plain-slow", Some("k"), "1")).await }
    });
    probe.started().await;
    let duplicate = send(&app, post_request("/plain-slow", Some("k"), "1")).await;
    assert_eq!(duplicate.header("x-problem"), Some("request-in-flight"));
    assert_eq!(duplicate.header("retry-after"), Some("1"));
    probe.open();
    first.await.expect("first");
    let reused = send(&app, post_request("/plain-slow", Some("k"), "2")).await;
    assert_eq!(reused.header("x-problem"), Some("key-reused"));

    // The store, refusing the claim.
    store.force(Operation::Claim, Some(Fault::FailBefore));
    let unavailable = send(&app, post_request("/plain-slow", Some("other"), "1")).await;
    assert_eq!(unavailable.header("x-problem"), Some("store-unavailable"));
    assert_eq!(unavailable.header("retry-after"), Some("1"));
    store.force(Operation::Claim, None);

    // A byte-identical retry (answered before the body is parsed) and another spelling (the
    // claim) of an answer too large to keep.
    send(&app, post_request("/plain-big", Some("big"), "1")).await;
    let exact = send(&app, post_request("/plain-big", Some("big"), "1")).await;
    assert_eq!(exact.header("x-problem"), Some("response-not-kept"));
    let spelled = send(&app, post_request("/plain-big", Some("big"), " 1")).await;
    assert_eq!(spelled.header("x-problem"), Some("response-not-kept"));

    // The handler, and the exchange.
    let panicked = send(&app, post_request("/plain-panics", Some("panics"), "1")).await;
    assert_eq!(panicked.header("x-problem"), Some("handler-panicked"));
    let unfingerprinted = send(
        &app,
        post_request("/plain-unserializable", Some("input"), "1"),
    )
    .await;
    assert_eq!(
        unfingerprinted.header("x-problem"),
        Some("fingerprint-failed")
    );

    // problem+json for one handler, the runtime-wide format for the others.
    send(&app, post_request("/problem-json", Some("problem"), "1")).await;
    let reused = send(&app, post_request("/problem-json", Some("problem"), "2")).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reused.text(),
        problem_json_body(Scenario::KeyReused).expect("a body")
    );
    send(&app, post_request("/charge", Some("charge"), "1")).await;
    let reused = send(&app, post_request("/charge", Some("charge"), "2")).await;
    assert_eq!(reused.json()["api"], "runtime-wide");
}

#[tokio::test]
async fn an_answer_in_another_format_is_not_stored() {
    let probe = Probe::default();
    let app = app_with(routes(), &probe, |builder| builder.errors(Stripe));
    let first = send(&app, post_request("/charge", Some("k"), "1")).await;
    let reused = send(&app, post_request("/charge", Some("k"), "2")).await;
    assert_eq!(reused.status, StatusCode::BAD_REQUEST);
    let retry = send(&app, post_request("/charge", Some("k"), "1")).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);

    // A panic's answer is not stored either: the retry runs the handler again.
    let panicked = send(&app, post_request("/panics", Some("p"), "1")).await;
    assert_eq!(panicked.status, StatusCode::INTERNAL_SERVER_ERROR);
    let again = send(&app, post_request("/panics", Some("p"), "1")).await;
    assert!(!again.is_replay());
}

#[test]
fn every_kind_has_an_example_in_every_built_in_format() {
    for &kind in ProblemKind::ALL {
        let problem = Problem::example(kind);
        assert_eq!(problem.kind(), kind);
        assert_eq!(problem.status(), kind.status());
        assert!(problem.type_url().ends_with(kind.slug()));
        let problem_json = idem::problem::ProblemJson.render(&problem);
        assert_eq!(problem_json.status(), kind.status());
        let stripe = Stripe.render(&problem);
        assert_eq!(stripe.headers()["content-type"], "application/json");
    }
}
