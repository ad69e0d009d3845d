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
//! - a **Debezium envelope**: an object with `op`. `c`, `u`, `r` are an upsert of `after`; `d`
//!   a delete of `before` (with `after` null), which may hold only the key (a delete needs only
//!   the order id; its other columns are read when present and ignored when unreadable); other
//!   ops (`t` truncate, `m` message) are dead letters. `source.lsn` (an integer or null: the
//!   PostgreSQL connector's) becomes `lsn`, `source.ts_ms` the fallback change time;
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
use std::cell::RefCell;
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
    #[error("after: must be null when op is d")]
    AfterOnDelete,
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
            | OrderError::AfterOnDelete
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

/// The last few `schema`s envelopes carried and what each says of the total column in each
/// section. A connector with schemas on sends the same schema with every record of a table,
/// and reading it took more than half of such an order's parse. A new schema (a migration, a
/// second connector on the topic) takes the place of the one seen longest ago.
#[derive(Debug, Default)]
pub(crate) struct SchemaMemo(RefCell<Vec<Memo>>);

/// How many distinct schemas [`SchemaMemo`] keeps.
const SCHEMAS_KEPT: usize = 8;

#[derive(Debug)]
struct Memo {
    schema: String,
    /// By section: `after`, `before`, a plain row's `""`.
    totals: [Option<TotalSchema>; 3],
}

/// An envelope's schema: its JSON text and where [`SchemaMemo`] keeps what it says (valid for
/// the record being read: only the next record's schema can move it).
#[derive(Debug, Clone, Copy)]
struct Schema<'t> {
    text: &'t str,
    memo: usize,
}

impl SchemaMemo {
    /// What `schema` says about column `name` of `section`, read on its first use only.
    fn total(&self, schema: Schema<'_>, section: &str, name: &str) -> TotalSchema {
        let index = match section {
            "after" => 0,
            "before" => 1,
            _ => 2,
        };
        *self.0.borrow_mut()[schema.memo].totals[index]
            .get_or_insert_with(|| read_total_schema(schema.text, section, name))
    }

    /// `text`'s memo, made if it is new: every schema an envelope carries is remembered,
    /// whatever its total's type, so [`SchemaMemo::split_known`] knows it next time.
    fn remember<'t>(&self, text: &'t str) -> Schema<'t> {
        let mut memos = self.0.borrow_mut();
        let memo = match memos.iter().position(|m| m.schema == text) {
            Some(at) => at,
            None => {
                if memos.len() == SCHEMAS_KEPT {
                    memos.remove(0);
                }
                memos.push(Memo {
                    schema: text.to_owned(),
                    totals: [None; 3],
                });
                memos.len() - 1
            }
        };
        Schema { text, memo }
    }

    /// `{"schema":S,"payload":P}`, as Kafka Connect's JsonConverter writes it, where S is a
    /// schema read before: S and P's text. S is a whole JSON value, so a record that starts
    /// with it and goes on with `,"payload":` holds exactly it; skipping it again (3 KB,
    /// checked character by character) was most of the time such a record took. P is still
    /// read whole, so anything after it is still found.
    fn split_known<'t>(&self, text: &'t str) -> Option<(Schema<'t>, &'t str)> {
        const SCHEMA: &str = r#"{"schema":"#;
        const PAYLOAD: &str = r#","payload":"#;
        let rest = text.strip_prefix(SCHEMA)?;
        let memos = self.0.borrow();
        let memo = memos.iter().position(|m| {
            rest.strip_prefix(m.schema.as_str())
                .is_some_and(|after| after.starts_with(PAYLOAD))
        })?;
        let (schema, after) = rest.split_at(memos[memo].schema.len());
        let payload = after[PAYLOAD.len()..].trim_end().strip_suffix('}')?;
        Some((Schema { text: schema, memo }, payload))
    }
}

