//! Lenient, borrowed JSON reading: the one place that talks to serde.
//!
//! Owns: the building blocks every shape is read with. A known field is read as a [`Scalar`]
//! (any JSON value, strings borrowed from the input when they hold no escapes), an [`Obj`] (an
//! object of known fields, or the mark that it was not an object) or a [`List`] (an array, or
//! the mark that it was not one). None of them fails on a wrong type: only a syntax error stops
//! the read. A wrong type is found afterwards, by the code that knows the field's name, so a
//! dead letter can say `user.email: expected a string` without ever quoting the value. Unknown
//! fields are skipped unread ([`IgnoredAny`]); a repeated key keeps its last value (as
//! JavaScript's `JSON.parse` does). No `serde_json::Value` tree is built.
//!
//! Must not: know any record shape (that is `event` and `order`), or put input text in an
//! error: serde_json's syntax messages are fixed strings plus a line and column, and its data
//! messages (which can quote a value) are never shown.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::error::Category;
use serde_json::value::RawValue;

use crate::model::DeadLetterReason;

mod fast;

pub(crate) use fast::{Direct, Reader, Result as DirectResult};

/// A JSON value read without judging its type. Arrays and objects are skipped and only marked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq)?;
        Ok(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map)?;
        Ok(Scalar::Object)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// An object key, borrowed unless it holds escapes.
pub(crate) struct Key<'a>(pub(crate) Cow<'a, str>);

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

/// A struct of known fields, read from an object's entries one key at a time (see
/// [`lenient_object!`]).
pub(crate) trait Fields<'de>: Default {
    /// Reads the value of `key` into `self` if `key` is one of its fields and returns true;
    /// returns false, leaving the value unread, otherwise.
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;

    /// [`Fields::field`] for the [`fast`] reader: the same slots, read the same way.
    fn field_direct(&mut self, key: &str, reader: &mut Reader<'de>) -> fast::Result<bool>;
}

/// Declares a struct of `Option` fields read leniently from a JSON object, each field named by
/// its JSON key: `lenient_object! { pub(crate) struct RawPage<'a> { url: Scalar<'a> = "url" } }`.
/// A JSON `null` reads as `None`, like an absent key.
macro_rules! lenient_object {
    ($(#[$meta:meta])* $vis:vis struct $name:ident<$lt:lifetime> {
        $($(#[$fmeta:meta])* $field:ident : $ty:ty = $key:literal),* $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $name<$lt> {
            $($(#[$fmeta])* pub(crate) $field: Option<$ty>,)*
        }

        impl<'de: $lt, $lt> $crate::parse::json::Fields<'de> for $name<$lt> {
            fn field<A: ::serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $($key => {
                        <$ty as $crate::parse::json::Slot<'de>>::read(&mut self.$field, map)?;
                        Ok(true)
                    })*
                    _ => Ok(false),
                }
            }

            fn field_direct(
                &mut self,
                key: &str,
                reader: &mut $crate::parse::json::Reader<'de>,
            ) -> $crate::parse::json::DirectResult<bool> {
                match key {
                    $($key => {
                        <$ty as $crate::parse::json::Slot<'de>>::read_direct(&mut self.$field, reader)?;
                        Ok(true)
                    })*
                    _ => Ok(false),
                }
            }
        }
    };
}
pub(crate) use lenient_object;

/// An object of known fields, or the mark that the value was something else.
#[derive(Debug)]
pub(crate) enum Obj<T> {
    Ok(T),
    NotObject,
}

struct ObjVisitor<T>(PhantomData<T>);

/// Every non-object value, consumed, becomes `$result`.
macro_rules! other_values_are {
    ($result:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($result)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($result)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($result)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($result)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($result)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($result)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok($result)
        }
    };
}

impl<'de, T: Fields<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut fields = T::default();
        fill(&mut fields, map)?;
        Ok(Obj::Ok(fields))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq)?;
        Ok(Obj::NotObject)
    }
    other_values_are!(Obj::NotObject);
}

impl<'de, T: Fields<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjVisitor(PhantomData))
    }
}

