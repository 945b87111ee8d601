//! The handler function the attribute is applied to.

use syn::{Attribute, FnArg, ItemFn, PatType};

use crate::ctxt::Ctxt;

/// The handler, with the `#[idem(...)]` parameter attributes read and removed.
pub(crate) struct Handler {
    /// The function as written, minus `#[idem(...)]` on its parameters.
    pub(crate) item: ItemFn,
    /// Its typed parameters, in order (a `self` receiver is not among them; `valid.rs` rejects it).
    pub(crate) args: Vec<Arg>,
}

/// One parameter of the handler: an extractor.
pub(crate) struct Arg {
    /// The parameter as written (pattern, type, other attributes).
    pub(crate) param: PatType,
    /// `#[idem(skip)]`: the argument is not part of the fingerprint.
    pub(crate) skip: bool,
}

impl Handler {
    /// Reads the parameters' `#[idem(...)]` attributes, recording problems in `cx`.
    pub(crate) fn from_item(mut item: ItemFn, cx: &mut Ctxt) -> Self {
        let mut args = Vec::new();
        for input in &mut item.sig.inputs {
            if let FnArg::Typed(param) = input {
                let skip = take_param_attrs(&mut param.attrs, cx);
                args.push(Arg {
                    param: param.clone(),
                    skip,
                });
            }
        }
        Self { item, args }
    }
}

/// Removes the `#[idem(...)]` attributes of a parameter and returns whether one says `skip`.
pub(crate) fn take_param_attrs(attrs: &mut Vec<Attribute>, cx: &mut Ctxt) -> bool {
    let mut skip = false;
    attrs.retain(|attr| {
        if !attr.path().is_ident("idem") {
            return true;
        }
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                if skip {
                    return Err(meta.error("`skip` is given more than once; keep one"));
                }
                skip = true;
                Ok(())
            } else {
                Err(meta.error(
                    "unknown parameter option; the only one is `skip`: `#[idem(skip)]` leaves \
                     the argument out of the fingerprint",
                ))
            }
        });
        if let Err(error) = parsed {
            cx.syn_error(error);
        }
        false
    });
    skip
}
