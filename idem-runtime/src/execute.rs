//! Execution: one request's way through the idempotency layer.
//!
//! ```text
//! key extraction ─► (no key) ─────────────────────────────► handler runs, nothing stored
//!    │ bad key → 400
//!    ▼
//! body read ─► same bytes as a completed request ──────────► replay (body not parsed)
//!    │ parse the body; extractor rejection → its own answer
//!    ▼
//! claim(scope + key, fingerprint, lease)
//!    │ Fresh             → run the handler in its own task (a client disconnect cannot cancel it)
//!    │                     → capture status, headers, body → complete → answer
//!    │ InFlight, same fp → 409 + Retry-After (or wait for the result, under ConflictPolicy::Wait)
//!    │ InFlight, other   → 422
//!    │ Done, same fp     → replay, with Idempotent-Replayed: true
//!    │ Done, other       → 422
//!    │ store error       → 503, handler not run
//! ```
//!
//! A handler that panics answers `500` and releases its key; so does a response body that fails.
//! With `store_server_errors` off, a `5xx` answer releases the key too. Every outcome is a
//! `tracing` event on the target `idem` with the field `outcome`.
//!
//! [`Context`] is the extractor that `#[idempotent]` adds to a handler: it reads the key, the scope
//! and the request line before any other extractor runs. The handler's last argument comes through
//! [`Last`], which holds the body for [`Context::body`] (the byte-identical replay); then
//! [`Context::run`] takes the handler's future.

use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::Duration;

use axum::RequestExt as _;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::request::Parts;
use http_body_util::BodyExt;
use tokio::time::{Instant, sleep, timeout};

use crate::config::{ConflictPolicy, HandlerOptions, Idempotency, Settings};
use crate::fingerprint::{Fingerprint, FingerprintInput, Fingerprinter, RequestDigest};
use crate::key::{IdempotencyKey, KeyError};
use crate::problem::Problem;
use crate::replay::{StoredResponse, capture};
use crate::store::{Claim, ClaimToken, Completion, IdempotencyStore, Record, StoreError, StoreKey};

/// The options of one idempotent handler, as a type: `#[idempotent]` declares one per handler so
/// that [`Context`] knows them while it is extracted.
pub trait HandlerConfig: Send + Sync + 'static {
    /// The handler's settings.
    const OPTIONS: HandlerOptions;
}

/// The idempotency state of one request: the first extractor of an `#[idempotent]` handler.
///
/// Extracting it reads the key (answering `400` for a bad or missing-but-required one), the scope
/// and the request line. Feed it the handler's inputs with [`Context::input`], then hand it the
/// handler's future with [`Context::run`].
pub struct Context<O> {
    request: Option<Box<Prepared>>,
    _options: PhantomData<fn() -> O>,
}

struct Prepared {
    config: Idempotency,
    settings: Settings,
    key: StoreKey,
    fingerprint: Fingerprinter,
    /// Whether every input fed so far is determined by the request's bytes
    /// ([`FingerprintInput::FROM_REQUEST_BYTES`]).
    exact: bool,
    /// The digest of the exact request, kept with the response if the handler is exact.
    digest: Option<RequestDigest>,
}

impl<O> std::fmt::Debug for Context<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("key", &self.request.as_ref().map(|r| &r.key))
            .finish()
    }
}

impl<O: HandlerConfig, S: Send + Sync> FromRequestParts<S> for Context<O> {
    type Rejection = KeyRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, KeyRejection> {
        let request = prepare(parts, &O::OPTIONS)?;
        if request.is_some() {
            // Tells the handler's last extractor to read the body first (see `Last`).
            parts.extensions.insert(BufferBody);
        }
        Ok(Context {
            request,
            _options: PhantomData,
        })
    }
}

/// The mark `Context` leaves on a request that takes part in idempotency.
#[derive(Clone, Copy)]
struct BufferBody;