/// Reads an object's entries into `fields`, skipping unknown keys unread.
fn fill<'de, T: Fields<'de>, A: MapAccess<'de>>(
    fields: &mut T,
    mut map: A,
) -> Result<(), A::Error> {
    while let Some(key) = map.next_key::<Key<'de>>()? {
        if !fields.field(&key.0, &mut map)? {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(())
}

/// How a field's value is read into its slot. Objects are filled in place: a raw event is about
/// a kilobyte of `Option`s, and building each part apart and moving it into its parent cost a
/// tenth of the parse time in memory copies.
pub(crate) trait Slot<'de>: Sized {
    fn read<A: MapAccess<'de>>(slot: &mut Option<Self>, map: &mut A) -> Result<(), A::Error>;

    /// [`Slot::read`] for the [`fast`] reader.
    fn read_direct(slot: &mut Option<Self>, reader: &mut Reader<'de>) -> DirectResult<()>;
}

impl<'de: 'a, 'a> Slot<'de> for Scalar<'a> {
    fn read<A: MapAccess<'de>>(slot: &mut Option<Self>, map: &mut A) -> Result<(), A::Error> {
        // One dispatch on the value (reading an `Option` first peeks for null on its own).
        *slot = match map.next_value::<Scalar<'a>>()? {
            Scalar::Null => None,
            v => Some(v),
        };
        Ok(())
    }

    fn read_direct(slot: &mut Option<Self>, reader: &mut Reader<'de>) -> DirectResult<()> {
        *slot = reader.scalar_slot()?;
        Ok(())
    }
}

impl<'de, T: Deserialize<'de> + Direct<'de>> Slot<'de> for List<T> {
    fn read<A: MapAccess<'de>>(slot: &mut Option<Self>, map: &mut A) -> Result<(), A::Error> {
        *slot = map.next_value()?;
        Ok(())
    }

    fn read_direct(slot: &mut Option<Self>, reader: &mut Reader<'de>) -> DirectResult<()> {
        *slot = reader.option()?;
        Ok(())
    }
}

impl<'de: 'a, 'a> Slot<'de> for &'a RawValue {
    fn read<A: MapAccess<'de>>(slot: &mut Option<Self>, map: &mut A) -> Result<(), A::Error> {
        *slot = map.next_value()?;
        Ok(())
    }

    fn read_direct(slot: &mut Option<Self>, reader: &mut Reader<'de>) -> DirectResult<()> {
        *slot = reader.option()?;
        Ok(())
    }
}

impl<'de, T: Fields<'de>> Slot<'de> for Obj<T> {
    fn read<A: MapAccess<'de>>(slot: &mut Option<Self>, map: &mut A) -> Result<(), A::Error> {
        map.next_value_seed(InPlace(slot))
    }

    fn read_direct(slot: &mut Option<Self>, reader: &mut Reader<'de>) -> DirectResult<()> {
        reader.obj_in_place(slot)
    }
}

/// Reads an object field straight into its slot: `null` empties it, an object fills it (a
/// repeated key starts over), anything else marks it [`Obj::NotObject`].
struct InPlace<'s, T>(&'s mut Option<Obj<T>>);

impl<'de, T: Fields<'de>> DeserializeSeed<'de> for InPlace<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Fields<'de>> Visitor<'de> for InPlace<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        *self.0 = Some(Obj::Ok(T::default()));
        match self.0 {
            Some(Obj::Ok(fields)) => fill(fields, map),
            _ => Ok(()),
        }
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        skip_seq(seq)?;
        *self.0 = Some(Obj::NotObject);
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        *self.0 = Some(Obj::NotObject);
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        *self.0 = Some(Obj::NotObject);
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        *self.0 = Some(Obj::NotObject);
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        *self.0 = Some(Obj::NotObject);
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        *self.0 = Some(Obj::NotObject);
        Ok(())
    }
}

/// Reads a whole record that should be an object of `T` into `slot` (no copy of `T` on the
/// way out). `null` leaves `None`; any other non-object gives [`Obj::NotObject`].
///
/// The [`fast`] reader goes first; when it gives up, serde_json reads the record from the
/// start, so every result, error messages included, is serde_json's.
pub(crate) fn read_record<'de, T: Fields<'de>>(
    text: &'de str,
    slot: &mut Option<Obj<T>>,
) -> Result<(), serde_json::Error> {
    if fast::read_record(text, slot).is_ok() {
        return Ok(());
    }
    *slot = None;
    read_record_serde(text, slot)
}