/// Reads one order record (never empty: the caller checked). See the module header.
pub(crate) fn parse_order(
    text: &str,
    config: &OrdersConfig,
    schemas: &SchemaMemo,
    position: Position,
) -> Result<Record, OrderError> {
    let known = schemas
        .split_known(text)
        .and_then(|(schema, payload)| Some((Entries::read(payload).ok()?, Some(schema))));
    let (envelope, schema) = match known {
        Some(known) => known,
        None => {
            let top = match Entries::read(text)? {
                Entries::Null => return Ok(Record::Tombstone(position)),
                Entries::NotObject => return Err(OrderError::NotAnObject("record")),
                top => top,
            };
            match (top.get("payload"), top.get("schema")) {
                (Some(payload), Some(schema)) => (
                    Entries::read(payload.get())?,
                    Some(schemas.remember(schema.get())),
                ),
                _ => (top, None),
            }
        }
    };
    // Only a wrapper's payload can still be null (a tombstone too) or not an object.
    let envelope = match envelope {
        Entries::Null => return Ok(Record::Tombstone(position)),
        Entries::NotObject => return Err(OrderError::NotAnObject("payload")),
        envelope => envelope,
    };
    let reader = Reader {
        config,
        schema,
        schemas,
        debezium: false,
    };
    if envelope.has("op") {
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
    /// The envelope's `schema`.
    schema: Option<Schema<'c>>,
    schemas: &'c SchemaMemo,
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
        if op == OrderOp::Delete && scalar(envelope.get("after"))?.is_some() {
            return Err(OrderError::AfterOnDelete);
        }
        let raw_row = envelope
            .get(section)
            .ok_or_else(|| OrderError::Missing(section.to_owned()))?;
        let entries = match Entries::read(raw_row.get())? {
            Entries::Null => return Err(OrderError::Missing(section.to_owned())),
            Entries::NotObject => return Err(OrderError::NotAnObject(section)),
            entries => entries,
        };
        let source = match envelope.get("source") {
            Some(raw) => serde_json::from_str::<Option<Obj<SourceInfo<'_>>>>(raw.get())
                .map_err(JsonError::from)?,
            None => None,
        };
        let source = match &source {
            None => None,
            Some(Obj::Ok(source)) => Some(source),
            Some(Obj::NotObject) => {
                return Err(OrderError::WrongType {
                    column: "source".to_owned(),
                    expected: "an object",
                })
            }
        };
        let lsn = match source.and_then(|s| s.lsn.as_ref()) {
            None => None,
            Some(Scalar::Int(i)) => Some(*i),
            Some(Scalar::UInt(u)) if i64::try_from(*u).is_ok() => Some(*u as i64),
            Some(_) => {
                return Err(OrderError::WrongType {
                    column: "source.lsn".to_owned(),
                    expected: "an integer",
                })
            }
        };
        let source_ts = match source.and_then(|s| s.ts_ms.as_ref()) {
            None => None,
            Some(v @ (Scalar::Int(_) | Scalar::UInt(_))) => Some(
                time::time_ms(v, Units::Any).map_err(|source| OrderError::Time {
                    column: "source.ts_ms".to_owned(),
                    source,
                })?,
            ),
            Some(_) => {
                return Err(OrderError::WrongType {
                    column: "source.ts_ms".to_owned(),
                    expected: "an integer",
                })
            }
        };
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
            .ok_or_else(|| OrderError::Missing(self.column(row.prefix, &f.order_id)))?
            .into_owned();
        // A delete needs only the key: its other columns are best effort.
        let lenient = op == OrderOp::Delete;
        let keep = |r| best_effort(lenient, r);
        let currency =
            keep(self.text(row, row.currency, &f.currency))?.map(|c| super::event::upper(c.trim()));
        let status = keep(self.text(row, row.status, &f.status))?.map(|s| s.trim().to_lowercase());
        let shop = keep(scalar(row.shop).map_err(OrderError::from).and_then(|v| {
            json::id(&v, "shop")
                .map(|id| id.map(Cow::into_owned))
                .map_err(|e| self.wrong_type(row, &f.shop, e))
        }))?;
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
        match self.schema {
            None => TotalSchema::Unknown,
            Some(schema) => self.schemas.total(schema, section, name),
        }
    }
}

