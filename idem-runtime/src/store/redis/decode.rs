//! Reading a record back from the fields a claim or lookup script answers.

use std::sync::Arc;
use std::time::Duration;

use ::redis::Value;

use super::RECORD_VERSION;
use crate::fingerprint::{Fingerprint, RequestDigest};
use crate::replay::StoredResponse;
use crate::store::{Completed, Record};

const STATE_IN_FLIGHT: &[u8] = b"in_flight";
const STATE_DONE: &[u8] = b"done";

/// Reads `[pttl, field, value, field, value, …]` into a record and its remaining time to live
/// (`None` when Redis reports no expiry).
pub(super) fn decode_record(values: Vec<Value>) -> Result<(Record, Option<Duration>), String> {
    let mut values = values.into_iter();
    let ttl = match values.next() {
        Some(Value::Int(ms)) => u64::try_from(ms).ok().map(Duration::from_millis),
        other => return Err(format!("expected the time to live first, found {other:?}")),
    };
    let mut version = None;
    let mut state = None;
    let mut fingerprint = None;
    let mut response = None;
    let mut request_digest = None;
    while let Some(field) = values.next() {
        let (Value::BulkString(field), Some(Value::BulkString(value))) = (field, values.next())
        else {
            return Err("malformed field list".to_owned());
        };
        match field.as_slice() {
            b"v" => version = Some(value),
            b"state" => state = Some(value),
            b"fp" => fingerprint = Some(value),
            b"response" => response = Some(value),
            b"rq" => request_digest = Some(value),
            _ => {}
        }
    }
    let version = version.ok_or("no format version")?;
    if version != RECORD_VERSION.as_bytes() {
        return Err(format!(
            "record format version {:?}, this build reads only version {RECORD_VERSION}",
            String::from_utf8_lossy(&version)
        ));
    }
    let fingerprint = fingerprint.ok_or("no fingerprint")?;
    let fingerprint = Fingerprint::from_bytes(hex32(&fingerprint).ok_or("malformed fingerprint")?);
    let record = match state.as_deref() {
        Some(STATE_IN_FLIGHT) => Record::InFlight { fingerprint },
        Some(STATE_DONE) => {
            let bytes = response.ok_or("done without a response")?;
            let response = StoredResponse::decode(&bytes).map_err(|e| e.to_string())?;
            let request_digest = match request_digest {
                Some(hex) => Some(RequestDigest::from_bytes(
                    hex32(&hex).ok_or("malformed request digest")?,
                )),
                None => None,
            };
            Record::Done(Arc::new(Completed {
                fingerprint,
                request_digest,
                response,
            }))
        }
        Some(other) => {
            return Err(format!(
                "unknown state {:?}",
                String::from_utf8_lossy(other)
            ));
        }
        None => return Err("no state".to_owned()),
    };
    Ok((record, ttl))
}

/// 64 lowercase or uppercase hex digits as 32 bytes.
fn hex32(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ClaimToken;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn fields(version: &str, state: &str) -> Vec<Value> {
        vec![
            Value::Int(5000),
            bulk("v"),
            bulk(version),
            bulk("state"),
            bulk(state),
            bulk("fp"),
            bulk(&Fingerprint::from_bytes([9; 32]).to_string()),
            bulk("token"),
            bulk(&ClaimToken::from_u128(1).to_string()),
        ]
    }

    #[test]
    fn reads_an_in_flight_record_and_its_ttl() {
        let (record, ttl) = decode_record(fields("1", "in_flight")).unwrap();
        assert_eq!(
            record,
            Record::InFlight {
                fingerprint: Fingerprint::from_bytes([9; 32])
            }
        );
        assert_eq!(ttl, Some(Duration::from_secs(5)));
    }

    #[test]
    fn refuses_an_unknown_version_state_or_a_bad_fingerprint() {
        assert!(
            decode_record(fields("2", "in_flight"))
                .unwrap_err()
                .contains("version")
        );
        assert!(
            decode_record(fields("1", "paused"))
                .unwrap_err()
                .contains("state")
        );
        let mut bad = fields("1", "in_flight");
        bad[6] = bulk("zz");
        assert!(decode_record(bad).unwrap_err().contains("fingerprint"));
        let mut done = fields("1", "done");
        let response =
            StoredResponse::new(http::StatusCode::OK, &http::HeaderMap::new(), "{}".into());
        done.extend([
            bulk("response"),
            Value::BulkString(response.encode()),
            bulk("rq"),
            bulk("zz"),
        ]);
        assert!(decode_record(done).unwrap_err().contains("request digest"));
        assert!(decode_record(vec![bulk("v")]).is_err());
    }

    #[test]
    fn reads_a_done_record_with_its_request_digest_beside_the_response() {
        let response = StoredResponse::new(
            http::StatusCode::CREATED,
            &http::HeaderMap::new(),
            "ch_1".into(),
        );
        let mut done = fields("1", "done");
        done.extend([
            bulk("response"),
            Value::BulkString(response.encode()),
            bulk("rq"),
            bulk(&"ab".repeat(32)),
        ]);
        let (record, _) = decode_record(done).unwrap();
        let Record::Done(completed) = record else {
            panic!("a done record");
        };
        assert_eq!(completed.response, response);
        assert_eq!(
            completed.request_digest,
            Some(RequestDigest::from_bytes([0xab; 32]))
        );
    }

    #[test]
    fn refuses_a_done_record_whose_response_does_not_decode() {
        let mut done = fields("1", "done");
        done.extend([bulk("response"), Value::BulkString(vec![99, 0, 1])]);
        assert!(decode_record(done).unwrap_err().contains("unreadable"));
    }
}
