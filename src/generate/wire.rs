//! Rendering planned records as the bytes each input carries: browser Pixel events, server
//! Events API bodies (2.0 batches and single events, the older pixel/track and pixel/batch
//! shapes), order rows (plain, Debezium envelopes with and without the schema wrapper, in every
//! `decimal.handling.mode`), tombstones, and malformed lines.
//!
//! Owns: the planned-record types ([`EventCopy`], [`OrderChange`]), JSON text, time and amount
//! formats. Must not: decide anything an outcome depends on. Every time a record carries is
//! quantised by its format before the plan reasons about it ([`TimeFmt::quantize`]), so the
//! text says exactly what the plan assumed.

use std::fmt::Write as _;

use base64::Engine as _;

use crate::model::{Money, Source};

use super::traffic::{ServerShape, CATALOG, PIXELS};

/// A tiny JSON text writer: fields in the order real clients send them, numbers written
/// exactly as planned (`149.90` stays `149.90`).
pub(crate) struct Json {
    s: String,
    comma: bool,
}

impl Json {
    pub(crate) fn new() -> Json {
        Json {
            s: String::with_capacity(768),
            comma: false,
        }
    }

    fn sep(&mut self) {
        if self.comma {
            self.s.push(',');
        }
    }

    pub(crate) fn open(&mut self) {
        self.sep();
        self.s.push('{');
        self.comma = false;
    }

    pub(crate) fn close(&mut self) {
        self.s.push('}');
        self.comma = true;
    }

    pub(crate) fn open_arr(&mut self) {
        self.sep();
        self.s.push('[');
        self.comma = false;
    }

    pub(crate) fn close_arr(&mut self) {
        self.s.push(']');
        self.comma = true;
    }

    pub(crate) fn key(&mut self, k: &str) {
        self.sep();
        escape_into(&mut self.s, k);
        self.s.push(':');
        self.comma = false;
    }

    pub(crate) fn str(&mut self, v: &str) {
        self.sep();
        escape_into(&mut self.s, v);
        self.comma = true;
    }

    pub(crate) fn raw(&mut self, v: &str) {
        self.sep();
        self.s.push_str(v);
        self.comma = true;
    }

    pub(crate) fn int(&mut self, v: i64) {
        self.sep();
        let _ = write!(self.s, "{v}");
        self.comma = true;
    }

    pub(crate) fn f_str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.str(v);
    }

    pub(crate) fn f_raw(&mut self, k: &str, v: &str) {
        self.key(k);
        self.raw(v);
    }

    pub(crate) fn f_int(&mut self, k: &str, v: i64) {
        self.key(k);
        self.int(v);
    }

    pub(crate) fn f_opt(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.f_str(k, v);
        }
    }

    pub(crate) fn finish(self) -> String {
        self.s
    }
}

fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// How a time is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeFmt {
    /// JSON number of Unix seconds (the Events API's unit): sub-second precision is lost.
    UnixS,
    /// JSON number of Unix milliseconds.
    UnixMs,
    /// RFC 3339 string with milliseconds, in UTC (`Z`) or at an offset in minutes.
    Rfc3339 { offset_min: i16 },
    /// RFC 3339 string in UTC with microseconds (Debezium's timestamptz).
    IsoMicros,
    /// JSON number of epoch microseconds (Debezium's MicroTimestamp).
    EpochUs,
    /// JSON number of epoch nanoseconds (Debezium's NanoTimestamp).
    EpochNs,
}

impl TimeFmt {
    /// The time in milliseconds as a reader of this format gets it back.
    pub(crate) fn quantize(self, ms: i64) -> i64 {
        match self {
            TimeFmt::UnixS => ms.div_euclid(1000) * 1000,
            _ => ms,
        }
    }

