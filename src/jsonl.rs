//! Compact JSON for the output files: byte for byte what `serde_json::to_writer` writes, a few
//! times faster.
//!
//! Owns: turning any `Serialize` value into compact JSON appended to a `Vec<u8>`. Strings are
//! copied in runs found 16 bytes at a time and escaped as serde_json escapes them (`\"`, `\\`,
//! `\b \t \n \f \r`, other control characters as `\u00xx` in lowercase hex, nothing else);
//! integers go through `itoa` and floats through `zmij`, the crates serde_json itself uses
//! (the same versions: one copy of each is built), non-finite floats are `null`. Must not: pick
//! a format of its own. What it does not mirror (a map key that is not a string, a
//! `Serialize` impl that fails) it leaves to serde_json: [`append_line`] then writes that
//! record with serde_json, so the bytes, or the error, are serde_json's.

use std::fmt;

use serde::ser::{self, Serialize};

/// Appends `value` as one line of compact JSON (`\n`-terminated) to `out`. On an error (from
/// serde_json, the only one that can fail here) `out` holds what serde_json had written.
pub fn append_line<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> std::result::Result<(), serde_json::Error> {
    let start = out.len();
    if value.serialize(&mut Writer { out: &mut *out }).is_err() {
        out.truncate(start);
        serde_json::to_writer(&mut *out, value)?;
    }
    out.push(b'\n');
    Ok(())
}

/// This writer does not mirror serde_json for what was asked: serde_json writes the record.
#[derive(Debug)]
pub struct Unsupported;

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("left to serde_json")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Unsupported
    }
}

type Result<T = ()> = std::result::Result<T, Unsupported>;

struct Writer<'o> {
    out: &'o mut Vec<u8>,
}

/// Appends `s` as a JSON string.
///
/// Most strings need no escape: `s` is copied as it is and the copy checked where it lies,
/// at the end of `out`, so even a short one is one 16-byte block (`special` reads the block
/// ending at the end of `out`, bytes before the copy included, and drops those). If the copy
/// holds a byte to escape, it is taken back and written escaped.
#[inline]
fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let copy = out.len();
    out.extend_from_slice(bytes);
    if crate::scan::special(out, copy) == out.len() {
        out.push(b'"');
        return;
    }
    out.truncate(copy);
    write_escaped(out, bytes);
    out.push(b'"');
}

/// The contents of a string that holds a byte to escape.
#[cold]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0;
    loop {
        let i = crate::scan::special(bytes, start);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else { break };
        escape(out, b);
        start = i + 1;
    }
}

#[cold]
fn escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&hex);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

fn write_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

