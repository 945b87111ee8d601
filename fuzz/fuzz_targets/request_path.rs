//! The request path: header bytes and a body, through the payments example's router, twice.
//!
//! Input layout (so that seeds can be written by hand): one flag byte, then the key up to the
//! first `\n`, the `Authorization` value up to the next `\n`, and the body (the rest).
//!
//! | flag bits | meaning |
//! |---|---|
//! | 0-1 | route: `/charges`, `/charges/ch_1`, `/quotes`, `/refunds` |
//! | 2-3 | method: `POST`, `PATCH`, `PUT`, `GET` |
//! | 4 | send the `Idempotency-Key` header |
//! | 5 | send it twice |
//! | 6 | send `Authorization` |
//! | 7 | leave out `Content-Type: application/json` |
//!
//! Whatever the input: nothing panics, no request is answered with a panic or a store failure, a
//! bad key is a `400` that runs nothing, and a valid key runs the handler at most once over the two
//! sends, the second being a byte-exact replay of the first (or the same refusal).
#![no_main]

#[path = "../../examples/payments/app.rs"]
#[allow(dead_code)]
mod app;

use std::sync::OnceLock;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use idem::config::Idempotency;
use idem::key::IdempotencyKey;
use idem::store::MemoryStore;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// One runtime for every input, with time paused: the example's `delay_ms` costs nothing.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}

struct Case<'a> {
    path: &'static str,
    method: Method,
    key: Option<&'a [u8]>,
    key_twice: bool,
    authorization: Option<&'a [u8]>,
    json: bool,
    body: &'a [u8],
}

impl<'a> Case<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        let (&flags, rest) = data.split_first()?;
        let mut parts = rest.splitn(3, |&b| b == b'\n');
        let key = parts.next().unwrap_or_default();
        let authorization = parts.next().unwrap_or_default();
        let body = parts.next().unwrap_or_default();
        Some(Self {
            path: ["/charges", "/charges/ch_1", "/quotes", "/refunds"][usize::from(flags & 3)],
            method: [Method::POST, Method::PATCH, Method::PUT, Method::GET]
                [usize::from((flags >> 2) & 3)]
            .clone(),
            key: (flags & 0x10 != 0).then_some(key),
            key_twice: flags & 0x20 != 0,
            authorization: (flags & 0x40 != 0).then_some(authorization),
            json: flags & 0x80 == 0,
            body,
        })
    }

    fn request(&self) -> Option<Request<Body>> {
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(self.path)
            .body(Body::from(self.body.to_vec()))
            .ok()?;
        let headers = request.headers_mut();
        if self.json {
            headers.insert("content-type", HeaderValue::from_static("application/json"));
        }
        if let Some(key) = self.key {
            // Bytes no HTTP/1 parser lets through never reach a router.
            let value = HeaderValue::from_bytes(key).ok()?;
            headers.append("idempotency-key", value.clone());
            if self.key_twice {
                headers.append("idempotency-key", value);
            }
        }
        if let Some(authorization) = self.authorization {
            headers.insert(
                "authorization",
                HeaderValue::from_bytes(authorization).ok()?,
            );
        }
        Some(request)
    }

    /// Whether the route has an idempotent handler for the method.
    fn is_idempotent(&self) -> bool {
        matches!(
            (self.path, &self.method),
            ("/charges" | "/quotes" | "/refunds", &Method::POST)
                | ("/charges/ch_1", &Method::PATCH)
        )
    }
}

struct Answer {
    status: StatusCode,
    replayed: bool,
    problem_type: Option<String>,
    body: Bytes,
}

async fn read(response: Response) -> Answer {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .expect("bodies are in memory")
        .to_bytes();
    let problem_type = (parts.headers.get("content-type")
        == Some(&HeaderValue::from_static("application/problem+json")))
    .then(|| {
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("problem is JSON");
        problem["type"]
            .as_str()
            .expect("problem has a type")
            .to_owned()
    });
    Answer {
        status: parts.status,
        replayed: parts.headers.get("idempotent-replayed").is_some(),
        problem_type,
        body,
    }
}

fn is_problem(answer: &Answer, slug: &str) -> bool {
    answer
        .problem_type
        .as_deref()
        .is_some_and(|ty| ty.ends_with(&format!("#{slug}")))
}

async fn check(case: Case<'_>) {
    let Some(first_request) = case.request() else {
        return;
    };
    let payments = app::Payments::default();
    let idempotency = Idempotency::builder()
        .store(MemoryStore::default())
        .build()
        .expect("valid settings");
    let router = app::router(payments.clone()).layer(Extension(idempotency));
    // A charge to update, made without a key.
    let seed = Request::post("/charges")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"amount":1,"currency":"eur"}"#))
        .expect("request");
    assert_eq!(
        router.clone().oneshot(seed).await.unwrap().status(),
        StatusCode::CREATED
    );
    let before = payments.executions();

    let first = read(router.clone().oneshot(first_request).await.unwrap()).await;
    let second_request = case.request().expect("built once already");
    let second = read(router.clone().oneshot(second_request).await.unwrap()).await;
    let ran = payments.executions() - before;

    for answer in [&first, &second] {
        for never in [
            "handler-panicked",
            "response-failed",
            "store-unavailable",
            "fingerprint-failed",
        ] {
            assert!(!is_problem(answer, never), "answered {never}");
        }
    }
    if !case.is_idempotent() {
        return;
    }
    let key = match case.key {
        None => None,
        Some(_) if case.key_twice => Some(Err(())),
        Some(bytes) => Some(IdempotencyKey::parse(bytes, 255).map_err(|_| ())),
    };
    match key {
        Some(Err(())) => {
            assert!(
                is_problem(&first, "key-invalid") && first.status == StatusCode::BAD_REQUEST,
                "a bad key was answered {} {:?}",
                first.status,
                String::from_utf8_lossy(&first.body)
            );
            assert!(is_problem(&second, "key-invalid"));
            assert_eq!(ran, 0, "a bad key ran the handler");
        }
        None if case.path == "/refunds" => {
            assert!(
                is_problem(&first, "key-missing"),
                "a required key was not asked for"
            );
            assert_eq!(ran, 0);
        }
        None => assert!(!first.replayed && !second.replayed),
        Some(Ok(_)) => {
            assert!(ran <= 1, "the handler ran {ran} times for one key");
            assert!(!first.replayed, "a first answer is marked as a replay");
            assert_eq!(first.status, second.status);
            assert_eq!(first.body, second.body);
            assert_eq!(second.replayed, ran == 1, "replayed exactly what ran");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(case) = Case::parse(data) {
        runtime().block_on(check(case));
    }
});
