//! What is kept and what is replayed: the `keep` policy (all answers, all but `5xx`, or a status
//! predicate) and the lists of replayed headers (an allow-list and an extra deny list),
//! runtime-wide and per handler.

#![allow(missing_docs)]

mod support;

use axum::extract::State;
use axum::http::{HeaderName, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use idem::{Idempotency, KeepPolicy, idempotent};
use support::{Probe, app, app_with, post as post_request, send};

/// Answers the status it is sent, and counts its runs.
async fn answer(probe: &Probe, status: u16) -> (StatusCode, String) {
    let run = probe.run();
    (
        StatusCode::from_u16(status).expect("a status"),
        format!("run {run}"),
    )
}

#[idempotent(post)]
async fn runtime_default(
    State(probe): State<Probe>,
    Json(status): Json<u16>,
) -> (StatusCode, String) {
    answer(&probe, status).await
}

#[idempotent(post, keep = no_server_errors)]
async fn no_server_errors(
    State(probe): State<Probe>,
    Json(status): Json<u16>,
) -> (StatusCode, String) {
    answer(&probe, status).await
}

#[idempotent(post, keep = all)]
async fn keeps_all(State(probe): State<Probe>, Json(status): Json<u16>) -> (StatusCode, String) {
    answer(&probe, status).await
}

/// A `429` says "later": the retry should run again.
fn not_throttled(status: StatusCode) -> bool {
    status != StatusCode::TOO_MANY_REQUESTS
}

#[idempotent(post, keep = not_throttled)]
async fn unless_throttled(
    State(probe): State<Probe>,
    Json(status): Json<u16>,
) -> (StatusCode, String) {
    answer(&probe, status).await
}

#[idempotent(post, store_server_errors = false)]
async fn shorthand(State(probe): State<Probe>, Json(status): Json<u16>) -> (StatusCode, String) {
    answer(&probe, status).await
}

fn keep_routes() -> Router<Probe> {
    Router::new()
        .route("/default", post(runtime_default))
        .route("/no-server-errors", post(no_server_errors))
        .route("/all", post(keeps_all))
        .route("/unless-throttled", post(unless_throttled))
        .route("/shorthand", post(shorthand))
}

/// Whether the second of two identical requests to `path` answering `status` was a replay.
async fn kept(app: &Router, path: &str, status: u16) -> bool {
    let key = format!("{path}-{status}");
    let body = status.to_string();
    let first = send(app, post_request(path, Some(&key), &body)).await;
    assert_eq!(first.status.as_u16(), status);
    assert!(!first.is_replay());
    let retry = send(app, post_request(path, Some(&key), &body)).await;
    assert_eq!(retry.status.as_u16(), status);
    if retry.is_replay() {
        assert_eq!(retry.body, first.body, "the replay is the first answer");
        true
    } else {
        assert_ne!(retry.body, first.body, "the handler ran again");
        false
    }
}

#[tokio::test]
async fn every_answer_is_kept_by_default() {
    let probe = Probe::default();
    let app = app(keep_routes(), &probe);
    for status in [201, 404, 429, 500, 503] {
        assert!(kept(&app, "/default", status).await, "{status}");
    }
    assert_eq!(probe.runs(), 5);
}

#[tokio::test]
async fn the_attribute_chooses_which_answers_are_kept() {
    let probe = Probe::default();
    let app = app(keep_routes(), &probe);
    for (path, status, expected) in [
        ("/no-server-errors", 201, true),
        ("/no-server-errors", 429, true),
        ("/no-server-errors", 500, false),
        ("/no-server-errors", 503, false),
        ("/shorthand", 404, true),
        ("/shorthand", 502, false),
        ("/unless-throttled", 201, true),
        ("/unless-throttled", 500, true),
        ("/unless-throttled", 429, false),
    ] {
        assert_eq!(kept(&app, path, status).await, expected, "{path} {status}");
    }
}

#[tokio::test]
async fn the_runtime_wide_policy_applies_unless_the_attribute_says_otherwise() {
    let probe = Probe::default();
    let app = app_with(keep_routes(), &probe, |builder| {
        builder.keep(KeepPolicy::When(|status| status.is_success()))
    });
    assert!(kept(&app, "/default", 201).await);
    assert!(!kept(&app, "/default", 404).await);
    assert!(!kept(&app, "/default", 500).await);
    // The attribute's `keep = all` and `keep = no_server_errors` win.
    assert!(kept(&app, "/all", 404).await);
    assert!(kept(&app, "/all", 500).await);
    assert!(kept(&app, "/no-server-errors", 404).await);

    let app = app_with_shorthand(&probe);
    assert!(!kept(&app, "/default", 500).await);
    assert!(kept(&app, "/default", 400).await);
}

fn app_with_shorthand(probe: &Probe) -> Router {
    app_with(keep_routes(), probe, |builder| {
        builder.store_server_errors(false)
    })
}

// The replayed headers.

/// Answers with every header a handler of an API might set.
async fn with_headers(probe: &Probe) -> (StatusCode, [(&'static str, String); 6], String) {
    let run = probe.run();
    (
        StatusCode::CREATED,
        [
            ("location", format!("/charges/{run}")),
            ("x-request-id", format!("req-{run}")),
            ("x-ratelimit-remaining", format!("{}", 100 - run)),
            ("set-cookie", format!("session={run}")),
            ("etag", format!("\"v{run}\"")),
            ("connection", "x-hop".to_owned()),
        ],
        format!("charge {run}"),
    )
}

#[idempotent(post)]
async fn headers_default(
    State(probe): State<Probe>,
    Json(_body): Json<u64>,
) -> impl axum::response::IntoResponse {
    let (status, headers, body) = with_headers(&probe).await;
    (status, headers, [("x-hop", "1")], body)
}

#[idempotent(post, replay_except = ["x-ratelimit-remaining"])]
async fn headers_except(
    State(probe): State<Probe>,
    Json(_body): Json<u64>,
) -> impl axum::response::IntoResponse {
    with_headers(&probe).await
}

#[idempotent(post, replay_only = ["content-type", "location", "x-hop", "x-request-id"])]
async fn headers_only(
    State(probe): State<Probe>,
    Json(_body): Json<u64>,
) -> impl axum::response::IntoResponse {
    let (status, headers, body) = with_headers(&probe).await;
    (status, headers, [("x-hop", "1")], body)
}

fn header_routes() -> Router<Probe> {
    Router::new()
        .route("/default", post(headers_default))
        .route("/except", post(headers_except))
        .route("/only", post(headers_only))
}

/// The names of the headers of the replay of a request to `path`, after checking that the first
/// answer had all of them.
async fn replayed(app: &Router, path: &str) -> Vec<String> {
    let first = send(app, post_request(path, Some(path), "1")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    for name in [
        "location",
        "x-request-id",
        "x-ratelimit-remaining",
        "set-cookie",
        "etag",
    ] {
        assert!(
            first.headers.contains_key(name),
            "the first answer has {name}"
        );
    }
    // A byte-identical retry, and one spelled differently: both replays of the same record.
    let exact = send(app, post_request(path, Some(path), "1")).await;
    let spelled = send(app, post_request(path, Some(path), " 1")).await;
    assert!(exact.is_replay() && spelled.is_replay());
    assert_eq!(exact.headers, spelled.headers);
    assert_eq!(exact.body, first.body);
    let mut names: Vec<String> = exact
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name != "idempotent-replayed" && name != "content-length")
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn by_default_every_header_is_replayed_but_those_that_never_are() {
    let probe = Probe::default();
    let app = app(header_routes(), &probe);
    assert_eq!(
        replayed(&app, "/default").await,
        [
            "content-type",
            "etag",
            "location",
            "x-ratelimit-remaining",
            "x-request-id"
        ]
    );
    // The attribute's deny list.
    assert_eq!(
        replayed(&app, "/except").await,
        ["content-type", "etag", "location", "x-request-id"]
    );
    // The attribute's allow-list; `x-hop` is named by the answer's `Connection`, so hop-by-hop.
    assert_eq!(
        replayed(&app, "/only").await,
        ["content-type", "location", "x-request-id"]
    );
}

#[tokio::test]
async fn runtime_wide_lists_apply_and_a_handlers_deny_list_adds_to_them() {
    let probe = Probe::default();
    let app = app_with(header_routes(), &probe, |builder| {
        builder
            .replay_except([HeaderName::from_static("x-request-id")])
            .replay_only([
                HeaderName::from_static("content-type"),
                HeaderName::from_static("location"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("x-ratelimit-remaining"),
                HeaderName::from_static("etag"),
            ])
    });
    assert_eq!(
        replayed(&app, "/default").await,
        ["content-type", "etag", "location", "x-ratelimit-remaining"]
    );
    // Both deny lists.
    assert_eq!(
        replayed(&app, "/except").await,
        ["content-type", "etag", "location"]
    );
    // The handler's allow-list replaces the runtime-wide one; the runtime-wide deny list stays.
    assert_eq!(replayed(&app, "/only").await, ["content-type", "location"]);
}

#[test]
fn the_builder_refuses_to_replay_a_header_that_is_never_replayed() {
    for (name, why) in [
        ("set-cookie", "a session must not be handed out twice"),
        ("date", "the replay gets a date of its own"),
        (
            "connection",
            "it is a hop-by-hop header, about one connection",
        ),
        (
            "transfer-encoding",
            "it is a hop-by-hop header, about one connection",
        ),
        (
            "keep-alive",
            "it is a hop-by-hop header, about one connection",
        ),
        ("upgrade", "it is a hop-by-hop header, about one connection"),
    ] {
        let error = Idempotency::builder()
            .replay_only([
                HeaderName::from_static("location"),
                HeaderName::from_static(name),
            ])
            .build()
            .expect_err("refused");
        assert_eq!(
            error.to_string(),
            format!(
                "invalid idempotency configuration: replay_only may not name `{name}`: it is never replayed ({why})"
            )
        );
    }
    // Denying one is harmless.
    Idempotency::builder()
        .replay_except([HeaderName::from_static("set-cookie")])
        .build()
        .expect("valid");
}
