//! The `#[idempotent]` attribute of the [idem](https://docs.rs/idem) crate.
//!
//! Use it through `idem`, which re-exports it: `use idem::idempotent;`. The attribute's
//! documentation is on [`macro@idempotent`].

mod ast;
mod attr;
mod ctxt;
mod expand;
mod fallback;
mod valid;

use proc_macro::TokenStream;

/// Makes an axum handler idempotent.
#[proc_macro_attribute]
pub fn idempotent(args: TokenStream, input: TokenStream) -> TokenStream {
    let input = proc_macro2::TokenStream::from(input);
    expand::idempotent(args.into(), input.clone())
        .unwrap_or_else(|error| fallback::expand(input, &error))
        .into()
}
