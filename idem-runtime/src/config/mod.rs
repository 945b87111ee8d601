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
//! | `lease` | 5 minutes | how long an in-flight claim blocks its key if its process dies |
//! | `max_key_len` | 255 | the longest key accepted, in characters |
//! | `required` | `false` | whether a request without a key is refused (`400`) |
//! | `header` | `idempotency-key` | the request header that carries the key |
//! | `store_server_errors` | `true` | whether `5xx` answers are stored (else the key is released) |
//! | `conflict` | [`ConflictPolicy::Reject`] | what a duplicate of an in-flight request gets |
//! | `wait_timeout` | 30 seconds | how long [`ConflictPolicy::Wait`] waits before answering `409` |
//! | `retry_after` | 1 second | the `Retry-After` of a `409` |
//! | `max_body_bytes` | 1 MiB | the largest response body kept for replay |
//! | `store_timeout` | 2 seconds | how long a store operation may take before the request fails closed (`503`) |
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

use self::handler::HandlerOptions;
use crate::key::{DEFAULT_MAX_KEY_LEN, MAX_KEY_LEN_LIMIT};
use crate::scope::{AuthorizationScope, ScopeSource};
use crate::store::{IdempotencyStore, MemoryStore};

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
    /// How long an in-flight claim holds its key at most.
    pub lease: Duration,
    /// The longest key accepted, in characters.
    pub max_key_len: usize,
    /// Whether a request without a key is refused with `400`.
    pub required: bool,
    /// The request header that carries the key.
    pub header: HeaderName,
    /// Whether `5xx` answers are stored and replayed (else the key is released).
    pub store_server_errors: bool,
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
            lease: Duration::from_secs(5 * 60),
            max_key_len: DEFAULT_MAX_KEY_LEN,
            required: false,
            header: HeaderName::from_static("idempotency-key"),
            store_server_errors: true,
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
            max_key_len: options.max_key_len.unwrap_or(self.max_key_len),
            required: options.required.unwrap_or(self.required),
            header: options.header.as_ref().unwrap_or(&self.header).clone(),
            store_server_errors: options
                .store_server_errors
                .unwrap_or(self.store_server_errors),
            conflict: options.conflict.unwrap_or(self.conflict),
            wait_timeout: options.wait_timeout.unwrap_or(self.wait_timeout),
            retry_after: self.retry_after,
            max_body_bytes: options.max_body_bytes.unwrap_or(self.max_body_bytes),
            store_timeout: self.store_timeout,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_key_len == 0 || self.max_key_len > MAX_KEY_LEN_LIMIT {
            return Err(ConfigError(format!(
                "max_key_len must be 1..={MAX_KEY_LEN_LIMIT}, not {}",
                self.max_key_len
            )));
        }
        for (name, value) in [
            ("ttl", self.ttl),
            ("lease", self.lease),
            ("store_timeout", self.store_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError(format!("{name} must be longer than zero")));
            }
        }
        Ok(())
    }
}

/// The runtime-wide idempotency configuration: the store, the scope source and default settings.
///
/// Cheap to clone. Install it with `Router::layer(Extension(idempotency))`; handlers without one
/// use [`Idempotency::global`].
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

    /// The process-wide configuration used by handlers when the application installed none: one
    /// shared [`MemoryStore`] with its default byte bound, and the default settings.
    #[must_use]
    pub fn global() -> &'static Idempotency {
        static GLOBAL: OnceLock<Idempotency> = OnceLock::new();
        GLOBAL.get_or_init(|| Idempotency::builder().build().expect("defaults are valid"))
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

    /// How long an in-flight claim holds its key at most.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease;
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

    /// Whether `5xx` answers are stored and replayed.
    pub fn store_server_errors(mut self, store: bool) -> Self {
        self.settings.store_server_errors = store;
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
    /// [`ConfigError`] when `max_key_len` is outside `1..=1024`, or `ttl`, `lease` or
    /// `store_timeout` is zero.
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
