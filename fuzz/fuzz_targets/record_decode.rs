//! The stored-record format on any bytes: decoding never panics, and whatever decodes encodes
//! back to a record that decodes to the same value.
#![no_main]

use idem::StoredResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(record) = StoredResponse::decode(bytes) {
        let again = StoredResponse::decode(&record.encode()).expect("an encoded record decodes");
        assert_eq!(again, record);
    }
});
