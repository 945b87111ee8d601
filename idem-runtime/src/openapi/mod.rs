//! OpenAPI, behind the `utoipa` feature: what `#[idempotent]` adds to a handler's operation, in
//! the API's [utoipa](https://docs.rs/utoipa) document.
//!
//! [`Idempotent`] is given the `#[idempotent]` handlers, finds each one's operation (by its
//! `operationId`, which utoipa takes from the function's name unless `#[utoipa::path]` names
//! another) and documents, from the handler's own options and the runtime-wide defaults:
//!
//! - the `Idempotency-Key` request header (or the handler's `header`): required or not, its
//!   maximum length;
//! - the `Idempotent-Replayed` header on each response the operation documents, since any of them
//!   may be a replay;
//! - the answers of the idempotency layer, `400`, `409` (with `Retry-After`), `410`, `422`, `500`
//!   and `503`, at the statuses and with the bodies of the handler's error format: its schema, in
//!   `components`, when the format has one ([`ProblemJson`](crate::problem::ProblemJson) and
//!   [`Stripe`](crate::problem::Stripe) do), and an example of each answer, rendered by the format.
//!
//! An answer at a status the operation documents already is merged into it: its content and
//! headers are added, and its description says both. Operations of other handlers are left as
//! they are.
//!
//! ```
//! use axum::Json;
//! use idem::idempotent;
//! use idem::openapi::Idempotent;
//! use utoipa::OpenApi;
//!
//! /// Creates a charge.
//! #[idempotent(post, required)]
//! #[utoipa::path(post, path = "/charges", responses((status = 201, description = "Charge created")))]
//! async fn create_charge(Json(amount): Json<u64>) -> String {
//!     format!("charged {amount}")
//! }
//!
//! #[derive(OpenApi)]
//! #[openapi(paths(create_charge))]
//! struct Api;
//!
//! let mut api = Api::openapi();
//! Idempotent::new().handler(create_charge).document(&mut api);
//!
//! let operation = api.paths.paths["/charges"].post.as_ref().unwrap();
//! let key = &operation.parameters.as_ref().unwrap()[0];
//! # let utoipa::openapi::RefOr::T(key) = key else { unreachable!() };
//! assert_eq!(key.name, "Idempotency-Key");
//! for status in ["400", "409", "410", "422", "500", "503"] {
//!     assert!(operation.responses.responses.contains_key(status));
//! }
//! ```
//!
//! As a modifier of the `OpenApi` derive, from a type of the application's:
//!
//! ```
//! # use axum::Json;
//! # use idem::idempotent;
//! # #[idempotent(post)]
//! # #[utoipa::path(post, path = "/charges", responses((status = 201, description = "Charge created")))]
//! # async fn create_charge(Json(amount): Json<u64>) -> String { amount.to_string() }
//! use idem::openapi::Idempotent;
//! use utoipa::openapi::OpenApi as Document;
//! use utoipa::{Modify, OpenApi};
//!
//! struct Idempotency;
//!
//! impl Modify for Idempotency {
//!     fn modify(&self, api: &mut Document) {
//!         Idempotent::new().handler(create_charge).document(api);
//!     }
//! }
//!
//! #[derive(OpenApi)]
//! #[openapi(paths(create_charge), modifiers(&Idempotency))]
//! struct Api;
//! # assert!(Api::openapi().paths.paths["/charges"].post.as_ref().unwrap().responses.responses.contains_key("409"));
//! ```
//!
//! An application whose runtime-wide [`Idempotency`] changes a
//! default (the header, `required`, the error format) documents with it:
//! [`Idempotent::with_defaults`].

use std::collections::BTreeMap;

use http::{HeaderMap, Method, StatusCode};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Ref, Type};
use utoipa::openapi::{
    Components, ContentBuilder, OpenApi, RefOr, Required, ResponseBuilder, Schema,
};

use crate::config::handler::HandlerOptions;
use crate::config::{Idempotency, Settings};
use crate::execute::{Arguments, HandlerConfig};
use crate::problem::{Problem, ProblemKind};

pub(crate) mod schemas;

/// The handler of an `#[idempotent]` function: what [`Idempotent::handler`] takes. Implemented
/// for every function the attribute wrote; `M` names its options and arguments.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `#[idempotent]` handler",
    label = "not written with `#[idempotent]`",
    note = "name a handler function that has the `#[idempotent(..)]` attribute"
)]
pub trait IdempotentHandler<M> {
    /// The options type the attribute declared for the handler.
    #[doc(hidden)]
    type Options: HandlerConfig;
}

