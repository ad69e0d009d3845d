//! The fast path of [`super::read_record`]: a reader of its own for the common case that
//! either fills the record's lenient structs exactly as the serde_json path would or gives up.
//!
//! Owns: reading well-formed, ordinary JSON (strings scanned 16 bytes at a time, no `Value`
//! tree, strings borrowed unless they hold escapes) straight into the structs of known fields
//! ([`Fields::field_direct`], [`Direct`]), without serde's visitor calls between a key and its
//! slot, so the records built from it are the same. Must not: produce an error of its own that
//! anyone sees. Anything it is not sure to read exactly as serde_json 1.x does ([`Bail`]): a
//! syntax error, a lone surrogate escape, a control character in a string, a key with an
//! escape, a float whose value depends on serde_json's rounding (more than 2^53 in the
//! significand, or a power of ten beyond 10^22), an integer near the edge of `u64`/`i64`,
//! deep nesting, or a slot it does not read (a raw value); then the caller reads the record
//! again with serde_json, whose error message and position go in the dead letter.
//!
//! What it mirrors of serde_json (`de.rs`, `read.rs`, without `float_roundtrip` or
//! `arbitrary_precision`) and of the visitors in [`super`]: whitespace is space, tab, CR, LF; a
//! positive integer is a `u64`, a negative one an `i64` (`-0` the float `-0.0`); a number with
//! a fraction or an exponent is `significand as f64` times or divided by an exact power of ten
//! (one rounding, which is also the correctly rounded value in the range accepted here); a
//! value the visitors read and drop (a number where an object was expected) is still read, so
//! a number serde_json rejects is given up on; a skipped value (an unknown key's) is validated
//! and none of its numbers read.

use std::borrow::Cow;

use super::{Fields, List, Obj, Scalar};
use crate::scan::special;

/// The fast path gave up; read the record with serde_json.
#[derive(Debug)]
pub(crate) struct Bail;

pub(crate) type Result<T> = std::result::Result<T, Bail>;

/// Nesting deeper than this (objects and arrays, read or skipped) is left to serde_json, which
/// has its own limit of 128 for values it reads.
const MAX_DEPTH: u32 = 64;

/// Largest significand read as a float here: every integer up to 2^53 is an exact `f64`.
const MAX_EXACT_SIGNIFICAND: u64 = 1 << 53;

/// The exact powers of ten in `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Reads one JSON text into `seed` and checks that only whitespace follows.
/// Reads one JSON text into `slot` as [`super::InPlace`] does (`null` leaves `None`, a
/// non-object gives [`Obj::NotObject`]) and checks that only whitespace follows.
pub(crate) fn read_record<'de, T: Fields<'de>>(
    text: &'de str,
    slot: &mut Option<Obj<T>>,
) -> Result<()> {
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
        scratch: String::new(),
    };
    reader.obj_in_place(slot)?;
    match reader.skip_ws() {
        None => Ok(()),
        Some(_) => Err(Bail),
    }
}

/// A value the reader builds on its own, as its type's serde `Deserialize` would from
/// serde_json (an array's items are read this way).
pub(crate) trait Direct<'de>: Sized {
    fn read_direct(reader: &mut Reader<'de>) -> Result<Self>;
}

pub(crate) struct Reader<'de> {
    text: &'de str,
    bytes: &'de [u8],
    pos: usize,
    /// Objects and arrays open around the current position.
    depth: u32,
    /// An unescaped string (one that held escapes).
    scratch: String,
}

/// A string as read: borrowed from the input, or unescaped into the scratch buffer.
enum Str<'de> {
    Borrowed(&'de str),
    Scratch,
}

enum Number {
    U64(u64),
    I64(i64),
    F64(f64),
}

