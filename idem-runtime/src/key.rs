//! The `Idempotency-Key` request header: reading it and deciding whether it is valid.
//!
//! Two spellings of a key are accepted and name the same key:
//!
//! - the bare form used by Stripe and most clients: `Idempotency-Key: 8e03978e-40d5-43e8-bc93-6894a57f9324`;
//! - the RFC 8941 string form required by the IETF draft: `Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`.
//!
//! # What is valid
//!
//! - A bare key is 1 to `max_len` visible ASCII characters (`0x21..=0x7E`).
//! - A quoted key follows RFC 8941 §3.3.3: inside the quotes, printable ASCII including the space
//!   (`0x20..=0x7E`), with `"` and `\` escaped as `\"` and `\\`. The key is the unescaped content,
//!   which must also be 1 to `max_len` characters. Spaces are accepted here (and only here) because a
//!   client following the IETF draft may send them; a bare value cannot carry one, since HTTP trims
//!   the whitespace around a field value.
//! - The header must appear at most once: two `Idempotency-Key` fields are ambiguous and rejected.
//!
//! Everything else is an [`KeyError`] and answered with `400 Bad Request`.
//!
//! ```
//! use idem_runtime::key::{IdempotencyKey, KeyError};
//!
//! let bare = IdempotencyKey::parse(b"abc-123", 255).unwrap();
//! let quoted = IdempotencyKey::parse(br#""abc-123""#, 255).unwrap();
//! assert_eq!(bare, quoted);
//! assert_eq!(bare.as_str(), "abc-123");
//!
//! assert_eq!(IdempotencyKey::parse(b"", 255), Err(KeyError::Empty));
//! assert!(matches!(IdempotencyKey::parse(b"caf\xc3\xa9", 255), Err(KeyError::InvalidByte { .. })));
//! ```

use std::fmt;

use http::{HeaderMap, HeaderName};

/// The default longest key, in characters (Stripe's limit).
pub const DEFAULT_MAX_KEY_LEN: usize = 255;

/// The longest `max_key_len` a handler may ask for.
///
/// Keys are kept in the store next to every response, so an unbounded length would let a client
/// make the store hold arbitrary amounts of key text. 1024 characters fits any UUID, ULID or
/// composite key a client reasonably sends.
pub const MAX_KEY_LEN_LIMIT: usize = 1024;

/// A validated idempotency key: 1 to `max_len` visible ASCII characters (or spaces, when it was sent
/// quoted).
///
/// A key of at most [`INLINE_KEY_LEN`] characters (a UUID, a ULID) is held in place, without an
/// allocation of its own; a longer one on the heap.
#[derive(Clone)]
pub struct IdempotencyKey(Repr);

/// The longest key held in place by [`IdempotencyKey`], in characters: a UUID's 36 and then some.
pub const INLINE_KEY_LEN: usize = 38;

#[derive(Clone)]
enum Repr {
    /// The first `len` bytes are the key, the rest zero.
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_LEN],
    },
    Heap(Box<str>),
}

impl IdempotencyKey {
    /// Parses one header value, bare or RFC 8941 quoted, into a key of at most `max_len`
    /// characters.
    ///
    /// # Errors
    ///
    /// A [`KeyError`] that says exactly what is wrong with the value.
    pub fn parse(value: &[u8], max_len: usize) -> Result<Self, KeyError> {
        let key = match value.first() {
            None => return Err(KeyError::Empty),
            Some(b'"') => Self::from_ascii(parse_quoted(value)?.as_bytes()),
            Some(_) => Self::from_ascii(parse_bare(value)?),
        };
        let len = key.as_bytes().len();
        if len == 0 {
            return Err(KeyError::Empty);
        }
        if len > max_len {
            return Err(KeyError::TooLong { len, max: max_len });
        }
        Ok(key)
    }

    /// A key of these printable ASCII bytes.
    fn from_ascii(ascii: &[u8]) -> Self {
        if let Ok(len) = u8::try_from(ascii.len())
            && ascii.len() <= INLINE_KEY_LEN
        {
            let mut bytes = [0; INLINE_KEY_LEN];
            bytes[..ascii.len()].copy_from_slice(ascii);
            return Self(Repr::Inline { len, bytes });
        }
        // Printable ASCII is UTF-8.
        Self(Repr::Heap(String::from_utf8_lossy(ascii).into()))
    }