/// Reads what the request needs before its handler's extractors run; `None` when idempotency does
/// not apply (no key, or a method the handler does not cover).
fn prepare(parts: &Parts, options: &HandlerOptions) -> Result<Option<Box<Prepared>>, KeyRejection> {
    if !options.methods.contains(&parts.method) {
        return Ok(None);
    }
    let config = parts
        .extensions
        .get::<Idempotency>()
        .unwrap_or_else(|| Idempotency::global());
    let settings = config.settings().with(options);
    let key = match IdempotencyKey::from_headers(
        &parts.headers,
        &settings.header,
        settings.max_key_len,
    ) {
        Ok(Some(key)) => key,
        Ok(None) if !settings.required => return Ok(None),
        Ok(None) => return Err(reject_key(&KeyError::Missing, &settings)),
        Err(error) => return Err(reject_key(&error, &settings)),
    };
    let scope = match options.scope {
        Some(scope) => scope(parts),
        None => config.scope_source().scope(parts),
    };
    let fingerprint = Fingerprinter::new(
        &parts.method,
        parts
            .extensions
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
        parts.uri.path(),
        parts.uri.query(),
    );
    Ok(Some(Box::new(Prepared {
        config: config.clone(),
        settings,
        key: StoreKey::new(scope, key),
        fingerprint,
        exact: true,
        digest: None,
    })))
}

fn reject_key(error: &KeyError, settings: &Settings) -> KeyRejection {
    tracing::info!(target: "idem", outcome = "invalid_key", %error, "idempotency key refused");
    KeyRejection {
        error: error.clone(),
        header: settings.header.clone(),
    }
}

/// The rejection of [`Context`]: the key is invalid, or missing where it is required. Answers
/// `400` problem+json ([`Problem::invalid_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRejection {
    error: KeyError,
    header: http::HeaderName,
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
        Problem::invalid_key(&self.error, self.header.as_str()).into_response()
    }
}

impl<O> Context<O> {
    /// Whether the request takes part in idempotency (it has a key and an accepted method).
    #[must_use]
    pub fn is_idempotent(&self) -> bool {
        self.request.is_some()
    }

    /// Adds the handler's next argument to the request's fingerprint.
    pub fn input<T: FingerprintInput + ?Sized>(&mut self, input: &T) {
        if let Some(request) = &mut self.request {
            request.exact &= T::FROM_REQUEST_BYTES;
            request.fingerprint.input(input);
        }
    }

    /// Takes the handler's last argument, after every other one went through [`Context::input`].
    ///
    /// A retry that repeats a completed request byte for byte is answered here, with the replay
    /// (`Err`), before its body is parsed — provided every input of the handler is
    /// [determined by the request's bytes](FingerprintInput::FROM_REQUEST_BYTES) and the store
    /// can [peek](crate::store::IdempotencyStore::peek) at the record. Otherwise the argument is
    /// extracted (`Err` with the extractor's rejection if it fails), added to the fingerprint and
    /// returned.
    ///
    /// # Errors
    ///
    /// The response to send instead of running the handler: the replay, or the rejection.
    pub async fn body<T: FingerprintInput>(&mut self, last: Last<T>) -> Result<T, Response> {
        let (parts, body, extract) = match last.0 {
            LastState::Extracted(value) => {
                self.input(&value);
                return Ok(value);
            }
            LastState::Buffered {
                parts,
                body,
                extract,
            } => (parts, body, extract),
        };
        if let Some(request) = &mut self.request
            && request.exact
            && T::FROM_REQUEST_BYTES
            && let Ok(body) = &body
        {
            let digest = RequestDigest::new(
                &parts.method,
                parts
                    .extensions
                    .get::<MatchedPath>()
                    .map(MatchedPath::as_str),
                parts.uri.path(),
                parts.uri.query(),
                parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(http::HeaderValue::as_bytes),
                body,
            );
            if let Some(Record::Done { response, .. }) = request.config.store().peek(&request.key)
                && response.request_digest() == Some(&digest)
            {
                tracing::debug!(target: "idem", outcome = "replayed", exact = true, key = %request.key.key(), status = response.status().as_u16(), "replaying stored response to a byte-identical retry");
                return Err(response.to_response());
            }
            request.digest = Some(digest);
        }
        let body = match body {
            Ok(bytes) => Body::from(bytes),
            // The extractor reads the failure in place of the body, and rejects it as its own.
            Err(error) => Body::new(Failed(Some(error))),
        };
        let value = extract(Request::from_parts(parts, body)).await?;
        self.input(&value);
        Ok(value)
    }

    /// Runs the handler's future under the idempotency rules and answers.
    ///
    /// Without a key the future simply runs. With one, the claim and the handler run in a task of
    /// their own so that a client disconnect cannot cancel them; the handler runs only for a fresh
    /// claim, and its response is stored and answered.
    pub async fn run<F>(self, handler: F) -> Response
    where
        F: Future + Send + 'static,
        F::Output: IntoResponse,
    {
        match self.request {
            None => handler.await.into_response(),
            Some(request) => request.run(handler).await,
        }
    }
}