impl<'de> Reader<'de> {
    /// Skips whitespace and returns the next byte, not consumed.
    #[inline]
    fn skip_ws(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.pos) {
            match b {
                b' ' | b'\n' | b'\t' | b'\r' => self.pos += 1,
                _ => return Some(b),
            }
        }
        None
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Consumes `word` (`null`, `true`, `false`) whose first byte was peeked.
    fn ident(&mut self, word: &[u8]) -> Result<()> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Bail)
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Bail);
        }
        Ok(())
    }

    /// The string whose opening quote is at `pos`. Borrowed when it holds no escape. Inlined
    /// into each caller: a call's register saves and restores cost as much as a short key's
    /// scan, and every key and most values are short strings.
    #[inline(always)]
    fn string(&mut self) -> Result<Str<'de>> {
        self.pos += 1;
        let start = self.pos;
        let end = special(self.bytes, start);
        match self.bytes.get(end) {
            Some(b'"') => {
                self.pos = end + 1;
                // SAFETY: `start` follows an ASCII quote and `end` is at one, so both are
                // character boundaries of `text` and `start <= end <= text.len()`. The checked
                // slice tested both boundaries again, a call per string of every record.
                Ok(Str::Borrowed(unsafe {
                    self.text.get_unchecked(start..end)
                }))
            }
            Some(b'\\') => {
                self.scratch.clear();
                self.scratch.push_str(&self.text[start..end]);
                self.pos = end;
                self.unescape_rest()?;
                Ok(Str::Scratch)
            }
            // A control character, or the end of the input.
            _ => Err(Bail),
        }
    }

    /// Unescapes from a backslash at `pos` to the closing quote into `scratch`.
    #[cold]
    fn unescape_rest(&mut self) -> Result<()> {
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    let escape = self.bytes.get(self.pos + 1).copied().ok_or(Bail)?;
                    self.pos += 2;
                    let c = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\x08',
                        b'f' => '\x0c',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(Bail),
                    };
                    self.scratch.push(c);
                }
                Some(_) => {
                    let start = self.pos;
                    let end = special(self.bytes, start);
                    if !matches!(self.bytes.get(end), Some(b'"' | b'\\')) {
                        return Err(Bail);
                    }
                    self.scratch.push_str(&self.text[start..end]);
                    self.pos = end;
                }
                None => return Err(Bail),
            }
        }
    }

    /// The character of a `\u` escape whose `\u` was consumed: a non-surrogate, or a leading
    /// surrogate followed by `\u` and a trailing one. Anything else gives up.
    fn unicode_escape(&mut self) -> Result<char> {
        let n = self.hex4()?;
        let code = match n {
            0xD800..=0xDBFF => {
                if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(Bail);
                }
                self.pos += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(Bail);
                }
                (((u32::from(n) - 0xD800) << 10) | (u32::from(low) - 0xDC00)) + 0x1_0000
            }
            0xDC00..=0xDFFF => return Err(Bail),
            _ => u32::from(n),
        };
        char::from_u32(code).ok_or(Bail)
    }

    fn hex4(&mut self) -> Result<u16> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or(Bail)?;
        let mut n = 0u16;
        for &d in digits {
            let v = (d as char).to_digit(16).ok_or(Bail)?;
            n = (n << 4) | v as u16;
        }
        self.pos += 4;
        Ok(n)
    }

    /// Skips a string whose opening quote is at `pos`, checking its escapes.
    fn skip_string(&mut self) -> Result<()> {
        self.pos += 1;
        loop {
            let end = special(self.bytes, self.pos);
            match self.bytes.get(end) {
                Some(b'"') => {
                    self.pos = end + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    let escape = self.bytes.get(end + 1).copied().ok_or(Bail)?;
                    self.pos = end + 2;
                    match escape {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            self.unicode_escape()?;
                        }
                        _ => return Err(Bail),
                    }
                }
                _ => return Err(Bail),
            }
        }
    }

    /// Reads a run of digits at `pos`: their value (wrapping past `u64`: callers check the
    /// count first) and how many there were.
    #[inline]
    fn digits(&mut self) -> (u64, usize) {
        let start = self.pos;
        let mut n: u64 = 0;
        while let Some(&c @ b'0'..=b'9') = self.bytes.get(self.pos) {
            n = n.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            self.pos += 1;
        }
        (n, self.pos - start)
    }

    /// A number at `pos`, as serde_json's `deserialize_any` reads it.
    fn number(&mut self) -> Result<Number> {
        let positive = if self.peek() == Some(b'-') {
            self.pos += 1;
            false
        } else {
            true
        };
        let (int, int_len) = self.digits();
        match int_len {
            0 => return Err(Bail),
            1 => {}
            // A leading zero is invalid; 19 digits always fit in u64 (20 may not).
            _ if self.bytes[self.pos - int_len] == b'0' || int_len > 19 => return Err(Bail),
            _ => {}
        }
        let mut significand = int;
        let mut exponent: i32 = 0;
        let is_float = matches!(self.peek(), Some(b'.' | b'e' | b'E'));
        if !is_float {
            return Ok(if positive {
                Number::U64(int)
            } else if int == 0 {
                Number::F64(-0.0)
            } else if int_len <= 18 {
                Number::I64(-(int as i64))
            } else {
                return Err(Bail);
            });
        }
        if int_len > 16 {
            return Err(Bail);
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let (frac, frac_len) = self.digits();
            if frac_len == 0 || int_len + frac_len > 19 {
                return Err(Bail);
            }
            significand = int * 10u64.pow(frac_len as u32) + frac;
            exponent = -(frac_len as i32);
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            let negative_exp = match self.peek() {
                Some(b'+') => {
                    self.pos += 1;
                    false
                }
                Some(b'-') => {
                    self.pos += 1;
                    true
                }
                _ => false,
            };
            let (exp, exp_len) = self.digits();
            if exp_len == 0 || exp_len > 3 {
                return Err(Bail);
            }
            let exp = exp as i32;
            exponent += if negative_exp { -exp } else { exp };
        }
        if significand > MAX_EXACT_SIGNIFICAND || !(-22..=22).contains(&exponent) {
            return Err(Bail);
        }
        let pow = POW10[exponent.unsigned_abs() as usize];
        let f = if exponent >= 0 {
            significand as f64 * pow
        } else {
            significand as f64 / pow
        };
        Ok(Number::F64(if positive { f } else { -f }))
    }

    /// Skips a number at `pos`, checking only its syntax (serde_json's `ignore_integer`).
    fn skip_number(&mut self) -> Result<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let start = self.pos;
        let (_, int_len) = self.digits();
        if int_len == 0 || (int_len > 1 && self.bytes[start] == b'0') {
            return Err(Bail);
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits().1 == 0 {
                return Err(Bail);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits().1 == 0 {
                return Err(Bail);
            }
        }
        Ok(())
    }

    /// Skips any value, checking its syntax (serde_json's `ignore_value`).
    fn skip_value(&mut self) -> Result<()> {
        match self.skip_ws().ok_or(Bail)? {
            b'n' => self.ident(b"null"),
            b't' => self.ident(b"true"),
            b'f' => self.ident(b"false"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            b'"' => self.skip_string(),
            b'[' => {
                self.enter()?;
                self.pos += 1;
                if self.skip_ws() == Some(b']') {
                    self.pos += 1;
                } else {
                    loop {
                        self.skip_value()?;
                        match self.skip_ws() {
                            Some(b',') => self.pos += 1,
                            Some(b']') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(Bail),
                        }
                    }
                }
                self.depth -= 1;
                Ok(())
            }
            b'{' => {
                self.enter()?;
                self.pos += 1;
                if self.skip_ws() == Some(b'}') {
                    self.pos += 1;
                } else {
                    loop {
                        if self.skip_ws() != Some(b'"') {
                            return Err(Bail);
                        }
                        self.skip_string()?;
                        if self.skip_ws() != Some(b':') {
                            return Err(Bail);
                        }
                        self.pos += 1;
                        self.skip_value()?;
                        match self.skip_ws() {
                            Some(b',') => self.pos += 1,
                            Some(b'}') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(Bail),
                        }
                    }
                }
                self.depth -= 1;
                Ok(())
            }
            _ => Err(Bail),
        }
    }

    /// A value read and dropped where a visitor takes any value but wants only one kind (an
    /// object, an array): consumed exactly as serde_json's `deserialize_any` would read it, so
    /// a number serde_json rejects gives up. Objects and arrays are only skipped.
    fn other_value(&mut self, first: u8) -> Result<()> {
        match first {
            b'{' | b'[' => self.skip_value(),
            b'"' => self.skip_string(),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            b'n' => self.ident(b"null"),
            b't' => self.ident(b"true"),
            b'f' => self.ident(b"false"),
            _ => Err(Bail),
        }
    }

    /// Any value as a [`Scalar`] (arrays and objects skipped and marked), as `ScalarVisitor`
    /// reads it.
    #[inline]
    fn scalar(&mut self) -> Result<Scalar<'de>> {
        Ok(match self.skip_ws().ok_or(Bail)? {
            b'"' => Scalar::Str(match self.string()? {
                Str::Borrowed(s) => Cow::Borrowed(s),
                Str::Scratch => Cow::Owned(self.scratch.clone()),
            }),
            b'-' | b'0'..=b'9' => match self.number()? {
                Number::U64(n) => Scalar::UInt(n),
                Number::I64(n) => Scalar::Int(n),
                Number::F64(n) => Scalar::Float(n),
            },
            b'{' => {
                self.skip_value()?;
                Scalar::Object
            }
            b'[' => {
                self.skip_value()?;
                Scalar::Array
            }
            b'n' => {
                self.ident(b"null")?;
                Scalar::Null
            }
            b't' => {
                self.ident(b"true")?;
                Scalar::Bool(true)
            }
            b'f' => {
                self.ident(b"false")?;
                Scalar::Bool(false)
            }
            _ => return Err(Bail),
        })
    }

    /// Reads an object field straight into its slot, as [`super::InPlace`] does: `null`
    /// empties it, an object fills it (a repeated key starts over), anything else marks it
    /// [`Obj::NotObject`].
    pub(crate) fn obj_in_place<T: Fields<'de>>(&mut self, slot: &mut Option<Obj<T>>) -> Result<()> {
        match self.skip_ws().ok_or(Bail)? {
            b'{' => {
                let fields = match slot.insert(Obj::Ok(T::default())) {
                    Obj::Ok(fields) => fields,
                    Obj::NotObject => unreachable!("just inserted"),
                };
                self.fill(fields)
            }
            b'n' => {
                self.ident(b"null")?;
                *slot = None;
                Ok(())
            }
            first => {
                self.other_value(first)?;
                *slot = Some(Obj::NotObject);
                Ok(())
            }
        }
    }

    /// Reads an object's entries into `fields`, its `{` at `pos`; unknown keys are skipped
    /// unread, a repeated key keeps its last value.
    fn fill<T: Fields<'de>>(&mut self, fields: &mut T) -> Result<()> {
        self.enter()?;
        self.pos += 1;
        let mut first = true;
        loop {
            match self.skip_ws().ok_or(Bail)? {
                b'}' => break,
                b'"' if first => first = false,
                b',' if !first => {
                    self.pos += 1;
                    if self.skip_ws() != Some(b'"') {
                        return Err(Bail);
                    }
                }
                _ => return Err(Bail),
            }
            // A key with an escape is rare enough to leave to serde_json.
            let Str::Borrowed(key) = self.string()? else {
                return Err(Bail);
            };
            if self.skip_ws() != Some(b':') {
                return Err(Bail);
            }
            self.pos += 1;
            if !fields.field_direct(key, self)? {
                self.skip_value()?;
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(())
    }

    /// Reads an optional slot: `null` is `None` (serde's `Option`), anything else `T`.
    pub(crate) fn option<T: Direct<'de>>(&mut self) -> Result<Option<T>> {
        if self.skip_ws() == Some(b'n') {
            self.ident(b"null")?;
            Ok(None)
        } else {
            T::read_direct(self).map(Some)
        }
    }

    /// A [`Scalar`] slot: `null` empties it.
    pub(crate) fn scalar_slot(&mut self) -> Result<Option<Scalar<'de>>> {
        Ok(match self.scalar()? {
            Scalar::Null => None,
            v => Some(v),
        })
    }
}

