//! What one `#[idempotent(...)]` handler overrides, as its expansion writes it. Not public API:
//! reached only through `__private`.

use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, Method};

use super::{ConflictPolicy, KeepPolicy};
use crate::problem::Renderer;
use crate::scope::Scope;

/// The methods a handler applies idempotency to. Requests with other methods pass through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Methods(u8);

impl Methods {
    /// `POST`.
    pub const POST: Methods = Methods(1);
    /// `PUT`.
    pub const PUT: Methods = Methods(2);
    /// `PATCH`.
    pub const PATCH: Methods = Methods(4);
    /// `POST`, `PUT` and `PATCH`: every method the attribute supports.
    pub const ALL: Methods = Methods(7);

    /// Both sets together.
    #[must_use]
    pub const fn and(self, other: Methods) -> Methods {
        Methods(self.0 | other.0)
    }

    /// Whether `method` is in the set.
    #[must_use]
    pub fn contains(self, method: &Method) -> bool {
        let bit = match *method {
            Method::POST => Self::POST,
            Method::PUT => Self::PUT,
            Method::PATCH => Self::PATCH,
            _ => return false,
        };
        self.0 & bit.0 != 0
    }
}

/// One handler's settings, written by `#[idempotent(...)]`: each `Some` overrides the runtime-wide
/// default.
///
/// Only generated code builds one (it is reached through `__private`). Every value is checked
/// when the attribute expands or, for the header name, when the constant is evaluated: a
/// `HandlerOptions` cannot fail per request.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::__private::{HandlerOptions, HeaderName, Methods};
///
/// const CHARGES: HandlerOptions = HandlerOptions {
///     ttl: Some(Duration::from_secs(600)),
///     required: Some(true),
///     methods: Methods::POST,
///     header: Some(HeaderName::from_static("x-request-key")),
///     ..HandlerOptions::DEFAULT
/// };
/// ```
#[derive(Debug, Clone)]
pub struct HandlerOptions {
    /// The methods idempotency applies to.
    pub methods: Methods,
    /// See [`super::Settings::ttl`].
    pub ttl: Option<Duration>,
    /// See [`super::Settings::lease`].
    pub lease: Option<Duration>,
    /// See [`super::Settings::max_hold`].
    pub max_hold: Option<Duration>,
    /// See [`super::Settings::max_key_len`].
    pub max_key_len: Option<usize>,
    /// See [`super::Settings::required`].
    pub required: Option<bool>,
    /// See [`super::Settings::header`].
    pub header: Option<HeaderName>,
    /// See [`super::Settings::keep`].
    pub keep: Option<KeepPolicy>,
    /// An allow-list of the response headers replayed, replacing the runtime-wide one: lowercase
    /// names, none of them one that is never replayed (the attribute checks both).
    pub replay_only: Option<&'static [&'static str]>,
    /// Response headers never replayed, on top of the runtime-wide ones: lowercase names.
    pub replay_except: &'static [&'static str],
    /// See [`super::Settings::errors`].
    pub errors: Option<Renderer>,
    /// See [`super::Settings::conflict`].
    pub conflict: Option<ConflictPolicy>,
    /// See [`super::Settings::wait_timeout`].
    pub wait_timeout: Option<Duration>,
    /// See [`super::Settings::max_body_bytes`].
    pub max_body_bytes: Option<usize>,
    /// A scope source for this handler alone, replacing the runtime-wide one.
    pub scope: Option<fn(&Parts) -> Scope>,
}

impl HandlerOptions {
    /// Every method, nothing overridden.
    pub const DEFAULT: HandlerOptions = HandlerOptions {
        methods: Methods::ALL,
        ttl: None,
        lease: None,
        max_hold: None,
        max_key_len: None,
        required: None,
        header: None,
        keep: None,
        replay_only: None,
        replay_except: &[],
        errors: None,
        conflict: None,
        wait_timeout: None,
        max_body_bytes: None,
        scope: None,
    };
}

impl Default for HandlerOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}
