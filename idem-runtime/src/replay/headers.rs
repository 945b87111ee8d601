//! Which of a response's headers are kept for replay, beyond those that never are.

use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use http::header::{DATE, SET_COOKIE};

use super::is_replayable;

/// Which response headers are stored and replayed: every header except those that never are
/// ([`is_replayable`]: `Set-Cookie`, `Date` and the hop-by-hop headers), narrowed by an
/// allow-list and an extra deny list.
///
/// - `replay_only`: an allow-list; only the headers it names are replayed (list `content-type`
///   too, if it should be). It may not name a header that is never replayed.
/// - `replay_except`: headers that must not be replayed, such as `x-request-id` or rate-limit
///   headers.
///
/// Both are set runtime-wide on the builder
/// ([`replay_only`](crate::config::IdempotencyBuilder::replay_only),
/// [`replay_except`](crate::config::IdempotencyBuilder::replay_except)) and per handler in the
/// attribute (`#[idempotent(replay_only = [..], replay_except = [..])]`). A handler's allow-list
/// replaces the runtime-wide one; its deny list adds to the runtime-wide one, so that a header
/// denied for the whole API is denied everywhere.
///
/// ```
/// use http::HeaderName;
/// use idem_runtime::config::Idempotency;
///
/// let idempotency = Idempotency::builder()
///     .replay_except([HeaderName::from_static("x-request-id")])
///     .build()
///     .unwrap();
/// let headers = &idempotency.settings().replay_headers;
/// assert!(headers.replays(&HeaderName::from_static("location")));
/// assert!(!headers.replays(&HeaderName::from_static("x-request-id")));
/// assert!(!headers.replays(&HeaderName::from_static("set-cookie")));
/// ```
#[derive(Clone, Default)]
pub struct ReplayHeaders {
    only: Option<Names>,
    except: Names,
    handler_except: Names,
}

/// A list of header names: written by the attribute (lowercase, checked while compiling), or
/// given to the builder.
#[derive(Clone)]
enum Names {
    Static(&'static [&'static str]),
    Shared(Arc<[HeaderName]>),
}

impl Default for Names {
    fn default() -> Self {
        Self::Static(&[])
    }
}

impl Names {
    fn contains(&self, name: &HeaderName) -> bool {
        match self {
            Self::Static(names) => names.contains(&name.as_str()),
            Self::Shared(names) => names.contains(name),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::Static(names) => names.is_empty(),
            Self::Shared(names) => names.is_empty(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let (statics, shared): (&[&str], &[HeaderName]) = match self {
            Self::Static(names) => (names, &[]),
            Self::Shared(names) => (&[], names),
        };
        statics
            .iter()
            .copied()
            .chain(shared.iter().map(HeaderName::as_str))
    }
}

impl fmt::Debug for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl fmt::Debug for ReplayHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayHeaders")
            .field("only", &self.only)
            .field("except", &self.except)
            .field("handler_except", &self.handler_except)
            .finish()
    }
}

impl ReplayHeaders {
    /// Whether a response header named `name` is stored and replayed.
    #[must_use]
    pub fn replays(&self, name: &HeaderName) -> bool {
        is_replayable(name)
            && self.only.as_ref().is_none_or(|only| only.contains(name))
            && !self.except.contains(name)
            && !self.handler_except.contains(name)
    }

    /// Whether these are the defaults: every header [`is_replayable`] accepts.
    #[must_use]
    pub fn is_default(&self) -> bool {
        self.only.is_none() && self.except.is_empty() && self.handler_except.is_empty()
    }

    pub(crate) fn set_only(&mut self, names: impl IntoIterator<Item = HeaderName>) {
        self.only = Some(Names::Shared(names.into_iter().collect()));
    }

    pub(crate) fn set_except(&mut self, names: impl IntoIterator<Item = HeaderName>) {
        self.except = Names::Shared(names.into_iter().collect());
    }

    /// These lists with a handler's: its allow-list replaces the runtime-wide one, its deny list
    /// adds to it.
    pub(crate) fn with(
        &self,
        only: Option<&'static [&'static str]>,
        except: &'static [&'static str],
    ) -> Self {
        Self {
            only: only.map(Names::Static).or_else(|| self.only.clone()),
            except: self.except.clone(),
            handler_except: Names::Static(except),
        }
    }

    /// The first header of the allow-list that is never replayed, with the reason.
    pub(crate) fn refused(&self) -> Option<(String, &'static str)> {
        let only = self.only.as_ref()?;
        only.iter().find_map(|name| {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            never_replayed(&name).map(|why| (name.as_str().to_owned(), why))
        })
    }
}

/// Why a header can never be replayed, whatever the lists say; `None` if it can.
pub(crate) fn never_replayed(name: &HeaderName) -> Option<&'static str> {
    if is_replayable(name) {
        None
    } else if *name == SET_COOKIE {
        Some("a session must not be handed out twice")
    } else if *name == DATE {
        Some("the replay gets a date of its own")
    } else {
        Some("it is a hop-by-hop header, about one connection")
    }
}