/// The last argument of an `#[idempotent]` handler, wrapped: `T`, extracted as usual, except that
/// for a request with an idempotency key its body is first read into memory, so that
/// [`Context::body`] can answer a byte-identical retry without parsing it.
///
/// The body is read under the same limit `T` would apply (axum's
/// [`DefaultBodyLimit`](axum::extract::DefaultBodyLimit)); if reading fails, `T` is handed the
/// failure and answers with its own rejection, as it would have. An extractor that reads no body
/// (`Path`, `Query`, …) is simply extracted.
pub struct Last<T>(LastState<T>);

#[allow(
    clippy::large_enum_variant,
    reason = "a `Last` lives for one request; boxing the parts would cost an allocation per keyed request to save a few hundred bytes of stack"
)]
enum LastState<T> {
    Extracted(T),
    Buffered {
        parts: Parts,
        /// The body, or why it could not be read.
        body: Result<Bytes, axum::BoxError>,
        extract: Box<dyn FnOnce(Request) -> BoxFuture<'static, Result<T, Response>> + Send>,
    },
}

impl<T> std::fmt::Debug for Last<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.0 {
            LastState::Extracted(_) => "extracted",
            LastState::Buffered { .. } => "buffered",
        };
        f.debug_tuple("Last").field(&state).finish()
    }
}

impl<S, T> FromRequest<S> for Last<T>
where
    S: Clone + Send + Sync + 'static,
    T: FromRequest<S> + Send + 'static,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        if request.extensions().get::<BufferBody>().is_none() {
            return match T::from_request(request, state).await {
                Ok(value) => Ok(Self(LastState::Extracted(value))),
                Err(rejection) => Err(rejection.into_response()),
            };
        }
        let (parts, body) = request.with_limited_body().into_parts();
        let body = body
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .map_err(innermost);
        let state = state.clone();
        let extract = Box::new(
            move |request: Request| -> BoxFuture<'static, Result<T, Response>> {
                Box::pin(async move {
                    T::from_request(request, &state)
                        .await
                        .map_err(IntoResponse::into_response)
                })
            },
        );
        Ok(Self(LastState::Buffered {
            parts,
            body,
            extract,
        }))
    }
}

impl<S, T> FromRequestParts<S> for Last<T>
where
    S: Send + Sync,
    T: FromRequestParts<S>,
{
    type Rejection = T::Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, T::Rejection> {
        T::from_request_parts(parts, state)
            .await
            .map(|value| Self(LastState::Extracted(value)))
    }
}

/// The error inside the layers of `axum::Error` that bodies wrap around it, so that an extractor
/// reading it again (and wrapping it again) still recognises a length limit.
fn innermost(error: axum::Error) -> axum::BoxError {
    let mut inner = error.into_inner();
    loop {
        match inner.downcast::<axum::Error>() {
            Ok(wrapped) => inner = wrapped.into_inner(),
            Err(other) => return other,
        }
    }
}

/// A body whose reading failed: yields the failure, once, to whoever reads it next.
struct Failed(Option<axum::BoxError>);

impl http_body::Body for Failed {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::BoxError>>> {
        Poll::Ready(self.get_mut().0.take().map(Err))
    }
}

/// What the claim decided.
enum Decision {
    Run(ClaimToken),
    Answer(Response),
}

impl Prepared {
    /// Runs the whole idempotent exchange — claim, handler, completion — so that it cannot be
    /// abandoned halfway.
    ///
    /// The exchange is polled once right here. If that one poll finishes it (an in-memory store and
    /// a handler that does not wait: a replay, a 409, most first executions), there was no moment
    /// at which dropping this future could have cut it short, and no task is needed. Otherwise the
    /// exchange moves, as it is, into a task of its own that owns everything it needs, so that
    /// neither the claim nor the handler is abandoned when this future is dropped because the
    /// client went away: a claim whose answer was lost would block its key until the lease ran
    /// out, and a handler cut short would leave its work half done. The task finishes, stores the
    /// result, and the retry gets the replay.
    async fn run<F>(self, handler: F) -> Response
    where
        F: Future + Send + 'static,
        F::Output: IntoResponse,
    {
        let mut exchange = Box::pin(self.process(handler));
        let first_poll = std::future::poll_fn(|cx| {
            Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| {
                exchange.as_mut().poll(cx)
            })))
        })
        .await;
        match first_poll {
            Ok(Poll::Ready(response)) => return response,
            Ok(Poll::Pending) => {}
            Err(_panic) => {
                tracing::error!(target: "idem", outcome = "aborted", "idempotent request panicked outside its handler");
                return Problem::handler_panicked().into_response();
            }
        }
        match tokio::spawn(exchange).await {
            Ok(response) => response,
            Err(error) => {
                tracing::error!(target: "idem", outcome = "aborted", %error, "idempotent request task did not finish");
                Problem::handler_panicked().into_response()
            }
        }
    }

    async fn process<F>(self, handler: F) -> Response
    where
        F: Future + Send + 'static,
        F::Output: IntoResponse,
    {
        let Prepared {
            config,
            settings,
            key,
            fingerprint,
            digest,
            ..
        } = self;
        let fingerprint = match fingerprint.finish() {
            Ok(fingerprint) => fingerprint,
            Err(reason) => {
                tracing::error!(target: "idem", outcome = "fingerprint_failed", %reason, "request input could not be fingerprinted");
                return Problem::fingerprint_failed(&reason).into_response();
            }
        };
        let store = Arc::clone(config.store());
        match decide(&*store, &settings, &key, &fingerprint).await {
            Decision::Answer(response) => response,
            Decision::Run(token) => {
                Execution {
                    store,
                    settings,
                    key,
                    fingerprint,
                    digest,
                    token,
                }
                .run(handler)
                .await
            }
        }
    }
}