impl<'a, 'o> ser::Serializer for &'a mut Writer<'o> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Compound<'a, 'o>;
    type SerializeTuple = Compound<'a, 'o>;
    type SerializeTupleStruct = Compound<'a, 'o>;
    type SerializeTupleVariant = Compound<'a, 'o>;
    type SerializeMap = Compound<'a, 'o>;
    type SerializeStruct = Compound<'a, 'o>;
    type SerializeStructVariant = Compound<'a, 'o>;

    fn serialize_bool(self, v: bool) -> Result {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result {
        if v.is_finite() {
            let mut buffer = zmij::Buffer::new();
            self.out
                .extend_from_slice(buffer.format_finite(v).as_bytes());
        } else {
            self.out.extend_from_slice(b"null");
        }
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result {
        if v.is_finite() {
            let mut buffer = zmij::Buffer::new();
            self.out
                .extend_from_slice(buffer.format_finite(v).as_bytes());
        } else {
            self.out.extend_from_slice(b"null");
        }
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result {
        write_str(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result {
        self.out.push(b'[');
        for (i, b) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_int(self.out, *b);
        }
        self.out.push(b']');
        Ok(())
    }
    fn serialize_none(self) -> Result {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result {
        write_str(self.out, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq> {
        self.out.push(b'[');
        Ok(Compound {
            writer: self,
            first: true,
            close: b"]",
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.extend_from_slice(b":[");
        Ok(Compound {
            writer: self,
            first: true,
            close: b"]}",
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap> {
        self.out.push(b'{');
        Ok(Compound {
            writer: self,
            first: true,
            close: b"}",
        })
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Self::SerializeStruct> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant> {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.extend_from_slice(b":{");
        Ok(Compound {
            writer: self,
            first: true,
            close: b"}}",
        })
    }
}

/// An array or object being written: `close` ends it.
struct Compound<'a, 'o> {
    writer: &'a mut Writer<'o>,
    first: bool,
    close: &'static [u8],
}

impl Compound<'_, '_> {
    #[inline]
    fn comma(&mut self) {
        if !std::mem::replace(&mut self.first, false) {
            self.writer.out.push(b',');
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.comma();
        value.serialize(&mut *self.writer)
    }

    #[inline(always)]
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        self.comma();
        // A struct's field names are Rust identifiers (or serde renames of them): nothing in
        // them to escape, so they are copied without the scan.
        debug_assert_eq!(crate::scan::special(key.as_bytes(), 0), key.len());
        let out = &mut *self.writer.out;
        out.reserve(key.len() + 3);
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        value.serialize(&mut *self.writer)
    }

    fn end(self) -> Result {
        self.writer.out.extend_from_slice(self.close);
        Ok(())
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.element(value)
    }
    fn end(self) -> Result {
        Compound::end(self)
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.element(value)
    }
    fn end(self) -> Result {
        Compound::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.element(value)
    }
    fn end(self) -> Result {
        Compound::end(self)
    }
}

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.element(value)
    }
    fn end(self) -> Result {
        Compound::end(self)
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
        self.comma();
        key.serialize(KeyWriter(&mut *self.writer.out))?;
        self.writer.out.push(b':');
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        value.serialize(&mut *self.writer)
    }
    fn end(self) -> Result {
        Compound::end(self)
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    #[inline(always)]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        self.field(key, value)
    }
    fn end(self) -> Result {
        Compound::end(self)
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        self.field(key, value)
    }
    fn end(self) -> Result {
        Compound::end(self)
    }
}

/// A map key: only strings (and what serializes as one) are written here; serde_json quotes
/// numbers and rejects the rest, which is left to it.
struct KeyWriter<'o>(&'o mut Vec<u8>);

impl ser::Serializer for KeyWriter<'_> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = ser::Impossible<(), Unsupported>;
    type SerializeTuple = ser::Impossible<(), Unsupported>;
    type SerializeTupleStruct = ser::Impossible<(), Unsupported>;
    type SerializeTupleVariant = ser::Impossible<(), Unsupported>;
    type SerializeMap = ser::Impossible<(), Unsupported>;
    type SerializeStruct = ser::Impossible<(), Unsupported>;
    type SerializeStructVariant = ser::Impossible<(), Unsupported>;

    fn serialize_str(self, v: &str) -> Result {
        write_str(self.0, v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result {
        write_str(self.0, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result {
        write_str(self.0, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result {
        value.serialize(self)
    }

    fn serialize_bool(self, _: bool) -> Result {
        Err(Unsupported)
    }
    fn serialize_i8(self, _: i8) -> Result {
        Err(Unsupported)
    }
    fn serialize_i16(self, _: i16) -> Result {
        Err(Unsupported)
    }
    fn serialize_i32(self, _: i32) -> Result {
        Err(Unsupported)
    }
    fn serialize_i64(self, _: i64) -> Result {
        Err(Unsupported)
    }
    fn serialize_u8(self, _: u8) -> Result {
        Err(Unsupported)
    }
    fn serialize_u16(self, _: u16) -> Result {
        Err(Unsupported)
    }
    fn serialize_u32(self, _: u32) -> Result {
        Err(Unsupported)
    }
    fn serialize_u64(self, _: u64) -> Result {
        Err(Unsupported)
    }
    fn serialize_f32(self, _: f32) -> Result {
        Err(Unsupported)
    }
    fn serialize_f64(self, _: f64) -> Result {
        Err(Unsupported)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result {
        Err(Unsupported)
    }
    fn serialize_none(self) -> Result {
        Err(Unsupported)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result {
        Err(Unsupported)
    }
    fn serialize_unit(self) -> Result {
        Err(Unsupported)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result {
        Err(Unsupported)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result {
        Err(Unsupported)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(Unsupported)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple> {
        Err(Unsupported)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        Err(Unsupported)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(Unsupported)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap> {
        Err(Unsupported)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct> {
        Err(Unsupported)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(Unsupported)
    }
}

#[cfg(test)]
mod tests {
    //! Every line must be byte for byte what `serde_json::to_writer` writes.
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Serialize;

    use super::append_line;
    use crate::model::{
        Content, Conversion, DeadLetter, DeadLetterReason, Discrepancy, DiscrepancyKind, Input,
        Money, Page, Position, Properties, RevenueWindow, Source, SourcesSeen, User, ValueSource,
        FORMAT_VERSION,
    };

    #[track_caller]
    fn same_bytes<T: Serialize + ?Sized>(value: &T) {
        let mut ours = b"earlier line\n".to_vec();
        append_line(&mut ours, value).unwrap();
        let mut theirs = b"earlier line\n".to_vec();
        serde_json::to_writer(&mut theirs, value).unwrap();
        theirs.push(b'\n');
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
        assert_eq!(ours, theirs);
    }

    /// Text with what needs escaping: quotes, backslashes, every control character, DEL,
    /// `/`, non-ASCII (two to four UTF-8 bytes), `<` and `&`.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 ./:@_-]{0,40}",
            "[\"\\\\/\u{0}-\u{1f}\u{7f}<&'a-z\u{e9}\u{20ac}\u{1F600}\u{2028}]{0,40}",
            ".{0,24}",
        ]
    }

    fn money() -> impl Strategy<Value = Money> {
        prop_oneof![
            (0i64..100_000_000_000).prop_map(Money),
            (0i64..100_000).prop_map(|c| Money(c * 10_000)),
            any::<i64>().prop_map(Money),
        ]
    }

    fn user() -> impl Strategy<Value = User> {
        (
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
        )
            .prop_map(
                |(email, phone, external_id, ttclid, ttp, ip, user_agent)| User {
                    email,
                    phone,
                    external_id,
                    ttclid,
                    ttp,
                    ip,
                    user_agent,
                },
            )
    }

    fn content() -> impl Strategy<Value = Content> {
        (
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(any::<i64>()),
            proptest::option::of(money()),
        )
            .prop_map(
                |(content_id, content_name, content_category, brand, quantity, price)| Content {
                    content_id,
                    content_name,
                    content_category,
                    brand,
                    quantity,
                    price,
                },
            )
    }

    fn properties() -> impl Strategy<Value = Properties> {
        (
            proptest::option::of(money()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(proptest::collection::vec(content(), 0..3)),
            proptest::option::of(text()),
            proptest::option::of(text()),
        )
            .prop_map(
                |(value, currency, order_id, content_type, contents, description, query)| {
                    Properties {
                        value,
                        currency,
                        order_id,
                        content_type,
                        contents,
                        description,
                        query,
                    }
                },
            )
    }

    fn conversion() -> impl Strategy<Value = Conversion> {
        (
            (
                text(),
                text(),
                text(),
                proptest::option::of(text()),
                any::<i64>(),
            ),
            user(),
            properties(),
            (proptest::option::of(text()), proptest::option::of(text())),
            (0..3u8, any::<bool>(), 0..3u8),
        )
            .prop_map(
                |((key, pixel, event, event_id, event_time), user, properties, page, enums)| {
                    Conversion {
                        format_version: FORMAT_VERSION,
                        key,
                        event_source_id: pixel,
                        event,
                        event_id,
                        event_time,
                        user,
                        properties,
                        page: Page {
                            url: page.0,
                            referrer: page.1,
                        },
                        sources: [SourcesSeen::Browser, SourcesSeen::Server, SourcesSeen::Both]
                            [usize::from(enums.0)],
                        first_source: if enums.1 {
                            Source::Browser
                        } else {
                            Source::Server
                        },
                        value_source: [
                            ValueSource::Server,
                            ValueSource::Browser,
                            ValueSource::None,
                        ][usize::from(enums.2)],
                    }
                },
            )
    }

    fn discrepancy() -> impl Strategy<Value = Discrepancy> {
        (
            0..DiscrepancyKind::ALL.len(),
            text(),
            any::<i64>(),
            proptest::option::of(text()),
            proptest::option::of(money()),
            proptest::option::of(money()),
            proptest::option::of(text()),
        )
            .prop_map(|(kind, key, time, id, a, b, currency)| {
                let mut d = Discrepancy::new(DiscrepancyKind::ALL[kind], key, time);
                d.event_id.clone_from(&id);
                d.order_id = id;
                d.browser_value = a;
                d.server_value = b;
                d.order_total = b;
                d.currency.clone_from(&currency);
                d.order_currency = currency;
                d.source = Some(Source::Server);
                d
            })
    }

    fn dead_letter() -> impl Strategy<Value = DeadLetter> {
        (
            text(),
            proptest::option::of(text()),
            any::<i32>(),
            any::<i64>(),
            any::<u32>(),
        )
            .prop_map(|(detail, original, partition, offset, index)| DeadLetter {
                format_version: FORMAT_VERSION,
                input: Input::Server,
                position: Position {
                    input: Input::Server,
                    partition,
                    offset,
                    index,
                },
                reason: DeadLetterReason::InvalidJson,
                detail,
                original_base64: original.as_ref().map(|_| "AAEC".to_owned()),
                original,
                redacted: false,
            })
    }

    fn revenue_window() -> impl Strategy<Value = RevenueWindow> {
        (
            text(),
            any::<i64>(),
            money(),
            money(),
            proptest::option::of(any::<f64>()),
        )
            .prop_map(|(key, hour_start, tracked, backend, drift)| RevenueWindow {
                format_version: FORMAT_VERSION,
                event_source_id: key.clone(),
                currency: key.clone(),
                key,
                hour_start,
                version: 3,
                orders: 2,
                purchases: 1,
                matched: 1,
                tracked_revenue: tracked,
                backend_revenue: backend,
                drift_ratio: drift,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn conversions_are_written_as_serde_json_writes_them(c in conversion()) {
            same_bytes(&c);
        }

        #[test]
        fn discrepancies_are_written_as_serde_json_writes_them(d in discrepancy()) {
            same_bytes(&d);
        }

        #[test]
        fn dead_letters_are_written_as_serde_json_writes_them(d in dead_letter()) {
            same_bytes(&d);
        }

        #[test]
        fn revenue_windows_are_written_as_serde_json_writes_them(w in revenue_window()) {
            same_bytes(&w);
        }

        #[test]
        fn numbers_are_written_as_serde_json_writes_them(
            f in any::<f64>(),
            g in any::<f32>(),
            i in any::<i64>(),
            u in any::<u128>(),
            bits in any::<u64>(),
        ) {
            same_bytes(&(f, g, i, u, f64::from_bits(bits), Money(i)));
        }
    }

    #[derive(Serialize)]
    struct Unit;

    #[derive(Serialize)]
    struct Newtype(String);

    #[derive(Serialize)]
    struct Tuple(i8, char);

    #[derive(Serialize)]
    enum Shapes {
        Unit,
        Newtype(u16),
        Tuple(i32, bool),
        Struct { a: Option<u8>, b: Vec<Unit> },
    }

    #[derive(Serialize)]
    struct Everything {
        unit: (),
        unit_struct: Unit,
        newtype: Newtype,
        tuple: Tuple,
        variants: Vec<Shapes>,
        bytes: serde_bytes_like::Bytes,
        empty_seq: Vec<u8>,
        empty_map: BTreeMap<String, u8>,
        map: BTreeMap<String, Vec<Option<f64>>>,
        char_key_map: BTreeMap<char, i128>,
        specials: [f64; 4],
        small: (i8, i16, i32, u8, u16, u32, f32),
    }

    mod serde_bytes_like {
        /// Serialized with `serialize_bytes`.
        pub struct Bytes(pub Vec<u8>);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }

    #[test]
    fn every_shape_of_the_serde_data_model_is_written_as_serde_json_writes_it() {
        let value = Everything {
            unit: (),
            unit_struct: Unit,
            newtype: Newtype("n\u{1}\"".into()),
            tuple: Tuple(-3, '\u{1F600}'),
            variants: vec![
                Shapes::Unit,
                Shapes::Newtype(7),
                Shapes::Tuple(-1, true),
                Shapes::Struct {
                    a: None,
                    b: vec![Unit, Unit],
                },
                Shapes::Struct {
                    a: Some(1),
                    b: vec![],
                },
            ],
            bytes: serde_bytes_like::Bytes(vec![0, 1, 255]),
            empty_seq: vec![],
            empty_map: BTreeMap::new(),
            map: [
                ("a\"b".to_owned(), vec![Some(1.5), None, Some(f64::NAN)]),
                ("\u{7}".to_owned(), vec![]),
            ]
            .into(),
            char_key_map: [('\n', i128::MIN), ('z', i128::MAX)].into(),
            specials: [f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e-320],
            small: (
                i8::MIN,
                i16::MIN,
                i32::MIN,
                u8::MAX,
                u16::MAX,
                u32::MAX,
                0.1,
            ),
        };
        same_bytes(&value);
    }

    #[test]
    fn map_keys_serde_json_quotes_or_rejects_are_left_to_it() {
        same_bytes(&BTreeMap::from([(1u32, "one"), (2, "two")]));
        same_bytes(&BTreeMap::from([(true, 1)]));
        let mut ours = Vec::new();
        let err = append_line(&mut ours, &BTreeMap::from([(vec![1u8], 1)])).unwrap_err();
        let mut theirs = Vec::new();
        let expected =
            serde_json::to_writer(&mut theirs, &BTreeMap::from([(vec![1u8], 1)])).unwrap_err();
        assert_eq!(err.to_string(), expected.to_string());
        assert_eq!(ours, theirs);
    }
}
