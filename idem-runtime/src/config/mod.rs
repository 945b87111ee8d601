//! Settings: a runtime-wide default set once by the application, overridden per handler.
//!
//! The application builds one [`Idempotency`] — the store, the scope source and the default
//! [`Settings`] — and installs it on its router as an [`Extension`](axum::Extension). Each
//! `#[idempotent(...)]` handler carries the options written in its attribute, whose set values
//! override the defaults.
//! Without an installed `Idempotency`, handlers use [`Idempotency::global`]: a process-wide
//! in-memory store and the defaults below, so the zero-configuration case just works.
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `ttl` | 24 hours | how long a completed response is kept, from completion |
//! | `lease` | 15 seconds | how long an in-flight claim holds its key unless renewed: renewed every third of it while the handler runs, so a crashed process frees its keys within one lease |
//! | `max_hold` | 1 hour | the longest a claim is renewed: a handler still running then stops renewing (a `warn` event), and its key can be taken over one lease later |
//! | `max_key_len` | 255 | the longest key accepted, in characters |
//! | `required` | `false` | whether a request without a key is refused (`400`) |
//! | `header` | `idempotency-key` | the request header that carries the key |
//! | `keep` | [`KeepPolicy::All`] | which answers are stored, by status (one not stored releases its key); `store_server_errors(false)` is a shorthand for [`KeepPolicy::NoServerErrors`] |
//! | `replay_only`, `replay_except` | none | an allow-list and an extra deny list of the response headers replayed ([`ReplayHeaders`]) |
//! | `errors` | [`ProblemJson`](crate::problem::ProblemJson) | the format of the answers the layer makes itself ([`problem`](crate::problem)) |
//! | `conflict` | [`ConflictPolicy::Reject`] | what a duplicate of an in-flight request gets |
//! | `wait_timeout` | 30 seconds | how long [`ConflictPolicy::Wait`] waits before answering `409` |
//! | `retry_after` | 1 second | the `Retry-After` of a `409` |
//! | `max_body_bytes` | 1 MiB | the largest response body kept for replay |
//! | `store_timeout` | 2 seconds | how long a store operation may take before the request fails closed (`503`) |
//!
//! Every duration is at most [`MAX_DURATION`] (366 days); `ttl`, `lease`, `max_hold` and
//! `store_timeout` are longer than zero. The builder refuses anything else with a
//! [`ConfigError`], and `#[idempotent]` with a compile error, so that no store and no timer ever
//! sees a duration it cannot represent. Both refuse, too, a `replay_only` list that names a header
//! which is never replayed (`Set-Cookie`, `Date`, a hop-by-hop header).
//!
//! ```
//! use std::time::Duration;
//! use axum::{Extension, Router};
//! use idem_runtime::config::{ConflictPolicy, Idempotency};
//! use idem_runtime::store::MemoryStore;
//!
//! let idempotency = Idempotency::builder()
//!     .store(MemoryStore::builder().max_bytes(256 * 1024 * 1024).build())
//!     .ttl(Duration::from_secs(48 * 3600))
//!     .conflict(ConflictPolicy::Wait)
//!     .build()
//!     .unwrap();
//! let app: Router = Router::new().layer(Extension(idempotency));
//! ```

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::HeaderName;

pub(crate) mod handler;
mod keep;

pub use self::keep::KeepPolicy;

use self::handler::HandlerOptions;
use crate::key::{DEFAULT_MAX_KEY_LEN, MAX_KEY_LEN_LIMIT};
use crate::problem::{ErrorFormat, Renderer};
use crate::replay::ReplayHeaders;
use crate::scope::{AuthorizationScope, ScopeSource};
use crate::store::{IdempotencyStore, MemoryStore};

/// The longest duration any setting takes: 366 days. `#[idempotent]` checks its durations
/// against the same bound.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// What a request gets when another request with the same key and fingerprint is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// Answer `409 Conflict` with `Retry-After` at once (the IETF draft's behaviour).
    #[default]
    Reject,
    /// Wait (up to `wait_timeout`) for the first request to finish and replay its response; a
    /// `409` only if it is still running then.
    Wait,
}

