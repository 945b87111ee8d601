//! The `#[idempotent]` attribute of the `idem` crate.
