//! The header block at the start of a record's buffer: the replayable headers, each a name and a
//! value, in as few bytes as the common response headers allow.
//!
//! A header is one tag byte, then its value's length (LEB128) and the value. A tag from 1 up
//! names one of [`KNOWN`], the response headers handlers set most; tag 0 is followed by the name's
//! length (LEB128) and the name. A tag from [`PAIR_TAG`] up is a whole header, name and value, one
//! of [`PAIRS`], the content types answers carry most: `content-type: application/json` takes one
//! byte, and its replay shares a constant value instead of reading the record's bytes again.
//!
//! The block lives only in memory and is written and read by this build alone: the binary form
//! that stores keep ([`StoredResponse::encode`](super::StoredResponse::encode)) is separate and
//! versioned.

use http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_ENCODING,
    CONTENT_LANGUAGE, CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_TYPE, ETAG, EXPIRES, LAST_MODIFIED,
    LINK, LOCATION, RETRY_AFTER, VARY,
};
use http::header::{HeaderName, HeaderValue};

/// The names written as one byte: tag `i + 1` is `KNOWN[i]`.
static KNOWN: [HeaderName; 15] = [
    CONTENT_TYPE,
    LOCATION,
    CACHE_CONTROL,
    ETAG,
    LAST_MODIFIED,
    CONTENT_LENGTH,
    CONTENT_LANGUAGE,
    CONTENT_ENCODING,
    CONTENT_LOCATION,
    CONTENT_DISPOSITION,
    VARY,
    EXPIRES,
    LINK,
    RETRY_AFTER,
    ACCESS_CONTROL_ALLOW_ORIGIN,
];

/// The first tag of a whole header: tag `PAIR_TAG + i` is `PAIRS[i]`.
const PAIR_TAG: u8 = 0x80;

/// The headers written as one byte, all of them `Content-Type`: tag `PAIR_TAG + i` is `PAIRS[i]`.
static PAIRS: [HeaderValue; 6] = [
    HeaderValue::from_static("application/json"),
    HeaderValue::from_static("application/problem+json"),
    HeaderValue::from_static("application/json; charset=utf-8"),
    HeaderValue::from_static("text/plain; charset=utf-8"),
    HeaderValue::from_static("text/html; charset=utf-8"),
    HeaderValue::from_static("application/octet-stream"),
];

/// A stored header's value: the bytes written after its length, or one of [`PAIRS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Value<'a> {
    Written(&'a [u8]),
    Known(&'static HeaderValue),
}

impl<'a> Value<'a> {
    pub(super) fn as_bytes(self) -> &'a [u8] {
        match self {
            Self::Written(bytes) => bytes,
            Self::Known(value) => value.as_bytes(),
        }
    }
}

/// A stored header's name: one of [`KNOWN`], or the bytes written after tag 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Name<'a> {
    Known(&'static HeaderName),
    Literal(&'a [u8]),
}

impl<'a> Name<'a> {
    pub(super) fn as_bytes(self) -> &'a [u8] {
        match self {
            Self::Known(name) => name.as_str().as_bytes(),
            Self::Literal(bytes) => bytes,
        }
    }

    /// Whether this is `known`, one of [`KNOWN`].
    pub(super) fn is(self, known: &HeaderName) -> bool {
        matches!(self, Self::Known(name) if name == known)
    }

    /// The header name; a known one is a copy of a constant, without parsing or allocating.
    pub(super) fn to_header_name(self) -> Option<HeaderName> {
        match self {
            Self::Known(name) => Some(name.clone()),
            Self::Literal(bytes) => HeaderName::from_bytes(bytes).ok(),
        }
    }
}

/// The tag of a header named `name`: its place in [`KNOWN`] plus one, or 0.
fn tag(name: &[u8]) -> u8 {
    KNOWN
        .iter()
        .position(|known| known.as_str().as_bytes() == name)
        // `KNOWN` has fewer than 255 names.
        .map_or(0, |at| at as u8 + 1)
}

/// The tag of the whole header `name: value`, if it is one of [`PAIRS`].
fn pair_tag(name: &[u8], value: &[u8]) -> Option<u8> {
    if name != CONTENT_TYPE.as_str().as_bytes() {
        return None;
    }
    PAIRS
        .iter()
        .position(|known| known.as_bytes() == value)
        // `PAIRS` has fewer than 127 values.
        .map(|at| PAIR_TAG + at as u8)
}

/// How many bytes a header takes in a block.
pub(super) fn encoded_len(name: &[u8], value: &[u8]) -> usize {
    if pair_tag(name, value).is_some() {
        return 1;
    }
    let name_len = match tag(name) {
        0 => varint_len(name.len()) + name.len(),
        _ => 0,
    };
    1 + name_len + varint_len(value.len()) + value.len()
}

/// Appends a header to a block.
pub(super) fn push(block: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    if let Some(tag) = pair_tag(name, value) {
        block.push(tag);
        return;
    }
    let tag = tag(name);
    block.push(tag);
    if tag == 0 {
        push_varint(block, name.len());
        block.extend_from_slice(name);
    }
    push_varint(block, value.len());
    block.extend_from_slice(value);
}