    fn write(self, j: &mut Json, ms: i64) {
        match self {
            TimeFmt::UnixS => j.int(ms.div_euclid(1000)),
            TimeFmt::UnixMs => j.int(ms),
            TimeFmt::Rfc3339 { offset_min } => j.str(&rfc3339_ms(ms, offset_min)),
            TimeFmt::IsoMicros => j.str(&iso_micros(ms)),
            TimeFmt::EpochUs => j.int(ms * 1000 + sub_ms_micros(ms)),
            TimeFmt::EpochNs => j.int((ms * 1000 + sub_ms_micros(ms)) * 1000),
        }
    }

    fn is_string(self) -> bool {
        matches!(self, TimeFmt::Rfc3339 { .. } | TimeFmt::IsoMicros)
    }
}

/// Sub-millisecond digits that a database clock adds, derived from the time so they are
/// deterministic; readers that keep milliseconds drop them.
fn sub_ms_micros(ms: i64) -> i64 {
    (ms.rem_euclid(997) * 7) % 1000
}

/// Civil UTC date and time of a Unix millisecond.
fn civil(ms: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d, sod / 3600, sod / 60 % 60, sod % 60, milli)
}

/// `2026-01-01T10:00:00.123Z`, or at an offset: `2026-01-01T12:00:00.123+02:00`.
pub(crate) fn rfc3339_ms(ms: i64, offset_min: i16) -> String {
    let (y, mo, d, h, mi, s, milli) = civil(ms + i64::from(offset_min) * 60_000);
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}");
    if offset_min == 0 {
        out.push('Z');
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        let off = offset_min.unsigned_abs();
        let _ = write!(out, "{sign}{:02}:{:02}", off / 60, off % 60);
    }
    out
}

/// `2026-01-01T10:00:00.123456Z`.
pub(crate) fn iso_micros(ms: i64) -> String {
    let (y, mo, d, h, mi, s, milli) = civil(ms);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}{:03}Z",
        sub_ms_micros(ms)
    )
}

/// An amount with exactly `decimals` digits (`149.90`, `1500`).
pub(crate) fn amount_text(m: Money, decimals: u32) -> String {
    let sign = if m.0 < 0 { "-" } else { "" };
    let abs = m.0.unsigned_abs();
    let units = abs / Money::MICROS_PER_UNIT as u64;
    if decimals == 0 {
        return format!("{sign}{units}");
    }
    let div = 10u64.pow(6 - decimals);
    let frac = (abs % Money::MICROS_PER_UNIT as u64) / div;
    format!("{sign}{units}.{frac:0width$}", width = decimals as usize)
}

/// Debezium's `precise` mode: base64 of the big-endian two's-complement unscaled integer.
pub(crate) fn precise_base64(m: Money, scale: u32) -> String {
    let unscaled = m.0 / 10i64.pow(6 - scale);
    let bytes = unscaled.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    base64::engine::general_purpose::STANDARD.encode(&bytes[start..])
}

/// How an event_id is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EventIdWire {
    Text(String),
    /// A JSON number (read as its decimal text).
    Number(u64),
    /// No event_id field.
    Absent,
    /// `"event_id": ""`.
    Empty,
}

impl EventIdWire {
    /// The dedup id as text, `None` when missing.
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            EventIdWire::Text(s) => Some(s.clone()),
            EventIdWire::Number(n) => Some(n.to_string()),
            EventIdWire::Absent | EventIdWire::Empty => None,
        }
    }

    fn write(&self, j: &mut Json) {
        match self {
            EventIdWire::Text(s) => j.f_str("event_id", s),
            EventIdWire::Number(n) => j.f_int("event_id", *n as i64),
            EventIdWire::Absent => {}
            EventIdWire::Empty => j.f_str("event_id", ""),
        }
    }
}

/// Match keys as one copy sends them (clear or hashed, already chosen).
#[derive(Debug, Clone, Default)]
pub(crate) struct UserWire {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
    pub ttclid: Option<String>,
    pub ttp: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<&'static str>,
}

/// One contents[] item.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContentWire {
    pub product: usize,
    pub quantity: i64,
    pub price: Money,
}

