//! The extension point of fingerprints: [`FingerprintInput`], what a handler argument
//! contributes, and its implementations for axum's extractors.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{
    ConnectInfo, Extension, Form, MatchedPath, OriginalUri, Path, Query, RawForm, RawQuery, State,
};
use bytes::Bytes;
use http::{HeaderMap, Method, Uri, Version};
use serde::Serialize;

use super::Fingerprinter;

/// A handler argument's contribution to the request fingerprint.
///
/// Implemented for axum's input extractors (`Json<T>`, `Form<T>`, `Query<T>`, `Path<T>` with
/// `T: Serialize`, `String`, `Bytes`, `RawForm`) and, contributing nothing, for extractors that read
/// no client input (`State`, `Extension`, `MatchedPath`, `Method`, `HeaderMap`, `ConnectInfo`, …).
///
/// Implement it for your own extractor by feeding what it reads from the request:
///
/// ```
/// use idem_runtime::fingerprint::{FingerprintInput, Fingerprinter};
///
/// /// The `X-Customer` header, read by an extractor of the application's.
/// struct Customer(String);
///
/// impl FingerprintInput for Customer {
///     fn fingerprint(&self, fp: &mut Fingerprinter) {
///         fp.bytes(self.0.as_bytes());
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of the idempotency fingerprint",
    label = "idem does not know whether this extractor reads client input",
    note = "implement `idem::FingerprintInput` for `{Self}`: feed what it reads from the request with `fp.value(..)` or `fp.bytes(..)`, or nothing if it reads no client input",
    note = "or leave the argument out of the fingerprint with `#[idem(skip)]` on it"
)]
pub trait FingerprintInput {
    /// Whether this input is determined by the request's method, route, path, query,
    /// `Content-Type` and body bytes alone (or reads no client input at all), and extracting it
    /// does nothing but produce it.
    ///
    /// When every fingerprinted input of a handler says so, a retry that repeats a completed
    /// request byte for byte (the same [`RequestDigest`](super::RequestDigest)) is replayed without extracting its body
    /// again. `false` by default, which is always safe: an extractor that reads a header, or
    /// checks a signature, keeps every retry on the full path.
    const FROM_REQUEST_BYTES: bool = false;

    /// Feeds this argument's part of the request into `fp`.
    fn fingerprint(&self, fp: &mut Fingerprinter);
}

macro_rules! serialized_input {
    ($($extractor:ident),*) => {$(
        impl<T: Serialize> FingerprintInput for $extractor<T> {
            const FROM_REQUEST_BYTES: bool = true;

            fn fingerprint(&self, fp: &mut Fingerprinter) {
                fp.value(&self.0);
            }
        }
    )*};
}

serialized_input!(Json, Form, Query, Path);

impl FingerprintInput for String {
    const FROM_REQUEST_BYTES: bool = true;

    fn fingerprint(&self, fp: &mut Fingerprinter) {
        fp.bytes(self.as_bytes());
    }
}

impl FingerprintInput for Bytes {
    const FROM_REQUEST_BYTES: bool = true;

    fn fingerprint(&self, fp: &mut Fingerprinter) {
        fp.bytes(self);
    }
}

impl FingerprintInput for RawForm {
    const FROM_REQUEST_BYTES: bool = true;

    fn fingerprint(&self, fp: &mut Fingerprinter) {
        fp.bytes(&self.0);
    }
}

impl<K: Serialize, V: Serialize, H> FingerprintInput for HashMap<K, V, H> {
    fn fingerprint(&self, fp: &mut Fingerprinter) {
        fp.value(self);
    }
}

impl<T: FingerprintInput> FingerprintInput for Option<T> {
    const FROM_REQUEST_BYTES: bool = T::FROM_REQUEST_BYTES;

    fn fingerprint(&self, fp: &mut Fingerprinter) {
        match self {
            Some(input) => {
                fp.value(&true);
                input.fingerprint(fp);
            }
            None => fp.value(&false),
        }
    }
}

impl<T: FingerprintInput, E> FingerprintInput for Result<T, E> {
    const FROM_REQUEST_BYTES: bool = T::FROM_REQUEST_BYTES;

    /// A rejected optional extractor contributes a marker only: the handler saw no input.
    fn fingerprint(&self, fp: &mut Fingerprinter) {
        match self {
            Ok(input) => {
                fp.value(&true);
                input.fingerprint(fp);
            }
            Err(_) => fp.value(&false),
        }
    }
}

macro_rules! non_input {
    ($($ty:ty $(, $param:ident)?;)*) => {$(
        impl$(<$param>)? FingerprintInput for $ty {
            const FROM_REQUEST_BYTES: bool = true;

            /// Reads no client input (or only what the fingerprint already covers: the method,
            /// path and query): contributes nothing.
            fn fingerprint(&self, _fp: &mut Fingerprinter) {}
        }
    )*};
}

non_input! {
    State<S>, S;
    Extension<T>, T;
    ConnectInfo<T>, T;
    MatchedPath;
    OriginalUri;
    RawQuery;
    Method;
    Uri;
    Version;
    HeaderMap;
}