/// The headers of a block, in the order they were pushed. A block this build wrote reads back
/// whole; reading stops at the first byte that does not fit the layout.
pub(super) fn headers(block: &[u8]) -> impl Iterator<Item = (Name<'_>, Value<'_>)> + '_ {
    let mut rest = block;
    std::iter::from_fn(move || {
        let (&tag, after) = rest.split_first()?;
        rest = after;
        if tag >= PAIR_TAG {
            let value = PAIRS.get(usize::from(tag - PAIR_TAG))?;
            return Some((Name::Known(&CONTENT_TYPE), Value::Known(value)));
        }
        let name = match tag {
            0 => Name::Literal(take(&mut rest)?),
            _ => Name::Known(KNOWN.get(usize::from(tag) - 1)?),
        };
        let value = take(&mut rest)?;
        Some((name, Value::Written(value)))
    })
}

/// Reads a length and that many bytes from the front of `rest`.
fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = read_varint(rest)?;
    let (bytes, after) = rest.split_at_checked(len)?;
    *rest = after;
    Some(bytes)
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Appends `n` in LEB128: seven bits a byte, low bits first, the high bit set on all but the last.
fn push_varint(block: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        block.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    block.push(n as u8);
}

fn read_varint(rest: &mut &[u8]) -> Option<usize> {
    let mut n = 0usize;
    for shift in (0..usize::BITS).step_by(7) {
        let (&byte, after) = rest.split_first()?;
        *rest = after;
        n |= usize::from(byte & 0x7f).checked_shl(shift)?;
        if byte < 0x80 {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_of(headers: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in headers {
            push(&mut block, name, value);
        }
        let expected: usize = headers.iter().map(|(n, v)| encoded_len(n, v)).sum();
        assert_eq!(block.len(), expected, "encoded_len is what push writes");
        block
    }

    #[test]
    fn known_and_literal_names_read_back_in_order() {
        let long = vec![b'v'; 70_000];
        let headers: [(&[u8], &[u8]); 4] = [
            (b"content-type", b"application/json"),
            (b"x-request-id", b"req_1"),
            (b"location", &long),
            (b"x-empty", b""),
        ];
        let block = block_of(&headers);
        let read: Vec<(Vec<u8>, Vec<u8>)> = super::headers(&block)
            .map(|(name, value)| (name.as_bytes().to_vec(), value.as_bytes().to_vec()))
            .collect();
        let written: Vec<(Vec<u8>, Vec<u8>)> = headers
            .iter()
            .map(|(name, value)| (name.to_vec(), value.to_vec()))
            .collect();
        assert_eq!(read, written);
    }

    #[test]
    fn a_known_content_type_is_one_byte() {
        for value in &PAIRS {
            let block = block_of(&[(b"content-type", value.as_bytes())]);
            assert_eq!(block.len(), 1, "{value:?}");
            let read: Vec<_> = super::headers(&block).collect();
            assert_eq!(read, [(Name::Known(&CONTENT_TYPE), Value::Known(value))]);
        }
        // Another value of the same header, and the same value under another name, are written.
        let other = block_of(&[(b"content-type", b"application/xml")]);
        assert_eq!(other.len(), 17);
        let (_, value) = super::headers(&other).next().expect("one header");
        assert_eq!(value, Value::Written(b"application/xml"));
        assert_eq!(block_of(&[(b"x-type", b"application/json")]).len(), 25);
    }

    #[test]
    fn a_known_name_is_one_byte() {
        assert_eq!(block_of(&[(b"content-type", b"text/csv")]).len(), 10);
        for (at, name) in KNOWN.iter().enumerate() {
            assert_eq!(usize::from(tag(name.as_str().as_bytes())), at + 1, "{name}");
            let block = block_of(&[(name.as_str().as_bytes(), b"v")]);
            let (read, _) = super::headers(&block).next().expect("one header");
            assert_eq!(read, Name::Known(name));
            assert_eq!(read.to_header_name().as_ref(), Some(name));
        }
    }

    #[test]
    fn lengths_round_trip_across_byte_boundaries() {
        for n in [0, 1, 0x7f, 0x80, 0x3fff, 0x4000, 70_000, usize::MAX] {
            let mut out = Vec::new();
            push_varint(&mut out, n);
            assert_eq!(out.len(), varint_len(n), "{n}");
            let mut rest = &out[..];
            assert_eq!(read_varint(&mut rest), Some(n), "{n}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn a_cut_or_corrupt_block_stops_reading_without_panicking() {
        let block = block_of(&[(b"x-a", b"one"), (b"content-type", b"text/plain")]);
        for cut in 0..block.len() {
            assert!(super::headers(&block[..cut]).count() <= 1, "cut at {cut}");
        }
        // A tag past the known names, one past the known headers, and a length that never ends.
        assert_eq!(super::headers(&[0x7f, 1, b'v']).count(), 0);
        assert_eq!(super::headers(&[200, 1, b'v']).count(), 0);
        assert_eq!(super::headers(&[0, 0xff, 0xff, 0xff]).count(), 0);
        assert_eq!(super::headers(&[0; 0]).count(), 0);
        let endless = [0x80u8; 16];
        let mut rest = &endless[..];
        assert_eq!(read_varint(&mut rest), None);
    }
}