/// What `schema` says about column `name` of `section`.
fn read_total_schema(schema: &str, section: &str, name: &str) -> TotalSchema {
    let Ok(Obj::Ok(root)) = serde_json::from_str::<Obj<SchemaNode<'_>>>(schema) else {
        return TotalSchema::Unknown;
    };
    let struct_fields = children(&root)
        .find(|n| is_named(&n.field, section) && n.fields.is_some())
        .map_or(&root, |n| n);
    let column = children(struct_fields).find(|n| is_named(&n.field, name));
    match column {
        None => TotalSchema::Unknown,
        Some(node) if is_named(&node.name, CONNECT_DECIMAL) || is_named(&node.kind, "bytes") => {
            let scale = match &node.parameters {
                Some(Obj::Ok(p)) => p.scale.as_ref().and_then(scale_of),
                _ => None,
            };
            TotalSchema::Decimal(scale)
        }
        Some(_) => TotalSchema::Other,
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

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{Parsed, Parser};
    use crate::config::{EngineConfig, OrdersConfig};
    use crate::model::{DeadLetterReason as R, Input, Money, OrderOp, Record};

    /// 2023-10-20T06:23:30.512Z
    const CREATED: i64 = 1_697_783_010_512;
    /// 2023-10-21T09:00:00Z
    const UPDATED: i64 = 1_697_878_800_000;
    /// source.ts_ms of the envelopes below.
    const COMMIT: i64 = 1_697_878_800_123;

    fn order(text: &str) -> crate::model::OrderChange {
        order_with(&parser(), text)
    }

    fn with_scale(scale: u32) -> Parser {
        let orders = OrdersConfig {
            total_scale: Some(scale),
            ..OrdersConfig::default()
        };
        Parser::new(&EngineConfig::default(), &orders)
    }

    /// A Debezium envelope (schemas off) around `after`/`before` JSON.
    fn envelope(op: &str, before: &str, after: &str, lsn: &str) -> String {
        format!(
            r#"{{"before":{before},"after":{after},"source":{{"version":"3.0.1.Final","connector":"postgresql",
            "name":"shop","ts_ms":{COMMIT},"snapshot":"false","db":"shop","schema":"public","table":"orders",
            "txId":747,"lsn":{lsn},"xmin":null}},"op":"{op}","ts_ms":1697878800777,"transaction":null}}"#
        )
    }

    fn row(total: &str) -> String {
        format!(
            r#"{{"order_id":1001,"total":{total},"currency":"usd","status":"PAID",
            "created_at":"2023-10-20T06:23:30.512331Z","updated_at":"2023-10-21T09:00:00.000000Z","shop":"acme-us"}}"#
        )
    }

    /// The JsonConverter's wrapper, with `total` typed as `total_type` in both row schemas.
    fn wrapped(total_type: &str, payload: &str) -> String {
        let row_schema = |field: &str| {
            format!(
                r#"{{"type":"struct","optional":true,"name":"shop.public.orders.Value","field":"{field}","fields":[
                {{"type":"int64","optional":false,"field":"order_id"}},
                {{"field":"total",{total_type}}},
                {{"type":"string","optional":false,"field":"currency"}},
                {{"type":"string","optional":false,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"created_at"}}]}}"#
            )
        };
        format!(
            r#"{{"schema":{{"type":"struct","optional":false,"name":"shop.public.orders.Envelope","version":2,
            "fields":[{},{},{{"type":"string","optional":false,"field":"op"}}]}},"payload":{payload}}}"#,
            row_schema("before"),
            row_schema("after")
        )
    }

    const PRECISE: &str = r#""type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"12"}"#;

    #[test]
    fn plain_row_with_default_field_names() {
        let o = order(&row("149.9"));
        assert_eq!(o.op, OrderOp::Upsert);
        assert_eq!(o.order_id, "1001");
        assert_eq!(o.total, Some(Money(149_900_000)));
        assert_eq!(o.currency.as_deref(), Some("USD"));
        assert_eq!(o.status.as_deref(), Some("paid"));
        assert_eq!(o.created_at, Some(CREATED));
        assert_eq!(o.changed_at, UPDATED);
        assert_eq!((o.pixel, o.lsn), (None, None));
        assert_eq!(
            (o.position.input, o.position.offset, o.position.index),
            (Input::Orders, 42, 0)
        );
    }

    #[test]
    fn plain_row_with_configured_names_and_a_mapped_shop() {
        let mut orders = OrdersConfig::default();
        orders.fields.order_id = "id".into();
        orders.fields.total = "total_price".into();
        orders.fields.shop = "store".into();
        orders.shops.insert("acme-eu".into(), "EUPIXEL".into());
        let p = Parser::new(&EngineConfig::default(), &orders);
        let o = order_with(
            &p,
            r##"{"id":"#1001","total_price":"74.95","currency":"EUR","store":"acme-eu",
                "created_at":1697783010,"line_items":[{"sku":"x"}]}"##,
        );
        assert_eq!(o.order_id, "#1001");
        assert_eq!(o.total, Some(Money(74_950_000)));
        assert_eq!(o.pixel.as_deref(), Some("EUPIXEL"));
        assert_eq!(o.changed_at, 1_697_783_010_000, "no updated_at: created_at");
        let d = dead_of(parse_with(
            &p,
            Input::Orders,
            br#"{"id":"1","currency":"EUR","created_at":1697783010}"#,
        ));
        assert_dead(&d, R::MissingField, "total_price");
    }

    #[test]
    fn unmapped_shop_has_no_pixel() {
        let mut orders = OrdersConfig::default();
        orders.shops.insert("other".into(), "P".into());
        let o = order_with(&Parser::new(&EngineConfig::default(), &orders), &row("1"));
        assert_eq!(o.pixel, None);
    }

    #[test]
    fn order_times_in_every_unit_agree() {
        for created in [
            "1697783010",
            "1697783010000",
            "1697783010000000",
            "1697783010000000000",
            "\"1697783010000\"",
            "\"2023-10-20T06:23:30Z\"",
            "\"2023-10-20T06:23:30.000000Z\"",
            "\"2023-10-20 08:23:30+02\"",
        ] {
            let line =
                format!(r#"{{"order_id":"o","total":1,"currency":"USD","created_at":{created}}}"#);
            assert_eq!(
                order(&line).created_at,
                Some(1_697_783_010_000),
                "{created}"
            );
        }
    }

    #[test]
    fn debezium_precise_total_with_schema_wrapper() {
        let line = wrapped(
            PRECISE,
            &envelope("c", "null", &row(r#""Oo4=""#), "24023928"),
        );
        let o = order(&line);
        assert_eq!(o.op, OrderOp::Upsert);
        assert_eq!(o.total, Some(Money(149_900_000)));
        assert_eq!(o.lsn, Some(24_023_928));
        assert_eq!(o.changed_at, UPDATED);
        assert_eq!(o.created_at, Some(CREATED));
    }

    #[test]
    fn each_record_is_read_with_its_own_schema() {
        // One parser, schemas changing between records (a column's scale migrated, and back):
        // the memo of the last schema must not carry a scale over to a record that says
        // otherwise.
        let p = parser();
        let payload = envelope("c", "null", &row(r#""Oo4=""#), "24023928");
        let scale_3 = PRECISE.replace(r#""scale":"2""#, r#""scale":"3""#);
        let totals: Vec<_> = [PRECISE, &scale_3, PRECISE]
            .into_iter()
            .map(|total_type| order_with(&p, &wrapped(total_type, &payload)).total)
            .collect();
        assert_eq!(
            totals,
            [
                Some(Money(149_900_000)),
                Some(Money(14_990_000)),
                Some(Money(149_900_000))
            ]
        );
        // Typed as a string now: base64 is no decimal text.
        let string_typed = wrapped(r#""type":"string""#, &payload);
        let d = dead_of(parse_with(&p, Input::Orders, string_typed.as_bytes()));
        assert_dead(&d, R::InvalidAmount, "after.total");
    }

    #[test]
    fn a_known_schema_reads_as_a_new_one_does() {
        // A parser that has read the schema before takes the short way for the records that
        // start with it; every one must come out as from a parser that never saw it.
        let payload = envelope("c", "null", &row(r#""Oo4=""#), "24023928");
        let first = wrapped(PRECISE, &payload);
        let body = first.strip_suffix('}').unwrap();
        let texts = [
            first.clone(),
            format!("{first}\n  "),
            format!(r#"{body},"extra":{{"k":[1]}}}}"#),
            format!(r#"{body},"payload":null}}"#),
            format!("{body}}}}}"),
            format!("{body} x}}"),
            first.replace(r#""payload":{"#, r#""payload":{"op":"t","#),
            first.replace(&payload, "null"),
            first.replace(&payload, "[1]"),
            first.replace(&payload, r#"{"op":"c","after":{"order_id":1}}"#),
        ];
        let warm = parser();
        parse_with(&warm, Input::Orders, first.as_bytes());
        for text in &texts {
            assert_eq!(
                parse_with(&warm, Input::Orders, text.as_bytes()),
                parse_with(&parser(), Input::Orders, text.as_bytes()),
                "{text}"
            );
        }
        assert!(
            warm.schemas.split_known(&first).is_some(),
            "the first record's schema is known after it"
        );
        // A schema is remembered whatever its total's type (double mode: a JSON number).
        let double = wrapped(
            r#""type":"double","optional":false"#,
            &envelope("c", "null", &row("149.9"), "24023928"),
        );
        let warm = parser();
        let fresh = parse_with(&warm, Input::Orders, double.as_bytes());
        assert!(warm.schemas.split_known(&double).is_some());
        assert_eq!(parse_with(&warm, Input::Orders, double.as_bytes()), fresh);
    }

    #[test]
    fn debezium_precise_total_without_schema_takes_the_configured_scale() {
        let line = envelope("u", "null", &row(r#""Oo4=""#), "24023928");
        assert_eq!(
            order_with(&with_scale(2), &line).total,
            Some(Money(149_900_000))
        );
        assert_eq!(
            order_with(&with_scale(3), &line).total,
            Some(Money(14_990_000))
        );
    }

    #[test]
    fn debezium_precise_total_with_unknown_scale_is_invalid_amount() {
        let d = dead(
            Input::Orders,
            &envelope("c", "null", &row(r#""Oo4=""#), "1"),
        );
        assert_dead(&d, R::InvalidAmount, "after.total");
        assert!(d.detail.contains("total_scale"), "{}", d.detail);
        // The schema marks the column Decimal but gives no scale: the config is still the fallback.
        let no_scale = r#""type":"bytes","name":"org.apache.kafka.connect.data.Decimal""#;
        let line = wrapped(no_scale, &envelope("c", "null", &row(r#""Oo4=""#), "1"));
        assert_dead(&dead(Input::Orders, &line), R::InvalidAmount, "total_scale");
        assert_eq!(
            order_with(&with_scale(2), &line).total,
            Some(Money(149_900_000))
        );
    }

    #[test]
    fn schema_scale_wins_over_configured_scale() {
        let line = wrapped(PRECISE, &envelope("c", "null", &row(r#""Oo4=""#), "1"));
        assert_eq!(
            order_with(&with_scale(4), &line).total,
            Some(Money(149_900_000))
        );
    }

    #[test]
    fn debezium_string_and_double_modes_with_and_without_wrapper() {
        let string_mode = r#""type":"string","optional":false"#;
        let double_mode = r#""type":"double","optional":false"#;
        for line in [
            envelope("u", "null", &row(r#""149.90""#), "5"),
            envelope("r", "null", &row("149.9"), "5"),
            envelope("r", "null", &row("1.499E2"), "5"),
            wrapped(
                string_mode,
                &envelope("u", "null", &row(r#""149.90""#), "5"),
            ),
            wrapped(double_mode, &envelope("c", "null", &row("149.9"), "5")),
        ] {
            let o = order(&line);
            assert_eq!(
                (o.total, o.lsn),
                (Some(Money(149_900_000)), Some(5)),
                "{line}"
            );
        }
        // A string-typed column is decimal text even when it could be base64.
        let line = wrapped(string_mode, &envelope("u", "null", &row(r#""1234""#), "5"));
        assert_eq!(
            order_with(&with_scale(2), &line).total,
            Some(Money(1_234_000_000))
        );
    }

    #[test]
    fn variable_scale_decimal_total() {
        let line = envelope("c", "null", &row(r#"{"scale":2,"value":"Oo4="}"#), "9");
        assert_eq!(order(&line).total, Some(Money(149_900_000)));
        let line = envelope("c", "null", &row(r#"{"scale":"x","value":"Oo4="}"#), "9");
        assert_dead(&dead(Input::Orders, &line), R::InvalidShape, "after.total");
    }

    #[test]
    fn key_only_delete_needs_only_the_order_id() {
        let before = r#"{"order_id":1001,"total":null,"currency":null,"status":null,"created_at":null,"updated_at":null,"shop":null}"#;
        let o = order(&envelope("d", before, "null", "24200000"));
        assert_eq!(o.op, OrderOp::Delete);
        assert_eq!(o.order_id, "1001");
        assert_eq!(
            (o.total, o.currency, o.status, o.created_at),
            (None, None, None, None)
        );
        assert_eq!(o.changed_at, COMMIT, "no updated_at: source.ts_ms");
        assert_eq!(o.lsn, Some(24_200_000));
        let o = order(&envelope("d", r#"{"order_id":"1001"}"#, "null", "1"));
        assert_eq!((o.op, o.order_id.as_str()), (OrderOp::Delete, "1001"));
    }

    #[test]
    fn delete_reads_a_full_before_image_and_ignores_what_it_cannot_read() {
        let o = order(&envelope("d", &row(r#""Oo4=""#), "null", "7"));
        assert_eq!(o.op, OrderOp::Delete);
        assert_eq!(
            o.total, None,
            "precise total without a scale: unknown, not fatal"
        );
        assert_eq!(o.currency.as_deref(), Some("USD"));
        assert_eq!(o.changed_at, UPDATED);
    }

    #[test]
    fn delete_without_before_or_with_after_is_a_dead_letter() {
        assert_dead(
            &dead(Input::Orders, &envelope("d", "null", "null", "1")),
            R::MissingField,
            "before",
        );
        let d = dead(
            Input::Orders,
            r#"{"op":"d","source":{"ts_ms":1697878800123}}"#,
        );
        assert_dead(&d, R::MissingField, "before");
        let d = dead(
            Input::Orders,
            &envelope("d", r#"{"order_id":1}"#, &row("1"), "1"),
        );
        assert_dead(&d, R::InvalidShape, "after");
    }

    #[test]
    fn key_only_delete_without_any_time_is_invalid_time() {
        let d = dead(
            Input::Orders,
            r#"{"op":"d","before":{"order_id":1},"after":null}"#,
        );
        assert_dead(&d, R::InvalidTime, "change time");
    }

    #[test]
    fn tombstones_null_literal_and_null_payload() {
        for text in ["null", "  null \n", r#"{"schema":null,"payload":null}"#] {
            let out = parse(Input::Orders, text);
            assert!(
                matches!(&out[..], [Parsed::Record(Record::Tombstone(p))] if p.offset == 42),
                "{text}: {out:?}"
            );
        }
    }

    #[test]
    fn redelivered_change_surfaces_the_same_lsn() {
        let first = envelope("u", "null", &row(r#""149.90""#), "24100112");
        let again = first.replace("1697878800777", "1697879999999");
        assert_ne!(first, again);
        assert_eq!(order(&first), order(&again));
        assert_eq!(order(&again).lsn, Some(24_100_112));
    }

    #[test]
    fn source_ts_ms_is_the_change_time_without_updated_at() {
        let after = r#"{"order_id":"A","total":1,"currency":"USD","created_at":1697783010512331,"updated_at":null}"#;
        let o = order(&envelope("c", "null", after, "null"));
        assert_eq!(
            (o.changed_at, o.created_at, o.lsn),
            (COMMIT, Some(CREATED), None)
        );
    }

    #[test]
    fn bad_source_fields_are_dead_letters() {
        let line = envelope("u", "null", &row("1"), r#""24100112""#);
        assert_dead(&dead(Input::Orders, &line), R::InvalidShape, "source.lsn");
        let line = envelope("u", "null", &row("1"), "1").replace(&COMMIT.to_string(), r#""soon""#);
        assert_dead(&dead(Input::Orders, &line), R::InvalidShape, "source.ts_ms");
        let line = r#"{"op":"c","after":{"order_id":1,"total":1,"currency":"USD","created_at":1697783010},"source":[]}"#;
        assert_dead(&dead(Input::Orders, line), R::InvalidShape, "source");
    }

    #[test]
    fn unsupported_ops_are_invalid_shape() {
        for op in [r#""t""#, r#""m""#, r#""C""#, "1", "null"] {
            let line = format!(r#"{{"op":{op},"before":null,"after":null}}"#);
            assert_dead(&dead(Input::Orders, &line), R::InvalidShape, "op");
        }
    }

    #[test]
    fn upsert_needs_order_id_total_currency_and_created_at() {
        let full = r#""order_id":"o1","total":"5","currency":"USD","created_at":1697783010"#;
        for (missing, field) in [
            ("order_id", "order_id"),
            ("total", "total"),
            ("currency", "currency"),
            ("created_at", "created_at"),
        ] {
            let fields: Vec<_> = full.split(',').filter(|f| !f.contains(missing)).collect();
            let line = format!("{{{}}}", fields.join(","));
            assert_dead(&dead(Input::Orders, &line), R::MissingField, field);
            let line = format!(r#"{{"op":"c","after":{{{}}}}}"#, fields.join(","));
            assert_dead(
                &dead(Input::Orders, &line),
                R::MissingField,
                &format!("after.{field}"),
            );
        }
        let d = dead(Input::Orders, r#"{"op":"u","before":null}"#);
        assert_dead(&d, R::MissingField, "after");
    }

    #[test]
    fn bad_totals_are_invalid_amount() {
        for total in [
            r#""NaN""#,
            r#""149,90""#,
            "-1",
            r#""-149.90""#,
            "1e13",
            r#""xXI=""#,
        ] {
            let line = envelope("u", "null", &row(total), "1");
            let p = if total.contains('=') {
                with_scale(2)
            } else {
                parser()
            };
            let d = dead_of(parse_with(&p, Input::Orders, line.as_bytes()));
            assert_dead(&d, R::InvalidAmount, "after.total");
        }
        assert_dead(&dead(Input::Orders, &row("true")), R::InvalidShape, "total");
    }

    #[test]
    fn wrong_types_name_the_column() {
        let line = row("1").replace(r#""PAID""#, "3");
        assert_dead(&dead(Input::Orders, &line), R::InvalidShape, "status");
        let line = row("1").replace("1001", "[1]");
        assert_dead(&dead(Input::Orders, &line), R::InvalidShape, "order_id");
        let line = row("1").replace(r#""usd""#, "{}");
        assert_dead(&dead(Input::Orders, &line), R::InvalidShape, "currency");
        let line = envelope("c", "null", "[]", "1");
        assert_dead(&dead(Input::Orders, &line), R::InvalidShape, "after");
        let d = dead(Input::Orders, r#"{"schema":{},"payload":[1]}"#);
        assert_dead(&d, R::InvalidShape, "payload");
    }

    #[test]
    fn bad_times_are_invalid_time() {
        for (field, value) in [
            ("created_at", r#""yesterday""#),
            ("updated_at", "42"),
            ("created_at", "true"),
        ] {
            let line = format!(
                r#"{{"order_id":"o","total":1,"currency":"USD","created_at":1697783010,"{field}":{value}}}"#
            );
            assert_dead(&dead(Input::Orders, &line), R::InvalidTime, field);
        }
    }

    #[test]
    fn non_object_and_broken_json_are_dead_letters() {
        assert_dead(&dead(Input::Orders, "[1,2]"), R::InvalidShape, "record");
        assert_dead(&dead(Input::Orders, "149.90"), R::InvalidShape, "record");
        let line = envelope("c", "null", &row("1"), "1");
        assert_dead(
            &dead(Input::Orders, &line[..line.len() - 3]),
            R::InvalidJson,
            "EOF",
        );
    }

    #[test]
    fn unicode_order_ids_and_statuses_are_kept() {
        let line = r#"{"order_id":"注文-😀-١","total":1,"currency":"usd","status":"ÉTÉ","created_at":1697783010}"#;
        let o = order(line);
        assert_eq!(o.order_id, "注文-😀-١");
        assert_eq!(o.status.as_deref(), Some("été"));
    }

    #[test]
    fn plain_row_inside_a_flat_schema_wrapper_finds_its_scale() {
        let line = r#"{"schema":{"type":"struct","fields":[{"field":"order_id","type":"string"},
            {"field":"total","type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"}}]},
            "payload":{"order_id":"o","total":"Oo4=","currency":"USD","created_at":1697783010}}"#;
        assert_eq!(order(line).total, Some(Money(149_900_000)));
    }

    #[test]
    fn deeply_nested_schema_hits_the_recursion_limit_not_the_stack() {
        let mut schema = String::from(r#"{"field":"x"}"#);
        for _ in 0..2_000 {
            schema = format!(r#"{{"type":"struct","fields":[{schema}]}}"#);
        }
        let line = format!(
            r#"{{"schema":{schema},"payload":{}}}"#,
            envelope("c", "null", &row(r#""Oo4=""#), "1")
        );
        let d = dead(Input::Orders, &line);
        assert_dead(&d, R::InvalidAmount, "total_scale");
    }
}
