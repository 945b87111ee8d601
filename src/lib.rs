//! Make an axum handler safe to retry with one attribute.
//!
//! A client sends `Idempotency-Key: <unique key>` with a `POST`, `PUT` or `PATCH`. If the
//! connection drops, it sends the same request again with the same key and receives the first
//! result, replayed, instead of having the operation performed twice.
//!
//! The runtime's modules are re-exported here: [`key`], [`scope`], [`fingerprint`], [`store`],
//! [`replay`], [`problem`], [`config`] and [`execute`].

pub use idem_runtime::*;

pub use idem_macros::idempotent;

#[doc(hidden)]
pub use idem_runtime::__private;