/// [`read_record`] with serde_json only.
pub(crate) fn read_record_serde<'de, T: Fields<'de>>(
    text: &'de str,
    slot: &mut Option<Obj<T>>,
) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    InPlace(slot).deserialize(&mut de)?;
    de.end()
}

/// An array, or the mark that the value was something else (`null` included).
#[derive(Debug)]
pub(crate) enum List<T> {
    Ok(Vec<T>),
    NotArray,
}

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = List<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<T>()? {
            items.push(item);
        }
        Ok(List::Ok(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map)?;
        Ok(List::NotArray)
    }
    other_values_are!(List::NotArray);
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListVisitor(PhantomData))
    }
}

/// A known field held a value of the wrong type. Names the field, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field}: expected {expected}")]
pub struct WrongType {
    pub field: &'static str,
    pub expected: &'static str,
}

/// The record could not be read as JSON at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Syntax or early end: serde_json's fixed message and position (no input text).
    #[error("not JSON: {0}")]
    Syntax(String),
    /// serde_json reported a data error; its message may quote input, so it is not kept.
    #[error("record: unexpected JSON shape")]
    Data,
}

impl JsonError {
    pub fn reason(&self) -> DeadLetterReason {
        match self {
            JsonError::Syntax(_) => DeadLetterReason::InvalidJson,
            JsonError::Data => DeadLetterReason::InvalidShape,
        }
    }
}

impl From<serde_json::Error> for JsonError {
    fn from(e: serde_json::Error) -> Self {
        match e.classify() {
            // Syntax and EOF messages are fixed strings (serde_json's ErrorCode) plus a position.
            Category::Syntax | Category::Eof => JsonError::Syntax(e.to_string()),
            Category::Data | Category::Io => JsonError::Data,
        }
    }
}

/// The object in `v`: `None` when absent or null.
pub(crate) fn obj<'r, T>(
    v: &'r Option<Obj<T>>,
    field: &'static str,
) -> Result<Option<&'r T>, WrongType> {
    match v {
        None => Ok(None),
        Some(Obj::Ok(t)) => Ok(Some(t)),
        Some(Obj::NotObject) => Err(WrongType {
            field,
            expected: "an object",
        }),
    }
}

/// A string field: `None` when absent, null, empty or only whitespace. The text is returned as
/// sent (not trimmed).
pub(crate) fn text<'r>(
    v: &'r Option<Scalar<'_>>,
    field: &'static str,
) -> Result<Option<&'r str>, WrongType> {
    match v {
        None | Some(Scalar::Null) => Ok(None),
        Some(Scalar::Str(s)) => Ok((!crate::pii::trim(s).is_empty()).then_some(&**s)),
        Some(_) => Err(WrongType {
            field,
            expected: "a string",
        }),
    }
}

/// An identifier: a string (trimmed) or a JSON number (its decimal form: `12345`, `1.5`).
/// `None` when absent, null or empty.
pub(crate) fn id<'r>(
    v: &'r Option<Scalar<'_>>,
    field: &'static str,
) -> Result<Option<Cow<'r, str>>, WrongType> {
    match v {
        None | Some(Scalar::Null) => Ok(None),
        Some(Scalar::Str(s)) => {
            let t = crate::pii::trim(s);
            Ok((!t.is_empty()).then_some(Cow::Borrowed(t)))
        }
        Some(Scalar::Int(i)) => Ok(Some(Cow::Owned(i.to_string()))),
        Some(Scalar::UInt(u)) => Ok(Some(Cow::Owned(u.to_string()))),
        Some(Scalar::Float(f)) => Ok(Some(Cow::Owned(float_id(*f)))),
        Some(_) => Err(WrongType {
            field,
            expected: "a string or a number",
        }),
    }
}

