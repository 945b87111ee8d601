//! Code generation. Everything here may assume that `valid.rs` found no problem.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens as _, format_ident, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{Item, ItemFn, ReturnType};

use crate::ast::Handler;
use crate::attr::{Args, Conflict, HeaderList, HttpMethod, Keep};
use crate::ctxt::Ctxt;
use crate::valid;

/// Parses, checks and expands one `#[idempotent(args)] input`.
pub(crate) fn idempotent(args: TokenStream, input: TokenStream) -> syn::Result<TokenStream> {
    // A function that does not parse (half-typed code in an editor) keeps syn's own error, which
    // points into it; any other item is not what the attribute is for.
    let Item::Fn(item) = syn::parse2::<Item>(input)? else {
        return Err(syn::Error::new(
            Span::call_site(),
            "`#[idempotent]` applies to an `async fn` handler",
        ));
    };
    let mut cx = Ctxt::default();
    let args = Args::parse(args, &mut cx);
    let handler = Handler::from_item(item, &mut cx);
    valid::check(&handler, &args, &mut cx);
    cx.check()?;
    Ok(expand(&handler, &args))
}

fn expand(handler: &Handler, args: &Args) -> TokenStream {
    let krate = match &args.krate {
        Some(path) => quote!(#path),
        None => quote!(::idem),
    };
    let private = quote!(#krate::__private);
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
        ..
    } = &handler.item;
    let name = &sig.ident;
    let options_ty = format_ident!("__idem_options_{}", name);
    let options = options(args, &private);

    let arg_names: Vec<_> = (0..handler.args.len())
        .map(|index| format_ident!("__idem_arg{}", index))
        .collect();
    let arg_types = handler.args.iter().map(|arg| &arg.param.ty);
    let inner_params = handler.args.iter().map(|arg| &arg.param);
    // Each input is fed to the fingerprint in a statement located at the argument's type, so that
    // a type without `FingerprintInput` is reported there. The call-site resolution keeps the
    // generated local variables visible when the handler is itself written by a macro.
    let inputs: Vec<_> = handler
        .args
        .iter()
        .enumerate()
        .filter(|(_, arg)| !arg.skip)
        .map(|(index, arg)| {
            let span = Span::call_site().located_at(arg.param.ty.span());
            let ident = format_ident!("__idem_arg{}", index, span = span);
            quote_spanned!(span=> __idem_ctx.input(&#ident);)
        })
        .collect();
    // Whether a byte-identical retry is answered before the arguments are extracted: only if the
    // last one (the body) is part of the fingerprint and every input is determined by the
    // request's bytes. The probe answers `false` for a type that is not an input, which is
    // reported once, where it is fed.
    let last_fed = handler.args.last().is_some_and(|arg| !arg.skip);
    let exact_replay = last_fed.then(|| {
        let probes = handler.args.iter().filter(|arg| !arg.skip).map(|arg| {
            let ty = &arg.param.ty;
            quote!((&&#private::InputProbe::<#ty>::NEW).exact())
        });
        quote! {
            fn exact_replay() -> bool {
                #[allow(unused_imports)]
                use #private::{ProbeInput as _, ProbeOther as _};
                true #(&& #probes)*
            }
        }
    });
    let ctx_mut = if inputs.is_empty() {
        quote!()
    } else {
        quote!(mut)
    };
    let output = &sig.output;
    let run_span = match output {
        ReturnType::Default => sig.ident.span(),
        ReturnType::Type(_, ty) => Span::call_site().located_at(ty.span()),
    };
    let run = quote_spanned!(run_span=> __idem_ctx.run(__idem_handler(#(#arg_names),*)));
    let awaited = quote_spanned!(run_span=> __idem_run.await);
    // `#[axum::debug_handler]` checks the handler as written: the function with the original
    // arguments, whose extractors it can name and whose state it can infer.
    let (checks, attrs): (Vec<_>, Vec<_>) = attrs.iter().partition(|attr| {
        attr.path()
            .segments
            .last()
            .is_some_and(|last| last.ident == "debug_handler")
    });
    let asyncness = &sig.asyncness;
    let fn_token = &sig.fn_token;

    let (operation_id, path) = utoipa_operation(attrs.iter().copied());
    let operation_id = operation_id.unwrap_or_else(|| name.to_string());
    let path = match path {
        Some(path) => quote!(::core::option::Option::Some(#path)),
        None => quote!(::core::option::Option::None),
    };

    // The options type exists exactly when the handler does.
    let cfgs: Vec<_> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("cfg"))
        .copied()
        .collect();
    let documented = documented(&attrs, handler, &cfgs);
    let attrs = attrs.iter().filter(|attr| utoipa_path(attr).is_none());

    quote! {
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_camel_case_types, unreachable_pub)]
        #vis struct #options_ty {}

        #(#cfgs)*
        impl #private::HandlerConfig for #options_ty {
            fn options() -> &'static #private::HandlerOptions {
                static OPTIONS: #private::HandlerOptions = #private::HandlerOptions {
                    #options
                    ..#private::HandlerOptions::DEFAULT
                };
                &OPTIONS
            }
            const OPERATION_ID: &'static str = #operation_id;
            const PATH: ::core::option::Option<&'static str> = #path;
            #exact_replay
        }

        #(#attrs)*
        #vis #asyncness #fn_token #name(
            __idem_arguments: #private::Arguments<#options_ty, (#(#arg_types,)*)>,
        ) -> #private::Response {
            #(#checks)*
            #[allow(clippy::too_many_arguments)]
            #asyncness fn __idem_handler(#(#inner_params),*) #output #block
            // The runtime's future is made in a block of its own, so that this function's future
            // keeps no room for the arguments it hands over.
            let __idem_run = {
                let (#ctx_mut __idem_ctx, (#(#arg_names,)*)) = __idem_arguments.into_parts();
                #(#inputs)*
                #run
            };
            #awaited
        }

        #documented
    }
}

/// The arguments of `attr`, if it is a `#[utoipa::path(..)]`.
fn utoipa_path(attr: &syn::Attribute) -> Option<&syn::MetaList> {
    let syn::Meta::List(list) = &attr.meta else {
        return None;
    };
    let segments = &list.path.segments;
    let is_utoipa_path = segments.last().is_some_and(|last| last.ident == "path")
        && (segments.len() == 1
            || segments
                .first()
                .is_some_and(|first| first.ident == "utoipa"));
    is_utoipa_path.then_some(list)
}

/// A `#[utoipa::path(..)]` below the attribute, given what it documents: utoipa reads the path
/// and query parameters and the request body from the handler's arguments, and the rewritten
/// handler has only one. So the attribute goes on a stand-in with the original signature, which
/// is never called, and implements `utoipa::Path` (`impl_for`) for the type it would have
/// declared for the handler, `__path_<handler>`, which is declared here instead.
fn documented(
    attrs: &[&syn::Attribute],
    handler: &Handler,
    cfgs: &[&syn::Attribute],
) -> TokenStream {
    let Some(list) = attrs.iter().find_map(|attr| utoipa_path(attr)) else {
        return TokenStream::new();
    };
    let ItemFn { vis, sig, .. } = &handler.item;
    let name = &sig.ident;
    let path_type = format_ident!("__path_{}", name);
    let implements_own = valid::split_commas(list.tokens.clone())
        .iter()
        .any(|item| matches!(item.first(), Some(proc_macro2::TokenTree::Ident(key)) if key == "impl_for"));
    let (declared, impl_for) = if implements_own {
        (TokenStream::new(), TokenStream::new())
    } else {
        let declared = quote! {
            #(#cfgs)*
            #[allow(non_camel_case_types)]
            #[doc(hidden)]
            #[derive(Clone)]
            #vis struct #path_type;
        };
        (declared, quote!(, impl_for = #path_type))
    };
    // What utoipa reads from the function besides its arguments: the summary and description
    // (the doc comments), and whether it is deprecated.
    let described = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc") || attr.path().is_ident("deprecated"));
    let path = &list.path;
    let tokens = &list.tokens;
    let params = handler.args.iter().map(|arg| &arg.param);
    let asyncness = &sig.asyncness;
    let output = &sig.output;
    quote! {
        #declared

        #(#cfgs)*
        const _: () = {
            #(#described)*
            #[#path(#tokens #impl_for)]
            #[allow(unused, clippy::all, clippy::pedantic)]
            #asyncness fn #name(#(#params),*) #output {
                ::core::unreachable!()
            }
        };
    }
}

/// The `operation_id` and `path` of a `#[utoipa::path(..)]` below the attribute, where they are
/// string literals.
fn utoipa_operation<'a>(
    attrs: impl IntoIterator<Item = &'a syn::Attribute>,
) -> (Option<String>, Option<String>) {
    let mut found = (None, None);
    for attr in attrs {
        let Some(list) = utoipa_path(attr) else {
            continue;
        };
        for item in valid::split_commas(list.tokens.clone()) {
            if let [
                proc_macro2::TokenTree::Ident(key),
                proc_macro2::TokenTree::Punct(eq),
                proc_macro2::TokenTree::Literal(value),
            ] = item.as_slice()
                && eq.as_char() == '='
                && let Ok(syn::Lit::Str(value)) = syn::parse2::<syn::Lit>(value.to_token_stream())
            {
                if key == "operation_id" {
                    found.0 = Some(value.value());
                } else if key == "path" {
                    found.1 = Some(value.value());
                }
            }
        }
    }
    found
}

/// The fields of `HandlerOptions` that the attribute sets.
fn options(args: &Args, private: &TokenStream) -> TokenStream {
    let some = |value: TokenStream| quote!(::core::option::Option::Some(#value));
    let duration = |value: Duration| some(duration(value, private));
    let mut fields = TokenStream::new();
    if !args.methods.is_empty() {
        let methods = args.methods.iter().map(|method| {
            let name = format_ident!("{}", method_const(method.value));
            quote!(#private::Methods::#name)
        });
        let mut methods = methods;
        let first = methods.next().expect("not empty");
        let value = methods.fold(first, |set, method| quote!(#set.and(#method)));
        fields.extend(quote!(methods: #value,));
    }
    let mut field = |name: &str, value: Option<TokenStream>| {
        if let Some(value) = value {
            let name = format_ident!("{}", name);
            fields.extend(quote!(#name: #value,));
        }
    };
    field("ttl", args.ttl.map(|d| duration(d.value)));
    field("lease", args.lease.map(|d| duration(d.value)));
    field("max_hold", args.max_hold.map(|d| duration(d.value)));
    field("wait_timeout", args.wait_timeout.map(|d| duration(d.value)));
    field(
        "max_key_len",
        args.max_key_len.map(|len| {
            let len = len.value;
            some(quote!(#len))
        }),
    );
    field(
        "max_body_bytes",
        args.max_body_bytes.map(|bytes| {
            let bytes = bytes.value;
            some(quote!(#bytes))
        }),
    );
    field("required", args.required.then(|| some(quote!(true))));
    field(
        "header",
        args.header
            .as_ref()
            .map(|header| some(quote!(#private::HeaderName::from_static(#header)))),
    );
    // `store_server_errors` is a shorthand for `keep`; `valid.rs` refused both at once.
    let keep = match (&args.keep, &args.store_server_errors) {
        (Some(keep), _) => Some(keep.value.clone()),
        (None, Some(store)) if store.value => Some(Keep::All),
        (None, Some(_)) => Some(Keep::NoServerErrors),
        (None, None) => None,
    };
    field(
        "keep",
        keep.map(|keep| {
            let policy = quote!(#private::KeepPolicy);
            some(match keep {
                Keep::All => quote!(#policy::All),
                Keep::NoServerErrors => quote!(#policy::NoServerErrors),
                Keep::When(path) => {
                    let span = Span::call_site().located_at(path.span());
                    quote_spanned!(span=> #policy::When(#path))
                }
            })
        }),
    );
    field(
        "replay_only",
        args.replay_only
            .as_ref()
            .map(|names| some(header_list(names))),
    );
    field(
        "replay_except",
        args.replay_except.as_ref().map(header_list),
    );
    field(
        "errors",
        args.errors.as_ref().map(|path| {
            // Spanned at the path, so that a value that is no format is reported there.
            let span = Span::call_site().located_at(path.span());
            some(quote_spanned!(span=> #private::Renderer::from_static(&#path)))
        }),
    );
    field(
        "conflict",
        args.conflict.map(|conflict| {
            let variant = match conflict {
                Conflict::Reject => quote!(Reject),
                Conflict::Wait => quote!(Wait),
            };
            some(quote!(#private::ConflictPolicy::#variant))
        }),
    );
    field("scope", args.scope.as_ref().map(|path| some(quote!(#path))));
    fields
}

/// A `&'static [&'static str]` of lowercase header names.
fn header_list(names: &HeaderList) -> TokenStream {
    let names = names.iter().map(|name| &name.value);
    quote!(&[#(#names),*])
}

fn method_const(method: HttpMethod) -> &'static str {
    // Only supported methods get here.
    method.as_str()
}

/// A `Duration` constant, in the largest whole unit that represents it exactly.
fn duration(value: Duration, private: &TokenStream) -> TokenStream {
    let secs = value.as_secs();
    let nanos = value.subsec_nanos();
    if nanos == 0 {
        return quote!(#private::Duration::from_secs(#secs));
    }
    if nanos.is_multiple_of(1_000_000)
        && let Ok(millis) = u64::try_from(value.as_millis())
    {
        return quote!(#private::Duration::from_millis(#millis));
    }
    quote!(#private::Duration::new(#secs, #nanos))
}
