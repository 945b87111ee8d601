//! What the benchmarks of this directory share: the trivial charge handler the in-process benches
//! mount, and a store filled to its bound before a run, so that every first execution of the run
//! evicts a record, as it does in a service that has run for a while.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use idem::fingerprint::{Fingerprint, RequestDigest};
use idem::key::IdempotencyKey;
use idem::replay::StoredResponse;
use idem::scope::Scope;
use idem::store::{ClaimToken, Completed, IdempotencyStore, MemoryStore, StoreKey};
use serde::{Deserialize, Serialize};

/// A charge with line items: the request body.
#[derive(Serialize, Deserialize)]
pub struct NewCharge {
    pub amount: u64,
    pub currency: String,
    pub customer: String,
    pub description: String,
    pub items: Vec<Item>,
}

#[derive(Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: u64,
}

#[derive(Serialize)]
pub struct Receipt {
    pub id: &'static str,
    pub amount: u64,
    pub items: usize,
}

/// The trivial handler: reads the charge, answers a small receipt.
pub async fn charge(Json(request): Json<NewCharge>) -> Json<Receipt> {
    Json(Receipt {
        id: "ch_1",
        amount: request.amount,
        items: request.items.len(),
    })
}

/// The body of `response`, read to its end, as a client would.
pub async fn read_body(response: Response<Body>) -> Bytes {
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
}

/// A completed record like the one a JSON handler leaves: `status`, a JSON content type, `body`,
/// and the digest of an exact request.
pub fn record(status: StatusCode, body: &'static [u8]) -> Arc<Completed> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Arc::new(Completed {
        fingerprint: Fingerprint::from_bytes([0x42; 32]),
        request_digest: Some(RequestDigest::from_bytes([0x24; 32])),
        response: StoredResponse::new(status, &headers, body.into()),
    })
}

/// A key no request of a benchmark sends: `prefill-<n>`.
pub fn prefill_key(n: u64) -> StoreKey {
    let name = format!("prefill-{n}");
    StoreKey::new(
        Scope::ANONYMOUS,
        IdempotencyKey::parse(name.as_bytes(), 255).expect("valid key"),
    )
}

/// Claims and completes keys no request sends, each with a record like [`record`]'s, until the
/// store holds 99 % of its bound; returns how many.
pub fn prefill(store: &MemoryStore, status: StatusCode, body: &'static [u8]) -> u64 {
    let now = store.immediate().expect("the memory store answers at once");
    let lease = Duration::from_secs(60);
    let ttl = Duration::from_secs(24 * 3600);
    let bound = store.max_bytes() * 99 / 100;
    let mut n = 0;
    while store.weighted_size() < bound {
        for _ in 0..10_000 {
            n += 1;
            let key = prefill_key(n);
            let token = ClaimToken::random();
            let record = record(status, body);
            now.claim_now(&key, &record.fingerprint, token, lease)
                .expect("claim");
            now.complete_now(&key, token, record, ttl)
                .expect("complete");
        }
    }
    n
}
