//! Order changes: plain JSON rows and Debezium change events, read into one [`OrderChange`].
//!
//! Owns: telling the shapes apart, finding the configured columns (`[orders.fields]`) in them,
//! and Debezium's encodings (envelope, `schema`/`payload` wrapper, precise decimals and their
//! scale, `source.lsn`, `source.ts_ms`). Must not: decide whether a change is redelivered,
//! historical or applied (the engine does, from `lsn` and times), keep state, or put an input
//! value in an error.
//!
//! Shapes:
//! - `null` (a Kafka null value, or the literal JSON `null`), or a wrapper whose `payload` is
//!   null: a **tombstone**;
//! - `{"schema": ..., "payload": {...}}` (Kafka Connect with schemas on): the payload is read as
//!   below, and the schema is used to find the scale of a precise decimal `total`;
//! - a **Debezium envelope**: an object with `op` and `after` or `before`. `c`, `u`, `r` are an
//!   upsert of `after`; `d` a delete of `before`, which may hold only the key (a delete needs
//!   only the order id; its other columns are read when present and ignored when unreadable);
//!   other ops (`t` truncate, `m` message) are dead letters;
//! - anything else: a **plain row**, columns at the top level.
//!
//! Columns: order_id (string or number), total (see below), currency (trimmed, upper-cased),
//! status (trimmed, lower-cased), created_at and updated_at (see `time`, any unit), shop (mapped
//! to a pixel through `orders.shops`). An upsert needs order_id, total, currency and
//! created_at. The change time is updated_at, else `source.ts_ms`, else created_at.
//!
//! `total` may be a JSON number (Debezium `double` mode), a numeric string (`string` mode), an
//! object `{scale, value}` (`io.debezium.data.VariableScaleDecimal`) or a base64 string
//! (`precise` mode, the default): its scale comes from the field's schema
//! (`org.apache.kafka.connect.data.Decimal`, `parameters.scale`), else `orders.total_scale`.
//! A string is taken as base64 when the schema says the field is a Decimal, or, without a
//! schema, when it does not read as a decimal number (or, in an envelope with
//! `orders.total_scale` set, whenever it is valid base64: the setting says the connector runs
//! in precise mode).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::amount::{self, AmountError};
use super::json::{self, lenient_object, JsonError, List, Obj, Scalar, WrongType};
use super::time::{self, TimeError, Units};
use super::Reject;
use crate::config::OrdersConfig;
use crate::model::{DeadLetterReason, Money, OrderChange, OrderOp, Position, Record};

/// Kafka Connect's logical type for a fixed-scale decimal.
const CONNECT_DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";

/// Why an order change could not be used. Never quotes a value; names the column as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error("{0}: expected a JSON object")]
    NotAnObject(&'static str),
    #[error("op: expected one of c, u, r, d")]
    UnsupportedOp,
    #[error("{column}: expected {expected}")]
    WrongType {
        column: String,
        expected: &'static str,
    },
    #[error("{0}: missing or empty")]
    Missing(String),
    #[error("{column}: {source}")]
    Time { column: String, source: TimeError },
    #[error("{column}: {source}")]
    Amount { column: String, source: AmountError },
    #[error("change time: none of updated_at, source.ts_ms, created_at is present")]
    NoChangeTime,
}

impl Reject for OrderError {
    fn reason(&self) -> DeadLetterReason {
        match self {
            OrderError::Json(e) => e.reason(),
            OrderError::NotAnObject(_)
            | OrderError::UnsupportedOp
            | OrderError::WrongType { .. }
            | OrderError::Amount {
                source: AmountError::WrongType,
                ..
            } => DeadLetterReason::InvalidShape,
            OrderError::Missing(_) => DeadLetterReason::MissingField,
            OrderError::Time { .. } | OrderError::NoChangeTime => DeadLetterReason::InvalidTime,
            OrderError::Amount { .. } => DeadLetterReason::InvalidAmount,
        }
    }
}

/// An object's entries with their values unparsed, or the mark of a null / a non-object.
enum Entries<'a> {
    Null,
    NotObject,
    Map(Vec<(Cow<'a, str>, &'a RawValue)>),
}

impl<'a> Entries<'a> {
    fn read(raw: &'a str) -> Result<Entries<'a>, JsonError> {
        Ok(serde_json::from_str(raw)?)
    }

    /// The value of `key`; the last one when the key repeats.
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        match self {
            Entries::Map(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| *v),
            _ => None,
        }
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<json::Key<'de>>()? {
            entries.push((key.0, map.next_value::<&'de RawValue>()?));
        }
        Ok(Entries::Map(entries))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Entries::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Entries::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Entries::NotObject)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Entries::NotObject)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Entries::NotObject)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Entries::NotObject)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Entries::NotObject)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Entries::NotObject)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntriesVisitor)
    }
}