/// A deliberate defect that makes a record a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Defect {
    /// Cut short: not JSON.
    Truncated,
    /// `"value": "NaN"` / `"total": "NaN"`.
    NanAmount,
    /// A time that is no time: `"not-a-time"`.
    BadTime,
    /// A known field with the wrong JSON type (`"event": 42`, `"total": true`).
    WrongType,
    /// The pixel code (or order id) is missing.
    MissingKey,
    /// `"value": 1e400`: not a finite number.
    HugeAmount,
    /// An empty line.
    Empty,
}

/// One copy of an action as one side sends it.
#[derive(Debug, Clone)]
pub(crate) struct EventCopy {
    pub source: Source,
    pub pixel: usize,
    pub event: &'static str,
    pub event_id: EventIdWire,
    /// Unix ms, already quantised by `time_fmt`.
    pub time: i64,
    pub time_fmt: TimeFmt,
    /// Server copies only.
    pub shape: ServerShape,
    pub user: UserWire,
    pub value: Money,
    pub value_decimals: u32,
    pub value_as_string: bool,
    /// As sent: may be lower case or not a currency at all.
    pub currency: String,
    pub order_id: Option<u64>,
    pub order_id_as_number: bool,
    pub contents: Vec<ContentWire>,
    pub url: String,
    pub referrer: &'static str,
    pub consent: Option<&'static str>,
    pub defect: Option<Defect>,
}

impl EventCopy {
    /// The Kafka key of a browser line: its event_id.
    pub(crate) fn key(&self) -> Option<String> {
        self.event_id.text()
    }

    fn write_properties(&self, j: &mut Json, legacy: bool) {
        j.key("properties");
        if self.defect == Some(Defect::WrongType) && !legacy {
            j.str("value=12.5;currency=USD");
            return;
        }
        j.open();
        j.key("contents");
        j.open_arr();
        for c in &self.contents {
            let p = &CATALOG[c.product];
            j.open();
            j.f_str("content_id", p.id);
            j.f_str("content_name", p.name);
            if !legacy {
                j.f_str("content_category", p.category);
                j.f_str("brand", p.brand);
            }
            j.f_int("quantity", c.quantity);
            j.f_raw("price", &amount_text(c.price, self.value_decimals));
            j.close();
        }
        j.close_arr();
        j.f_str("content_type", "product");
        j.f_str("currency", &self.currency);
        match self.defect {
            Some(Defect::NanAmount) => j.f_str("value", "NaN"),
            Some(Defect::HugeAmount) => j.f_raw("value", "1e400"),
            _ => {
                let text = amount_text(self.value, self.value_decimals);
                if self.value_as_string {
                    j.f_str("value", &text);
                } else {
                    j.f_raw("value", &text);
                }
            }
        }
        if let Some(order) = self.order_id {
            if self.order_id_as_number {
                j.f_int("order_id", order as i64);
            } else {
                j.f_str("order_id", &order.to_string());
            }
        }
        j.close();
    }

    fn write_time(&self, j: &mut Json, key: &str) {
        match self.defect {
            Some(Defect::BadTime) => j.f_str(key, "not-a-time"),
            Some(Defect::WrongType) => j.f_raw(key, "true"),
            _ => {
                j.key(key);
                self.time_fmt.write(j, self.time);
            }
        }
    }

    fn write_user(&self, j: &mut Json) {
        let u = &self.user;
        j.key("user");
        j.open();
        j.f_opt("email", u.email.as_deref());
        j.f_opt("phone", u.phone.as_deref());
        j.f_opt("external_id", u.external_id.as_deref());
        j.f_opt("ttclid", u.ttclid.as_deref());
        j.f_opt("ttp", u.ttp.as_deref());
        j.f_opt("ip", u.ip.as_deref());
        j.f_opt("user_agent", u.user_agent);
        j.close();
    }

