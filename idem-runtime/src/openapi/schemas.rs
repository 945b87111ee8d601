//! The JSON schemas of the built-in error formats.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

fn integer(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .description(Some(description))
}

/// [`ProblemJson`](crate::problem::ProblemJson)'s body: RFC 9457, with the `410`'s members.
pub(crate) fn problem_json() -> (Cow<'static, str>, RefOr<Schema>) {
    let schema = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "An answer of the idempotency layer, as RFC 9457 `application/problem+json`",
        ))
        .property(
            "type",
            string("a link to the description of the problem's kind")
                .format(Some(SchemaFormat::Custom("uri".to_owned()))),
        )
        .property("status", integer("the HTTP status"))
        .property("title", string("the kind's fixed title"))
        .property("detail", string("what happened and what the client can do"))
        .property(
            "original_status",
            integer("`410` only: the status the original request completed with"),
        )
        .property(
            "body_bytes",
            integer("`410` only: the length of the body that was not kept, in bytes"),
        )
        .required("type")
        .required("status")
        .required("title")
        .required("detail")
        .build();
    (Cow::Borrowed("IdempotencyProblem"), RefOr::T(schema.into()))
}

/// [`Stripe`](crate::problem::Stripe)'s envelope.
pub(crate) fn stripe() -> (Cow<'static, str>, RefOr<Schema>) {
    let error = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "type",
            string("Stripe's error type").enum_values(Some([
                "invalid_request_error",
                "idempotency_error",
                "api_error",
            ])),
        )
        .property(
            "code",
            string("`idempotency_key_in_use` (Stripe's) or one of idem's `idempotency_*` codes"),
        )
        .property(
            "message",
            string("what happened and what the client can do"),
        )
        .property(
            "original_status",
            integer("`410` only: the status the original request completed with"),
        )
        .property(
            "body_bytes",
            integer("`410` only: the length of the body that was not kept, in bytes"),
        )
        .required("type")
        .required("code")
        .required("message")
        .build();
    let schema = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "An answer of the idempotency layer, in Stripe's error envelope",
        ))
        .property("error", error)
        .required("error")
        .build();
    (
        Cow::Borrowed("IdempotencyStripeError"),
        RefOr::T(schema.into()),
    )
}
