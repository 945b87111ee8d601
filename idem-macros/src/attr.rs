//! The arguments of `#[idempotent(...)]`: from tokens to typed settings.
//!
//! Every argument is read even after an error, so that one compilation reports every bad argument.
//! Range checks that need more than one argument, or the function, are in `valid.rs`.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, Token};

use crate::ctxt::Ctxt;

/// Every option, for the "unknown option" message.
const OPTIONS: &str = "`post`, `put`, `patch`, `ttl`, `lease`, `max_hold`, `max_key_len`, `required`, \
                       `header`, `scope`, `keep`, `store_server_errors`, `replay_only`, \
                       `replay_except`, `errors`, `conflict`, `wait_timeout`, `max_body_bytes` or \
                       `crate`";

/// An HTTP method named by the attribute or by a route attribute next to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpMethod {
    Post,
    Put,
    Patch,
    Get,
    Head,
    Delete,
    Options,
    Trace,
}

impl HttpMethod {
    /// The method named `name`, in any case.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        let method = match name.to_ascii_lowercase().as_str() {
            "post" => Self::Post,
            "put" => Self::Put,
            "patch" => Self::Patch,
            "get" => Self::Get,
            "head" => Self::Head,
            "delete" => Self::Delete,
            "options" => Self::Options,
            "trace" => Self::Trace,
            _ => return None,
        };
        Some(method)
    }

    /// Whether idempotency keys make sense for the method (it is not idempotent by definition).
    pub(crate) fn is_supported(self) -> bool {
        matches!(self, Self::Post | Self::Put | Self::Patch)
    }

    /// The method as HTTP writes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
            Self::Trace => "TRACE",
        }
    }

    /// The method as the attribute spells it.
    pub(crate) fn option_name(self) -> String {
        self.as_str().to_ascii_lowercase()
    }
}

/// A value and where it was written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// `conflict = reject | wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conflict {
    Reject,
    Wait,
}

/// `keep = all | no_server_errors | path::to::function`.
#[derive(Debug, Clone)]
pub(crate) enum Keep {
    All,
    NoServerErrors,
    When(syn::Path),
}

/// A header name written in a list, lowercase, and where it was written.
pub(crate) type HeaderList = Vec<Spanned<String>>;

/// The parsed arguments; `None` means "not written", so the runtime default applies.
#[derive(Default)]
pub(crate) struct Args {
    /// The declared methods, in order (unsupported ones included: `valid.rs` rejects them).
    pub(crate) methods: Vec<Spanned<HttpMethod>>,
    pub(crate) ttl: Option<Spanned<Duration>>,
    pub(crate) lease: Option<Spanned<Duration>>,
    pub(crate) max_hold: Option<Spanned<Duration>>,
    pub(crate) wait_timeout: Option<Spanned<Duration>>,
    pub(crate) max_key_len: Option<Spanned<usize>>,
    pub(crate) max_body_bytes: Option<Spanned<usize>>,
    pub(crate) required: bool,
    /// A valid header name, lowercase.
    pub(crate) header: Option<String>,
    pub(crate) store_server_errors: Option<Spanned<bool>>,
    pub(crate) keep: Option<Spanned<Keep>>,
    pub(crate) replay_only: Option<HeaderList>,
    pub(crate) replay_except: Option<HeaderList>,
    pub(crate) errors: Option<syn::Path>,
    pub(crate) conflict: Option<Conflict>,
    pub(crate) scope: Option<syn::Path>,
    pub(crate) krate: Option<syn::Path>,
}

/// One `name`, `name = value` or `name(...)` argument, before it is interpreted.
struct Item {
    name: Ident,
    value: Value,
}

enum Value {
    Flag,
    Assign(Expr),
    List(proc_macro2::Group),
}

impl Parse for Item {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        // `parse_any` also accepts keywords, for `crate = "..."`.
        let name = input.call(Ident::parse_any)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Value::Assign(input.parse()?)
        } else if input.peek(syn::token::Paren) {
            Value::List(input.parse()?)
        } else {
            Value::Flag
        };
        Ok(Self { name, value })
    }
}

impl Args {
    /// Reads the attribute's arguments, recording every problem in `cx`.
    pub(crate) fn parse(tokens: TokenStream, cx: &mut Ctxt) -> Self {
        let mut args = Self::default();
        let items = match Punctuated::<Item, Token![,]>::parse_terminated.parse2(tokens) {
            Ok(items) => items,
            Err(error) => {
                cx.syn_error(error);
                return args;
            }
        };
        let mut seen: Vec<String> = Vec::new();
        for item in items {
            let name = item.name.unraw().to_string();
            if seen.contains(&name) {
                cx.error_spanned_by(
                    &item.name,
                    format!("`{name}` is given more than once; keep one"),
                );
                continue;
            }
            seen.push(name.clone());
            args.apply(&name, &item, cx);
        }
        args
    }

