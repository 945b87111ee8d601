//! Capture and replay for any response: status, headers and body come back byte-exact, minus
//! `Set-Cookie`, `Date` and the hop-by-hop headers; the stored record survives its binary encoding;
//! and decoding arbitrary bytes never panics.

#![allow(missing_docs)]

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use idem_runtime::problem::Problem;
use idem_runtime::replay::{NotKept, REPLAYED, StoredBody, StoredResponse, capture, is_replayable};
use proptest::prelude::*;

/// The headers a replay must never carry.
const NOT_REPLAYED: [&str; 11] = [
    "set-cookie",
    "date",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn header_name() -> impl Strategy<Value = HeaderName> {
    prop_oneof![
        2 => prop::sample::select(NOT_REPLAYED.to_vec()).prop_map(HeaderName::from_static),
        1 => prop::sample::select(vec!["content-type", "location", "x-request-id", "etag"])
            .prop_map(HeaderName::from_static),
        3 => "[a-z0-9!#$%&'*+.^_`|~-]{1,20}"
            .prop_filter("not the replay marker", |name| name != REPLAYED.as_str())
            .prop_map(|name| HeaderName::from_bytes(name.as_bytes()).unwrap()),
    ]
}

/// Any value `http` accepts: visible ASCII, space, tab and opaque bytes `0x80..=0xFF`.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop::collection::vec(
        prop_oneof![0x20u8..=0x7E, Just(b'\t'), 0x80u8..=0xFF],
        0..40,
    )
    .prop_map(|bytes| HeaderValue::from_bytes(&bytes).unwrap())
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec((header_name(), header_value()), 0..16).prop_map(|pairs| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name, value);
        }
        headers
    })
}

fn status() -> impl Strategy<Value = StatusCode> {
    (100u16..=999).prop_map(|code| StatusCode::from_u16(code).unwrap())
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..2048)
}

fn stored_response() -> impl Strategy<Value = StoredResponse> {
    (status(), headers(), body(), any::<Option<u64>>()).prop_map(
        |(status, headers, body, dropped)| match dropped {
            Some(len) => StoredResponse::without_body(status, &headers, len),
            None => StoredResponse::new(status, &headers, Bytes::from(body)),
        },
    )
}

/// The header names a `Connection` header lists: hop-by-hop too, never replayed.
fn named_by_connection(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names = Vec::new();
    for value in headers.get_all("connection") {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) {
                names.push(name);
            }
        }
    }
    names
}

/// What a retry of `stored` is answered: the replay, or the `410` problem of a body not kept.
fn replay_or_problem(stored: &StoredResponse) -> Response {
    match stored.replay() {
        Ok(replay) => replay,
        Err(NotKept { status, len }) => Problem::response_not_kept(status, len).into_response(),
    }
}

fn response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Response {
    let mut response = Response::new(Body::from(body.to_vec()));
    *response.status_mut() = status;
    *response.headers_mut() = headers.clone();
    response
}

