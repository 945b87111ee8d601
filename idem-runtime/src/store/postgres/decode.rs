//! Reading a row back as a record.

use std::sync::Arc;

use sqlx::Row as _;
use sqlx::postgres::PgRow;

use super::RECORD_VERSION;
use crate::fingerprint::{Fingerprint, RequestDigest};
use crate::replay::StoredResponse;
use crate::store::Completed;

/// What the row of a key says, as the claim and the lookup need it.
#[derive(Debug)]
pub(super) enum Found {
    /// A completed request, within its TTL.
    Done(Arc<Completed>),
    /// A request whose claim is held: its connection is alive.
    Held(Fingerprint),
    /// No row, a row past its TTL, or an in-flight row whose claim's lock is free (its process
    /// died, or it gave the key up): the key is free to claim.
    Free,
}

/// Reads a row of the `read` query.
pub(super) fn decode(row: &PgRow) -> Result<Found, String> {
    let get_err = |e: sqlx::Error| e.to_string();
    let version: i16 = row.try_get("version").map_err(get_err)?;
    if version != RECORD_VERSION {
        return Err(format!(
            "record format version {version}, this build reads only version {RECORD_VERSION}"
        ));
    }
    let state: String = row.try_get("state").map_err(get_err)?;
    let live: bool = row.try_get("live").map_err(get_err)?;
    let held: bool = row.try_get("held").map_err(get_err)?;
    let fingerprint: Vec<u8> = row.try_get("fingerprint").map_err(get_err)?;
    let fingerprint = Fingerprint::from_bytes(bytes32(&fingerprint, "fingerprint")?);
    match state.as_str() {
        "in_flight" if held => Ok(Found::Held(fingerprint)),
        "in_flight" => Ok(Found::Free),
        "done" if !live => Ok(Found::Free),
        "done" => {
            let response: Option<Vec<u8>> = row.try_get("response").map_err(get_err)?;
            let response = response.ok_or("done without a response")?;
            let response = StoredResponse::decode(&response).map_err(|e| e.to_string())?;
            let request_digest: Option<Vec<u8>> = row.try_get("request_digest").map_err(get_err)?;
            let request_digest = match request_digest {
                Some(bytes) => Some(RequestDigest::from_bytes(bytes32(
                    &bytes,
                    "request digest",
                )?)),
                None => None,
            };
            Ok(Found::Done(Arc::new(Completed {
                fingerprint,
                request_digest,
                response,
            })))
        }
        other => Err(format!("unknown state {other:?}")),
    }
}

fn bytes32(bytes: &[u8], what: &str) -> Result<[u8; 32], String> {
    bytes
        .try_into()
        .map_err(|_| format!("malformed {what}: {} bytes, not 32", bytes.len()))
}
