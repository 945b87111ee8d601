//! Make an axum handler safe to retry with one attribute.
//!
//! A client sends `Idempotency-Key: <unique key>` with a `POST`, `PUT` or `PATCH`. If the
//! connection drops, it sends the same request again with the same key and receives the first
//! answer, replayed, instead of having the operation performed twice.
//!
//! ```
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode};
//! use axum::routing::post;
//! use axum::{Json, Router};
//! use idem::idempotent;
//! use serde::{Deserialize, Serialize};
//! use tower::ServiceExt;
//!
//! #[derive(Deserialize, Serialize)]
//! struct NewCharge {
//!     amount: u64,
//! }
//!
//! #[idempotent(post)]
//! async fn create_charge(Json(charge): Json<NewCharge>) -> (StatusCode, String) {
//!     // Runs once per key, even when the client retries.
//!     (StatusCode::CREATED, format!("charged {}", charge.amount))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let app = Router::new().route("/charges", post(create_charge));
//!
//! let charge = || {
//!     Request::post("/charges")
//!         .header("content-type", "application/json")
//!         .header("idempotency-key", "order-17")
//!         .body(Body::from(r#"{"amount": 1200}"#))
//!         .unwrap()
//! };
//! let first = app.clone().oneshot(charge()).await.unwrap();
//! assert_eq!(first.status(), StatusCode::CREATED);
//!
//! let retry = app.oneshot(charge()).await.unwrap();
//! assert_eq!(retry.status(), StatusCode::CREATED);
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! # }
//! ```
//!
//! What happens to a request:
//!
//! - no key: the handler runs as if the attribute were not there (unless the key is `required`);
//! - a bad key (empty, too long, not visible ASCII, sent twice): `400`, before the body is read;
//! - a new key: the handler runs to completion, even if the client goes away, and its answer —
//!   `2xx`, `4xx` or `5xx` — is kept for the handler's `ttl`;
//! - the same key and the same request again: the kept answer, byte for byte, with
//!   `Idempotent-Replayed: true`;
//! - the same key while the first request still runs: `409` with `Retry-After` (or the first
//!   answer, with `conflict = wait`);
//! - the same key for a different request (other body, path, query or route): `422`;
//! - a handler that panics: `500`, and the key is released for a retry.
//!
//! Keys are scoped to the caller (the digest of `Authorization` by default), so one caller never
//! receives another's answer. Every answer the layer makes itself is
//! `application/problem+json` by default, or in the API's own format (Stripe's, or one of its
//! own): see [`problem`].
//!
//! # The attribute
//!
//! [`macro@idempotent`] takes these options, each described on its page; every one that is left
//! out takes the application's default.
//!
//! ```
//! use axum::http::request::Parts;
//! use axum::routing::post;
//! use axum::{Json, Router};
//! use idem::{Scope, idempotent};
//!
//! fn tenant_scope(parts: &Parts) -> Scope {
//!     match parts.headers.get("x-tenant") {
//!         Some(tenant) => Scope::from_identity(tenant.as_bytes()),
//!         None => Scope::ANONYMOUS,
//!     }
//! }
//!
//! #[idempotent(
//!     post, put, patch,            // the methods it applies to (default: all three)
//!     ttl = "7d",                  // how long an answer is kept (default: 24 h)
//!     lease = "30s",               // how long a crashed request holds its key (default: 15 s)
//!     max_hold = "2h",             // the longest a running request keeps it (default: 1 h)
//!     max_key_len = 64,            // 1..=1024 (default: 255)
//!     required,                    // no key: 400 (default: the key is optional)
//!     header = "X-Request-Key",    // default: Idempotency-Key
//!     scope = tenant_scope,        // default: the digest of Authorization
//!     keep = no_server_errors,     // 5xx releases the key (default: all, 5xx is kept)
//!     replay_except = ["x-request-id"], // headers not replayed (default: all but Set-Cookie, …)
//!     errors = idem::problem::Stripe,   // the error format (default: problem+json)
//!     conflict = wait,             // a duplicate waits for the answer (default: reject, 409)
//!     wait_timeout = "10s",        // how long it waits (default: 30 s)
//!     max_body_bytes = 65_536,     // the largest body kept for replay (default: 1 MiB)
//!     crate = "::idem",            // the path of this crate, if renamed
//! )]
//! async fn upsert_payout(Json(amount): Json<u64>) -> String {
//!     format!("payout of {amount}")
//! }
//!
//! let app: Router = Router::new().route(
//!     "/payouts",
//!     post(upsert_payout).put(upsert_payout).patch(upsert_payout),
//! );
//! ```
//!
//! # Application-wide settings
//!
//! Without configuration, handlers share a process-wide in-memory store. An application chooses
//! its store, its scope source and its defaults once, with [`Idempotency`]:
//!
//! ```
//! use std::time::Duration;
//! use axum::routing::post;
//! use axum::{Extension, Router};
//! use idem::{Idempotency, MemoryStore, idempotent};
//!
//! #[idempotent(post)]
//! async fn create_refund(body: String) -> String {
//!     body
//! }
//!
//! let idempotency = Idempotency::builder()
//!     .store(MemoryStore::builder().max_bytes(64 * 1024 * 1024).build())
//!     .ttl(Duration::from_secs(48 * 3600))
//!     .build()
//!     .expect("valid settings");
//! let app: Router = Router::new()
//!     .route("/refunds", post(create_refund))
//!     .layer(Extension(idempotency));
//! ```
//!
//! An application with one configuration can instead make it the process-wide one with
//! [`Idempotency::install`], before it serves: its routers then need no layer, which saves every
//! request the extension's cost.
//!
//! # Fitting into the API
//!
//! - Error answers in the API's own format: problem+json by default, Stripe's envelope, or the
//!   API's own ([`problem`]), runtime-wide with [`IdempotencyBuilder::errors`] or per handler with
//!   `errors = ..`.
//! - What is kept and replayed: the [`KeepPolicy`] (`keep = ..`) and the lists of replayed headers
//!   ([`replay::ReplayHeaders`], `replay_only = [..]`, `replay_except = [..]`).
//! - Metrics, with the `metrics` feature: `idem_requests_total{route, outcome}` and
//!   `idem_store_seconds{operation}` ([`metrics`]).
//! - OpenAPI, with the `utoipa` feature: `openapi::Idempotent` documents each idempotent
//!   operation's key header, replay marker and answers in the API's utoipa document.
//!
//! The runtime's modules are re-exported here: [`key`], [`scope`], [`fingerprint`], [`store`],
//! [`replay`], [`problem`], [`config`] and [`metrics`] (and `openapi`, with the `utoipa`
//! feature).

pub use idem_runtime::*;

/// Makes an axum handler safe to retry; see the [crate documentation](crate) for an overview.
#[doc(inline)]
pub use idem_macros::idempotent;

#[doc(hidden)]
pub use idem_runtime::__private;
