//! The first phase: what a request brings before any of the handler's extractors run.

use std::borrow::Cow;

use axum::extract::MatchedPath;
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::config::handler::HandlerOptions;
use crate::config::{Idempotency, Settings};
use crate::fingerprint::{FingerprintInput, Fingerprinter, RequestDigest};
use crate::key::{IdempotencyKey, KeyError};
use crate::metrics::Route;
use crate::problem::{Problem, Renderer};
use crate::store::StoreKey;

/// The configuration in effect for a request: the process-wide one ([`Idempotency::global`]),
/// borrowed, as it lives as long as the process, or a router's own `Extension(Idempotency)`,
/// shared. Borrowed, the process-wide configuration's reference count is never written: every
/// thread of a server would otherwise write that one cache line on every keyed request.
pub(super) type Config = Cow<'static, Idempotency>;

/// A request that takes part in idempotency, as far as it is known before the handler runs.
pub(super) struct Prepared {
    pub(super) config: Config,
    pub(super) settings: Settings,
    pub(super) key: StoreKey,
    pub(super) fingerprint: Fingerprinter,
    /// The digest of the exact request, kept with the response: known when the body was read
    /// ahead, which it is only for a handler whose every input is determined by the request's
    /// bytes ([`HandlerConfig::exact_replay`](super::HandlerConfig::exact_replay)).
    pub(super) digest: Option<RequestDigest>,
    /// The route, for metrics.
    pub(super) route: Route,
}

/// A request that takes part in idempotency, as far as its key: the configuration in effect and
/// the key in its scope. What [`Prepared::new`] makes the rest of the preparation from.
pub(super) struct Keyed {
    pub(super) config: Config,
    pub(super) key: StoreKey,
}

/// Reads the request's key and scope before its handler's extractors run; `None` when
/// idempotency does not apply (no key, or a method the handler does not cover).
pub(super) fn key(parts: &Parts, options: &HandlerOptions) -> Result<Option<Keyed>, KeyRejection> {
    if !options.methods.contains(&parts.method) {
        return Ok(None);
    }
    let local = parts.extensions.get::<Idempotency>();
    let config = local.unwrap_or_else(|| Idempotency::global());
    // What the key needs first: a request without one takes no part, and needs no settings.
    let defaults = config.settings();
    let header = defaults.header_for(options);
    let max_key_len = options.max_key_len.unwrap_or(defaults.max_key_len);
    let key = match IdempotencyKey::from_headers(&parts.headers, header, max_key_len) {
        Ok(Some(key)) => key,
        Ok(None) if !options.required.unwrap_or(defaults.required) => return Ok(None),
        Ok(None) => return Err(reject_key(&KeyError::Missing, config, options, parts)),
        Err(error) => return Err(reject_key(&error, config, options, parts)),
    };
    let scope = match options.scope {
        Some(scope) => scope(parts),
        None => config.scope_source().scope(parts),
    };
    Ok(Some(Keyed {
        config: match local {
            Some(local) => Cow::Owned(local.clone()),
            None => Cow::Borrowed(Idempotency::global()),
        },
        key: StoreKey::new(scope, key),
    }))
}

impl Prepared {
    /// Adds one of the handler's inputs to the fingerprint.
    pub(super) fn input<T: FingerprintInput + ?Sized>(&mut self, input: &T) {
        self.fingerprint.input(input);
    }

    /// The rest of the preparation of a keyed request: its settings, the start of its fingerprint
    /// with the request line, its route.
    pub(super) fn new(keyed: Keyed, parts: &Parts, options: &HandlerOptions) -> Box<Self> {
        let Keyed { config, key } = keyed;
        let (method, route, path, query) = request_line(parts);
        Box::new(Prepared {
            settings: config.settings().with(options),
            config,
            key,
            fingerprint: Fingerprinter::new(method, route, path, query),
            digest: None,
            route: Route::of(parts),
        })
    }
}

/// The request line as the fingerprint and the exact digest read it: the method, the route
/// template the router matched (if any), the path and the query.
pub(super) fn request_line(parts: &Parts) -> (&http::Method, Option<&str>, &str, Option<&str>) {
    (
        &parts.method,
        parts
            .extensions
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
        parts.uri.path(),
        parts.uri.query(),
    )
}

fn reject_key(
    error: &KeyError,
    config: &Idempotency,
    options: &HandlerOptions,
    parts: &Parts,
) -> KeyRejection {
    tracing::info!(target: "idem", outcome = "invalid_key", %error, "idempotency key refused");
    Route::of(parts).outcome("invalid_key");
    let settings = config.settings().with(options);
    KeyRejection {
        error: error.clone(),
        header: settings.header,
        errors: settings.errors,
    }
}

/// The rejection of [`Arguments`](super::Arguments) for the key: it is invalid, or missing where
/// it is required. Answers `400` ([`Problem::invalid_key`]) in the request's error format.
#[derive(Debug, Clone)]
pub struct KeyRejection {
    error: KeyError,
    header: http::HeaderName,
    errors: Renderer,
}

impl KeyRejection {
    /// What is wrong with the key.
    #[must_use]
    pub fn error(&self) -> &KeyError {
        &self.error
    }
}

impl IntoResponse for KeyRejection {
    fn into_response(self) -> Response {
        self.errors
            .render(&Problem::invalid_key(&self.error, self.header.as_str()))
    }
}