/// The effective settings of a request (see the [module docs](self) for each one's meaning).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a completed response is kept, counted from completion.
    pub ttl: Duration,
    /// How long an in-flight claim holds its key unless it is renewed (every third of it, while
    /// the handler runs).
    pub lease: Duration,
    /// The longest a claim is renewed; past it the handler may run on, but its key can be taken
    /// over once its last lease runs out.
    pub max_hold: Duration,
    /// The longest key accepted, in characters.
    pub max_key_len: usize,
    /// Whether a request without a key is refused with `400`.
    pub required: bool,
    /// The request header that carries the key.
    pub header: HeaderName,
    /// Which answers are stored and replayed, by status (one not stored releases its key).
    pub keep: KeepPolicy,
    /// Which response headers are stored and replayed.
    pub replay_headers: ReplayHeaders,
    /// The format of the answers the layer makes itself.
    pub errors: Renderer,
    /// What a concurrent duplicate gets.
    pub conflict: ConflictPolicy,
    /// How long [`ConflictPolicy::Wait`] waits for the first request.
    pub wait_timeout: Duration,
    /// The `Retry-After` sent with a `409`.
    pub retry_after: Duration,
    /// The largest response body kept for replay, in bytes.
    pub max_body_bytes: usize,
    /// How long one store operation may take before the request fails closed.
    pub store_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 60 * 60),
            lease: Duration::from_secs(15),
            max_hold: Duration::from_secs(60 * 60),
            max_key_len: DEFAULT_MAX_KEY_LEN,
            required: false,
            header: HeaderName::from_static("idempotency-key"),
            keep: KeepPolicy::All,
            replay_headers: ReplayHeaders::default(),
            errors: Renderer::default(),
            conflict: ConflictPolicy::Reject,
            wait_timeout: Duration::from_secs(30),
            retry_after: Duration::from_secs(1),
            max_body_bytes: 1024 * 1024,
            store_timeout: Duration::from_secs(2),
        }
    }
}

impl Settings {
    /// These settings with every value that `options` sets replacing the default.
    pub(crate) fn with(&self, options: &HandlerOptions) -> Settings {
        Settings {
            ttl: options.ttl.unwrap_or(self.ttl),
            lease: options.lease.unwrap_or(self.lease),
            max_hold: options.max_hold.unwrap_or(self.max_hold),
            max_key_len: options.max_key_len.unwrap_or(self.max_key_len),
            required: options.required.unwrap_or(self.required),
            header: self.header_for(options).clone(),
            keep: options.keep.unwrap_or(self.keep),
            replay_headers: self
                .replay_headers
                .with(options.replay_only, options.replay_except),
            errors: self.errors_for(options).clone(),
            conflict: options.conflict.unwrap_or(self.conflict),
            wait_timeout: options.wait_timeout.unwrap_or(self.wait_timeout),
            retry_after: self.retry_after,
            max_body_bytes: options.max_body_bytes.unwrap_or(self.max_body_bytes),
            store_timeout: self.store_timeout,
        }
    }

    /// The key's header for a handler with `options`: its own, or else this one. Borrowed, for a
    /// request that needs no more of the settings than this.
    pub(crate) fn header_for<'a>(&'a self, options: &'a HandlerOptions) -> &'a HeaderName {
        options.header.as_ref().unwrap_or(&self.header)
    }

    /// The error format of a handler with `options`: its own, or else this one. Borrowed, for a
    /// request that needs no more of the settings than this.
    pub(crate) fn errors_for<'a>(&'a self, options: &'a HandlerOptions) -> &'a Renderer {
        options.errors.as_ref().unwrap_or(&self.errors)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_key_len == 0 || self.max_key_len > MAX_KEY_LEN_LIMIT {
            return Err(ConfigError(format!(
                "max_key_len must be 1..={MAX_KEY_LEN_LIMIT}, not {}",
                self.max_key_len
            )));
        }
        for (name, value, zero_allowed) in [
            ("ttl", self.ttl, false),
            ("lease", self.lease, false),
            ("max_hold", self.max_hold, false),
            ("store_timeout", self.store_timeout, false),
            ("wait_timeout", self.wait_timeout, true),
            ("retry_after", self.retry_after, true),
        ] {
            if value.is_zero() && !zero_allowed {
                return Err(ConfigError(format!("{name} must be longer than zero")));
            }
            if value > MAX_DURATION {
                return Err(ConfigError(format!(
                    "{name} must be at most 366 days, not {}",
                    humantime::format_duration(value)
                )));
            }
        }
        if let Some((name, why)) = self.replay_headers.refused() {
            return Err(ConfigError(format!(
                "replay_only may not name `{name}`: it is never replayed ({why})"
            )));
        }
        Ok(())
    }
}

/// The process-wide configuration: see [`Idempotency::global`] and [`Idempotency::install`].
static GLOBAL: OnceLock<Idempotency> = OnceLock::new();

/// The runtime-wide idempotency configuration: the store, the scope source and default settings.
///
/// Cheap to clone. Install it for a router with `Router::layer(Extension(idempotency))`, or once
/// for the whole process with [`Idempotency::install`]; handlers of a router without one use
/// [`Idempotency::global`].
#[derive(Clone)]
pub struct Idempotency {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn IdempotencyStore>,
    scope: Arc<dyn ScopeSource>,
    settings: Settings,
}

