//! The transactional mode (feature `postgres`): a handler that takes an
//! `idem::postgres::Transaction` runs in the transaction of its request's claim, and the
//! completed record is written and committed in it before the answer goes out.
//!
//! [`Offer`] is made while [`Context`](super::Context) is extracted: when the configured store is
//! a `PostgresStore`, it leaves a slot in the request's extensions for the `Transaction`
//! extractor. If the handler took it, the exchange lends the claim's connection to the slot
//! before the handler runs ([`Offer::lend`]), takes it back after, and completes or releases in
//! it ([`Lent::finish`]). A request without a key gets a transaction of its own from the pool
//! ([`Offer::run_keyless`]). Without the feature every step is a no-op.

use axum::response::{IntoResponse, Response};
#[cfg(feature = "postgres")]
use {
    super::claim::with_timeout,
    crate::config::handler::HandlerOptions,
    crate::config::{Idempotency, Settings},
    crate::postgres::Slot,
    crate::problem::Problem,
    crate::store::{ClaimToken, PostgresStore, StoreError, StoreKey},
    futures_util::FutureExt as _,
    std::panic::AssertUnwindSafe,
    std::sync::Arc,
};

use super::record::Outcome;

/// What a request offers its handler: a slot for a `Transaction`, when the store is Postgres.
#[derive(Default)]
pub(super) struct Offer {
    #[cfg(feature = "postgres")]
    slot: Option<(Arc<Slot>, PostgresStore, Settings)>,
}

/// The claim's connection, lent to the handler through the slot.
#[derive(Default)]
pub(super) struct Lent {
    #[cfg(feature = "postgres")]
    slot: Option<(Arc<Slot>, PostgresStore)>,
}

impl Offer {
    /// Leaves a slot in `parts` when the configured store is a `PostgresStore`; `key` is the
    /// request's, if it takes part in idempotency.
    #[cfg(feature = "postgres")]
    pub(super) fn make(
        parts: &mut http::request::Parts,
        options: &HandlerOptions,
        key: Option<&StoreKey>,
    ) -> Self {
        let config = parts
            .extensions
            .get::<Idempotency>()
            .unwrap_or_else(|| Idempotency::global());
        let store: &dyn std::any::Any = &**config.store();
        let Some(store) = store.downcast_ref::<PostgresStore>() else {
            return Self::default();
        };
        let (store, settings) = (store.clone(), config.settings().with(options));
        let slot = Arc::new(Slot::new(key.cloned()));
        parts.extensions.insert(Arc::clone(&slot));
        Self {
            slot: Some((slot, store, settings)),
        }
    }

    #[cfg(not(feature = "postgres"))]
    pub(super) fn make(
        _parts: &mut http::request::Parts,
        _options: &crate::config::handler::HandlerOptions,
        _key: Option<&crate::store::StoreKey>,
    ) -> Self {
        Self::default()
    }

    /// Runs the handler of a request without a key: in a transaction of its own if it takes one.
    pub(super) async fn run_keyless<F>(self, handler: F) -> Response
    where
        F: Future,
        F::Output: IntoResponse,
    {
        #[cfg(feature = "postgres")]
        if let Some((slot, store, settings)) = self.slot
            && slot.wanted()
        {
            return keyless(&slot, &store, &settings, handler).await;
        }
        handler.await.into_response()
    }

    /// Lends the claim's connection to the handler, if it takes a `Transaction`. `Err` is the
    /// answer when no transaction could be begun: the handler must not run.
    #[cfg(feature = "postgres")]
    pub(super) async fn lend(self, key: &StoreKey, token: ClaimToken) -> Result<Lent, Response> {
        let Some((slot, store, settings)) = self.slot else {
            return Ok(Lent::default());
        };
        if !slot.wanted() {
            return Ok(Lent::default());
        }
        let lent = match with_timeout(&settings, "lend", store.lend(key, token)).await {
            Ok(Some(conn)) => conn,
            Ok(None) => {
                tracing::error!(target: "idem", outcome = "store_error", operation = "begin", key = %key.key(), "the claim's lease ran out before its handler started");
                return Err(settings.errors.render(&Problem::store_unavailable()));
            }
            Err(error) => {
                tracing::error!(target: "idem", outcome = "store_error", operation = "begin", key = %key.key(), %error, "could not begin the request's transaction; handler not run");
                return Err(settings.errors.render(&Problem::store_unavailable()));
            }
        };
        *slot.conn.lock().await = Some(lent);
        Ok(Lent {
            slot: Some((slot, store)),
        })
    }

    #[cfg(not(feature = "postgres"))]
    pub(super) async fn lend(
        self,
        _key: &crate::store::StoreKey,
        _token: crate::store::ClaimToken,
    ) -> Result<Lent, Response> {
        Ok(Lent::default())
    }
}

