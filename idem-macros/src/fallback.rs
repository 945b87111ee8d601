//! What is emitted when the attribute is used wrongly: the function as written plus the errors, so
//! that the compiler reports the real mistake and nothing that follows from a missing function.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{FnArg, ItemFn};

use crate::ast::take_param_attrs;
use crate::ctxt::Ctxt;

/// `input` unchanged (minus the `#[idem(...)]` parameter attributes, which only the attribute
/// understands) followed by `error`.
pub(crate) fn expand(input: TokenStream, error: &syn::Error) -> TokenStream {
    let mut output = match syn::parse2::<ItemFn>(input.clone()) {
        Ok(mut item) => {
            // Problems in these attributes are part of `error` already.
            let mut ignored = Ctxt::default();
            for input in &mut item.sig.inputs {
                if let FnArg::Typed(param) = input {
                    take_param_attrs(&mut param.attrs, &mut ignored);
                }
            }
            item.into_token_stream()
        }
        Err(_) => input,
    };
    output.extend(error.to_compile_error());
    output
}
