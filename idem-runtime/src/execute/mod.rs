//! Execution: one request's way through the idempotency layer, one module per phase.
//!
//! ```text
//! prepare: key extraction ─► (no key) ───────────────────────► handler runs, nothing stored
//!    │ bad key → 400
//!    ▼
//! body: read ─► same bytes as a completed request ───────────► replay (body not parsed)
//!    │ parse the body; extractor rejection → its own answer
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
//! - `prepare`: what `#[idempotent]`'s first extractor, [`Context`], reads before any other
//!   extractor runs: the key (a bad one answers `400`) and the scope; then the rest of the
//!   preparation (the settings, the fingerprint's start with the request line), at once, or by
//!   the last argument for a handler whose every input is determined by the request's bytes.
//! - `body`: the handler's last argument, through [`Last`]: for such a handler its body is read
//!   into memory first, and a byte-identical retry is answered with the replay by the extractor
//!   itself, before the body is parsed and before anything else is prepared.
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

mod body;
mod claim;
mod context;
mod exchange;
mod handler;
mod prepare;
mod record;
mod transaction;

pub use self::body::Last;
pub use self::context::{Context, HandlerConfig, InputProbe, ProbeInput, ProbeOther};
pub use self::prepare::KeyRejection;