    fn write_page(&self, j: &mut Json) {
        j.key("page");
        j.open();
        j.f_str("url", &self.url);
        if !self.referrer.is_empty() {
            j.f_str("referrer", self.referrer);
        }
        j.close();
    }

    /// The fields of an Events API 2.0 event (also the browser shape, minus the pixel).
    fn write_api2_fields(&self, j: &mut Json) {
        if self.defect == Some(Defect::WrongType) {
            j.f_int("event", 42);
        } else {
            j.f_str("event", self.event);
        }
        self.event_id.write(j);
        self.write_time(j, "event_time");
        self.write_user(j);
        self.write_properties(j, false);
        self.write_page(j);
        if let Some(c) = self.consent {
            j.f_str("consent", c);
        }
    }

    /// A browser line: the Pixel event as a first-party collector captures it.
    pub(crate) fn render_browser(&self) -> String {
        let mut j = Json::new();
        j.open();
        if self.defect != Some(Defect::MissingKey) {
            j.f_str("event_source_id", PIXELS[self.pixel].code);
        }
        self.write_api2_fields(&mut j);
        j.close();
        finish(j, self.defect)
    }

    /// An event inside a 2.0 body's `data[]`.
    pub(crate) fn write_api2_event(&self, j: &mut Json) {
        j.open();
        self.write_api2_fields(j);
        j.f_raw("limited_data_use", "false");
        j.close();
    }

    /// An event in the older shape; `in_batch` adds `"type": "track"` and leaves the pixel
    /// code to the body.
    pub(crate) fn write_legacy_event(&self, j: &mut Json, in_batch: bool) {
        j.open();
        if in_batch {
            j.f_str("type", "track");
        } else if self.defect != Some(Defect::MissingKey) {
            j.f_str("pixel_code", PIXELS[self.pixel].code);
        }
        if self.defect == Some(Defect::WrongType) {
            j.f_int("event", 42);
        } else {
            j.f_str("event", self.event);
        }
        self.event_id.write(j);
        self.write_time(j, "timestamp");
        j.key("context");
        j.open();
        if let Some(clid) = &self.user.ttclid {
            j.key("ad");
            j.open();
            j.f_str("callback", clid);
            j.close();
        }
        self.write_page(j);
        j.key("user");
        j.open();
        j.f_opt("email", self.user.email.as_deref());
        j.f_opt("phone_number", self.user.phone.as_deref());
        j.f_opt("external_id", self.user.external_id.as_deref());
        j.f_opt("ttp", self.user.ttp.as_deref());
        j.close();
        j.f_opt("ip", self.user.ip.as_deref());
        j.f_opt("user_agent", self.user.user_agent);
        j.close();
        self.write_properties(j, true);
        if let Some(c) = self.consent {
            j.f_str("consent", c);
        }
        j.close();
    }

    /// A server line carrying this copy alone, in its (single) shape.
    pub(crate) fn render_server_single(&self) -> String {
        let mut j = Json::new();
        match self.shape.single() {
            ServerShape::LegacyTrack => self.write_legacy_event(&mut j, false),
            _ => {
                j.open();
                j.f_str("event_source", "web");
                if self.defect != Some(Defect::MissingKey) {
                    j.f_str("event_source_id", PIXELS[self.pixel].code);
                }
                self.write_api2_fields(&mut j);
                j.f_raw("limited_data_use", "false");
                j.close();
            }
        }
        finish(j, self.defect)
    }
}

/// A server body batching several copies of one pixel (`data[]` or `batch[]`). `copies` may
/// include defective ones: each is one dead event beside the good ones.
pub(crate) fn render_server_batch(
    shape: ServerShape,
    pixel: usize,
    copies: &[EventCopy],
) -> String {
    let mut j = Json::new();
    j.open();
    match shape {
        ServerShape::LegacyBatch => {
            j.f_str("pixel_code", PIXELS[pixel].code);
            j.key("batch");
            j.open_arr();
            for c in copies {
                c.write_legacy_event(&mut j, true);
            }
            j.close_arr();
        }
        _ => {
            j.f_str("event_source", "web");
            j.f_str("event_source_id", PIXELS[pixel].code);
            j.key("data");
            j.open_arr();
            for c in copies {
                c.write_api2_event(&mut j);
            }
            j.close_arr();
        }
    }
    j.close();
    j.finish()
}