/// Claims the key, and for an existing record decides the answer (replay, 409, 422), waiting for
/// an in-flight one under [`ConflictPolicy::Wait`].
async fn decide(
    store: &dyn IdempotencyStore,
    settings: &Settings,
    key: &StoreKey,
    fingerprint: &Fingerprint,
) -> Decision {
    let wait_until = Instant::now() + settings.wait_timeout;
    loop {
        let claim =
            match with_timeout(settings, store.claim(key, fingerprint, settings.lease)).await {
                Ok(claim) => claim,
                Err(error) => return Decision::Answer(store_failed("claim", key, &error)),
            };
        let record = match claim {
            Claim::Fresh(token) => return Decision::Run(token),
            Claim::Existing(record) => record,
        };
        let record = match record {
            Record::InFlight { .. }
                if record.fingerprint() == fingerprint
                    && settings.conflict == ConflictPolicy::Wait =>
            {
                match wait_for_result(store, settings, key, wait_until).await {
                    Ok(Some(record)) => record,
                    // Released or expired: the key is free again, so try to claim it.
                    Ok(None) => continue,
                    Err(error) => return Decision::Answer(store_failed("lookup", key, &error)),
                }
            }
            record => record,
        };
        return Decision::Answer(answer_existing(settings, key, fingerprint, &record));
    }
}

/// The answer to a request whose key already has a record.
fn answer_existing(
    settings: &Settings,
    key: &StoreKey,
    fingerprint: &Fingerprint,
    record: &Record,
) -> Response {
    if record.fingerprint() != fingerprint {
        tracing::info!(target: "idem", outcome = "mismatch", key = %key.key(), "idempotency key reused for a different request");
        return Problem::key_reused().into_response();
    }
    match record {
        Record::InFlight { .. } => {
            tracing::info!(target: "idem", outcome = "conflict", key = %key.key(), "request with this idempotency key is in flight");
            Problem::in_flight(settings.retry_after).into_response()
        }
        Record::Done { response, .. } => {
            tracing::debug!(target: "idem", outcome = "replayed", key = %key.key(), status = response.status().as_u16(), "replaying stored response");
            response.to_response()
        }
    }
}

/// Polls the record with back-off until it is done, gone, or `until` passes (then the in-flight
/// record is returned, for a 409).
async fn wait_for_result(
    store: &dyn IdempotencyStore,
    settings: &Settings,
    key: &StoreKey,
    until: Instant,
) -> Result<Option<Record>, StoreError> {
    let mut pause = Duration::from_millis(5);
    loop {
        let now = Instant::now();
        let record = with_timeout(settings, store.lookup(key)).await?;
        match record {
            Some(Record::InFlight { .. }) if now < until => {}
            other => return Ok(other),
        }
        sleep(pause.min(until.saturating_duration_since(now))).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

async fn with_timeout<T>(
    settings: &Settings,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let mut operation = pin!(operation);
    // A store that answers at once (one in memory) needs no timer.
    if let Poll::Ready(result) = poll_fn(|cx| Poll::Ready(operation.as_mut().poll(cx))).await {
        return result;
    }
    match timeout(settings.store_timeout, operation).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::new(format!(
            "store did not answer within {:?}",
            settings.store_timeout
        ))),
    }
}

