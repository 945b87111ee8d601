//! Checks that need more than one token: the function's shape, the methods (declared, or read from
//! a route attribute next to `#[idempotent]`) and the ranges of the settings.

use std::time::Duration;

use proc_macro2::{Span, TokenTree};
use syn::visit::Visit;
use syn::{Attribute, Meta, Signature, TypeImplTrait};

use crate::ast::Handler;
use crate::attr::{Args, HttpMethod};
use crate::ctxt::Ctxt;

/// The longest `max_key_len` accepted.
///
/// Keep in sync with `idem_runtime::key::MAX_KEY_LEN_LIMIT`: this crate cannot depend on the
/// runtime (a proc-macro crate exports only macros), and the runtime rejects a larger value only at
/// run time. `tests/ui/fail/max_key_len_too_large.rs` pins the number.
const MAX_KEY_LEN_LIMIT: usize = 1024;

/// The attribute extracts the handler's arguments as one tuple, and axum extracts tuples of at
/// most 16.
const MAX_ARGS: usize = 16;

/// Records every problem of `handler` and `args` in `cx`.
pub(crate) fn check(handler: &Handler, args: &Args, cx: &mut Ctxt) {
    check_signature(&handler.item.sig, cx);
    check_declared_methods(args, cx);
    for attr in &handler.item.attrs {
        check_route_attr(attr, args, cx);
    }
    check_ranges(args, cx);
    check_storage(args, cx);
}

fn check_signature(sig: &Signature, cx: &mut Ctxt) {
    if sig.asyncness.is_none() {
        cx.error_spanned_by(
            sig.fn_token,
            "`#[idempotent]` handlers are `async fn`s: write `async fn` here",
        );
    }
    if let Some(receiver) = sig.receiver() {
        cx.error_spanned_by(
            receiver,
            "`#[idempotent]` handlers are free functions and cannot take `self`; take the \
             application state with `State<..>` instead",
        );
    }
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics,
            "`#[idempotent]` does not support generic handlers; write the concrete types in the \
             signature",
        );
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        cx.error_spanned_by(
            where_clause,
            "`#[idempotent]` does not support `where` clauses; write the concrete types in the \
             signature",
        );
    }
    for input in &sig.inputs {
        if let syn::FnArg::Typed(param) = input {
            ImplTraitFinder { cx: &mut *cx }.visit_type(&param.ty);
        }
    }
    if sig.inputs.len() > MAX_ARGS {
        cx.error_spanned_by(
            &sig.inputs,
            format!(
                "`#[idempotent]` handlers take at most {MAX_ARGS} arguments, as many as axum \
                 extracts; group some into a struct that implements `FromRequestParts`"
            ),
        );
    }
}

struct ImplTraitFinder<'a> {
    cx: &'a mut Ctxt,
}

impl Visit<'_> for ImplTraitFinder<'_> {
    fn visit_type_impl_trait(&mut self, ty: &TypeImplTrait) {
        self.cx.error_spanned_by(
            ty,
            "`#[idempotent]` does not support `impl Trait` arguments; write the concrete \
             extractor type",
        );
    }
}

fn check_declared_methods(args: &Args, cx: &mut Ctxt) {
    for method in &args.methods {
        if !method.value.is_supported() {
            let name = method.value.as_str();
            cx.syn_error(syn::Error::new(
                method.span,
                format!(
                    "{name} is idempotent by definition, so an `Idempotency-Key` has no effect on \
                     it; declare `post`, `put` or `patch`, or remove `#[idempotent]`"
                ),
            ));
        }
    }
}

/// Rejects a route attribute below `#[idempotent]` that names a method the attribute does not
/// cover: `#[utoipa::path(get, ..)]`, `#[route(GET "/x")]`, `#[get("/x")]`.
fn check_route_attr(attr: &Attribute, args: &Args, cx: &mut Ctxt) {
    for (method, span) in route_methods(attr) {
        let name = method.as_str();
        if !method.is_supported() {
            cx.syn_error(syn::Error::new(
                span,
                format!(
                    "`#[idempotent]` on a {name} route: {name} is idempotent by definition, so an \
                     `Idempotency-Key` has no effect on it; remove `#[idempotent]`, which is for \
                     POST, PUT and PATCH routes"
                ),
            ));
        } else if !args.methods.is_empty() && !args.methods.iter().any(|m| m.value == method) {
            let option = method.option_name();
            cx.syn_error(syn::Error::new(
                span,
                format!(
                    "this route is {name} but `#[idempotent]` does not declare `{option}`, so \
                     its {name} requests would get no idempotency; add `{option}` to \
                     `#[idempotent(..)]`"
                ),
            ));
        }
    }
}