/// `12345.0` reads as `12345` (a JSON encoder may write an integer id as a float); other
/// floats keep their shortest form.
fn float_id(f: f64) -> String {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is exact
    if f.fract() == 0.0 && f.abs() < EXACT {
        (f as i64).to_string()
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    lenient_object! {
        struct Probe<'a> {
            name: Scalar<'a> = "name",
            inner: Obj<Inner<'a>> = "inner",
            items: List<Scalar<'a>> = "items",
        }
    }

    lenient_object! {
        struct Inner<'a> {
            name: Scalar<'a> = "name",
        }
    }

    fn read(json: &str) -> Result<Obj<Probe<'_>>, JsonError> {
        Ok(serde_json::from_str(json)?)
    }

    #[test]
    fn strings_without_escapes_are_borrowed_from_the_input() {
        let Obj::Ok(p) = read(r#"{"name":"plain","inner":{"name":"tab\tbed"}}"#).unwrap() else {
            panic!("object")
        };
        assert!(matches!(p.name, Some(Scalar::Str(Cow::Borrowed("plain")))));
        let Some(Obj::Ok(inner)) = p.inner else {
            panic!("inner")
        };
        assert!(matches!(inner.name, Some(Scalar::Str(Cow::Owned(ref s))) if s == "tab\tbed"));
    }

    #[test]
    fn wrong_types_are_marked_not_errors() {
        let Obj::Ok(p) = read(r#"{"name":{"a":[1,2]},"inner":[1],"items":"x"}"#).unwrap() else {
            panic!("object")
        };
        assert_eq!(p.name, Some(Scalar::Object));
        assert!(matches!(p.inner, Some(Obj::NotObject)));
        assert!(matches!(p.items, Some(List::NotArray)));
        assert!(matches!(read("[1,2]").unwrap(), Obj::NotObject));
        assert!(matches!(read("\"s\"").unwrap(), Obj::NotObject));
    }

    #[test]
    fn null_reads_as_absent_and_unknown_keys_are_skipped() {
        let Obj::Ok(p) =
            read(r#"{"name":null,"other":{"deep":[{"x":1}]},"items":[1,"a",null]}"#).unwrap()
        else {
            panic!("object")
        };
        assert_eq!(p.name, None);
        let Some(List::Ok(items)) = p.items else {
            panic!("items")
        };
        assert_eq!(
            items,
            vec![Scalar::UInt(1), Scalar::Str("a".into()), Scalar::Null]
        );
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let Obj::Ok(p) = read(r#"{"name":"first","name":"last"}"#).unwrap() else {
            panic!("object")
        };
        assert_eq!(p.name, Some(Scalar::Str("last".into())));
    }

    #[test]
    fn syntax_errors_name_no_input_text() {
        let err = read(r#"{"name":"secret@example.com""#).unwrap_err();
        assert_eq!(err.reason(), DeadLetterReason::InvalidJson);
        assert!(!err.to_string().contains("secret"), "{err}");
        let err = read(r#"{"name":"secret@example.com" x}"#).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn numbers_keep_their_json_kind() {
        let Obj::Ok(p) = read(r#"{"items":[-5, 18446744073709551615, 1.5, 1e300]}"#).unwrap()
        else {
            panic!("object")
        };
        let Some(List::Ok(items)) = p.items else {
            panic!("items")
        };
        let expected = [
            Scalar::Int(-5),
            Scalar::UInt(u64::MAX),
            Scalar::Float(1.5),
            Scalar::Float(1e300),
        ];
        assert_eq!(items, expected);
    }

    #[test]
    fn a_number_beyond_f64_range_is_invalid_json() {
        let err = read(r#"{"items":[1e400]}"#).unwrap_err();
        assert_eq!(err.reason(), DeadLetterReason::InvalidJson);
    }

    #[test]
    fn ids_accept_strings_and_numbers() {
        let v = |s: Scalar<'static>| id(&Some(s), "f").map(|id| id.map(Cow::into_owned));
        assert_eq!(
            v(Scalar::Str(" a1 ".into())).unwrap().as_deref(),
            Some("a1")
        );
        assert_eq!(v(Scalar::Str("  ".into())).unwrap(), None);
        assert_eq!(v(Scalar::Int(-7)).unwrap().as_deref(), Some("-7"));
        assert_eq!(
            v(Scalar::UInt(u64::MAX)).unwrap().as_deref(),
            Some("18446744073709551615")
        );
        assert_eq!(v(Scalar::Float(12345.0)).unwrap().as_deref(), Some("12345"));
        assert_eq!(v(Scalar::Float(1.5)).unwrap().as_deref(), Some("1.5"));
        assert_eq!(
            v(Scalar::Bool(true)).unwrap_err().to_string(),
            "f: expected a string or a number"
        );
    }
}