lenient_object! {
    /// The part of Debezium's `source` block onecount uses.
    struct SourceInfo<'a> {
        lsn: Scalar<'a> = "lsn",
        ts_ms: Scalar<'a> = "ts_ms",
    }
}

lenient_object! {
    /// A Kafka Connect schema node (struct, field or logical type).
    struct SchemaNode<'a> {
        field: Scalar<'a> = "field",
        name: Scalar<'a> = "name",
        kind: Scalar<'a> = "type",
        fields: List<Obj<SchemaNode<'a>>> = "fields",
        parameters: Obj<SchemaParameters<'a>> = "parameters",
    }
}

lenient_object! {
    struct SchemaParameters<'a> {
        scale: Scalar<'a> = "scale",
    }
}

lenient_object! {
    /// Debezium's `io.debezium.data.VariableScaleDecimal`.
    struct VariableScaleDecimal<'a> {
        scale: Scalar<'a> = "scale",
        value: Scalar<'a> = "value",
    }
}

/// What the envelope's schema says about the total column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TotalSchema {
    /// No schema, or the column is not in it.
    Unknown,
    /// A Connect Decimal: a base64 string, with the scale if the schema gives one.
    Decimal(Option<i32>),
    /// Some other type (string, double...): a string total is decimal text.
    Other,
}

/// Reads one order record (never empty: the caller checked). See the module header.
pub(crate) fn parse_order(
    text: &str,
    config: &OrdersConfig,
    position: Position,
) -> Result<Record, OrderError> {
    let top = match Entries::read(text)? {
        Entries::Null => return Ok(Record::Tombstone(position)),
        Entries::NotObject => return Err(OrderError::NotAnObject("record")),
        top => top,
    };
    let (envelope, schema) = match (top.get("payload"), top.get("schema")) {
        (Some(payload), Some(schema)) => match Entries::read(payload.get())? {
            Entries::Null => return Ok(Record::Tombstone(position)),
            Entries::NotObject => return Err(OrderError::NotAnObject("payload")),
            payload => (payload, Some(schema)),
        },
        _ => (top, None),
    };
    let reader = Reader {
        config,
        schema,
        debezium: false,
    };
    if envelope.has("op") && (envelope.has("after") || envelope.has("before")) {
        Reader {
            debezium: true,
            ..reader
        }
        .debezium(&envelope, position)
    } else {
        let row = Row::new(&envelope, config, "");
        reader.change(OrderOp::Upsert, &row, None, None, position)
    }
}

/// The configured columns of one row, values unparsed.
struct Row<'a> {
    /// `"after."`, `"before."` or `""`: how errors name the row's columns.
    prefix: &'static str,
    section: &'static str,
    order_id: Option<&'a RawValue>,
    total: Option<&'a RawValue>,
    currency: Option<&'a RawValue>,
    status: Option<&'a RawValue>,
    created_at: Option<&'a RawValue>,
    updated_at: Option<&'a RawValue>,
    shop: Option<&'a RawValue>,
}

impl<'a> Row<'a> {
    fn new(entries: &Entries<'a>, config: &OrdersConfig, section: &'static str) -> Row<'a> {
        let f = &config.fields;
        Row {
            prefix: match section {
                "after" => "after.",
                "before" => "before.",
                _ => "",
            },
            section,
            order_id: entries.get(&f.order_id),
            total: entries.get(&f.total),
            currency: entries.get(&f.currency),
            status: entries.get(&f.status),
            created_at: entries.get(&f.created_at),
            updated_at: entries.get(&f.updated_at),
            shop: entries.get(&f.shop),
        }
    }
}

fn scalar(raw: Option<&RawValue>) -> Result<Option<Scalar<'_>>, JsonError> {
    match raw {
        None => Ok(None),
        Some(raw) => match serde_json::from_str::<Scalar<'_>>(raw.get())? {
            Scalar::Null => Ok(None),
            v => Ok(Some(v)),
        },
    }
}

struct Reader<'c> {
    config: &'c OrdersConfig,
    schema: Option<&'c RawValue>,
    debezium: bool,
}

