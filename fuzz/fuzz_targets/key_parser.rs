//! The key parser on any bytes and any length limit: it never panics, and a key it accepts is
//! within the limit, made of printable ASCII, and names itself again once quoted.
#![no_main]

use idem::key::{IdempotencyKey, KeyError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &[u8])| {
    let (limit, value) = input;
    let max_len = usize::from(limit);
    match IdempotencyKey::parse(value, max_len) {
        Ok(key) => {
            let text = key.as_str();
            assert!((1..=max_len).contains(&text.len()));
            assert!(text.bytes().all(|b| (0x20..=0x7E).contains(&b)));
            // A space can only arrive quoted; a bare value is the key itself.
            if value.first() != Some(&b'"') {
                assert_eq!(text.as_bytes(), value);
            }
            let mut quoted = vec![b'"'];
            for b in text.bytes() {
                if b == b'"' || b == b'\\' {
                    quoted.push(b'\\');
                }
                quoted.push(b);
            }
            quoted.push(b'"');
            assert_eq!(IdempotencyKey::parse(&quoted, max_len), Ok(key));
        }
        Err(KeyError::TooLong { len, max }) => assert!(len > max && max == max_len),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