impl Idempotency {
    /// A builder that starts from the defaults: a new [`MemoryStore`], [`AuthorizationScope`] and
    /// [`Settings::default`].
    pub fn builder() -> IdempotencyBuilder {
        IdempotencyBuilder {
            store: None,
            scope: Arc::new(AuthorizationScope),
            settings: Settings::default(),
        }
    }

    /// The process-wide configuration, used by the handlers of a router without an
    /// `Extension(Idempotency)` of its own: the one [installed](Idempotency::install), or else
    /// one shared [`MemoryStore`] with its default byte bound, and the default settings.
    #[must_use]
    pub fn global() -> &'static Idempotency {
        GLOBAL.get_or_init(|| Idempotency::builder().build().expect("defaults are valid"))
    }

    /// Makes this the process-wide configuration ([`Idempotency::global`]), for every handler of a
    /// router without an `Extension(Idempotency)`.
    ///
    /// For an application with one configuration this is cheaper than the extension, which
    /// axum's `Router::layer` adds to every request (a map insert and a boxed service in front of
    /// each route: about a fifth of a trivial handler's cost, by the handler bench). A router
    /// that has the extension still uses its own.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the process-wide configuration is set already: installed before, or
    /// taken with the defaults by a handler that served a request first. Install it before serving.
    ///
    /// ```
    /// use idem_runtime::config::Idempotency;
    /// use idem_runtime::store::MemoryStore;
    ///
    /// let store = MemoryStore::builder().max_bytes(256 * 1024 * 1024).build();
    /// Idempotency::builder().store(store).build().unwrap().install().unwrap();
    /// assert_eq!(Idempotency::global().settings().max_key_len, 255);
    /// // Once only.
    /// assert!(Idempotency::builder().build().unwrap().install().is_err());
    /// ```
    pub fn install(self) -> Result<(), ConfigError> {
        GLOBAL.set(self).map_err(|_| {
            ConfigError(
                "the process-wide configuration is set already: install it once, before the \
                 first request"
                    .to_owned(),
            )
        })
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn IdempotencyStore> {
        &self.inner.store
    }

    /// The scope source.
    #[must_use]
    pub fn scope_source(&self) -> &dyn ScopeSource {
        &*self.inner.scope
    }

    /// The default settings.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
}

