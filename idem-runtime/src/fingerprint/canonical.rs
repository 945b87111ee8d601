//! A canonical, self-delimiting binary encoding of any `Serialize` value, written straight into a
//! sink (the SHA-256 hasher) without building an intermediate tree.
//!
//! Every value starts with a one-byte tag; strings and byte strings carry a `u64` length prefix;
//! sequences and structs end with an end tag; maps carry their entry count and their entries sorted
//! by the encoded key, so the order a map iterates in never changes the encoding. Integers are
//! encoded by value, not by width, so `1u8` and `1i64` encode alike. Maps are the only values that
//! are buffered (each map's entries in one buffer) before they reach the sink.

use std::fmt;

use serde::ser::{self, Serialize};

/// Where encoded bytes go.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

mod tag {
    pub(super) const UNIT: u8 = 0x00;
    pub(super) const BOOL: u8 = 0x01;
    pub(super) const NEG_INT: u8 = 0x02;
    pub(super) const INT: u8 = 0x03;
    pub(super) const FLOAT: u8 = 0x04;
    pub(super) const STR: u8 = 0x05;
    pub(super) const BYTES: u8 = 0x06;
    pub(super) const NONE: u8 = 0x07;
    pub(super) const SOME: u8 = 0x08;
    pub(super) const UNIT_VARIANT: u8 = 0x09;
    pub(super) const VARIANT: u8 = 0x0A;
    pub(super) const SEQ: u8 = 0x0B;
    pub(super) const END: u8 = 0x0C;
    pub(super) const MAP: u8 = 0x0D;
    pub(super) const STRUCT: u8 = 0x0E;
}

/// Writes the canonical encoding of `value` into `sink`.
pub(crate) fn encode<T: Serialize + ?Sized, S: Sink>(value: &T, sink: &mut S) -> Result<(), Error> {
    value.serialize(Encoder { sink })
}

/// A `Serialize` implementation reported an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Error(String);

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

struct Encoder<'a, S> {
    sink: &'a mut S,
}

impl<S: Sink> Encoder<'_, S> {
    fn tag(&mut self, tag: u8) {
        self.sink.put(&[tag]);
    }

    fn len_prefixed(&mut self, tag: u8, bytes: &[u8]) {
        self.sink.put(&[tag]);
        self.sink.put(&(bytes.len() as u64).to_le_bytes());
        self.sink.put(bytes);
    }

    fn unsigned(&mut self, v: u128) {
        self.tag(tag::INT);
        self.sink.put(&v.to_le_bytes());
    }

    fn signed(&mut self, v: i128) {
        match u128::try_from(v) {
            Ok(v) => self.unsigned(v),
            Err(_) => {
                self.tag(tag::NEG_INT);
                self.sink.put(&v.to_le_bytes());
            }
        }
    }

    fn reborrow(&mut self) -> Encoder<'_, S> {
        Encoder { sink: self.sink }
    }
}