impl<'de: 'a, 'a> Direct<'de> for Scalar<'a> {
    fn read_direct(reader: &mut Reader<'de>) -> Result<Self> {
        reader.scalar()
    }
}

/// An array item that should be an object: `null` is [`Obj::NotObject`] here (not `None`).
impl<'de, T: Fields<'de>> Direct<'de> for Obj<T> {
    fn read_direct(reader: &mut Reader<'de>) -> Result<Self> {
        let mut slot = None;
        reader.obj_in_place(&mut slot)?;
        Ok(slot.unwrap_or(Obj::NotObject))
    }
}

/// An array (its items read as `T`), or [`List::NotArray`] for any other value, `null`
/// included.
impl<'de, T: Direct<'de>> Direct<'de> for List<T> {
    fn read_direct(reader: &mut Reader<'de>) -> Result<Self> {
        match reader.skip_ws().ok_or(Bail)? {
            b'[' => {
                reader.enter()?;
                reader.pos += 1;
                let mut items = Vec::new();
                loop {
                    match reader.skip_ws().ok_or(Bail)? {
                        b']' => break,
                        _ if items.is_empty() => {}
                        b',' => {
                            reader.pos += 1;
                            if matches!(reader.skip_ws(), None | Some(b']')) {
                                return Err(Bail);
                            }
                        }
                        _ => return Err(Bail),
                    }
                    items.push(T::read_direct(reader)?);
                }
                reader.pos += 1;
                reader.depth -= 1;
                Ok(List::Ok(items))
            }
            first => {
                reader.other_value(first)?;
                Ok(List::NotArray)
            }
        }
    }
}