impl<F, Fut, O, T> IdempotentHandler<(O, T)> for F
where
    F: FnOnce(Arguments<O, T>) -> Fut,
    O: HandlerConfig,
{
    type Options = O;
}

/// One handler to document.
struct Documented {
    operation_id: &'static str,
    path: Option<&'static str>,
    options: HandlerOptions,
}

/// Documents `#[idempotent]` handlers in an OpenAPI document; see the [module docs](self).
///
/// Also a [`utoipa::Modify`].
#[must_use]
pub struct Idempotent {
    defaults: Settings,
    handlers: Vec<Documented>,
}

impl Default for Idempotent {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Idempotent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotent")
            .field(
                "handlers",
                &self
                    .handlers
                    .iter()
                    .map(|handler| handler.operation_id)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Idempotent {
    /// Documents with the default runtime-wide settings ([`Settings::default`]).
    pub fn new() -> Self {
        Self::with_settings(Settings::default())
    }

    /// Documents with the runtime-wide settings of `idempotency`: its header, `required`, key
    /// length and error format, where a handler does not set its own.
    pub fn with_defaults(idempotency: &Idempotency) -> Self {
        Self::with_settings(idempotency.settings().clone())
    }

    fn with_settings(defaults: Settings) -> Self {
        Self {
            defaults,
            handlers: Vec::new(),
        }
    }

    /// Adds a handler written with `#[idempotent]`, named as it is routed: `.handler(create_charge)`.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "a handler is named as it is routed, by value; only its type is read"
    )]
    pub fn handler<H: IdempotentHandler<M>, M>(mut self, handler: H) -> Self {
        let _ = handler;
        self.handlers.push(Documented {
            operation_id: <H::Options as HandlerConfig>::OPERATION_ID,
            path: <H::Options as HandlerConfig>::PATH,
            options: <H::Options as HandlerConfig>::options().clone(),
        });
        self
    }

    /// Adds to `openapi` what the handlers' idempotency means for their operations.
    pub fn document(&self, openapi: &mut OpenApi) {
        let mut components = openapi.components.take().unwrap_or_default();
        for (path, item) in &mut openapi.paths.paths {
            for (method, operation) in [
                (Method::POST, &mut item.post),
                (Method::PUT, &mut item.put),
                (Method::PATCH, &mut item.patch),
            ] {
                let Some(operation) = operation else { continue };
                let Some(handler) = self.handlers.iter().find(|handler| {
                    operation.operation_id.as_deref() == Some(handler.operation_id)
                        && handler.path.is_none_or(|own| path.ends_with(own))
                }) else {
                    continue;
                };
                if handler.options.methods.contains(&method) {
                    let settings = self.defaults.with(&handler.options);
                    document_operation(operation, &settings, &mut components);
                }
            }
        }
        if components != Components::default() {
            openapi.components = Some(components);
        }
    }
}

impl utoipa::Modify for Idempotent {
    fn modify(&self, openapi: &mut OpenApi) {
        self.document(openapi);
    }
}

/// `Idempotency-Key`, as a header name is usually written.
fn display_name(header: &str) -> String {
    header
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn document_operation(operation: &mut Operation, settings: &Settings, components: &mut Components) {
    let key = display_name(settings.header.as_str());
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    let documented = parameters.iter().any(|parameter| {
        matches!(parameter, RefOr::T(parameter)
            if parameter.parameter_in == ParameterIn::Header
                && parameter.name.eq_ignore_ascii_case(&key))
    });
    if !documented {
        let required = if settings.required {
            Required::True
        } else {
            Required::False
        };
        let max = settings.max_key_len;
        parameters.push(RefOr::T(
            ParameterBuilder::new()
                .name(key)
                .parameter_in(ParameterIn::Header)
                .required(required)
                .description(Some(format!(
                    "A unique key for this request, such as a UUID: a retry with the same key \
                     receives the first answer again instead of running the operation twice. \
                     1 to {max} visible ASCII characters, bare or as an RFC 8941 string."
                )))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(max)),
                ))
                .build(),
        ));
    }

    // Any answer the operation documents may come as a replay.
    let replayed = HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["true"])),
        ))
        .description(Some(
            "`true` when this answer is the replay of an earlier request with the same key",
        ))
        .build();
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response
                .headers
                .entry("Idempotent-Replayed".to_owned())
                .or_insert_with(|| RefOr::T(replayed.clone()));
        }
    }

    for (status, answers) in layer_answers(settings) {
        add_answer(operation, components, settings, status, &answers);
    }
}