async fn read(response: Response) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_response_is_answered_whole_and_replayed_byte_exact(
        status in status(),
        headers in headers(),
        body in body(),
        cap in prop_oneof![Just(usize::MAX), 0usize..2048],
    ) {
        let (first, stored) = block_on(capture(response(status, &headers, &body), cap)).unwrap();

        // The first caller gets the response exactly as the handler made it.
        let (first_status, first_headers, first_body) = block_on(read(first));
        prop_assert_eq!(first_status, status);
        prop_assert_eq!(&first_headers, &headers);
        prop_assert_eq!(&first_body[..], &body[..]);

        let named = named_by_connection(&headers);
        let mut expected = headers;
        for name in &named {
            expected.remove(name);
        }
        for name in NOT_REPLAYED {
            expected.remove(name);
        }
        // A kept body's length is stored with it, unless the handler set one, or its status may
        // carry none.
        let may_carry = !status.is_informational()
            && status != StatusCode::NO_CONTENT
            && status != StatusCode::NOT_MODIFIED;
        if body.len() <= cap
            && !body.is_empty()
            && may_carry
            && !expected.contains_key(CONTENT_LENGTH)
            && !named.contains(&CONTENT_LENGTH)
        {
            expected.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        prop_assert_eq!(stored.headers(), expected.clone());
        prop_assert_eq!(stored.status(), status);

        let (replay_status, replay_headers, replay_body) = block_on(read(replay_or_problem(&stored)));
        if body.len() <= cap {
            prop_assert_eq!(stored.body(), StoredBody::Kept(Bytes::from(body.clone())));
            prop_assert_eq!(replay_status, status);
            prop_assert_eq!(&replay_body[..], &body[..]);
            expected.insert(REPLAYED, HeaderValue::from_static("true"));
            prop_assert_eq!(replay_headers, expected);
        } else {
            // Too large to keep: never a truncated replay, but a problem that says what happened.
            prop_assert_eq!(stored.body(), StoredBody::Dropped { len: body.len() as u64 });
            prop_assert_eq!(replay_status, StatusCode::GONE);
            prop_assert_eq!(&replay_headers["content-type"], "application/problem+json");
            let problem: serde_json::Value = serde_json::from_slice(&replay_body).unwrap();
            prop_assert_eq!(&problem["original_status"], status.as_u16());
            prop_assert_eq!(&problem["body_bytes"], body.len());
        }
    }

    #[test]
    fn the_replay_filter_drops_exactly_the_listed_headers(name in header_name()) {
        prop_assert_eq!(is_replayable(&name), !NOT_REPLAYED.contains(&name.as_str()));
    }

    #[test]
    fn any_record_survives_its_binary_encoding(stored in stored_response()) {
        let decoded = StoredResponse::decode(&stored.encode()).unwrap();
        prop_assert_eq!(decoded, stored);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = StoredResponse::decode(&bytes);
    }

    #[test]
    fn a_damaged_record_is_refused_or_read_without_panicking(
        stored in stored_response(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let encoded = stored.encode();
        // Any strict prefix is a truncated record.
        let cut = cut.index(encoded.len());
        prop_assert!(StoredResponse::decode(&encoded[..cut]).is_err());
        // Overwritten bytes give an error or some record, never a panic.
        let mut damaged = encoded;
        for (at, byte) in flips {
            let at = at.index(damaged.len());
            damaged[at] = byte;
        }
        let _ = StoredResponse::decode(&damaged);
    }
}

/// A record as `encode` lays it out, with `names` distinct header names: more than a `HeaderMap`
/// can hold, so no store could have written it.
fn record_with_headers(names: u32) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend_from_slice(&200u16.to_le_bytes());
    out.extend_from_slice(&names.to_le_bytes());
    for n in 0..names {
        let name = format!("h{n}");
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.push(b'v');
    }
    out.push(0);
    out.extend_from_slice(&0u64.to_le_bytes());
    out
}

#[test]
fn a_record_of_the_first_format_reads_back() {
    let decoded = StoredResponse::decode(&record_with_headers(1)).unwrap();
    assert_eq!(decoded.status(), StatusCode::OK);
    assert_eq!(decoded.headers()["h0"], "v");
    // The first format is what `encode` writes: the request digest is kept beside the response.
    assert_eq!(decoded.encode(), record_with_headers(1));
}

#[test]
fn a_record_of_the_second_format_reads_back_its_digest_skipped() {
    let stored = StoredResponse::new(StatusCode::CREATED, &HeaderMap::new(), "{}".into());
    let mut second = stored.encode();
    second[0] = 2;
    second.push(1);
    second.extend_from_slice(&[9; 32]);
    assert_eq!(StoredResponse::decode(&second).unwrap(), stored);
    let mut without = stored.encode();
    without[0] = 2;
    without.push(0);
    assert_eq!(StoredResponse::decode(&without).unwrap(), stored);

    // An unknown digest marker is refused, not guessed at.
    let marker = second.len() - 33;
    second[marker] = 7;
    let error = StoredResponse::decode(&second).unwrap_err();
    assert!(error.to_string().contains("digest"), "{error}");
}

#[test]
fn headers_named_by_the_responses_connection_header_are_not_replayed() {
    let mut headers = HeaderMap::new();
    headers.insert("connection", HeaderValue::from_static("x-hop, Keep-Alive"));
    headers.insert("x-hop", HeaderValue::from_static("1"));
    headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    headers.insert("x-end-to-end", HeaderValue::from_static("2"));
    let stored = StoredResponse::new(StatusCode::OK, &headers, "{}".into());
    assert_eq!(stored.headers().len(), 2, "{:?}", stored.headers());
    assert_eq!(stored.headers()["x-end-to-end"], "2");
    assert_eq!(
        stored.headers()["content-length"],
        "2",
        "the kept body's length"
    );
    let replay = stored.replay().unwrap();
    assert!(replay.headers().get("x-hop").is_none());
    assert_eq!(replay.headers()["x-end-to-end"], "2");
}

#[test]
fn a_record_with_more_headers_than_a_header_map_holds_is_refused() {
    // 40 000 distinct names is past `http`'s limit of 32 768 entries.
    assert!(StoredResponse::decode(&record_with_headers(40_000)).is_err());
    // A record within the limit still reads back.
    let decoded = StoredResponse::decode(&record_with_headers(100)).unwrap();
    assert_eq!(decoded.headers().len(), 100);
}
