//! The claimed request's handler runs, and its answer is captured for the store.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;

use super::record::{Execution, Outcome};
use super::transaction::Offer;
use crate::problem::Problem;
use crate::replay::capture;
use crate::store::Completed;

impl Execution {
    /// Runs the handler to its end, records the outcome, and answers: the handler's response,
    /// or `500` when it panicked or its body failed (the key is then released). A handler that
    /// takes a `Transaction` runs in the claim's; if it does not commit, the answer is `503`.
    pub(super) async fn run<F>(mut self, handler: F, transaction: Offer) -> Response
    where
        F: Future + Send + 'static,
        F::Output: IntoResponse,
    {
        self.transaction = match transaction.lend(&self.key, self.token).await {
            Ok(lent) => lent,
            Err(response) => {
                self.record(Outcome::Release).await;
                return response;
            }
        };
        let max_body_bytes = self.settings.max_body_bytes;
        let produced = AssertUnwindSafe(async move {
            let response = handler.await.into_response();
            capture(response, max_body_bytes).await
        })
        .catch_unwind()
        .await;
        match produced {
            Err(_panic) => {
                tracing::error!(target: "idem", outcome = "panicked", key = %self.key.key(), "idempotent handler panicked; key released");
                self.record(Outcome::Release).await;
                Problem::handler_panicked().into_response()
            }
            Ok(Err(error)) => {
                tracing::error!(target: "idem", outcome = "response_failed", key = %self.key.key(), %error, "response body failed; key released");
                self.record(Outcome::Release).await;
                Problem::response_failed().into_response()
            }
            Ok(Ok((first, stored))) => {
                if stored.status().is_server_error() && !self.settings.store_server_errors {
                    tracing::info!(target: "idem", outcome = "executed", stored = false, key = %self.key.key(), status = stored.status().as_u16(), "server error not stored; key released");
                    self.record(Outcome::Release).await;
                } else {
                    let completed = Arc::new(Completed {
                        fingerprint: self.fingerprint,
                        request_digest: self.digest,
                        response: stored,
                    });
                    if !self.record(Outcome::Complete(completed)).await {
                        return Problem::commit_failed().into_response();
                    }
                }
                first
            }
        }
    }
}