/// A raw value's text is serde_json's to find.
impl<'de: 'a, 'a> Direct<'de> for &'a serde_json::value::RawValue {
    fn read_direct(_: &mut Reader<'de>) -> Result<Self> {
        Err(Bail)
    }
}

#[cfg(test)]
mod tests {
    //! The fast reader against serde_json: wherever it does not give up, it must have read
    //! exactly what serde_json reads, on the real record shapes and on arbitrary text.
    use std::fmt::Debug;

    use proptest::prelude::*;

    use super::super::{read_record_serde, Fields, Obj};
    use crate::parse::event::{RawEvent, TypedBody};

    /// Reads `text` both ways; returns whether the fast reader kept it.
    #[track_caller]
    fn same_as_serde<'a, T: Fields<'a> + Debug>(text: &'a str) -> bool {
        let mut fast: Option<Obj<T>> = None;
        let fast_ok = super::read_record(text, &mut fast).is_ok();
        let mut serde: Option<Obj<T>> = None;
        let serde_result = read_record_serde(text, &mut serde);
        if fast_ok {
            assert!(
                serde_result.is_ok(),
                "fast read what serde_json rejects: {text:?}"
            );
            assert_eq!(format!("{fast:?}"), format!("{serde:?}"), "{text:?}");
        }
        fast_ok
    }

