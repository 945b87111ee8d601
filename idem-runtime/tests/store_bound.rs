//! The in-memory store is bounded in bytes: a flood of unique keys evicts old records.

#[path = "support/claims.rs"]
mod claims;

use std::time::Duration;

use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::key::IdempotencyKey;
use idem_runtime::replay::StoredResponse;
use idem_runtime::scope::Scope;
use idem_runtime::store::{Completion, MemoryStore, StoreKey};

use crate::claims::{Claimed, Claims as _};

const BOUND: u64 = 256 * 1024;

#[tokio::test]
async fn weighted_size_stays_under_the_bound_under_a_flood() {
    let store = MemoryStore::builder().max_bytes(BOUND).build();
    let body = bytes::Bytes::from(vec![b'x'; 2048]);
    for n in 0..2000u32 {
        let key = StoreKey::new(
            Scope::ANONYMOUS,
            IdempotencyKey::parse(format!("flood-{n}").as_bytes(), 255).unwrap(),
        );
        let fp = Fingerprint::from_bytes([1; 32]);
        let Claimed::Fresh(token) = store
            .claim_new(&key, &fp, Duration::from_secs(60))
            .await
            .unwrap()
        else {
            panic!("unique key {n} was not fresh");
        };
        let response = StoredResponse::new(
            http::StatusCode::CREATED,
            &http::HeaderMap::new(),
            body.clone(),
        );
        let done = store
            .complete_response(&key, token, &fp, &response, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(done, Completion::Stored);
    }
    let size = store.weighted_size();
    assert!(size <= BOUND, "{size} bytes held, bound {BOUND}");
    // Records of more than 2 KiB each: at most 128 fit in 256 KiB, the rest were evicted.
    let count = store.entry_count();
    assert!(count > 0 && count <= BOUND / 2048, "{count} records held");
}