impl fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Idempotency`]; see the [module docs](self) for each setting.
#[must_use]
pub struct IdempotencyBuilder {
    store: Option<Arc<dyn IdempotencyStore>>,
    scope: Arc<dyn ScopeSource>,
    settings: Settings,
}

impl IdempotencyBuilder {
    /// The store shared by every handler (default: a new [`MemoryStore`]).
    pub fn store(mut self, store: impl IdempotencyStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A store already behind an `Arc`, to share it with other code (tests, metrics).
    pub fn shared_store(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Who a key belongs to (default: [`AuthorizationScope`]).
    pub fn scope(mut self, scope: impl ScopeSource) -> Self {
        self.scope = Arc::new(scope);
        self
    }

    /// How long a completed response is kept.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.settings.ttl = ttl;
        self
    }

    /// How long an in-flight claim holds its key unless it is renewed; the runtime renews it every
    /// third of it while the handler runs.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease;
        self
    }

    /// The longest a claim is renewed while its handler runs.
    pub fn max_hold(mut self, max_hold: Duration) -> Self {
        self.settings.max_hold = max_hold;
        self
    }

    /// The longest key accepted, in characters (1..=1024).
    pub fn max_key_len(mut self, len: usize) -> Self {
        self.settings.max_key_len = len;
        self
    }

    /// Whether every idempotent handler refuses requests without a key.
    pub fn required(mut self, required: bool) -> Self {
        self.settings.required = required;
        self
    }

    /// The request header that carries the key.
    pub fn header(mut self, header: HeaderName) -> Self {
        self.settings.header = header;
        self
    }

    /// Whether `5xx` answers are stored and replayed: a shorthand for [`keep`](Self::keep) with
    /// [`KeepPolicy::All`] (`true`) or [`KeepPolicy::NoServerErrors`] (`false`).
    pub fn store_server_errors(self, store: bool) -> Self {
        self.keep(if store {
            KeepPolicy::All
        } else {
            KeepPolicy::NoServerErrors
        })
    }

    /// Which answers are stored and replayed, by status; one that is not releases its key.
    pub fn keep(mut self, policy: KeepPolicy) -> Self {
        self.settings.keep = policy;
        self
    }

    /// Replay only these response headers (an allow-list; name `content-type` too if it should
    /// be replayed). See [`ReplayHeaders`].
    pub fn replay_only(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.settings.replay_headers.set_only(names);
        self
    }

    /// Never replay these response headers (`x-request-id`, rate-limit headers, …), on top of
    /// those that never are. See [`ReplayHeaders`].
    pub fn replay_except(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.settings.replay_headers.set_except(names);
        self
    }

    /// The format of the answers the layer makes itself (default: [`ProblemJson`](crate::problem::ProblemJson)): see
    /// [`problem`](crate::problem).
    ///
    /// ```
    /// use idem_runtime::config::Idempotency;
    /// use idem_runtime::problem::Stripe;
    ///
    /// let idempotency = Idempotency::builder().errors(Stripe).build().unwrap();
    /// # let _ = idempotency;
    /// ```
    pub fn errors(mut self, format: impl ErrorFormat) -> Self {
        self.settings.errors = Renderer::new(format);
        self
    }

    /// What a concurrent duplicate gets.
    pub fn conflict(mut self, policy: ConflictPolicy) -> Self {
        self.settings.conflict = policy;
        self
    }

    /// How long [`ConflictPolicy::Wait`] waits for the first request.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.settings.wait_timeout = timeout;
        self
    }

    /// The `Retry-After` sent with a `409`.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.settings.retry_after = after;
        self
    }

    /// The largest response body kept for replay.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_body_bytes = bytes;
        self
    }

    /// How long one store operation may take before the request fails closed with `503`.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.settings.store_timeout = timeout;
        self
    }

    /// The configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `max_key_len` is outside `1..=1024`, a duration is longer than
    /// [`MAX_DURATION`], `ttl`, `lease`, `max_hold` or `store_timeout` is zero, or `replay_only`
    /// names a header that is never replayed (`Set-Cookie`, `Date`, a hop-by-hop header).
    pub fn build(self) -> Result<Idempotency, ConfigError> {
        self.settings.validate()?;
        Ok(Idempotency {
            inner: Arc::new(Inner {
                store: self
                    .store
                    .unwrap_or_else(|| Arc::new(MemoryStore::default())),
                scope: self.scope,
                settings: self.settings,
            }),
        })
    }
}

/// An [`IdempotencyBuilder`] setting is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid idempotency configuration: {0}")]
pub struct ConfigError(String);

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(builder: IdempotencyBuilder) -> String {
        builder.build().expect_err("refused").to_string()
    }

    #[test]
    fn absurd_durations_are_refused_with_the_setting_named() {
        let five_hundred_million_years = humantime::parse_duration("500000000y").unwrap();
        for (name, builder) in [
            (
                "ttl",
                Idempotency::builder().ttl(five_hundred_million_years),
            ),
            ("lease", Idempotency::builder().lease(Duration::MAX)),
            ("max_hold", Idempotency::builder().max_hold(Duration::MAX)),
            (
                "wait_timeout",
                Idempotency::builder().wait_timeout(Duration::from_secs(400 * 86_400)),
            ),
            (
                "retry_after",
                Idempotency::builder().retry_after(Duration::MAX),
            ),
            (
                "store_timeout",
                Idempotency::builder().store_timeout(Duration::MAX),
            ),
        ] {
            let message = refused(builder);
            assert!(
                message.contains(&format!("{name} must be at most 366 days")),
                "{message}"
            );
        }
    }

    #[test]
    fn zero_durations_are_refused_where_they_make_no_sense() {
        for (name, builder) in [
            ("ttl", Idempotency::builder().ttl(Duration::ZERO)),
            ("lease", Idempotency::builder().lease(Duration::ZERO)),
            ("max_hold", Idempotency::builder().max_hold(Duration::ZERO)),
            (
                "store_timeout",
                Idempotency::builder().store_timeout(Duration::ZERO),
            ),
        ] {
            assert_eq!(
                refused(builder),
                format!("invalid idempotency configuration: {name} must be longer than zero")
            );
        }
        // No wait, and a `Retry-After` of zero (sent as one second), are meaningful.
        Idempotency::builder()
            .wait_timeout(Duration::ZERO)
            .retry_after(Duration::ZERO)
            .build()
            .expect("valid");
    }

    #[test]
    fn the_longest_durations_are_honoured() {
        let idempotency = Idempotency::builder()
            .ttl(MAX_DURATION)
            .lease(MAX_DURATION)
            .max_hold(MAX_DURATION)
            .wait_timeout(MAX_DURATION)
            .build()
            .expect("valid");
        assert_eq!(idempotency.settings().ttl, MAX_DURATION);
    }
}