impl Lent {
    /// Whether the handler ran in the claim's transaction.
    pub(super) fn is_lent(&self) -> bool {
        #[cfg(feature = "postgres")]
        return self.slot.is_some();
        #[cfg(not(feature = "postgres"))]
        false
    }

    /// Takes the connection back and records `outcome` in its transaction: completes and commits,
    /// or rolls back and frees the key. Answers whether the outcome was kept as asked (`false`:
    /// a completion did not commit, and nothing of the request was kept).
    #[cfg(feature = "postgres")]
    pub(super) async fn finish(
        self,
        key: &StoreKey,
        token: ClaimToken,
        settings: &Settings,
        outcome: &Outcome,
    ) -> bool {
        let Some((slot, store)) = self.slot else {
            return true;
        };
        // The handler has returned, so nothing else should hold the connection; one that a task
        // of its still holds is closed when that task lets go, which frees the key.
        let conn = tokio::time::timeout(settings.store_timeout, slot.conn.lock())
            .await
            .ok()
            .and_then(|mut conn| conn.take());
        let Some(conn) = conn else {
            tracing::error!(target: "idem", outcome = "store_error", operation = "commit", key = %key.key(), "the request's transaction was still in use after its handler returned; rolled back");
            store.abandon_lent(key, token);
            return !matches!(outcome, Outcome::Complete(_));
        };
        match outcome {
            Outcome::Complete(completed) => {
                let committed = with_timeout(
                    settings,
                    "complete",
                    store.complete_lent(conn, key, token, completed, settings.ttl),
                )
                .await;
                match committed {
                    Ok(()) => {
                        tracing::info!(target: "idem", outcome = "executed", stored = true, transaction = true, key = %key.key(), status = completed.response.status().as_u16(), "response committed with the handler's writes");
                        true
                    }
                    Err(error) => {
                        log_commit_failed(key, &error);
                        store.abandon_lent(key, token);
                        false
                    }
                }
            }
            Outcome::Release => {
                if let Err(error) =
                    with_timeout(settings, "release", store.release_lent(conn, key, token)).await
                {
                    tracing::error!(target: "idem", outcome = "store_error", operation = "release", key = %key.key(), %error, "rollback failed; the connection is closed instead, which frees the key");
                    store.abandon_lent(key, token);
                }
                true
            }
        }
    }

    #[cfg(not(feature = "postgres"))]
    pub(super) async fn finish(
        self,
        _key: &crate::store::StoreKey,
        _token: crate::store::ClaimToken,
        _settings: &crate::config::Settings,
        _outcome: &Outcome,
    ) -> bool {
        true
    }
}

#[cfg(feature = "postgres")]
fn log_commit_failed(key: &StoreKey, error: &StoreError) {
    tracing::error!(target: "idem", outcome = "commit_failed", key = %key.key(), %error, "the request's transaction did not commit; nothing kept, key free");
}

/// A request without a key, whose handler takes a `Transaction`: one begun on the store's pool,
/// committed after the handler returns, rolled back if it panics (and the panic goes on).
#[cfg(feature = "postgres")]
async fn keyless<F>(slot: &Slot, store: &PostgresStore, settings: &Settings, handler: F) -> Response
where
    F: Future,
    F::Output: IntoResponse,
{
    let conn = match with_timeout(settings, "begin", store.begin_keyless()).await {
        Ok(conn) => conn,
        Err(error) => {
            tracing::error!(target: "idem", outcome = "store_error", operation = "begin", %error, "could not begin the request's transaction; handler not run");
            return settings.errors.render(&Problem::store_unavailable());
        }
    };
    *slot.conn.lock().await = Some(conn);
    let produced = AssertUnwindSafe(async { handler.await.into_response() })
        .catch_unwind()
        .await;
    let conn = tokio::time::timeout(settings.store_timeout, slot.conn.lock())
        .await
        .ok()
        .and_then(|mut conn| conn.take());
    match produced {
        Err(panic) => {
            if let Some(conn) = conn {
                let _ = store.rollback_keyless(conn).await;
            }
            std::panic::resume_unwind(panic)
        }
        Ok(response) => {
            let committed = match conn {
                Some(conn) => with_timeout(settings, "commit", store.commit_keyless(conn)).await,
                None => Err(StoreError::new(
                    "the request's transaction was still in use after its handler returned",
                )),
            };
            match committed {
                Ok(()) => response,
                Err(error) => {
                    tracing::error!(target: "idem", outcome = "commit_failed", %error, "the request's transaction did not commit; nothing kept");
                    settings.errors.render(&Problem::commit_failed())
                }
            }
        }
    }
}
