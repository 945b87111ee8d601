//! The key parser against the SPEC's rule, for any bytes: a value is accepted exactly when the
//! rule says so, both spellings of a key name the same key, and nothing ever panics.

#![allow(missing_docs)]

use http::{HeaderMap, HeaderName, HeaderValue};
use idem_runtime::key::{IdempotencyKey, KeyError};
use proptest::prelude::*;

/// The SPEC's rule, written independently of the parser: the key a header value names, if any.
///
/// - bare: every byte visible ASCII (`0x21..=0x7E`), and not starting with `"`;
/// - quoted (RFC 8941 §3.3.3): `"` + characters + `"`, where a character is `0x20..=0x7E` other
///   than `"` and `\`, or one of the escapes `\"` and `\\`;
/// - either way the key (unescaped) is 1 to `max_len` characters.
fn spec_key(value: &[u8], max_len: usize) -> Option<String> {
    let key = if value.first() == Some(&b'"') {
        let inner = value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        let mut key = String::new();
        let mut chars = inner.iter();
        while let Some(&c) = chars.next() {
            match c {
                b'\\' => match chars.next() {
                    Some(&e) if e == b'"' || e == b'\\' => key.push(char::from(e)),
                    _ => return None,
                },
                b'"' => return None,
                0x20..=0x7E => key.push(char::from(c)),
                _ => return None,
            }
        }
        key
    } else {
        if !value.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        String::from_utf8(value.to_vec()).ok()?
    };
    (1..=max_len).contains(&key.len()).then_some(key)
}

/// `key` in the RFC 8941 string form.
fn quote(key: &str) -> Vec<u8> {
    let mut out = vec![b'"'];
    for b in key.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

/// Header values built from the bytes that matter to the grammar, so that nearly-valid values
/// (an escape at the end, a quote in the middle, a space) are common.
fn tricky_value() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"a".to_vec()),
        Just(b"~".to_vec()),
        Just(b"!".to_vec()),
        Just(vec![0x00]),
        Just(vec![0x1F]),
        Just(vec![0x7F]),
        Just(vec![0x80]),
        Just(vec![0xFF]),
        Just("é".as_bytes().to_vec()),
    ];
    (
        any::<bool>(),
        prop::collection::vec(piece, 0..12),
        any::<bool>(),
    )
        .prop_map(|(open, pieces, close)| {
            let mut value = Vec::new();
            if open {
                value.push(b'"');
            }
            value.extend(pieces.into_iter().flatten());
            if close {
                value.push(b'"');
            }
            value
        })
}

fn max_len() -> impl Strategy<Value = usize> {
    prop_oneof![0..12usize, Just(255), Just(usize::MAX)]
}

fn check(value: &[u8], max_len: usize) -> Result<(), TestCaseError> {
    let parsed = IdempotencyKey::parse(value, max_len);
    let expected = spec_key(value, max_len);
    prop_assert_eq!(
        parsed.as_ref().ok().map(|k| k.as_str().to_owned()),
        expected,
        "value {:?}, max_len {}, parser said {:?}",
        String::from_utf8_lossy(value),
        max_len,
        parsed
    );
    if let Err(error) = parsed {
        // Whatever the value, the refusal explains itself.
        prop_assert!(!error.to_string().is_empty());
        // A value valid but for its length is refused as too long, with the length of the key.
        if let Some(key) = spec_key(value, usize::MAX) {
            if key.is_empty() {
                prop_assert_eq!(error, KeyError::Empty);
            } else {
                prop_assert_eq!(
                    error,
                    KeyError::TooLong {
                        len: key.len(),
                        max: max_len
                    }
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_are_accepted_exactly_when_the_rule_holds(
        value in prop::collection::vec(any::<u8>(), 0..40),
        max_len in max_len(),
    ) {
        check(&value, max_len)?;
    }

    #[test]
    fn near_misses_are_accepted_exactly_when_the_rule_holds(
        value in tricky_value(),
        max_len in max_len(),
    ) {
        check(&value, max_len)?;
    }

    #[test]
    fn the_quoted_form_names_the_same_key_as_the_bare_form(key in "[\\x21-\\x7E]{1,64}") {
        let quoted = IdempotencyKey::parse(&quote(&key), 255).unwrap();
        prop_assert_eq!(quoted.as_str(), key.as_str());
        if !key.starts_with('"') {
            prop_assert_eq!(IdempotencyKey::parse(key.as_bytes(), 255).unwrap(), quoted);
        }
    }

    #[test]
    fn any_printable_key_round_trips_through_the_quoted_form(key in "[\\x20-\\x7E]{1,300}") {
        match IdempotencyKey::parse(&quote(&key), 255) {
            Ok(parsed) => prop_assert_eq!(parsed.as_str(), key.as_str()),
            Err(error) => prop_assert_eq!(error, KeyError::TooLong { len: key.len(), max: 255 }),
        }
    }

    /// Short keys are held in place and long ones on the heap; either way a key compares, orders
    /// and hashes as its text.
    #[test]
    fn keys_of_any_length_compare_order_and_hash_as_their_text(
        // Not starting with `"`, which would make them quoted.
        a in "[\\x21\\x23-\\x7E][\\x21-\\x7E]{0,79}",
        b in "[\\x21\\x23-\\x7E][\\x21-\\x7E]{0,79}",
    ) {
        let parse = |key: &str| IdempotencyKey::parse(key.as_bytes(), 255).unwrap();
        let (ka, kb) = (parse(&a), parse(&b));
        prop_assert_eq!(ka.as_str(), a.as_str());
        prop_assert_eq!(ka.len(), a.len());
        prop_assert_eq!(ka == kb, a == b);
        prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
        let state = std::hash::RandomState::new();
        use std::hash::BuildHasher as _;
        prop_assert_eq!(state.hash_one(&ka), state.hash_one(a.as_str()));
        prop_assert_eq!(ka.clone(), ka);
    }

    #[test]
    fn a_header_sent_twice_is_refused_whatever_its_values(
        first in "[\\x21-\\x7E]{0,16}",
        second in "[\\x21-\\x7E]{0,16}",
    ) {
        let name = HeaderName::from_static("idempotency-key");
        let mut headers = HeaderMap::new();
        headers.append(&name, HeaderValue::from_str(&first).unwrap());
        headers.append(&name, HeaderValue::from_str(&second).unwrap());
        prop_assert_eq!(IdempotencyKey::from_headers(&headers, &name, 255), Err(KeyError::Repeated));
    }
}

#[test]
fn the_rule_model_agrees_with_the_documented_examples() {
    // Guards the model itself, so that the properties above compare against the right rule.
    assert_eq!(spec_key(b"abc-123", 255).as_deref(), Some("abc-123"));
    assert_eq!(spec_key(br#""abc-123""#, 255).as_deref(), Some("abc-123"));
    assert_eq!(spec_key(br#""a b""#, 255).as_deref(), Some("a b"));
    assert_eq!(spec_key(br#""a\"b\\""#, 255).as_deref(), Some("a\"b\\"));
    for refused in [
        &b""[..],
        b"\"\"",
        b"a b",
        b"\"a",
        b"\"a\\\"",
        b"\"a\"b\"",
        b"\"a\\x\"",
        b"caf\xc3\xa9",
        b"\"",
    ] {
        assert_eq!(spec_key(refused, 255), None, "{refused:?}");
    }
    assert_eq!(spec_key(b"abc", 2), None);
}