impl Reader<'_> {
    fn column(&self, prefix: &str, name: &str) -> String {
        format!("{prefix}{name}")
    }

    fn wrong_type(&self, row: &Row<'_>, name: &str, e: WrongType) -> OrderError {
        OrderError::WrongType {
            column: self.column(row.prefix, name),
            expected: e.expected,
        }
    }

    fn debezium(&self, envelope: &Entries<'_>, position: Position) -> Result<Record, OrderError> {
        let op = match scalar(envelope.get("op"))? {
            Some(Scalar::Str(op)) => match &*op {
                "c" | "u" | "r" => OrderOp::Upsert,
                "d" => OrderOp::Delete,
                _ => return Err(OrderError::UnsupportedOp),
            },
            _ => return Err(OrderError::UnsupportedOp),
        };
        let section = match op {
            OrderOp::Upsert => "after",
            OrderOp::Delete => "before",
        };
        let raw_row = envelope
            .get(section)
            .ok_or_else(|| OrderError::Missing(section.to_owned()))?;
        let entries = match Entries::read(raw_row.get())? {
            Entries::Null => return Err(OrderError::Missing(section.to_owned())),
            Entries::NotObject => return Err(OrderError::NotAnObject(section)),
            entries => entries,
        };
        let source = match envelope.get("source") {
            Some(raw) => match serde_json::from_str::<Obj<SourceInfo<'_>>>(raw.get())
                .map_err(JsonError::from)?
            {
                Obj::Ok(source) => Some(source),
                Obj::NotObject => None,
            },
            None => None,
        };
        let lsn = source.as_ref().and_then(|s| lsn(s.lsn.as_ref()));
        let source_ts = source
            .as_ref()
            .and_then(|s| s.ts_ms.as_ref())
            .and_then(|v| time::time_ms(v, Units::Any).ok());
        let row = Row::new(&entries, self.config, section);
        self.change(op, &row, lsn, source_ts, position)
    }

    fn change(
        &self,
        op: OrderOp,
        row: &Row<'_>,
        lsn: Option<i64>,
        source_ts: Option<i64>,
        position: Position,
    ) -> Result<Record, OrderError> {
        let f = &self.config.fields;
        let order_id = json::id(&scalar(row.order_id)?, "order_id")
            .map_err(|e| self.wrong_type(row, &f.order_id, e))?
            .ok_or_else(|| OrderError::Missing(self.column(row.prefix, &f.order_id)))?;
        // A delete needs only the key: its other columns are best effort.
        let lenient = op == OrderOp::Delete;
        let keep = |r| best_effort(lenient, r);
        let currency =
            keep(self.text(row, row.currency, &f.currency))?.map(|c| c.trim().to_uppercase());
        let status = keep(self.text(row, row.status, &f.status))?.map(|s| s.trim().to_lowercase());
        let shop = keep(
            scalar(row.shop)
                .map_err(OrderError::from)
                .and_then(|v| json::id(&v, "shop").map_err(|e| self.wrong_type(row, &f.shop, e))),
        )?;
        let created_at = best_effort(lenient, self.time(row, row.created_at, &f.created_at))?;
        let updated_at = best_effort(lenient, self.time(row, row.updated_at, &f.updated_at))?;
        let total = best_effort(lenient, self.total(row))?;
        if op == OrderOp::Upsert {
            if total.is_none() {
                return Err(OrderError::Missing(self.column(row.prefix, &f.total)));
            }
            if currency.is_none() {
                return Err(OrderError::Missing(self.column(row.prefix, &f.currency)));
            }
            if created_at.is_none() {
                return Err(OrderError::Missing(self.column(row.prefix, &f.created_at)));
            }
        }
        let changed_at = updated_at
            .or(source_ts)
            .or(created_at)
            .ok_or(OrderError::NoChangeTime)?;
        let pixel = shop.and_then(|s| self.config.shops.get(&s).cloned());
        Ok(Record::Order(OrderChange {
            op,
            order_id,
            total,
            currency,
            status,
            created_at,
            changed_at,
            pixel,
            lsn,
            position,
        }))
    }

    fn text(
        &self,
        row: &Row<'_>,
        raw: Option<&RawValue>,
        name: &str,
    ) -> Result<Option<String>, OrderError> {
        let v = scalar(raw)?;
        let t = json::text(&v, "column").map_err(|e| self.wrong_type(row, name, e))?;
        Ok(t.map(str::to_owned))
    }

    fn time(
        &self,
        row: &Row<'_>,
        raw: Option<&RawValue>,
        name: &str,
    ) -> Result<Option<i64>, OrderError> {
        match scalar(raw)? {
            None => Ok(None),
            Some(Scalar::Str(s)) if s.trim().is_empty() => Ok(None),
            Some(v) => time::time_ms(&v, Units::Any)
                .map(Some)
                .map_err(|source| OrderError::Time {
                    column: self.column(row.prefix, name),
                    source,
                }),
        }
    }

    fn total(&self, row: &Row<'_>) -> Result<Option<Money>, OrderError> {
        let name = &self.config.fields.total;
        let err = |source| OrderError::Amount {
            column: self.column(row.prefix, name),
            source,
        };
        let Some(raw) = row.total else {
            return Ok(None);
        };
        let configured = self
            .config
            .total_scale
            .map(|s| i32::try_from(s).unwrap_or(i32::MAX));
        match serde_json::from_str::<Scalar<'_>>(raw.get()).map_err(JsonError::from)? {
            Scalar::Str(s) if s.trim().is_empty() => Ok(None),
            Scalar::Str(s) => {
                let s = s.trim();
                let schema = self.total_schema(row.section, name);
                let result = match schema {
                    TotalSchema::Decimal(scale) => match scale.or(configured) {
                        Some(scale) => amount::money_from_unscaled_base64(s, scale),
                        None => Err(AmountError::ScaleUnknown),
                    },
                    TotalSchema::Other => amount::money_from_text(s),
                    TotalSchema::Unknown => match configured {
                        Some(scale) if self.debezium && amount::looks_base64(s) => {
                            amount::money_from_unscaled_base64(s, scale)
                        }
                        _ => match amount::money_from_text(s) {
                            Err(AmountError::NotANumber) if amount::looks_base64(s) => {
                                match configured {
                                    Some(scale) => amount::money_from_unscaled_base64(s, scale),
                                    None => Err(AmountError::ScaleUnknown),
                                }
                            }
                            other => other,
                        },
                    },
                };
                result.map(Some).map_err(err)
            }
            Scalar::Object => self.variable_scale_total(raw).map(Some).map_err(err),
            v => amount::money(&Some(v)).map_err(err),
        }
    }

    /// `{"scale": 2, "value": "Oo4="}` (Debezium's VariableScaleDecimal).
    fn variable_scale_total(&self, raw: &RawValue) -> Result<Money, AmountError> {
        let Ok(Obj::Ok(v)) = serde_json::from_str::<Obj<VariableScaleDecimal<'_>>>(raw.get())
        else {
            return Err(AmountError::WrongType);
        };
        let scale = v
            .scale
            .as_ref()
            .and_then(scale_of)
            .ok_or(AmountError::WrongType)?;
        match &v.value {
            Some(Scalar::Str(s)) => amount::money_from_unscaled_base64(s, scale),
            _ => Err(AmountError::WrongType),
        }
    }

    /// What the schema says about column `name` of `section` (`after`, `before`, or `""` for a
    /// plain row whose schema lists its columns directly).
    fn total_schema(&self, section: &str, name: &str) -> TotalSchema {
        let Some(schema) = self.schema else {
            return TotalSchema::Unknown;
        };
        let Ok(Obj::Ok(root)) = serde_json::from_str::<Obj<SchemaNode<'_>>>(schema.get()) else {
            return TotalSchema::Unknown;
        };
        let struct_fields = children(&root)
            .find(|n| is_named(&n.field, section) && n.fields.is_some())
            .map_or(&root, |n| n);
        let column = children(struct_fields).find(|n| is_named(&n.field, name));
        let kind = match column {
            None => TotalSchema::Unknown,
            Some(node)
                if is_named(&node.name, CONNECT_DECIMAL) || is_named(&node.kind, "bytes") =>
            {
                let scale = match &node.parameters {
                    Some(Obj::Ok(p)) => p.scale.as_ref().and_then(scale_of),
                    _ => None,
                };
                TotalSchema::Decimal(scale)
            }
            Some(_) => TotalSchema::Other,
        };
        kind
    }
}