/// A 2.0 body whose `data[]` is empty: one dead letter.
pub(crate) fn render_empty_batch(pixel: usize) -> String {
    format!(
        "{{\"event_source\":\"web\",\"event_source_id\":\"{}\",\"data\":[]}}",
        PIXELS[pixel].code
    )
}

fn finish(j: Json, defect: Option<Defect>) -> String {
    let text = j.finish();
    match defect {
        Some(Defect::Truncated) => truncate(text),
        Some(Defect::Empty) => String::new(),
        _ => text,
    }
}

/// A proper prefix of a JSON object is never JSON. Cut at about 60% on a char boundary.
fn truncate(text: String) -> String {
    let mut cut = text.len() * 3 / 5;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut.max(1)].to_string()
}

/// Debezium's `decimal.handling.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecimalMode {
    /// base64 unscaled integer, scale in the schema (only used with the schema wrapper).
    Precise,
    String,
    Double,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderFmt {
    /// A plain JSON row (default field names).
    Plain {
        time: TimeFmt,
        total_as_string: bool,
    },
    /// A Debezium change event, with or without the `{schema, payload}` wrapper.
    Debezium {
        wrapped: bool,
        mode: DecimalMode,
        time: TimeFmt,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderOp {
    Create,
    Update,
    Snapshot,
    Delete,
}

/// One change to an order row.
#[derive(Debug, Clone)]
pub(crate) struct OrderChange {
    pub op: OrderOp,
    pub order_id: u64,
    pub id_as_number: bool,
    pub total: Money,
    pub decimals: u32,
    /// As stored: any case.
    pub currency: String,
    pub status: String,
    pub shop: Option<&'static str>,
    /// The shop is part of the table's key (multi-tenant tables keyed by shop and id): a
    /// key-only delete names it too.
    pub shop_in_key: bool,
    /// Unix ms, quantised by the format.
    pub created_at: i64,
    /// The change time (Unix ms, quantised): `updated_at`, or `source.ts_ms` when the row has
    /// no `updated_at` (snapshots, deletes).
    pub changed_at: i64,
    /// `updated_at` is written as null (a snapshot of rows never updated).
    pub updated_at_null: bool,
    pub lsn: i64,
    /// The connector's processing time (`ts_ms` of the envelope): differs on a redelivery.
    pub processed_at: i64,
    /// Part of a snapshot: "true", "last", or "false".
    pub snapshot: &'static str,
    pub fmt: OrderFmt,
    pub defect: Option<Defect>,
}

impl OrderChange {
    pub(crate) fn render(&self, schemas: &mut SchemaCache) -> String {
        if self.defect == Some(Defect::Empty) {
            return String::new();
        }
        let text = match self.fmt {
            OrderFmt::Plain {
                time,
                total_as_string,
            } => self.render_plain(time, total_as_string),
            OrderFmt::Debezium {
                wrapped,
                mode,
                time,
            } => {
                let payload = self.render_envelope(mode, time);
                if wrapped {
                    format!(
                        "{{\"schema\":{},\"payload\":{payload}}}",
                        schemas.get(mode, time)
                    )
                } else {
                    payload
                }
            }
        };
        if self.defect == Some(Defect::Truncated) {
            truncate(text)
        } else {
            text
        }
    }

    fn write_id(&self, j: &mut Json) {
        if self.id_as_number {
            j.f_int("order_id", self.order_id as i64);
        } else {
            j.f_str("order_id", &self.order_id.to_string());
        }
    }

    fn write_total(&self, j: &mut Json, text: Option<String>, as_string: bool) {
        match self.defect {
            Some(Defect::NanAmount) => j.f_str("total", "NaN"),
            Some(Defect::WrongType) => j.f_raw("total", "true"),
            _ => {
                let text = text.unwrap_or_else(|| amount_text(self.total, self.decimals));
                if as_string {
                    j.f_str("total", &text);
                } else {
                    j.f_raw("total", &text);
                }
            }
        }
    }

    fn write_created(&self, j: &mut Json, time: TimeFmt) {
        j.key("created_at");
        if self.defect == Some(Defect::BadTime) {
            j.str("31/12/2025 10:00");
        } else {
            time.write(j, self.created_at);
        }
    }

    fn render_plain(&self, time: TimeFmt, total_as_string: bool) -> String {
        let mut j = Json::new();
        j.open();
        if self.defect != Some(Defect::MissingKey) {
            self.write_id(&mut j);
        }
        self.write_total(&mut j, None, total_as_string);
        j.f_str("currency", &self.currency);
        j.f_str("status", &self.status);
        self.write_created(&mut j, time);
        j.key("updated_at");
        time.write(&mut j, self.changed_at);
        if let Some(shop) = self.shop {
            j.f_str("shop", shop);
        }
        j.close();
        j.finish()
    }

    fn write_row(&self, j: &mut Json, mode: DecimalMode, time: TimeFmt) {
        j.open();
        if self.defect != Some(Defect::MissingKey) {
            self.write_id(j);
        }
        match mode {
            DecimalMode::Precise => {
                self.write_total(j, Some(precise_base64(self.total, 2)), true);
            }
            DecimalMode::String => {
                self.write_total(j, Some(amount_text(self.total, 2)), true);
            }
            DecimalMode::Double => {
                let text = format!("{}", self.total.to_f64());
                self.write_total(j, Some(text), false);
            }
        }
        j.f_str("currency", &self.currency);
        j.f_str("status", &self.status);
        j.key("shop");
        match self.shop {
            Some(shop) => j.str(shop),
            None => j.raw("null"),
        }
        self.write_created(j, time);
        j.key("updated_at");
        if self.updated_at_null {
            j.raw("null");
        } else {
            time.write(j, self.changed_at);
        }
        j.close();
    }

    fn render_envelope(&self, mode: DecimalMode, time: TimeFmt) -> String {
        let mut j = Json::new();
        j.open();
        j.key("before");
        if self.op == OrderOp::Delete {
            // Default replica identity: the key alone, nulls mean unknown.
            j.open();
            self.write_id(&mut j);
            for field in [
                "total",
                "currency",
                "status",
                "shop",
                "created_at",
                "updated_at",
            ] {
                match self.shop {
                    Some(shop) if field == "shop" && self.shop_in_key => j.f_str(field, shop),
                    _ => j.f_raw(field, "null"),
                }
            }
            j.close();
            j.f_raw("after", "null");
        } else {
            j.raw("null");
            j.key("after");
            self.write_row(&mut j, mode, time);
        }
        j.key("source");
        j.open();
        j.f_str("version", "3.0.7.Final");
        j.f_str("connector", "postgresql");
        j.f_str("name", "shopdb");
        j.f_int("ts_ms", self.changed_at);
        j.f_str("snapshot", self.snapshot);
        j.f_str("db", "shop");
        j.f_str(
            "sequence",
            &format!("[\"{}\",\"{}\"]", self.lsn - 64, self.lsn),
        );
        j.f_str("schema", "public");
        j.f_str("table", "orders");
        j.f_int("txId", 500_000 + (self.lsn / 1024) % 10_000_000);
        j.f_int("lsn", self.lsn);
        j.f_raw("xmin", "null");
        j.close();
        j.f_str(
            "op",
            match self.op {
                OrderOp::Create => "c",
                OrderOp::Update => "u",
                OrderOp::Snapshot => "r",
                OrderOp::Delete => "d",
            },
        );
        j.f_int("ts_ms", self.processed_at);
        j.f_raw("transaction", "null");
        j.close();
        j.finish()
    }
}

/// The Kafka Connect schemas of the order envelope, one per decimal mode and time type,
/// built once.
#[derive(Default)]
pub(crate) struct SchemaCache {
    cache: Vec<((DecimalMode, bool), String)>,
}

impl SchemaCache {
    fn get(&mut self, mode: DecimalMode, time: TimeFmt) -> &str {
        let key = (mode, time.is_string());
        let at = match self.cache.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                self.cache.push((key, envelope_schema(mode, time)));
                self.cache.len() - 1
            }
        };
        &self.cache[at].1
    }
}