    /// Reads the key from the header `name` of a request.
    ///
    /// Returns `Ok(None)` when the header is absent.
    ///
    /// # Errors
    ///
    /// [`KeyError::Repeated`] when the header appears more than once, or the error of
    /// [`IdempotencyKey::parse`] for its value.
    ///
    /// ```
    /// use http::{HeaderMap, HeaderName, HeaderValue};
    /// use idem_runtime::key::{IdempotencyKey, KeyError};
    ///
    /// let name = HeaderName::from_static("idempotency-key");
    /// let mut headers = HeaderMap::new();
    /// assert_eq!(IdempotencyKey::from_headers(&headers, &name, 255), Ok(None));
    ///
    /// headers.append(&name, HeaderValue::from_static("k1"));
    /// assert_eq!(IdempotencyKey::from_headers(&headers, &name, 255).unwrap().unwrap().as_str(), "k1");
    ///
    /// headers.append(&name, HeaderValue::from_static("k2"));
    /// assert_eq!(IdempotencyKey::from_headers(&headers, &name, 255), Err(KeyError::Repeated));
    /// ```
    pub fn from_headers(
        headers: &HeaderMap,
        name: &HeaderName,
        max_len: usize,
    ) -> Result<Option<Self>, KeyError> {
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(KeyError::Repeated);
        }
        Self::parse(value.as_bytes(), max_len).map(Some)
    }

    /// The key's characters, unescaped.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only printable ASCII is ever held, so the check cannot fail.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(key) => key,
        }
    }

    /// The key's bytes: printable ASCII, the same as [`as_str`](Self::as_str)'s, without the
    /// check that they are text.
    ///
    /// ```
    /// use idem_runtime::key::IdempotencyKey;
    ///
    /// let key = IdempotencyKey::parse(b"ch-7", 255).unwrap();
    /// assert!(key.as_bytes().starts_with(b"ch-"));
    /// ```
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(key) => key.as_bytes(),
        }
    }

    /// The key's length in characters.
    #[must_use]
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Always `false`: a key has at least one character.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

impl PartialEq for IdempotencyKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for IdempotencyKey {}

impl std::hash::Hash for IdempotencyKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As the `str` hashes: the same key hashes alike however it is held.
        self.as_str().hash(state);
    }
}

impl PartialOrd for IdempotencyKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IdempotencyKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The bytes of a bare key, once checked to be printable ASCII.
fn parse_bare(value: &[u8]) -> Result<&[u8], KeyError> {
    if let Some(position) = value.iter().position(|b| !(0x21..=0x7E).contains(b)) {
        return Err(KeyError::InvalidByte {
            position,
            byte: value[position],
        });
    }
    Ok(value)
}

fn parse_quoted(value: &[u8]) -> Result<String, KeyError> {
    let mut key = String::with_capacity(value.len());
    let mut position = 1;
    loop {
        let Some(&byte) = value.get(position) else {
            return Err(KeyError::Malformed("the quoted key has no closing `\"`"));
        };
        match byte {
            b'"' => break,
            b'\\' => {
                match value.get(position + 1) {
                    Some(&escaped @ (b'"' | b'\\')) => key.push(char::from(escaped)),
                    _ => {
                        return Err(KeyError::Malformed(
                            "inside a quoted key `\\` may only escape `\"` or `\\`",
                        ));
                    }
                }
                position += 2;
            }
            0x20..=0x7E => {
                key.push(char::from(byte));
                position += 1;
            }
            _ => return Err(KeyError::InvalidByte { position, byte }),
        }
    }
    if position + 1 != value.len() {
        return Err(KeyError::Malformed(
            "nothing may follow the closing `\"` of a quoted key",
        ));
    }
    Ok(key)
}

/// Why an `Idempotency-Key` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The value is empty (or `""`).
    #[error("the key is empty; send 1 or more visible ASCII characters")]
    Empty,
    /// The key is longer than the handler allows.
    #[error("the key is {len} characters long; at most {max} are allowed")]
    TooLong {
        /// The key's length, in characters.
        len: usize,
        /// The longest key the handler accepts.
        max: usize,
    },
    /// A byte that may not appear in a key: a control character, a space outside quotes, or a
    /// non-ASCII byte.
    #[error(
        "byte {position} of the key is {} (0x{byte:02X}); keys are visible ASCII characters",
        describe(*.byte)
    )]
    InvalidByte {
        /// Zero-based offset of the byte in the header value.
        position: usize,
        /// The byte itself.
        byte: u8,
    },
    /// The value starts with `"` but is not a valid RFC 8941 string.
    #[error("malformed quoted key: {0}")]
    Malformed(&'static str),
    /// The header was sent more than once.
    #[error("the header was sent more than once; send exactly one key")]
    Repeated,
    /// The handler requires a key and the request has none.
    #[error("this endpoint requires an idempotency key")]
    Missing,
}

/// What kind of byte a refused one is, for [`KeyError::InvalidByte`]'s message.
fn describe(byte: u8) -> &'static str {
    match byte {
        b' ' => "a space (allowed only inside a quoted key)",
        0x00..=0x1F | 0x7F => "a control character",
        _ => "a non-ASCII byte",
    }
}
