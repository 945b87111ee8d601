//! Execution: one request's way through the idempotency layer, one module per phase.
//!
//! ```text
//! prepare: key extraction ─► (no key) ───────────────────────► handler runs, nothing stored
//!    │ bad key → 400
//!    ▼
//! extract: body read ─► same bytes as a completed request ─► replay (nothing extracted)
//!    │ the handler's arguments; an extractor's rejection → its own answer
//!    ▼
//! claim(scope + key, fingerprint, token, lease)
//!    │ Fresh             → handler: run it, capture status, headers, body
//!    │                     → record: complete (or release) → answer
//!    │ InFlight, same fp → 409 + Retry-After (or wait for the result, under ConflictPolicy::Wait)
//!    │ InFlight, other   → 422
//!    │ Done, same fp     → replay, with Idempotent-Replayed: true
//!    │ Done, other       → 422
//!    │ store error       → 503, handler not run
//! ```
//!
//! - `prepare`: what a request brings before any of the handler's extractors runs: the key (a bad
//!   one answers `400`) and the scope; then the rest of the preparation (the settings, the
//!   fingerprint's start with the request line).
//! - `extract`: the handler's arguments, through one extractor, [`Arguments`], that reads the key
//!   first; for a handler whose every input is determined by the request's bytes, it reads the
//!   body into memory and answers a byte-identical retry with the replay itself, before any
//!   argument is extracted and before anything else is prepared.
//! - `context`: the request's state once its arguments are extracted, [`Context`], which feeds
//!   them to the fingerprint and runs the handler under the rules.
//! - `exchange`: claim, handler and completion as one unit that a client disconnect cannot cut
//!   short. It runs in place; what has to wait (a store call over the network, a handler that
//!   waits) moves into a task of its own.
//! - `claim`: the claim and what an existing record answers (replay, `409`, `422`, `410`).
//! - `handler`: the claimed request's handler runs; a panic or a failing body answers `500`.
//! - `record`: what the outcome writes to the store (complete or release), retried in the
//!   background when the store fails.
//! - `transaction`: the transactional mode (feature `postgres`): the handler runs in the claim's
//!   transaction, and the outcome is recorded in it before the answer goes out.
//!
//! Every outcome is a `tracing` event on the target `idem` with the field `outcome`.

mod claim;
mod context;
mod exchange;
mod extract;
mod handler;
mod prepare;
mod record;
mod transaction;

pub use self::context::{Context, HandlerConfig, InputProbe, ProbeInput, ProbeOther};
pub use self::extract::{Arguments, Extractors};
pub use self::prepare::KeyRejection;