fn envelope_schema(mode: DecimalMode, time: TimeFmt) -> String {
    let total = match mode {
        DecimalMode::Precise => "{\"type\":\"bytes\",\"optional\":true,\"name\":\"org.apache.kafka.connect.data.Decimal\",\"version\":1,\"parameters\":{\"scale\":\"2\",\"connect.decimal.precision\":\"12\"},\"field\":\"total\"}".to_string(),
        DecimalMode::String => "{\"type\":\"string\",\"optional\":true,\"field\":\"total\"}".to_string(),
        DecimalMode::Double => "{\"type\":\"double\",\"optional\":true,\"field\":\"total\"}".to_string(),
    };
    let ts = |field: &str| {
        match time {
        TimeFmt::IsoMicros | TimeFmt::Rfc3339 { .. } => format!(
            "{{\"type\":\"string\",\"optional\":true,\"name\":\"io.debezium.time.ZonedTimestamp\",\"version\":1,\"field\":\"{field}\"}}"
        ),
        TimeFmt::EpochNs => format!(
            "{{\"type\":\"int64\",\"optional\":true,\"name\":\"io.debezium.time.NanoTimestamp\",\"version\":1,\"field\":\"{field}\"}}"
        ),
        TimeFmt::EpochUs => format!(
            "{{\"type\":\"int64\",\"optional\":true,\"name\":\"io.debezium.time.MicroTimestamp\",\"version\":1,\"field\":\"{field}\"}}"
        ),
        _ => format!(
            "{{\"type\":\"int64\",\"optional\":true,\"name\":\"org.apache.kafka.connect.data.Timestamp\",\"version\":1,\"field\":\"{field}\"}}"
        ),
    }
    };
    let row = |name: &str| {
        format!(
            "{{\"type\":\"struct\",\"fields\":[{{\"type\":\"int64\",\"optional\":false,\"field\":\"order_id\"}},{total},{{\"type\":\"string\",\"optional\":true,\"field\":\"currency\"}},{{\"type\":\"string\",\"optional\":true,\"field\":\"status\"}},{{\"type\":\"string\",\"optional\":true,\"field\":\"shop\"}},{},{}],\"optional\":true,\"name\":\"shopdb.public.orders.Value\",\"field\":\"{name}\"}}",
            ts("created_at"),
            ts("updated_at")
        )
    };
    format!(
        "{{\"type\":\"struct\",\"fields\":[{},{},{{\"type\":\"struct\",\"fields\":[{{\"type\":\"string\",\"optional\":false,\"field\":\"version\"}},{{\"type\":\"string\",\"optional\":false,\"field\":\"connector\"}},{{\"type\":\"string\",\"optional\":false,\"field\":\"name\"}},{{\"type\":\"int64\",\"optional\":false,\"field\":\"ts_ms\"}},{{\"type\":\"string\",\"optional\":true,\"name\":\"io.debezium.data.Enum\",\"version\":1,\"parameters\":{{\"allowed\":\"true,last,false,incremental\"}},\"default\":\"false\",\"field\":\"snapshot\"}},{{\"type\":\"string\",\"optional\":false,\"field\":\"db\"}},{{\"type\":\"string\",\"optional\":true,\"field\":\"sequence\"}},{{\"type\":\"string\",\"optional\":false,\"field\":\"schema\"}},{{\"type\":\"string\",\"optional\":false,\"field\":\"table\"}},{{\"type\":\"int64\",\"optional\":true,\"field\":\"txId\"}},{{\"type\":\"int64\",\"optional\":true,\"field\":\"lsn\"}},{{\"type\":\"int64\",\"optional\":true,\"field\":\"xmin\"}}],\"optional\":false,\"name\":\"io.debezium.connector.postgresql.Source\",\"field\":\"source\"}},{{\"type\":\"string\",\"optional\":false,\"field\":\"op\"}},{{\"type\":\"int64\",\"optional\":true,\"field\":\"ts_ms\"}},{{\"type\":\"struct\",\"fields\":[{{\"type\":\"string\",\"optional\":false,\"field\":\"id\"}},{{\"type\":\"int64\",\"optional\":false,\"field\":\"total_order\"}},{{\"type\":\"int64\",\"optional\":false,\"field\":\"data_collection_order\"}}],\"optional\":true,\"field\":\"transaction\"}}],\"optional\":false,\"name\":\"shopdb.public.orders.Envelope\",\"version\":2}}",
        row("before"),
        row("after")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precise_mode_matches_debezium() {
        // DOMAIN.md: 149.90 -> "Oo4=".
        assert_eq!(precise_base64(Money(149_900_000), 2), "Oo4=");
        assert_eq!(precise_base64(Money(1_270_000), 2), "fw==");
        assert_eq!(precise_base64(Money(1_280_000), 2), "AIA=");
        assert_eq!(precise_base64(Money(0), 2), "AA==");
    }

    #[test]
    fn times_render_as_rfc3339() {
        assert_eq!(rfc3339_ms(1_767_225_600_123, 0), "2026-01-01T00:00:00.123Z");
        assert_eq!(
            rfc3339_ms(1_767_225_600_123, 120),
            "2026-01-01T02:00:00.123+02:00"
        );
        assert_eq!(
            rfc3339_ms(1_767_225_600_000, -300),
            "2025-12-31T19:00:00.000-05:00"
        );
        assert!(iso_micros(951_782_400_000).starts_with("2000-02-29T00:00:00.000"));
        assert_eq!(
            iso_micros(951_782_400_000).len(),
            "2000-02-29T00:00:00.000000Z".len()
        );
        assert_eq!(TimeFmt::UnixS.quantize(1_999), 1_000);
    }

    #[test]
    fn rendered_times_parse_back_to_the_planned_millisecond() {
        use time::format_description::well_known::Rfc3339;
        for ms in [
            0i64,
            1_767_225_600_123,
            1_767_571_199_999,
            1_700_000_000_001,
        ] {
            for off in [0i16, 120, -330] {
                let t = time::OffsetDateTime::parse(&rfc3339_ms(ms, off), &Rfc3339).unwrap();
                assert_eq!((t.unix_timestamp_nanos() / 1_000_000) as i64, ms);
            }
            let t = time::OffsetDateTime::parse(&iso_micros(ms), &Rfc3339).unwrap();
            assert_eq!((t.unix_timestamp_nanos() / 1_000_000) as i64, ms);
        }
    }

    #[test]
    fn amounts_keep_their_decimals() {
        assert_eq!(amount_text(Money(149_900_000), 2), "149.90");
        assert_eq!(amount_text(Money(1_500_000_000), 0), "1500");
        assert_eq!(amount_text(Money(50_000), 2), "0.05");
    }

    #[test]
    fn json_escapes_quotes_and_controls() {
        let mut j = Json::new();
        j.open();
        j.f_str("a", "say \"hi\"\n\u{1}");
        j.close();
        let text = j.finish();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["a"], "say \"hi\"\n\u{1}");
    }
}
