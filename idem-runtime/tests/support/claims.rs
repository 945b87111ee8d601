//! The store operations in the shape the store tests read best in: a claim draws its own token
//! and hands it back when fresh, a completion takes a response and builds its record.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use idem_runtime::fingerprint::Fingerprint;
use idem_runtime::replay::StoredResponse;
use idem_runtime::store::{
    Claim, ClaimToken, Completed, Completion, IdempotencyStore, Record, StoreError, StoreKey,
};

/// What a claim with a new token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The key is now held under this token.
    Fresh(ClaimToken),
    /// Another request holds or completed it.
    Existing(Record),
}

#[async_trait]
pub trait Claims {
    /// Claims `key` under a new random token.
    async fn claim_new(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<Claimed, StoreError>;

    /// Completes the claim `token` with `response` for a request with `fingerprint`.
    async fn complete_response(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        fingerprint: &Fingerprint,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<Completion, StoreError>;
}

#[async_trait]
impl<S: IdempotencyStore + ?Sized> Claims for S {
    async fn claim_new(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<Claimed, StoreError> {
        let token = ClaimToken::random();
        Ok(match self.claim(key, fingerprint, token, lease).await? {
            Claim::Fresh => Claimed::Fresh(token),
            Claim::Existing(record) => Claimed::Existing(record),
        })
    }

    async fn complete_response(
        &self,
        key: &StoreKey,
        token: ClaimToken,
        fingerprint: &Fingerprint,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<Completion, StoreError> {
        let completed = Completed {
            fingerprint: *fingerprint,
            request_digest: None,
            response: response.clone(),
        };
        self.complete(key, token, Arc::new(completed), ttl).await
    }
}