    /// Reads `text` as an event and as a server body; returns whether both took the fast
    /// path (they may differ: a field one shape skips unread, the other reads).
    #[track_caller]
    fn both_shapes(text: &str) -> bool {
        let event = same_as_serde::<RawEvent<'_>>(text);
        let body = same_as_serde::<TypedBody<'_>>(text);
        event && body
    }

    const EVENT: &str = r#"{"event_source_id":"CPIXEL1","event":"CompletePayment",
        "event_id":"ord-1001","event_time":1697783008,
        "user":{"email":" John.Doe@Example.COM ","phone":"+1 (650) 555-1234","ttp":"t\"1\u00e9\ud83d\ude00"},
        "properties":{"value":"149.90","currency":"usd","order_id":1001,
        "contents":[{"content_id":"sku-1","quantity":2,"price":74.95}]},
        "page":{"url":"https://shop.example/thanks"},"consent":"granted","extra":{"ignored":[1,-2.5e3,"x\n",true,null,{}]}}"#;

    #[test]
    fn ordinary_records_take_the_fast_path() {
        assert!(both_shapes(EVENT));
        let body =
            format!(r#"{{"event_source":"web","event_source_id":"P","data":[{EVENT},{EVENT}]}}"#);
        assert!(both_shapes(&body));
        assert!(both_shapes(
            r#"{"pixel_code":"P","batch":[{"event":"x","timestamp":"2024-01-01T00:00:00Z"}]}"#
        ));
        for text in [
            "null",
            "[]",
            "[1,{}]",
            "\"s\"",
            "7",
            " {} ",
            "{\"data\":null}",
        ] {
            assert!(both_shapes(text), "{text}");
        }
    }

    /// Every browser and server line of generated traffic (malformed lines included) reads
    /// the same both ways, and nearly all of them take the fast path.
    #[test]
    fn generated_traffic_reads_the_same_both_ways() {
        use crate::generate::{generate, GenerateOptions, Line, TrafficSink};
        #[derive(Default)]
        struct Lines(Vec<String>);
        impl TrafficSink for Lines {
            fn browser(&mut self, line: Line) -> std::io::Result<()> {
                self.0.extend(line.value);
                Ok(())
            }
            fn server(&mut self, line: Line) -> std::io::Result<()> {
                self.0.extend(line.value);
                Ok(())
            }
            fn orders(&mut self, _: Line) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut lines = Lines::default();
        let opts = GenerateOptions {
            actions: 3_000,
            ..GenerateOptions::default()
        };
        generate(&opts, &mut lines).unwrap();
        let fast = lines.0.iter().filter(|l| both_shapes(l)).count();
        assert!(
            fast * 100 >= lines.0.len() * 99,
            "{fast} of {}",
            lines.0.len()
        );
    }

    #[test]
    fn numbers_match_serde_json_or_give_up() {
        let numbers = [
            "0",
            "-0",
            "1",
            "-1",
            "0.0",
            "-0.0",
            "1.5",
            "149.90",
            "74.95",
            "0.1",
            "0.3",
            "1e2",
            "1E+2",
            "1e-2",
            "-1.5e-3",
            "12345.678",
            "1697783008",
            "1697783008123",
            "1697783008.5",
            "9007199254740992",
            "9007199254740993",
            "9007199254740993.0",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775807",
            "-9223372036854775808",
            "-9223372036854775809",
            "-999999999999999999",
            "-1000000000000000000",
            "1e22",
            "1e23",
            "1e-22",
            "1e-23",
            "123456789.123456789",
            "0.000000000000000000001",
            "1e400",
            "-1e400",
            "1e-400",
            "01",
            "-01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "00",
            "2.5E-0",
            "4.35",
            "19.99",
            "0.07",
            "1234567890123456.7",
        ];
        for n in numbers {
            for text in [
                format!(r#"{{"event_time":{n}}}"#),
                format!(r#"{{"properties":{{"value":{n}}}}}"#),
                format!(r#"{{"ignored":{n},"event":"e"}}"#),
                format!(r#"{{"user":[{n}]}}"#),
            ] {
                both_shapes(&text);
            }
        }
    }

    #[test]
    fn strings_match_serde_json_or_give_up() {
        let strings = [
            r#""""#,
            r#""plain""#,
            r#""tab\tbed""#,
            r#""q\"uote""#,
            r#""back\\slash""#,
            r#""\/\b\f\n\r\t""#,
            r#""\u0041\u00e9\u20ac""#,
            r#""\ud83d\ude00""#,
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83dx""#,
            r#""\ud83d\u0041""#,
            r#""\u12""#,
            r#""\uZZZZ""#,
            r#""\x""#,
            "\"a\u{1}b\"",
            "\"a\u{7f}b\"",
            "\"caf\u{e9} \u{1F600}\"",
            r#""unterminated"#,
            "\"0123456789abcdef0123456789abcdef\\u0000tail\"",
            "\"0123456789abcdef0123456789abcdef\u{1f}\"",
        ];
        for s in strings {
            for text in [
                format!(r#"{{"event":{s}}}"#),
                format!(r#"{{"ignored":{s},"event":"e"}}"#),
                format!(r#"{{{s}:1}}"#),
                format!(r#"{{"user":{{{s}:[{s}]}}}}"#),
                format!(r#"{{"properties":{{"contents":[{{"brand":{s}}}]}}}}"#),
            ] {
                both_shapes(&text);
            }
        }
    }

    #[test]
    fn syntax_edges_match_serde_json_or_give_up() {
        let texts = [
            "",
            " ",
            "{",
            "}",
            "{}x",
            "{} {}",
            "{,}",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":}"#,
            r#"{"a":1 "b":2}"#,
            "[1,]",
            "[,1]",
            "[1 2]",
            r#"{"data":[1,]}"#,
            r#"{"data":[]}"#,
            "nul",
            "nulll",
            "tru",
            "True",
            r#"{"event":"a","event":"b"}"#,
            r#"{"user":{"email":"a"},"user":null}"#,
            r#"{"user":{"email":"a"},"user":7}"#,
            "\t{\r\n\"event\" : \"e\" ,\n\"x\":[ ] }\n",
            r#"{1:2}"#,
            r#"{"a":[}"#,
            "\u{a0}{}",
            "{}\u{0}",
        ];
        for text in texts {
            both_shapes(text);
        }
        let deep = |n: usize| format!(r#"{{"x":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
        for n in [10, 60, 63, 64, 65, 127, 128, 200] {
            both_shapes(&deep(n));
            let nested = format!(r#"{{"user":{}{}}}"#, "{\"a\":".repeat(n), "}".repeat(n));
            both_shapes(&nested.replacen("{\"a\":}", "{\"a\":1}", 1));
        }
    }

    /// JSON-ish text made of the tokens records hold, often malformed.
    fn jsonish() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just(":".to_owned()),
            Just(",".to_owned()),
            Just(" ".to_owned()),
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("\"event\"".to_owned()),
            Just("\"data\"".to_owned()),
            Just("\"user\"".to_owned()),
            Just("\"email\"".to_owned()),
            Just("\"properties\"".to_owned()),
            Just("\"value\"".to_owned()),
            Just("\"contents\"".to_owned()),
            Just("\"price\"".to_owned()),
            Just("\"event_time\"".to_owned()),
            "-?[0-9]{1,20}(\\.[0-9]{1,12})?([eE][+-]?[0-9]{1,3})?",
            "\"([a-zA-Z0-9 @.\u{e9}\u{1F600}]|\\\\[\"\\\\/bfnrtx]|\\\\u[0-9a-fA-F]{4}|\\\\ud83d|[\u{0}-\u{1f}]){0,8}\"",
        ];
        proptest::collection::vec(token, 0..40).prop_map(|t| t.concat())
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            (0u32..100_000, 0u32..3)
                .prop_map(|(c, d)| { Value::from(f64::from(c) / f64::from(10u32.pow(d))) }),
            "[ -~\u{1F600}\u{0627}\u{0}-\u{1f}\"\\\\]{0,12}".prop_map(Value::String),
        ];
        let key = prop_oneof![
            Just("event_source_id"),
            Just("event"),
            Just("event_time"),
            Just("user"),
            Just("email"),
            Just("context"),
            Just("properties"),
            Just("value"),
            Just("contents"),
            Just("price"),
            Just("quantity"),
            Just("data"),
            Just("batch"),
            Just("other"),
        ];
        leaf.prop_recursive(5, 64, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..8).prop_map(|entries| {
                    Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn fast_reader_agrees_with_serde_json_on_jsonish_text(text in jsonish()) {
            both_shapes(&text);
        }

        #[test]
        fn fast_reader_agrees_with_serde_json_on_generated_json(value in json_value()) {
            let text = value.to_string();
            both_shapes(&text);
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            both_shapes(&pretty);
        }

        #[test]
        fn fast_reader_agrees_with_serde_json_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let text = String::from_utf8_lossy(&bytes);
            both_shapes(&text);
        }
    }
}