    fn apply(&mut self, name: &str, item: &Item, cx: &mut Ctxt) {
        if let Some(method) = HttpMethod::from_name(name) {
            if flag(item, cx) {
                if method.is_supported() && name != method.option_name() {
                    cx.error_spanned_by(
                        &item.name,
                        format!("write the method in lowercase: `{}`", method.option_name()),
                    );
                } else {
                    self.methods.push(Spanned {
                        value: method,
                        span: item.name.span(),
                    });
                }
            }
            return;
        }
        match name {
            "ttl" => self.ttl = duration(item, cx),
            "lease" => self.lease = duration(item, cx),
            "max_hold" => self.max_hold = duration(item, cx),
            "wait_timeout" => self.wait_timeout = duration(item, cx),
            "max_key_len" => self.max_key_len = integer(item, cx, "64"),
            "max_body_bytes" => self.max_body_bytes = integer(item, cx, "65_536"),
            "required" => self.required = flag(item, cx),
            "header" => self.header = header(item, cx),
            "store_server_errors" => {
                self.store_server_errors = boolean(item, cx).map(|value| Spanned {
                    value,
                    span: item.name.span(),
                });
            }
            "keep" => self.keep = keep(item, cx),
            "replay_only" => self.replay_only = header_list(item, cx),
            "replay_except" => self.replay_except = header_list(item, cx),
            "errors" => self.errors = errors(item, cx),
            "conflict" => self.conflict = conflict(item, cx),
            "scope" => self.scope = scope(item, cx),
            "crate" => self.krate = krate(item, cx),
            _ => cx.error_spanned_by(
                &item.name,
                format!("unknown option `{name}`; expected {OPTIONS}"),
            ),
        }
    }
}

/// Checks that a flag option has no value.
fn flag(item: &Item, cx: &mut Ctxt) -> bool {
    let name = &item.name;
    match &item.value {
        Value::Flag => true,
        Value::Assign(expr) => {
            cx.error_spanned_by(
                expr,
                format!("`{name}` takes no value; write `{name}` alone, or leave it out"),
            );
            false
        }
        Value::List(group) => {
            cx.error_spanned_by(
                group,
                format!("`{name}` takes no value; write `{name}` alone, or leave it out"),
            );
            false
        }
    }
}

/// The expression of a `name = value` option, or an error that shows `example`.
fn assigned<'a>(item: &'a Item, cx: &mut Ctxt, example: &str) -> Option<&'a Expr> {
    let name = &item.name;
    match &item.value {
        Value::Assign(expr) => Some(expr),
        Value::Flag => {
            cx.error_spanned_by(
                name,
                format!("`{name}` needs a value: `{name} = {example}`"),
            );
            None
        }
        Value::List(group) => {
            cx.error_spanned_by(
                group,
                format!("`{name}` needs a value: `{name} = {example}`"),
            );
            None
        }
    }
}

fn literal(expr: &Expr) -> Option<&Lit> {
    match expr {
        Expr::Lit(ExprLit { lit, attrs }) if attrs.is_empty() => Some(lit),
        _ => None,
    }
}

fn duration(item: &Item, cx: &mut Ctxt) -> Option<Spanned<Duration>> {
    const EXAMPLES: &str = "such as `\"90s\"`, `\"10m\"`, `\"24h\"` or `\"7d\"`";
    let name = &item.name;
    let expr = assigned(item, cx, "\"10m\"")?;
    let Some(Lit::Str(lit)) = literal(expr) else {
        cx.error_spanned_by(
            expr,
            format!("`{name}` is a duration in a string, {EXAMPLES}"),
        );
        return None;
    };
    match humantime::parse_duration(&lit.value()) {
        Ok(value) => Some(Spanned {
            value,
            span: lit.span(),
        }),
        Err(error) => {
            cx.error_spanned_by(
                lit,
                format!(
                    "invalid duration for `{name}`: {error}; write a number and a unit, {EXAMPLES}"
                ),
            );
            None
        }
    }
}

fn integer(item: &Item, cx: &mut Ctxt, example: &str) -> Option<Spanned<usize>> {
    let name = &item.name;
    let expr = assigned(item, cx, example)?;
    let parsed = match literal(expr) {
        Some(Lit::Int(lit)) if matches!(lit.suffix(), "" | "usize") => {
            lit.base10_parse::<usize>().ok().map(|value| Spanned {
                value,
                span: lit.span(),
            })
        }
        _ => None,
    };
    if parsed.is_none() {
        cx.error_spanned_by(
            expr,
            format!("`{name}` is a whole number, e.g. `{name} = {example}`"),
        );
    }
    parsed
}

fn boolean(item: &Item, cx: &mut Ctxt) -> Option<bool> {
    let name = &item.name;
    let expr = assigned(item, cx, "false")?;
    if let Some(Lit::Bool(lit)) = literal(expr) {
        return Some(lit.value);
    }
    cx.error_spanned_by(expr, format!("`{name}` is `true` or `false`"));
    None
}