fn store_failed(operation: &str, key: &StoreKey, error: &StoreError) -> Response {
    tracing::error!(target: "idem", outcome = "store_error", operation, key = %key.key(), %error, "idempotency store failed; request not processed");
    Problem::store_unavailable().into_response()
}

/// A claimed request: runs the handler and records its outcome.
struct Execution {
    store: Arc<dyn IdempotencyStore>,
    settings: Settings,
    key: StoreKey,
    fingerprint: Fingerprint,
    digest: Option<RequestDigest>,
    token: ClaimToken,
}

/// What a finished execution writes to the store.
enum Outcome {
    /// Keep the response for replay.
    Complete(StoredResponse),
    /// Free the key, so that the next request runs the handler.
    Release,
}

impl Outcome {
    fn operation(&self) -> &'static str {
        match self {
            Self::Complete(_) => "complete",
            Self::Release => "release",
        }
    }
}

impl Execution {
    async fn run<F>(self, handler: F) -> Response
    where
        F: Future + Send + 'static,
        F::Output: IntoResponse,
    {
        let max_body_bytes = self.settings.max_body_bytes;
        let produced = AssertUnwindSafe(async move {
            let response = handler.await.into_response();
            capture(response, max_body_bytes).await
        })
        .catch_unwind()
        .await;
        match produced {
            Err(_panic) => {
                tracing::error!(target: "idem", outcome = "panicked", key = %self.key.key(), "idempotent handler panicked; key released");
                self.record(Outcome::Release).await;
                Problem::handler_panicked().into_response()
            }
            Ok(Err(error)) => {
                tracing::error!(target: "idem", outcome = "response_failed", key = %self.key.key(), %error, "response body failed; key released");
                self.record(Outcome::Release).await;
                Problem::response_failed().into_response()
            }
            Ok(Ok((first, stored))) => {
                if stored.status().is_server_error() && !self.settings.store_server_errors {
                    tracing::info!(target: "idem", outcome = "executed", stored = false, key = %self.key.key(), status = stored.status().as_u16(), "server error not stored; key released");
                    self.record(Outcome::Release).await;
                } else {
                    let stored = match self.digest {
                        Some(digest) => stored.with_request_digest(digest),
                        None => stored,
                    };
                    self.record(Outcome::Complete(stored)).await;
                }
                first
            }
        }
    }

    /// Writes the outcome. If the store fails, the handler's answer still goes to the client at
    /// once, and the write is retried in the background until it lands or the claim's lease runs
    /// out: a transient fault must not leave the key in flight for a whole lease, after which a
    /// retry would run the handler a second time (a lost completion) or wait for nothing (a lost
    /// release).
    async fn record(self, outcome: Outcome) {
        let Err(error) = self.write(&outcome).await else {
            return;
        };
        let operation = outcome.operation();
        tracing::error!(target: "idem", outcome = "store_error", operation, key = %self.key.key(), %error, "store write failed; retrying in the background until the lease runs out");
        tokio::spawn(self.retry(outcome));
    }

    async fn retry(self, outcome: Outcome) {
        let give_up = Instant::now() + self.settings.lease;
        let mut pause = Duration::from_millis(10);
        loop {
            sleep(pause).await;
            match self.write(&outcome).await {
                Ok(()) => return,
                Err(error) if Instant::now() >= give_up => {
                    tracing::error!(target: "idem", outcome = "store_error", operation = outcome.operation(), key = %self.key.key(), %error, "store write still failing when the lease ran out; giving up");
                    return;
                }
                Err(_) => pause = (pause * 2).min(Duration::from_secs(1)),
            }
        }
    }

    async fn write(&self, outcome: &Outcome) -> Result<(), StoreError> {
        match outcome {
            Outcome::Complete(stored) => self.complete(stored).await,
            Outcome::Release => {
                with_timeout(&self.settings, self.store.release(&self.key, self.token)).await
            }
        }
    }

    async fn complete(&self, stored: &StoredResponse) -> Result<(), StoreError> {
        let completion = with_timeout(
            &self.settings,
            self.store.complete(
                &self.key,
                self.token,
                &self.fingerprint,
                stored,
                self.settings.ttl,
            ),
        )
        .await?;
        let key = self.key.key();
        let status = stored.status().as_u16();
        match completion {
            Completion::Stored => {
                tracing::info!(target: "idem", outcome = "executed", stored = true, %key, status, "response stored for replay");
            }
            Completion::LeaseLost => {
                tracing::warn!(target: "idem", outcome = "executed", stored = false, %key, status, "claim lease ran out and the key was taken over; response not stored");
            }
        }
        Ok(())
    }
}
