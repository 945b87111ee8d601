//! Which answers are kept for replay.

use std::fmt;

use http::StatusCode;

/// Which of a handler's answers are kept for replay, by status. An answer that is not kept is
/// still sent to its caller, but its key is released: a retry runs the handler again.
///
/// Set runtime-wide with [`IdempotencyBuilder::keep`](super::IdempotencyBuilder::keep) and per
/// handler with `#[idempotent(keep = ..)]`: `keep = all`, `keep = no_server_errors`, or
/// `keep = my_fn` naming a `fn(http::StatusCode) -> bool`. `store_server_errors = false` is a
/// shorthand for `keep = no_server_errors` (and `true` for `keep = all`).
///
/// ```
/// use http::StatusCode;
/// use idem_runtime::config::{Idempotency, KeepPolicy};
///
/// /// A `429` or `503` says "try again later": let the retry run again.
/// fn not_throttled(status: StatusCode) -> bool {
///     status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE
/// }
///
/// let idempotency = Idempotency::builder()
///     .keep(KeepPolicy::When(not_throttled))
///     .build()
///     .unwrap();
/// assert!(idempotency.settings().keep.keeps(StatusCode::INTERNAL_SERVER_ERROR));
/// assert!(!idempotency.settings().keep.keeps(StatusCode::TOO_MANY_REQUESTS));
/// ```
#[derive(Clone, Copy, Default)]
pub enum KeepPolicy {
    /// Every answer, `2xx`, `4xx` and `5xx`, as Stripe does (the default).
    #[default]
    All,
    /// Every answer but `5xx`: a server error releases the key.
    NoServerErrors,
    /// The answers whose status the function accepts.
    When(fn(StatusCode) -> bool),
}

impl KeepPolicy {
    /// Whether an answer with `status` is kept.
    #[must_use]
    pub fn keeps(&self, status: StatusCode) -> bool {
        match self {
            Self::All => true,
            Self::NoServerErrors => !status.is_server_error(),
            Self::When(keeps) => keeps(status),
        }
    }
}

impl fmt::Debug for KeepPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("All"),
            Self::NoServerErrors => f.write_str("NoServerErrors"),
            Self::When(_) => f.write_str("When(..)"),
        }
    }
}