/// One answer of the layer, rendered in the handler's format.
struct Answer {
    kind: ProblemKind,
    content_type: Option<String>,
    example: Option<serde_json::Value>,
    retry_after: bool,
}

/// The layer's answers for a handler with `settings`, by status.
fn layer_answers(settings: &Settings) -> BTreeMap<StatusCode, Vec<Answer>> {
    let mut answers: BTreeMap<StatusCode, Vec<Answer>> = BTreeMap::new();
    for &kind in ProblemKind::ALL {
        if kind == ProblemKind::KeyMissing && !settings.required {
            continue;
        }
        let response = settings.errors.render(&Problem::example(kind));
        let status = response.status();
        let (parts, body) = response.into_parts();
        answers.entry(status).or_default().push(Answer {
            kind,
            content_type: content_type(&parts.headers),
            example: example(&parts.headers, body),
            retry_after: parts.headers.contains_key(http::header::RETRY_AFTER),
        });
    }
    answers
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or(value).trim().to_owned())
}

/// The body of a rendered answer, as JSON (or a JSON string for text), when it is in memory.
fn example(headers: &HeaderMap, body: axum::body::Body) -> Option<serde_json::Value> {
    use http_body::Body as _;
    let mut body = std::pin::pin!(body);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut bytes = Vec::new();
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            std::task::Poll::Ready(None) => break,
            // A body that streams or fails is not shown.
            std::task::Poll::Ready(Some(Err(_))) | std::task::Poll::Pending => return None,
        }
    }
    let json = content_type(headers).is_some_and(|ty| ty.ends_with("json"));
    if json {
        serde_json::from_slice(&bytes).ok()
    } else {
        String::from_utf8(bytes).ok().map(serde_json::Value::String)
    }
}

fn add_answer(
    operation: &mut Operation,
    components: &mut Components,
    settings: &Settings,
    status: StatusCode,
    answers: &[Answer],
) {
    let description = answers
        .iter()
        .map(|answer| answer.kind.title())
        .collect::<Vec<_>>()
        .join("; ");
    let description = format!("{description} (idempotency)");
    let schema: Option<RefOr<Schema>> = settings.errors.format().schema().map(|(name, schema)| {
        components
            .schemas
            .entry(name.clone().into_owned())
            .or_insert(schema);
        RefOr::Ref(Ref::from_schema_name(name))
    });
    let mut builder = ResponseBuilder::new().description(description.clone());
    if answers.iter().any(|answer| answer.retry_after) {
        builder = builder.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                ))
                .description(Some("seconds to wait before retrying with the same key"))
                .build(),
        );
    }
    let mut by_type: BTreeMap<String, Vec<&Answer>> = BTreeMap::new();
    for answer in answers {
        if let Some(content_type) = &answer.content_type {
            by_type
                .entry(content_type.clone())
                .or_default()
                .push(answer);
        }
    }
    for (content_type, answers) in by_type {
        let examples = answers.iter().filter_map(|answer| {
            let value = answer.example.clone()?;
            Some((
                answer.kind.slug().to_owned(),
                ExampleBuilder::new()
                    .summary(answer.kind.title())
                    .value(Some(value))
                    .build(),
            ))
        });
        let content = ContentBuilder::new()
            .schema(schema.clone())
            .examples_from_iter(examples)
            .build();
        builder = builder.content(content_type, content);
    }
    let ours = builder.build();
    let key = status.as_u16().to_string();
    match operation.responses.responses.get_mut(&key) {
        None => {
            operation.responses.responses.insert(key, RefOr::T(ours));
        }
        // The operation documents this status already: add ours to it.
        Some(RefOr::T(existing)) => {
            existing.description = format!("{}; or: {description}", existing.description);
            for (name, header) in ours.headers {
                existing.headers.entry(name).or_insert(header);
            }
            for (content_type, content) in ours.content {
                if !existing.content.contains_key(&content_type) {
                    existing.content.insert(content_type, content);
                }
            }
        }
        // A shared response of the components: left as it is.
        Some(RefOr::Ref(_)) => {}
    }
}