fn header(item: &Item, cx: &mut Ctxt) -> Option<String> {
    let expr = assigned(item, cx, "\"x-idempotency-key\"")?;
    let Some(Lit::Str(lit)) = literal(expr) else {
        cx.error_spanned_by(
            expr,
            "`header` is a header name in a string, e.g. `header = \"x-idempotency-key\"`",
        );
        return None;
    };
    match http::HeaderName::from_bytes(lit.value().as_bytes()) {
        Ok(name) => Some(name.as_str().to_owned()),
        Err(_) => {
            cx.error_spanned_by(
                lit,
                "invalid header name: write letters, digits and `-`, e.g. \
                 `header = \"x-idempotency-key\"`",
            );
            None
        }
    }
}

fn conflict(item: &Item, cx: &mut Ctxt) -> Option<Conflict> {
    let expr = assigned(item, cx, "wait")?;
    if let Expr::Path(path) = expr
        && path.attrs.is_empty()
        && path.qself.is_none()
    {
        if path.path.is_ident("reject") {
            return Some(Conflict::Reject);
        }
        if path.path.is_ident("wait") {
            return Some(Conflict::Wait);
        }
    }
    cx.error_spanned_by(expr, "`conflict` is `reject` or `wait`, without quotes");
    None
}

fn scope(item: &Item, cx: &mut Ctxt) -> Option<syn::Path> {
    let expr = assigned(item, cx, "tenant_scope")?;
    match expr {
        Expr::Path(path) if path.attrs.is_empty() && path.qself.is_none() => {
            Some(path.path.clone())
        }
        _ => {
            cx.error_spanned_by(
                expr,
                "`scope` names a function `fn(&http::request::Parts) -> idem::Scope`, e.g. \
                 `scope = tenant_scope`",
            );
            None
        }
    }
}

/// A plain path (`a::b`), as written in `expr`.
fn plain_path(expr: &Expr) -> Option<&syn::Path> {
    match expr {
        Expr::Path(path) if path.attrs.is_empty() && path.qself.is_none() => Some(&path.path),
        _ => None,
    }
}

fn keep(item: &Item, cx: &mut Ctxt) -> Option<Spanned<Keep>> {
    let expr = assigned(item, cx, "no_server_errors")?;
    let Some(path) = plain_path(expr) else {
        cx.error_spanned_by(
            expr,
            "`keep` is `all`, `no_server_errors` or a function `fn(http::StatusCode) -> bool` \
             that says which answers are kept, e.g. `keep = no_server_errors`",
        );
        return None;
    };
    let value = if path.is_ident("all") {
        Keep::All
    } else if path.is_ident("no_server_errors") {
        Keep::NoServerErrors
    } else {
        Keep::When(path.clone())
    };
    Some(Spanned {
        value,
        span: item.name.span(),
    })
}

fn header_list(item: &Item, cx: &mut Ctxt) -> Option<HeaderList> {
    let name = &item.name;
    let expr = assigned(item, cx, "[\"x-request-id\"]")?;
    let Expr::Array(array) = expr else {
        cx.error_spanned_by(
            expr,
            format!(
                "`{name}` is a list of header names in brackets, e.g. \
                 `{name} = [\"x-request-id\", \"x-ratelimit-remaining\"]`"
            ),
        );
        return None;
    };
    let mut names = Vec::new();
    let mut valid = true;
    for element in &array.elems {
        let Some(Lit::Str(lit)) = literal(element) else {
            cx.error_spanned_by(
                element,
                "write each header name in a string, e.g. `\"x-request-id\"`",
            );
            valid = false;
            continue;
        };
        match http::HeaderName::from_bytes(lit.value().as_bytes()) {
            Ok(header) => names.push(Spanned {
                value: header.as_str().to_owned(),
                span: lit.span(),
            }),
            Err(_) => {
                cx.error_spanned_by(
                    lit,
                    "invalid header name: write letters, digits and `-`, e.g. `\"x-request-id\"`",
                );
                valid = false;
            }
        }
    }
    valid.then_some(names)
}

fn errors(item: &Item, cx: &mut Ctxt) -> Option<syn::Path> {
    let expr = assigned(item, cx, "idem::problem::Stripe")?;
    if let Some(path) = plain_path(expr) {
        return Some(path.clone());
    }
    cx.error_spanned_by(
        expr,
        "`errors` names an error format: `idem::problem::ProblemJson`, `idem::problem::Stripe`, \
         a function `fn(&idem::problem::Problem) -> axum::response::Response`, or a constant or \
         static that implements `idem::problem::ErrorFormat`, e.g. `errors = idem::problem::Stripe`",
    );
    None
}

fn krate(item: &Item, cx: &mut Ctxt) -> Option<syn::Path> {
    let expr = assigned(item, cx, "\"::idem\"")?;
    if let Some(Lit::Str(lit)) = literal(expr)
        && let Ok(path) = lit.parse::<syn::Path>()
    {
        return Some(path);
    }
    cx.error_spanned_by(
        expr,
        "`crate` is the path of the idem crate in a string, e.g. `crate = \"::my_idem\"`",
    );
    None
}
