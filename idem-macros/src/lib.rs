//! The `#[idempotent]` attribute of the [idem](https://docs.rs/idem) crate.
//!
//! Use it through `idem`, which re-exports it: `use idem::idempotent;`. Everything about the
//! attribute is documented on [`macro@idempotent`].
//!
//! The crate is parse → check → expand, one module each: `attr` reads the attribute's arguments,
//! `ast` the handler, `valid` checks both and collects every problem (`ctxt`), `expand` writes the
//! code and `fallback` what is emitted instead when there is a problem.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod fallback;
mod valid;

use proc_macro::TokenStream;

/// Makes an axum handler safe to retry: a request that carries an `Idempotency-Key` runs once, and
/// a retry with the same key receives the first answer again, with `Idempotent-Replayed: true`.
///
/// ```
/// use axum::routing::post;
/// use axum::{Json, Router};
/// use idem::idempotent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize, Serialize)]
/// struct NewCharge {
///     amount: u64,
///     currency: String,
/// }
///
/// /// Creates a charge. Retrying with the same `Idempotency-Key` never charges twice.
/// #[idempotent(post)]
/// pub async fn create_charge(Json(charge): Json<NewCharge>) -> Json<NewCharge> {
///     // ... charge the card ...
///     Json(charge)
/// }
///
/// let app: Router = Router::new().route("/charges", post(create_charge));
/// ```
///
/// The handler keeps its name, visibility, documentation and other attributes, and is routed as
/// before. What a request goes through (key, scope, fingerprint, claim, replay, `409`, `422`) is
/// described in the `idem` crate's documentation; this page is about the attribute.
///
/// # Options
///
/// Every option is optional. One that is left out takes the value of the application's
/// `idem::Idempotency` (installed with `Router::layer(Extension(..))`), whose defaults are shown
/// here.
///
/// | option | default | meaning |
/// |---|---|---|
/// | `post`, `put`, `patch` | all three | the methods idempotency applies to; a request with another method passes through untouched |
/// | `ttl = "24h"` | 24 hours | how long a completed answer is kept, counted from completion |
/// | `lease = "15s"` | 15 seconds | how long a running request holds its key unless renewed; the runtime renews it every third of it while the handler runs, so a process that dies frees its keys within one lease |
/// | `max_hold = "1h"` | 1 hour | the longest a running request's claim is renewed; past it, its key can be taken over one lease later |
/// | `max_key_len = 255` | 255 | the longest key accepted, in characters: 1 to 1024 |
/// | `required` | keys are optional | a request without a key gets `400` instead of running without idempotency |
/// | `header = "Idempotency-Key"` | `Idempotency-Key` | the request header that carries the key (names are case-insensitive) |
/// | `scope = tenant_scope` | the digest of `Authorization` | whose key it is: a function `fn(&http::request::Parts) -> idem::Scope` |
/// | `keep = no_server_errors` | `all` | which answers are kept: `all`, `no_server_errors`, or a function `fn(http::StatusCode) -> bool`; an answer not kept releases its key, so a retry runs again |
/// | `store_server_errors = false` | `true` | the shorthand of `keep = no_server_errors` (`true`: `keep = all`); not with `keep` |
/// | `replay_only = ["content-type", "location"]` | every header | an allow-list of the response headers replayed (name `content-type` too); `Set-Cookie`, `Date` and hop-by-hop headers are never replayed and naming one is an error |
/// | `replay_except = ["x-request-id"]` | none | response headers never replayed, on top of the application's own deny list |
/// | `errors = idem::problem::Stripe` | problem+json | the format of the answers idem makes itself: `idem::problem::ProblemJson`, `idem::problem::Stripe`, a function `fn(&idem::problem::Problem) -> Response`, or a unit struct, constant or static that implements `idem::problem::ErrorFormat` |
/// | `conflict = reject` | `reject` | a duplicate of a request still running gets `409` (`reject`), or waits for its answer (`wait`) |
/// | `wait_timeout = "30s"` | 30 seconds | how long `conflict = wait` waits before answering `409` |
/// | `max_body_bytes = 1_048_576` | 1 MiB | the largest answer body kept for replay; a retry of a larger one gets `410` with the original status |
/// | `crate = "::idem"` | `::idem` | the path of the `idem` crate, for a renamed dependency |
///
/// Durations are strings of a number and a unit: `"1500ms"`, `"90s"`, `"10m"`, `"24h"`, `"7d"`,
/// `"1h 30m"`; they are checked while compiling, and are at most 366 days. Methods are written in lowercase. Every problem
/// with the options is reported at once, each at the option at fault.
///
/// ```
/// use axum::http::request::Parts;
/// use axum::routing::post;
/// use axum::{Json, Router};
/// use idem::{Scope, idempotent};
///
/// /// Keys belong to the tenant named by `X-Tenant`, whoever the caller is.
/// fn tenant_scope(parts: &Parts) -> Scope {
///     match parts.headers.get("x-tenant") {
///         Some(tenant) => Scope::from_identity(tenant.as_bytes()),
///         None => Scope::ANONYMOUS,
///     }
/// }
///
/// #[idempotent(
///     post,
///     put,
///     ttl = "7d",
///     lease = "2m",
///     max_key_len = 64,
///     required,
///     header = "X-Request-Key",
///     scope = tenant_scope,
///     keep = no_server_errors,
///     replay_except = ["x-request-id", "x-ratelimit-remaining"],
///     errors = idem::problem::Stripe,
///     conflict = wait,
///     wait_timeout = "10s",
///     max_body_bytes = 65_536,
///     crate = "::idem",
/// )]
/// async fn upsert_payout(Json(amount): Json<u64>) -> String {
///     format!("payout of {amount}")
/// }
///
/// let app: Router = Router::new().route("/payouts", post(upsert_payout).put(upsert_payout));
/// ```
///
/// # Methods
///
/// The attribute is for `POST`, `PUT` and `PATCH`. `GET`, `HEAD`, `DELETE`, `OPTIONS` and `TRACE`
/// are idempotent by definition, so a key would have no effect on them: naming one is a compile
/// error, in the attribute (`#[idempotent(get)]`) or in a route attribute written below it, which
/// the attribute reads: `#[utoipa::path(get, ..)]`, axum-typed-routing's `#[route(GET "/x")]` or
/// the `#[get("/x")]` of other frameworks. When the attribute declares methods and a route
/// attribute below names another supported one, that is an error too, since those requests would
/// get no idempotency.
///
/// # Arguments
///
/// The handler's arguments are extractors as usual, with one addition: each one is part of the
/// request's fingerprint, which tells a retry from a different request sent with the same key.
/// An argument's type says what it contributes through `idem::FingerprintInput`:
///
/// - `Json<T>`, `Form<T>`, `Query<T>` and `Path<T>` contribute their value in canonical form, so
///   `T` must implement `serde::Serialize` as well as `Deserialize`; `String`, `Bytes` and
///   `RawForm` contribute their bytes;
/// - `State`, `Extension`, `ConnectInfo`, `HeaderMap`, `Method`, `Uri`, `MatchedPath` and other
///   extractors that read no client input contribute nothing;
/// - an extractor of your own implements `FingerprintInput`, or is left out with `#[idem(skip)]`:
///
/// ```
/// use axum::extract::FromRequestParts;
/// use axum::http::{StatusCode, request::Parts};
/// use axum::Json;
/// use idem::fingerprint::{FingerprintInput, Fingerprinter};
/// use idem::idempotent;
///
/// /// The `X-Customer` header: client input, so part of the fingerprint.
/// struct Customer(String);
///
/// impl FingerprintInput for Customer {
///     fn fingerprint(&self, fp: &mut Fingerprinter) {
///         fp.bytes(self.0.as_bytes());
///     }
/// }
///
/// /// The `X-Trace-Id` header: differs between a request and its retry, so left out.
/// struct TraceId(Option<String>);
///
/// # impl<S: Send + Sync> FromRequestParts<S> for Customer {
/// #     type Rejection = StatusCode;
/// #     async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
/// #         let value = parts.headers.get("x-customer").ok_or(StatusCode::BAD_REQUEST)?;
/// #         Ok(Customer(value.to_str().map_err(|_| StatusCode::BAD_REQUEST)?.to_owned()))
/// #     }
/// # }
/// # impl<S: Send + Sync> FromRequestParts<S> for TraceId {
/// #     type Rejection = std::convert::Infallible;
/// #     async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
/// #         let value = parts.headers.get("x-trace-id").and_then(|v| v.to_str().ok());
/// #         Ok(TraceId(value.map(str::to_owned)))
/// #     }
/// # }
/// #[idempotent(post)]
/// async fn create_order(
///     Customer(customer): Customer,
///     #[idem(skip)] TraceId(trace): TraceId,
///     Json(items): Json<Vec<String>>,
/// ) -> String {
///     format!("{customer} ordered {} items (trace {trace:?})", items.len())
/// }
/// ```
///
/// An argument whose type says nothing is a compile error at that argument, which says what to
/// do. The key, the scope and the request line are read by an extractor that the attribute puts
/// before all others, so a bad key is refused with `400` before the body is read.
///
/// # With other attributes
///
/// Write `#[idempotent]` above the handler's other attributes: it reads the route attributes below
/// it, and they see the handler as the attribute rewrote it, which takes its arguments as one
/// extractor. `#[axum::debug_handler]` works below `#[idempotent]`, and checks the handler as
/// written (above it, it checks the handler before the rewrite and fails); so does `#[route(..)]`. A `#[utoipa::path(..)]` below it documents the handler from its
/// signature as written (a `Path` parameter's type, a `Json` body's schema), as it would without
/// `#[idempotent]`.
///
/// # Limits
///
/// - The handler is an `async fn` at module level: not a method (no `self`), not generic, without
///   `impl Trait` arguments, with at most 16 arguments (as many as axum extracts). Each of these
///   is a compile error.
/// - A client disconnecting cannot cancel the body: it is polled once in place and, if it has to
///   wait, moves into a task of its own that runs it to its end. So, like any axum handler served
///   by hyper, its future must be `Send` and `'static` (own what it uses).
///
/// # What it writes
///
/// Next to the handler, a hidden type `__idem_options_<handler>` with the handler's visibility,
/// which carries the options as constants (and, for `idem::openapi`, the `operation_id` and `path`
/// of a `#[utoipa::path]` below the attribute, or the function's name). The handler itself takes
/// one argument, the runtime's `Arguments` extractor, which reads the key and the scope (and
/// answers `400` for a bad key) before it extracts the original arguments, as a tuple, in their
/// order. For a request with a key, to a handler whose every input is determined by the request's
/// bytes and whose last argument is not `#[idem(skip)]`, it first reads the body into memory, so
/// that a retry repeating a completed request byte for byte is replayed before any argument is
/// extracted. The handler feeds each argument to the fingerprint and runs the original body, as
/// written, through the runtime, which decides whether to run it, replay or refuse. An
/// `#[axum::debug_handler]` below the attribute is moved onto the original function, which it
/// checks as written. Everything generated is reached through
/// `idem::__private`, which is not public API.
#[proc_macro_attribute]
pub fn idempotent(args: TokenStream, input: TokenStream) -> TokenStream {
    let input = proc_macro2::TokenStream::from(input);
    expand::idempotent(args.into(), input.clone())
        .unwrap_or_else(|error| fallback::expand(input, &error))
        .into()
}
