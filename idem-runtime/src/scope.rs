//! Key scoping: whose key is it?
//!
//! Two callers that happen to send the same `Idempotency-Key` must never see each other's stored
//! response. Every key is therefore stored under a [`Scope`], a SHA-256 digest that identifies the
//! caller. By default ([`AuthorizationScope`]) it is the digest of the request's `Authorization`
//! header, so the raw credential is never kept; requests without that header share the
//! [`Scope::ANONYMOUS`] scope.
//!
//! An application that identifies callers another way (a tenant id put in the request's extensions
//! by an authentication middleware, a session cookie, a client certificate) implements
//! [`ScopeSource`], or passes a closure:
//!
//! ```
//! use http::request::Parts;
//! use idem_runtime::scope::{Scope, ScopeSource};
//!
//! #[derive(Clone)]
//! struct TenantId(String);
//!
//! let by_tenant = |parts: &Parts| match parts.extensions.get::<TenantId>() {
//!     Some(tenant) => Scope::from_identity(tenant.0.as_bytes()),
//!     None => Scope::ANONYMOUS,
//! };
//!
//! let (mut parts, ()) = http::Request::new(()).into_parts();
//! parts.extensions.insert(TenantId("acme".into()));
//! assert_eq!(by_tenant.scope(&parts), Scope::from_identity(b"acme"));
//! ```

use std::fmt;

use http::header::AUTHORIZATION;
use http::request::Parts;
use sha2::{Digest, Sha256};

/// The digest of a caller's identity. Keys are only ever looked up within one scope.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope([u8; 32]);

impl Scope {
    /// The scope of requests that carry no identity.
    pub const ANONYMOUS: Scope = Scope([0; 32]);

    /// The scope of a caller identified by `identity` (a credential, a tenant id, a user id).
    ///
    /// The identity is hashed with SHA-256 under a domain tag of its own, so the scope reveals
    /// nothing of it and cannot collide with a fingerprint.
    #[must_use]
    pub fn from_identity(identity: impl AsRef<[u8]>) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"idem/scope/v1\0");
        hasher.update(identity.as_ref());
        Self(hasher.finalize().into())
    }

    /// A scope from its raw digest, as read back from a store.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({self})")
    }
}

impl fmt::Display for Scope {
    /// Lowercase hexadecimal, 64 characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Decides the [`Scope`] of a request from its head.
///
/// Implemented for any `Fn(&Parts) -> Scope`, so a closure or a function will do.
pub trait ScopeSource: Send + Sync + 'static {
    /// The scope of the request whose head is `parts`.
    fn scope(&self, parts: &Parts) -> Scope;
}

impl<F> ScopeSource for F
where
    F: Fn(&Parts) -> Scope + Send + Sync + 'static,
{
    fn scope(&self, parts: &Parts) -> Scope {
        self(parts)
    }
}

/// The default scope: the SHA-256 digest of the `Authorization` header, or [`Scope::ANONYMOUS`]
/// when there is none.
///
/// Only the digest is kept, never the credential. An API authenticated some other way (cookies,
/// mutual TLS) should install its own [`ScopeSource`], or all its callers share one scope.
///
/// ```
/// use idem_runtime::scope::{AuthorizationScope, Scope, ScopeSource};
///
/// let request = http::Request::builder().header("authorization", "Bearer sk_1").body(()).unwrap();
/// let (parts, ()) = request.into_parts();
/// assert_eq!(AuthorizationScope.scope(&parts), Scope::from_identity(b"Bearer sk_1"));
///
/// let (parts, ()) = http::Request::new(()).into_parts();
/// assert_eq!(AuthorizationScope.scope(&parts), Scope::ANONYMOUS);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthorizationScope;

impl ScopeSource for AuthorizationScope {
    fn scope(&self, parts: &Parts) -> Scope {
        let mut values = parts.headers.get_all(AUTHORIZATION).iter();
        let Some(first) = values.next() else {
            return Scope::ANONYMOUS;
        };
        let Some(second) = values.next() else {
            return Scope::from_identity(first.as_bytes());
        };
        // Several Authorization fields: all of them, length-prefixed, identify the caller.
        let mut identity = Vec::new();
        for value in [first, second].into_iter().chain(values) {
            identity.extend_from_slice(&(value.len() as u64).to_le_bytes());
            identity.extend_from_slice(value.as_bytes());
        }
        Scope::from_identity(identity)
    }
}