/// `result`, or, when `lenient`, `None` in place of an error.
fn best_effort<T>(
    lenient: bool,
    result: Result<Option<T>, OrderError>,
) -> Result<Option<T>, OrderError> {
    match result {
        Err(_) if lenient => Ok(None),
        other => other,
    }
}

/// The child nodes listed in a schema node's `fields`.
fn children<'n, 'a>(node: &'n SchemaNode<'a>) -> impl Iterator<Item = &'n SchemaNode<'a>> {
    let items: &[Obj<SchemaNode<'a>>] = match &node.fields {
        Some(List::Ok(items)) => items,
        _ => &[],
    };
    items.iter().filter_map(|item| match item {
        Obj::Ok(n) => Some(n),
        Obj::NotObject => None,
    })
}

fn is_named(v: &Option<Scalar<'_>>, expected: &str) -> bool {
    matches!(v, Some(Scalar::Str(s)) if s == expected)
}

/// A decimal scale, sent as a number or (Connect's `parameters`) as a string.
fn scale_of(v: &Scalar<'_>) -> Option<i32> {
    match v {
        Scalar::Int(i) => i32::try_from(*i).ok(),
        Scalar::UInt(u) => i32::try_from(*u).ok(),
        Scalar::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `source.lsn` as a number (PostgreSQL), or a string of digits. Anything else is no lsn.
fn lsn(v: Option<&Scalar<'_>>) -> Option<i64> {
    match v? {
        Scalar::Int(i) => Some(*i),
        Scalar::UInt(u) => i64::try_from(*u).ok(),
        Scalar::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}