/// The methods a route attribute names, with where it names them.
fn route_methods(attr: &Attribute) -> Vec<(HttpMethod, Span)> {
    let Meta::List(list) = &attr.meta else {
        return Vec::new();
    };
    let Some(last) = list.path.segments.last() else {
        return Vec::new();
    };
    let name = last.ident.to_string();
    let items = split_commas(list.tokens.clone());
    let mut methods = Vec::new();
    match name.as_str() {
        // `#[utoipa::path(post, path = "/x")]`, `#[utoipa::path(method(get, head), path = "/x")]`
        "path" => {
            for item in &items {
                match item.as_slice() {
                    [TokenTree::Ident(ident)] => methods.extend(method_ident(ident)),
                    [TokenTree::Ident(ident), TokenTree::Group(group)] if ident == "method" => {
                        for token in group.stream() {
                            if let TokenTree::Ident(ident) = token {
                                methods.extend(method_ident(&ident));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        // `#[route(GET "/x")]` (axum-typed-routing), `#[route("/x", method = "GET")]` (actix-web)
        "route" => {
            if let Some(TokenTree::Ident(ident)) = items.first().and_then(|item| item.first()) {
                methods.extend(method_ident(ident));
            }
            for item in &items {
                if let [
                    TokenTree::Ident(key),
                    TokenTree::Punct(eq),
                    TokenTree::Literal(value),
                ] = item.as_slice()
                    && key == "method"
                    && eq.as_char() == '='
                    && let Some(method) = HttpMethod::from_name(value.to_string().trim_matches('"'))
                {
                    methods.push((method, value.span()));
                }
            }
        }
        // `#[get("/x")]`, `#[actix_web::post("/x")]`
        _ => {
            if let Some(method) = HttpMethod::from_name(&name)
                && name == method.option_name()
            {
                methods.push((method, last.ident.span()));
            }
        }
    }
    methods
}

fn method_ident(ident: &proc_macro2::Ident) -> Option<(HttpMethod, Span)> {
    HttpMethod::from_name(&ident.to_string()).map(|method| (method, ident.span()))
}

/// The comma-separated items of an attribute's arguments, each as its tokens.
pub(crate) fn split_commas(tokens: proc_macro2::TokenStream) -> Vec<Vec<TokenTree>> {
    let mut items = vec![Vec::new()];
    for token in tokens {
        match &token {
            TokenTree::Punct(punct) if punct.as_char() == ',' => items.push(Vec::new()),
            _ => items.last_mut().expect("never empty").push(token),
        }
    }
    items.retain(|item| !item.is_empty());
    items
}

fn check_ranges(args: &Args, cx: &mut Ctxt) {
    if let Some(len) = &args.max_key_len {
        if len.value == 0 {
            cx.syn_error(syn::Error::new(
                len.span,
                "`max_key_len` must be at least 1; leave it out for the default of 255",
            ));
        } else if len.value > MAX_KEY_LEN_LIMIT {
            cx.syn_error(syn::Error::new(
                len.span,
                format!(
                    "`max_key_len` is at most {MAX_KEY_LEN_LIMIT}, the longest key idem accepts"
                ),
            ));
        }
    }
    for (name, duration, zero_allowed) in [
        ("ttl", &args.ttl, false),
        ("lease", &args.lease, false),
        ("max_hold", &args.max_hold, false),
        ("wait_timeout", &args.wait_timeout, true),
    ] {
        let Some(duration) = duration else { continue };
        if duration.value.is_zero() && !zero_allowed {
            cx.syn_error(syn::Error::new(
                duration.span,
                format!("`{name}` must be longer than zero, e.g. `{name} = \"10m\"`"),
            ));
        } else if duration.value > MAX_DURATION {
            cx.syn_error(syn::Error::new(
                duration.span,
                format!(
                    "`{name}` is at most 366 days, the longest duration idem keeps anything for; \
                     write e.g. `{name} = \"30d\"`"
                ),
            ));
        }
    }
}

/// The longest duration an option takes: 366 days, as `idem_runtime::config::MAX_DURATION`.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// The response headers that are never replayed, with why.
///
/// Keep in sync with `idem_runtime::replay::is_replayable` (this crate cannot depend on the
/// runtime); `tests/ui/fail/replay_only_never_replayed.rs` pins the list.
const NEVER_REPLAYED: &[(&str, &str)] = &[
    ("set-cookie", "a session must not be handed out twice"),
    ("date", "the replay gets a date of its own"),
    ("connection", HOP_BY_HOP),
    ("keep-alive", HOP_BY_HOP),
    ("proxy-authenticate", HOP_BY_HOP),
    ("proxy-authorization", HOP_BY_HOP),
    ("proxy-connection", HOP_BY_HOP),
    ("te", HOP_BY_HOP),
    ("trailer", HOP_BY_HOP),
    ("transfer-encoding", HOP_BY_HOP),
    ("upgrade", HOP_BY_HOP),
];

const HOP_BY_HOP: &str = "it is a hop-by-hop header, about one connection";

/// `keep` and its shorthand, and the headers of `replay_only`.
fn check_storage(args: &Args, cx: &mut Ctxt) {
    if let (Some(shorthand), Some(_)) = (&args.store_server_errors, &args.keep) {
        let replacement = if shorthand.value {
            "all"
        } else {
            "no_server_errors"
        };
        cx.syn_error(syn::Error::new(
            shorthand.span,
            format!(
                "`store_server_errors` and `keep` both say which answers are kept; keep one \
                 (`store_server_errors = {}` is `keep = {replacement}`)",
                shorthand.value
            ),
        ));
    }
    for header in args.replay_only.iter().flatten() {
        if let Some((name, why)) = NEVER_REPLAYED
            .iter()
            .find(|(name, _)| *name == header.value)
        {
            cx.syn_error(syn::Error::new(
                header.span,
                format!("`{name}` is never replayed ({why}); remove it from `replay_only`"),
            ));
        }
    }
}