impl<'a, S: Sink> ser::Serializer for Encoder<'a, S> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = MapEncoder<'a, S>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.sink.put(&[tag::BOOL, u8::from(v)]);
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.serialize_i128(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i128(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i128(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.serialize_i128(v.into())
    }
    fn serialize_i128(mut self, v: i128) -> Result<(), Error> {
        self.signed(v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.serialize_u128(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.serialize_u128(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.serialize_u128(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.serialize_u128(v.into())
    }
    fn serialize_u128(mut self, v: u128) -> Result<(), Error> {
        self.unsigned(v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(mut self, v: f64) -> Result<(), Error> {
        self.tag(tag::FLOAT);
        self.sink.put(&v.to_bits().to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(mut self, v: &str) -> Result<(), Error> {
        self.len_prefixed(tag::STR, v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(mut self, v: &[u8]) -> Result<(), Error> {
        self.len_prefixed(tag::BYTES, v);
        Ok(())
    }
    fn serialize_none(mut self) -> Result<(), Error> {
        self.tag(tag::NONE);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(mut self, value: &T) -> Result<(), Error> {
        self.tag(tag::SOME);
        value.serialize(self)
    }
    fn serialize_unit(mut self) -> Result<(), Error> {
        self.tag(tag::UNIT);
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.len_prefixed(tag::UNIT_VARIANT, variant.as_bytes());
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.len_prefixed(tag::VARIANT, variant.as_bytes());
        value.serialize(self)
    }
    fn serialize_seq(mut self, _len: Option<usize>) -> Result<Self, Error> {
        self.tag(tag::SEQ);
        Ok(self)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Self, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, Error> {
        self.len_prefixed(tag::VARIANT, variant.as_bytes());
        self.serialize_seq(Some(len))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapEncoder<'a, S>, Error> {
        Ok(MapEncoder {
            sink: self.sink,
            buffer: Vec::new(),
            entries: Vec::with_capacity(len.unwrap_or(0)),
            key: (0, 0),
        })
    }
    fn serialize_struct(mut self, _name: &'static str, _len: usize) -> Result<Self, Error> {
        self.tag(tag::STRUCT);
        Ok(self)
    }
    fn serialize_struct_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self, Error> {
        self.len_prefixed(tag::VARIANT, variant.as_bytes());
        self.tag(tag::STRUCT);
        Ok(self)
    }
}

impl<S: Sink> ser::SerializeSeq for Encoder<'_, S> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(self.reborrow())
    }
    fn end(mut self) -> Result<(), Error> {
        self.tag(tag::END);
        Ok(())
    }
}

impl<S: Sink> ser::SerializeTuple for Encoder<'_, S> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl<S: Sink> ser::SerializeTupleStruct for Encoder<'_, S> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl<S: Sink> ser::SerializeTupleVariant for Encoder<'_, S> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl<S: Sink> ser::SerializeStruct for Encoder<'_, S> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        // A struct's fields always come in declaration order, so no sorting is needed.
        self.len_prefixed(tag::STR, key.as_bytes());
        value.serialize(self.reborrow())
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), Error> {
        // A skipped field and an absent one must not encode alike with their neighbours shifted.
        self.len_prefixed(tag::STR, key.as_bytes());
        self.tag(tag::NONE);
        Ok(())
    }
    fn end(mut self) -> Result<(), Error> {
        self.tag(tag::END);
        Ok(())
    }
}

impl<S: Sink> ser::SerializeStructVariant for Encoder<'_, S> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeStruct::end(self)
    }
}

/// Buffers the entries' encodings, then writes the entries sorted by their encoded key.
///
/// All entries of one map share one buffer, so a map costs one allocation rather than one per
/// entry; `entries` records where each entry's key and value lie in it.
pub(crate) struct MapEncoder<'a, S> {
    sink: &'a mut S,
    buffer: Vec<u8>,
    /// Per entry: where its encoded key starts, where the key ends and the value starts, and
    /// where the value ends.
    entries: Vec<(usize, usize, usize)>,
    /// Where the key being written starts and ends.
    key: (usize, usize),
}

impl<S: Sink> ser::SerializeMap for MapEncoder<'_, S> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        let start = self.buffer.len();
        encode(key, &mut self.buffer)?;
        self.key = (start, self.buffer.len());
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        encode(value, &mut self.buffer)?;
        let (start, key_end) = self.key;
        self.entries.push((start, key_end, self.buffer.len()));
        Ok(())
    }
    fn end(mut self) -> Result<(), Error> {
        let buffer = &self.buffer;
        // By key; entries with equal keys (a map serialized from a list of pairs may repeat one)
        // by their whole encoding, so that not even their order in the input shows.
        self.entries
            .sort_unstable_by(|&(a, a_key, a_end), &(b, b_key, b_end)| {
                buffer[a..a_key]
                    .cmp(&buffer[b..b_key])
                    .then_with(|| buffer[a..a_end].cmp(&buffer[b..b_end]))
            });
        self.sink.put(&[tag::MAP]);
        self.sink.put(&(self.entries.len() as u64).to_le_bytes());
        for &(start, _, end) in &self.entries {
            self.sink.put(&buffer[start..end]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn encoded<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out).expect("serializable");
        out
    }

    /// A map is its tag, its entry count, then each entry's encoded key and value, sorted by the
    /// encoded key (a shorter string sorts first: its length prefix is smaller), nested maps alike.
    #[test]
    fn map_entries_are_sorted_by_encoded_key() {
        let mut inner = BTreeMap::new();
        inner.insert("zz", 1u8);
        inner.insert("b", 2u8);
        let mut map = BTreeMap::new();
        map.insert("aa", BTreeMap::new());
        map.insert("c", inner.clone());

        let entry = |key: &str, value: &BTreeMap<&str, u8>| {
            let mut bytes = encoded(key);
            bytes.extend(encoded(value));
            bytes
        };
        let mut inner_expected = vec![tag::MAP];
        inner_expected.extend(2u64.to_le_bytes());
        inner_expected.extend(encoded("b"));
        inner_expected.extend(encoded(&2u8));
        inner_expected.extend(encoded("zz"));
        inner_expected.extend(encoded(&1u8));
        assert_eq!(encoded(&inner), inner_expected);

        let mut expected = vec![tag::MAP];
        expected.extend(2u64.to_le_bytes());
        expected.extend(entry("c", &inner));
        expected.extend(entry("aa", &BTreeMap::new()));
        assert_eq!(encoded(&map), expected);
    }

    /// Repeated keys (a map serialized from a list of pairs) encode alike whatever their order.
    #[test]
    fn repeated_keys_do_not_reveal_their_order() {
        struct Pairs(Vec<(&'static str, u8)>);
        impl Serialize for Pairs {
            fn serialize<S: ser::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
            }
        }
        assert_eq!(
            encoded(&Pairs(vec![("k", 1), ("k", 2), ("a", 3)])),
            encoded(&Pairs(vec![("a", 3), ("k", 2), ("k", 1)])),
        );
        assert_ne!(
            encoded(&Pairs(vec![("k", 1), ("k", 2)])),
            encoded(&Pairs(vec![("k", 1), ("k", 3)])),
        );
    }
}
