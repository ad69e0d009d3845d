//! Browser and server events: every accepted shape, read into one [`Event`].
//!
//! Owns: the shapes (see below), where each field of an [`Event`] is found in them, and the
//! per-field rules (types, required fields, hashing of clear PII via `pii`). Must not: apply a
//! dedup, consent or value rule (that is the engine), keep state between records, or put an
//! input value in an error (errors name the field: `properties.value: negative amount`).
//!
//! Shapes, all read by one borrowed, lenient pass (see `json`):
//! - a **single event**: `event_source_id`, `event`, `event_id`, `event_time`, `user`,
//!   `properties`, `page`, `consent` (the browser collector's shape and a single server event);
//! - an **Events API 2.0 body**: `{event_source, event_source_id, data: [events]}`; an event
//!   takes its own `event_source_id` if it has one, else the body's;
//! - the **legacy pixel/track** shape of TikTok's official SDK: `pixel_code`, `timestamp` (ISO
//!   string), `context {user {email, phone_number, external_id, ttp}, ad {callback = ttclid},
//!   page, ip, user_agent}`;
//! - a **legacy pixel/batch** body: `{pixel_code, batch: [legacy events]}` (`pixel_code` on the
//!   batch or on each event; each event's `"type": "track"` is not checked).
//!
//! The names of both generations are accepted in any record (`event_time` wins over
//! `timestamp`, `user.*` over `context.user.*`, `phone` over `phone_number`); unknown fields are
//! ignored. `timestamp` must be a string, as the SDK sends it; `event_time` may be a number. In a body, event `i` gets `Position.index = i`; an event that fails becomes its own
//! dead letter whose `original` is that event's JSON text exactly as it appears in the body
//! (sliced, not re-serialised; the body's own fields are not included: the position's offset
//! and index locate the body), and the other events still parse. A body whose `data`/`batch`
//! is not a non-empty array is one dead letter (index 0) with the whole record as `original`.

use serde_json::value::RawValue;

use super::amount::{self, AmountError};
use super::json::{
    self, id, lenient_object, obj, text, Direct, JsonError, List, Obj, Scalar, WrongType,
};
use super::time::{self, TimeError, Units};
use super::{Reject, Sink};
use crate::model::{
    Consent, Content, DeadLetterReason, Event, EventFields, Packer, Page, Position, Properties,
    Record, Source, Span, User,
};
use crate::pii;

lenient_object! {
    /// One event in any accepted generation of the API.
    pub(crate) struct RawEvent<'a> {
        event_source_id: Scalar<'a> = "event_source_id",
        pixel_code: Scalar<'a> = "pixel_code",
        event: Scalar<'a> = "event",
        event_id: Scalar<'a> = "event_id",
        event_time: Scalar<'a> = "event_time",
        timestamp: Scalar<'a> = "timestamp",
        user: Obj<RawUser<'a>> = "user",
        context: Obj<RawContext<'a>> = "context",
        properties: Obj<RawProperties<'a>> = "properties",
        page: Obj<RawPage<'a>> = "page",
        consent: Scalar<'a> = "consent",
    }
}

lenient_object! {
    pub(crate) struct RawUser<'a> {
        email: Scalar<'a> = "email",
        phone: Scalar<'a> = "phone",
        phone_number: Scalar<'a> = "phone_number",
        external_id: Scalar<'a> = "external_id",
        ttclid: Scalar<'a> = "ttclid",
        ttp: Scalar<'a> = "ttp",
        ip: Scalar<'a> = "ip",
        user_agent: Scalar<'a> = "user_agent",
    }
}

lenient_object! {
    /// The legacy shape's `context`.
    pub(crate) struct RawContext<'a> {
        user: Obj<RawUser<'a>> = "user",
        ad: Obj<RawAd<'a>> = "ad",
        page: Obj<RawPage<'a>> = "page",
        ip: Scalar<'a> = "ip",
        user_agent: Scalar<'a> = "user_agent",
    }
}

lenient_object! {
    pub(crate) struct RawAd<'a> {
        callback: Scalar<'a> = "callback",
    }
}

lenient_object! {
    pub(crate) struct RawPage<'a> {
        url: Scalar<'a> = "url",
        referrer: Scalar<'a> = "referrer",
    }
}

lenient_object! {
    pub(crate) struct RawProperties<'a> {
        value: Scalar<'a> = "value",
        currency: Scalar<'a> = "currency",
        order_id: Scalar<'a> = "order_id",
        contents: List<Obj<RawContent<'a>>> = "contents",
        content_type: Scalar<'a> = "content_type",
        description: Scalar<'a> = "description",
        query: Scalar<'a> = "query",
    }
}

lenient_object! {
    pub(crate) struct RawContent<'a> {
        content_id: Scalar<'a> = "content_id",
        content_name: Scalar<'a> = "content_name",
        content_category: Scalar<'a> = "content_category",
        brand: Scalar<'a> = "brand",
        quantity: Scalar<'a> = "quantity",
        price: Scalar<'a> = "price",
    }
}

/// A server record: a body whose `data[]` or `batch[]` holds events read as `T`, or a single
/// event (then `event` holds it; in a body it holds the body's own fields).
#[derive(Debug)]
pub(crate) struct RawBody<'a, T> {
    event: RawEvent<'a>,
    data: Option<List<T>>,
    batch: Option<List<T>>,
}

impl<T> Default for RawBody<'_, T> {
    fn default() -> Self {
        RawBody {
            event: RawEvent::default(),
            data: None,
            batch: None,
        }
    }
}

impl<'de: 'a, 'a, T: serde::Deserialize<'de> + Direct<'de>> json::Fields<'de> for RawBody<'a, T> {
    fn field<A: serde::de::MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        match key {
            // Read as `List` directly (not `Option`), so `"data": null` is "not an array".
            "data" => self.data = Some(map.next_value()?),
            "batch" => self.batch = Some(map.next_value()?),
            _ => return self.event.field(key, map),
        }
        Ok(true)
    }

    fn field_direct(
        &mut self,
        key: &str,
        reader: &mut json::Reader<'de>,
    ) -> json::DirectResult<bool> {
        match key {
            "data" => self.data = Some(List::read_direct(reader)?),
            "batch" => self.batch = Some(List::read_direct(reader)?),
            _ => return self.event.field_direct(key, reader),
        }
        Ok(true)
    }
}

/// A body read in one pass, its events typed.
pub(crate) type TypedBody<'a> = RawBody<'a, Obj<RawEvent<'a>>>;
/// A body read with its events as raw JSON text, each parsed on its own afterwards.
type LazyBody<'a> = RawBody<'a, &'a RawValue>;

lenient_object! {
    /// The events of a body as raw JSON text, read again only when one of them failed.
    struct RawItems<'a> {
        data: List<&'a RawValue> = "data",
        batch: List<&'a RawValue> = "batch",
    }
}

/// Why an event (or a server body) could not be used. Never quotes a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error("{0}: expected a JSON object")]
    NotAnObject(&'static str),
    #[error("{0}: expected a non-empty array of events")]
    NotABatch(&'static str),
    #[error(transparent)]
    WrongType(#[from] WrongType),
    #[error("{0}: missing or empty")]
    Missing(&'static str),
    #[error("{field}: {source}")]
    Time {
        field: &'static str,
        source: TimeError,
    },
    #[error("{field}: {source}")]
    Amount {
        field: &'static str,
        source: AmountError,
    },
    #[error("{0}: expected a non-negative integer")]
    Quantity(&'static str),
    #[error("consent: expected \"granted\" or \"denied\"")]
    Consent,
}

impl Reject for EventError {
    fn reason(&self) -> DeadLetterReason {
        match self {
            EventError::Json(e) => e.reason(),
            EventError::NotAnObject(_)
            | EventError::NotABatch(_)
            | EventError::WrongType(_)
            | EventError::Quantity(_)
            | EventError::Consent => DeadLetterReason::InvalidShape,
            EventError::Missing(_) => DeadLetterReason::MissingField,
            EventError::Time { .. } => DeadLetterReason::InvalidTime,
            EventError::Amount {
                source: AmountError::WrongType,
                ..
            } => DeadLetterReason::InvalidShape,
            EventError::Amount { .. } => DeadLetterReason::InvalidAmount,
        }
    }
}

/// A browser record: one event.
pub(crate) fn parse_browser(text: &str, sink: &mut Sink<'_>) {
    let mut slot = None;
    let result = match (json::read_record::<RawEvent<'_>>(text, &mut slot), &slot) {
        (Err(e), _) => Err(EventError::Json(e.into())),
        (Ok(()), Some(Obj::Ok(raw))) => build(
            raw,
            None,
            Source::Browser,
            sink.position(0),
            sink.event_text,
        ),
        (Ok(()), _) => Err(EventError::NotAnObject("record")),
    };
    match result {
        Ok(event) => sink.record(Record::Event(Box::new(event))),
        Err(e) => sink.reject(0, &e),
    }
}

/// A server record: a 2.0 body, a legacy batch, or one event in either generation's shape.
pub(crate) fn parse_server(text: &str, sink: &mut Sink<'_>) {
    let mut slot = None;
    let body = match (json::read_record::<TypedBody<'_>>(text, &mut slot), &slot) {
        (Ok(()), Some(Obj::Ok(body))) => body,
        (Ok(()), _) => return sink.reject(0, &EventError::NotAnObject("record")),
        (Err(e), _) => {
            // serde_json rejects a number beyond f64 (`1e400`) while it reads, which would take
            // the whole body down. Skipping a value does not evaluate its numbers, so read the
            // body again with its events as raw text: only the event holding it is lost.
            return match serde_json::from_str::<Obj<LazyBody<'_>>>(text) {
                Ok(Obj::Ok(lazy)) if lazy.data.is_some() || lazy.batch.is_some() => {
                    parse_lazy_body(&lazy, sink)
                }
                _ => sink.reject(0, &EventError::Json(e.into())),
            };
        }
    };
    let Some((events, key, item, body_pixel)) = split(body, sink) else {
        return;
    };
    for (i, raw) in events.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let result = match raw {
            Obj::Ok(raw) => build(
                raw,
                body_pixel,
                Source::Server,
                sink.position(index),
                sink.event_text,
            ),
            Obj::NotObject => Err(EventError::NotAnObject(item)),
        };
        emit(sink, index, result, || {
            item_text(text, key, i).unwrap_or(text)
        });
    }
}

/// The body of [`parse_server`]'s fallback: each event parsed from its own text.
fn parse_lazy_body(body: &LazyBody<'_>, sink: &mut Sink<'_>) {
    let Some((events, _, item, body_pixel)) = split(body, sink) else {
        return;
    };
    for (i, raw) in events.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let result = match serde_json::from_str::<Obj<RawEvent<'_>>>(raw.get()) {
            Err(e) => Err(EventError::Json(e.into())),
            Ok(Obj::NotObject) => Err(EventError::NotAnObject(item)),
            Ok(Obj::Ok(raw)) => build(
                &raw,
                body_pixel,
                Source::Server,
                sink.position(index),
                sink.event_text,
            ),
        };
        emit(sink, index, result, || raw.get());
    }
}

/// The events of a body with their key (`data`/`batch`), the name of one item, and the body's
/// pixel. `None` when the record is done with: a single event (parsed here), or a body that
/// cannot be split (one dead letter).
fn split<'b, 'a, T>(
    body: &'b RawBody<'a, T>,
    sink: &mut Sink<'_>,
) -> Option<(&'b [T], &'static str, &'static str, Option<&'b str>)> {
    let (events, key, item) = match (&body.data, &body.batch) {
        (Some(list), _) => (list, "data", "data[]"),
        (None, Some(list)) => (list, "batch", "batch[]"),
        (None, None) => {
            match build(
                &body.event,
                None,
                Source::Server,
                sink.position(0),
                sink.event_text,
            ) {
                Ok(event) => sink.record(Record::Event(Box::new(event))),
                Err(e) => sink.reject(0, &e),
            }
            return None;
        }
    };
    let events = match events {
        List::Ok(events) if !events.is_empty() => events,
        _ => {
            sink.reject(0, &EventError::NotABatch(key));
            return None;
        }
    };
    match pixel_of(&body.event) {
        Ok(pixel) => Some((events, key, item, pixel)),
        Err(e) => {
            sink.reject(0, &e);
            None
        }
    }
}

/// Event `index` of a body: the event, or its dead letter with the event's own text.
fn emit<'t>(
    sink: &mut Sink<'_>,
    index: u32,
    result: Result<Event, EventError>,
    event_text: impl FnOnce() -> &'t str,
) {
    match result {
        Ok(event) => sink.record(Record::Event(Box::new(event))),
        Err(e) => {
            let original = if sink.keeps_original() {
                event_text()
            } else {
                ""
            };
            sink.reject_with_original(index, &e, original.as_bytes());
        }
    }
}

/// The exact JSON text of event `i` of the body's `data` or `batch`.
fn item_text<'t>(text: &'t str, key: &str, i: usize) -> Option<&'t str> {
    let Ok(Obj::Ok(items)) = serde_json::from_str::<Obj<RawItems<'t>>>(text) else {
        return None;
    };
    let list = if key == "data" {
        items.data
    } else {
        items.batch
    };
    match list? {
        List::Ok(raws) => raws.get(i).map(|raw| raw.get()),
        List::NotArray => None,
    }
}

/// The pixel code an event names itself: `event_source_id`, else `pixel_code`.
fn pixel_of<'r>(raw: &'r RawEvent<'_>) -> Result<Option<&'r str>, EventError> {
    let own = text(&raw.event_source_id, "event_source_id")?;
    let legacy = text(&raw.pixel_code, "pixel_code")?;
    Ok(own.or(legacy).map(pii::trim))
}

/// The first non-empty text among `candidates`, after checking every one's type.
fn first_text<'r>(
    candidates: &[(Option<&'r Option<Scalar<'_>>>, &'static str)],
) -> Result<Option<&'r str>, EventError> {
    let mut found = None;
    for (value, field) in candidates {
        if let Some(value) = value {
            let t = text(value, field)?;
            found = found.or(t);
        }
    }
    Ok(found)
}

/// `s.to_uppercase()`, without its per-character path when `s` is ASCII (same result).
pub(crate) fn upper(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_upper(&mut out, s);
    out
}

/// Appends `s.to_uppercase()` to `out`.
fn push_upper(out: &mut String, s: &str) {
    if s.is_ascii() {
        let start = out.len();
        out.push_str(s);
        out[start..].make_ascii_uppercase();
    } else {
        out.push_str(&s.to_uppercase());
    }
}

/// One event from its raw fields, its text packed through `buf` (reused from event to event).
/// `body_pixel` is the enclosing body's pixel code, if any.
fn build(
    raw: &RawEvent<'_>,
    body_pixel: Option<&str>,
    source: Source,
    position: Position,
    buf: &mut String,
) -> Result<Event, EventError> {
    let mut p = Packer::new(buf);
    let pixel = pixel_of(raw)?
        .or(body_pixel)
        .ok_or(EventError::Missing("event_source_id"))?;
    let event = text(&raw.event, "event")?
        .map(pii::trim)
        .ok_or(EventError::Missing("event"))?;
    let event_id = id(&raw.event_id, "event_id")?;
    let (field, value) = match (&raw.event_time, &raw.timestamp) {
        (Some(v), _) if *v != Scalar::Null => ("event_time", v),
        (_, Some(v)) if *v != Scalar::Null => ("timestamp", v),
        _ => return Err(EventError::Missing("event_time")),
    };
    // The legacy shape's `timestamp` is an ISO 8601 string (schemas/server_event.json).
    let event_time = if field == "timestamp" && !matches!(value, Scalar::Str(_)) {
        Err(TimeError::NotAString)
    } else {
        time::time_ms(value, Units::SecondsOrMillis)
    }
    .map_err(|source| EventError::Time { field, source })?;

    let context = obj(&raw.context, "context")?;
    let user = build_user(obj(&raw.user, "user")?, context, &mut p)?;
    let properties = match obj(&raw.properties, "properties")? {
        Some(props) => build_properties(props, &mut p)?,
        None => Properties::default(),
    };
    let page = build_page(obj(&raw.page, "page")?, context, &mut p)?;
    let consent = match text(&raw.consent, "consent")?.map(str::trim) {
        None => None,
        Some(c) if c.eq_ignore_ascii_case("granted") => Some(Consent::Granted),
        Some(c) if c.eq_ignore_ascii_case("denied") => Some(Consent::Denied),
        Some(_) => return Err(EventError::Consent),
    };
    let (pixel, event, event_id) = (p.put(pixel), p.put(event), p.opt(&event_id));
    Ok(p.finish(EventFields {
        source,
        pixel,
        event,
        event_id,
        event_time,
        user,
        properties,
        page,
        consent,
        position,
    }))
}

fn build_user(
    user: Option<&RawUser<'_>>,
    context: Option<&RawContext<'_>>,
    p: &mut Packer<'_>,
) -> Result<User<Span>, EventError> {
    let cu = match context {
        Some(c) => obj(&c.user, "context.user")?,
        None => None,
    };
    let ad = match context {
        Some(c) => obj(&c.ad, "context.ad")?,
        None => None,
    };
    let email = first_text(&[
        (user.map(|u| &u.email), "user.email"),
        (cu.map(|u| &u.email), "context.user.email"),
    ])?;
    let phone = first_text(&[
        (user.map(|u| &u.phone), "user.phone"),
        (user.map(|u| &u.phone_number), "user.phone_number"),
        (cu.map(|u| &u.phone_number), "context.user.phone_number"),
        (cu.map(|u| &u.phone), "context.user.phone"),
    ])?;
    let external_id = first_text(&[
        (user.map(|u| &u.external_id), "user.external_id"),
        (cu.map(|u| &u.external_id), "context.user.external_id"),
    ])?;
    let ttclid = first_text(&[
        (user.map(|u| &u.ttclid), "user.ttclid"),
        (ad.map(|a| &a.callback), "context.ad.callback"),
        (cu.map(|u| &u.ttclid), "context.user.ttclid"),
    ])?;
    let ttp = first_text(&[
        (user.map(|u| &u.ttp), "user.ttp"),
        (cu.map(|u| &u.ttp), "context.user.ttp"),
    ])?;
    let ip = first_text(&[
        (user.map(|u| &u.ip), "user.ip"),
        (context.map(|c| &c.ip), "context.ip"),
        (cu.map(|u| &u.ip), "context.user.ip"),
    ])?;
    let user_agent = first_text(&[
        (user.map(|u| &u.user_agent), "user.user_agent"),
        (context.map(|c| &c.user_agent), "context.user_agent"),
        (cu.map(|u| &u.user_agent), "context.user.user_agent"),
    ])?;
    Ok(User {
        email: p.opt(&email.and_then(pii::hash_email)),
        phone: p.opt(&phone.and_then(pii::hash_phone)),
        external_id: p.opt(&external_id.and_then(pii::hash_external_id)),
        ttclid: p.opt(&ttclid),
        ttp: p.opt(&ttp),
        ip: p.opt(&ip),
        user_agent: p.opt(&user_agent),
    })
}

fn build_page(
    page: Option<&RawPage<'_>>,
    context: Option<&RawContext<'_>>,
    p: &mut Packer<'_>,
) -> Result<Page<Span>, EventError> {
    let cp = match context {
        Some(c) => obj(&c.page, "context.page")?,
        None => None,
    };
    Ok(Page {
        url: p.opt(&first_text(&[
            (page.map(|p| &p.url), "page.url"),
            (cp.map(|p| &p.url), "context.page.url"),
        ])?),
        referrer: p.opt(&first_text(&[
            (page.map(|p| &p.referrer), "page.referrer"),
            (cp.map(|p| &p.referrer), "context.page.referrer"),
        ])?),
    })
}

fn build_properties(
    p: &RawProperties<'_>,
    packer: &mut Packer<'_>,
) -> Result<Properties<Span>, EventError> {
    let value = amount::money(&p.value).map_err(|source| EventError::Amount {
        field: "properties.value",
        source,
    })?;
    let currency = text(&p.currency, "properties.currency")?;
    let contents = match &p.contents {
        None => None,
        Some(List::NotArray) => {
            return Err(WrongType {
                field: "properties.contents",
                expected: "an array",
            }
            .into())
        }
        Some(List::Ok(items)) => Some(
            items
                .iter()
                .map(|item| match item {
                    Obj::Ok(c) => build_content(c, packer),
                    Obj::NotObject => Err(EventError::NotAnObject("properties.contents[]")),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(Properties {
        value,
        currency: currency.map(|c| packer.put_with(|buf| push_upper(buf, c.trim()))),
        order_id: packer.opt(&id(&p.order_id, "properties.order_id")?),
        content_type: packer.opt(&text(&p.content_type, "properties.content_type")?),
        contents,
        description: packer.opt(&text(&p.description, "properties.description")?),
        query: packer.opt(&text(&p.query, "properties.query")?),
    })
}

fn build_content(c: &RawContent<'_>, p: &mut Packer<'_>) -> Result<Content<Span>, EventError> {
    const QUANTITY: &str = "properties.contents[].quantity";
    let quantity = match &c.quantity {
        None | Some(Scalar::Null) => None,
        Some(Scalar::Int(q)) if *q >= 0 => Some(*q),
        Some(Scalar::UInt(q)) => {
            Some(i64::try_from(*q).map_err(|_| EventError::Quantity(QUANTITY))?)
        }
        Some(Scalar::Float(q)) if q.fract() == 0.0 && (0.0..9.0e15).contains(q) => Some(*q as i64),
        Some(_) => return Err(EventError::Quantity(QUANTITY)),
    };
    Ok(Content {
        content_id: p.opt(&id(&c.content_id, "properties.contents[].content_id")?),
        content_name: p.opt(&text(
            &c.content_name,
            "properties.contents[].content_name",
        )?),
        content_category: p.opt(&text(
            &c.content_category,
            "properties.contents[].content_category",
        )?),
        brand: p.opt(&text(&c.brand, "properties.contents[].brand")?),
        quantity,
        price: amount::money(&c.price).map_err(|source| EventError::Amount {
            field: "properties.contents[].price",
            source,
        })?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::Parsed;
    use crate::model::{DeadLetterReason as R, Input, Money};
    use crate::pii::sha256_hex;

    const JOHN: &str = "836f82db99121b3481011f16b49dfa5fbc714a0d1b1b9f784a1ebbbf5b39577f";
    const PHONE_US: &str = "a2996076d3ad4af5dc818b908b3d8e354f26ededf7df0e0aa6ac354143805ee0";
    const T: i64 = 1_697_783_008_000;

    const BROWSER_PURCHASE: &str = r#"{"event_source_id":"CPIXEL1","event":"CompletePayment",
        "event_id":"ord-1001-purchase","event_time":1697783008,
        "user":{"email":" John.Doe@Example.COM ","phone":"+1 (650) 555-1234","external_id":"User-42",
        "ttclid":"E.C.P.abc","ttp":"ttp-cookie-1","ip":"203.0.113.7","user_agent":"Mozilla/5.0"},
        "properties":{"value":"149.90","currency":" usd ","order_id":1001,"content_type":"product",
        "contents":[{"content_id":"sku-1","content_name":"Mug","quantity":2,"price":74.95,"brand":"Acme"}],
        "description":"two mugs","query":"mug"},
        "page":{"url":"https://shop.example/thanks","referrer":"https://shop.example/cart"},
        "consent":"granted","extra":{"ignored":[1,2,3]}}"#;

    fn browser_with(field: &str, json: &str) -> String {
        format!(
            r#"{{"event_source_id":"P","event":"AddToCart","event_id":"e1","event_time":1697783008,{field}:{json}}}"#
        )
    }

    fn props_with(field: &str, json: &str) -> String {
        browser_with(r#""properties""#, &format!(r#"{{"{field}":{json}}}"#))
    }

    #[test]
    fn upper_is_to_uppercase() {
        for s in ["usd", " eUr", "", "ß", "ǆ", "µsd", "i\u{307}", "ﬃ"] {
            assert_eq!(super::upper(s), s.to_uppercase(), "{s}");
        }
    }

    #[test]
    fn browser_event_reads_every_field() {
        let e = event(Input::Browser, BROWSER_PURCHASE);
        assert_eq!(e.source, crate::model::Source::Browser);
        assert_eq!(e.pixel, "CPIXEL1");
        assert_eq!(e.event, "CompletePayment");
        assert_eq!(e.event_id.as_deref(), Some("ord-1001-purchase"));
        assert_eq!(e.event_time, T);
        assert_eq!(e.user.email.as_deref(), Some(JOHN));
        assert_eq!(e.user.phone.as_deref(), Some(PHONE_US));
        assert_eq!(e.user.external_id, Some(sha256_hex("User-42")));
        assert_eq!(e.user.ttclid.as_deref(), Some("E.C.P.abc"));
        assert_eq!(e.user.ttp.as_deref(), Some("ttp-cookie-1"));
        assert_eq!(e.user.ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(e.user.user_agent.as_deref(), Some("Mozilla/5.0"));
        let p = &e.properties;
        assert_eq!(p.value, Some(Money(149_900_000)));
        assert_eq!(p.currency.as_deref(), Some("USD"));
        assert_eq!(p.order_id.as_deref(), Some("1001"));
        assert_eq!(p.content_type.as_deref(), Some("product"));
        assert_eq!(p.description.as_deref(), Some("two mugs"));
        assert_eq!(p.query.as_deref(), Some("mug"));
        let c = &p.contents.as_ref().unwrap()[0];
        assert_eq!(c.content_id.as_deref(), Some("sku-1"));
        assert_eq!(c.quantity, Some(2));
        assert_eq!(c.price, Some(Money(74_950_000)));
        assert_eq!(c.brand.as_deref(), Some("Acme"));
        assert_eq!(e.page.url.as_deref(), Some("https://shop.example/thanks"));
        assert_eq!(
            e.page.referrer.as_deref(),
            Some("https://shop.example/cart")
        );
        assert_eq!(e.consent, Some(crate::model::Consent::Granted));
        assert_eq!(
            (e.position.partition, e.position.offset, e.position.index),
            (3, 42, 0)
        );
    }

    #[test]
    fn minimal_event_has_empty_user_properties_and_page() {
        let e = event(
            Input::Browser,
            r#"{"event_source_id":"P","event":"ViewContent","event_time":"1697783008123"}"#,
        );
        assert_eq!(e.event_time, T + 123);
        assert_eq!(e.event_id, None);
        assert_eq!(e.user, Default::default());
        assert_eq!(e.properties, Default::default());
        assert_eq!(e.page, Default::default());
        assert_eq!(e.consent, None);
    }

    #[test]
    fn numeric_event_id_becomes_text_and_empty_event_id_is_none() {
        let e = event(
            Input::Browser,
            &browser_with(r#""x""#, "0").replace(r#""e1""#, "123456789"),
        );
        assert_eq!(e.event_id.as_deref(), Some("123456789"));
        let e = event(
            Input::Browser,
            &browser_with(r#""x""#, "0").replace(r#""e1""#, r#""  ""#),
        );
        assert_eq!(e.event_id, None);
        let e = event(
            Input::Browser,
            &browser_with(r#""x""#, "0").replace(r#""e1""#, "null"),
        );
        assert_eq!(e.event_id, None);
    }

    #[test]
    fn each_time_format_gives_the_same_millisecond() {
        for time in [
            "1697783008",
            "1697783008000",
            "1697783008.0",
            "\"1697783008\"",
            "\"2023-10-20T06:23:28Z\"",
            "\"2023-10-20T06:23:28.000Z\"",
            "\"2023-10-20T08:23:28+02:00\"",
            "\"2023-10-20T06:23:28.000999Z\"",
        ] {
            let line = format!(r#"{{"event_source_id":"P","event":"E","event_time":{time}}}"#);
            assert_eq!(event(Input::Browser, &line).event_time, T, "{time}");
        }
    }

    #[test]
    fn already_hashed_pii_passes_through_lowercased() {
        let line = browser_with(
            r#""user""#,
            &format!(
                r#"{{"email":"{}","phone":"{PHONE_US}"}}"#,
                JOHN.to_uppercase()
            ),
        );
        let e = event(Input::Browser, &line);
        assert_eq!(e.user.email.as_deref(), Some(JOHN));
        assert_eq!(e.user.phone.as_deref(), Some(PHONE_US));
    }

    #[test]
    fn invalid_phone_is_dropped_not_dead_lettered() {
        let e = event(
            Input::Browser,
            &browser_with(r#""user""#, r#"{"phone":"call me maybe"}"#),
        );
        assert_eq!(e.user.phone, None);
        let e = event(
            Input::Browser,
            &browser_with(r#""user""#, r#"{"phone":"+12345678901234567"}"#),
        );
        assert_eq!(e.user.phone, None);
    }

    #[test]
    fn empty_strings_are_absent_fields() {
        let line = browser_with(
            r#""user""#,
            r#"{"email":"","phone":" ","external_id":"","ttclid":"","ttp":"","ip":"","user_agent":""}"#,
        );
        assert_eq!(event(Input::Browser, &line).user, Default::default());
        let e = event(Input::Browser, &props_with("currency", r#""""#));
        assert_eq!(e.properties.currency, None);
        let e = event(Input::Browser, &props_with("value", r#""""#));
        assert_eq!(e.properties.value, None);
    }

    #[test]
    fn consent_is_case_insensitive_and_unknown_values_are_dead_letters() {
        let e = event(Input::Browser, &browser_with(r#""consent""#, r#""DENIED""#));
        assert_eq!(e.consent, Some(crate::model::Consent::Denied));
        let d = dead(Input::Browser, &browser_with(r#""consent""#, r#""maybe""#));
        assert_dead(&d, R::InvalidShape, "consent");
        let d = dead(Input::Browser, &browser_with(r#""consent""#, "true"));
        assert_dead(&d, R::InvalidShape, "consent");
    }

    #[test]
    fn unicode_emoji_and_rtl_text_pass_through_unchanged() {
        let line = browser_with(
            r#""properties""#,
            r#"{"description":"כוס קפה ☕ 😀 \u202eRTL","query":"مُج","contents":[{"content_name":"🎁 هدية"}]}"#,
        );
        let e = event(Input::Browser, &line);
        assert_eq!(
            e.properties.description.as_deref(),
            Some("כוס קפה ☕ 😀 \u{202e}RTL")
        );
        assert_eq!(e.properties.query.as_deref(), Some("مُج"));
        let c = &e.properties.contents.as_ref().unwrap()[0];
        assert_eq!(c.content_name.as_deref(), Some("🎁 هدية"));
        let e = event(
            Input::Browser,
            &browser_with(r#""user""#, r#"{"email":"ÄLICE@Exämple.de 😀"}"#),
        );
        assert_eq!(e.user.email, Some(sha256_hex("älice@exämple.de 😀")));
    }

    #[test]
    fn missing_required_fields_name_the_field() {
        let cases = [
            (
                r#"{"event":"E","event_time":1697783008}"#,
                "event_source_id",
            ),
            (
                r#"{"event_source_id":"","event":"E","event_time":1697783008}"#,
                "event_source_id",
            ),
            (
                r#"{"event_source_id":"P","event_time":1697783008}"#,
                "event",
            ),
            (
                r#"{"event_source_id":"P","event":"  ","event_time":1697783008}"#,
                "event",
            ),
            (r#"{"event_source_id":"P","event":"E"}"#, "event_time"),
            (
                r#"{"event_source_id":"P","event":"E","event_time":null}"#,
                "event_time",
            ),
        ];
        for (line, field) in cases {
            let d = dead(Input::Browser, line);
            assert_dead(&d, R::MissingField, field);
            assert_eq!(d.original.as_deref(), Some(line));
        }
    }

    #[test]
    fn wrong_types_on_known_fields_are_invalid_shape_naming_the_field() {
        let cases = [
            (browser_with(r#""user""#, r#"{"email":42}"#), "user.email"),
            (
                browser_with(r#""user""#, r#""someone@example.com""#),
                "user",
            ),
            (browser_with(r#""page""#, r#"{"url":["a"]}"#), "page.url"),
            (browser_with(r#""properties""#, "[]"), "properties"),
            (props_with("currency", "840"), "properties.currency"),
            (
                props_with("contents", r#"{"content_id":"x"}"#),
                "properties.contents",
            ),
            (
                props_with("contents", r#"["sku-1"]"#),
                "properties.contents[]",
            ),
            (
                props_with("contents", r#"[{"quantity":"2"}]"#),
                "properties.contents[].quantity",
            ),
            (
                props_with("contents", r#"[{"quantity":-1}]"#),
                "properties.contents[].quantity",
            ),
            (
                props_with("contents", r#"[{"quantity":1.5}]"#),
                "properties.contents[].quantity",
            ),
            (props_with("value", "true"), "properties.value"),
            (props_with("order_id", "{}"), "properties.order_id"),
            (browser_with(r#""event_id""#, r#"{"id":1}"#), "event_id"),
            (browser_with(r#""event""#, "7"), "event"),
        ];
        for (line, field) in cases {
            let d = dead(Input::Browser, &line);
            assert_dead(&d, R::InvalidShape, field);
        }
    }

    #[test]
    fn bad_amounts_are_invalid_amount() {
        for json in [
            r#""NaN""#,
            r#""Infinity""#,
            "-5",
            r#""-0.01""#,
            "1e13",
            "1e300",
            r#""12,50""#,
        ] {
            let d = dead(Input::Browser, &props_with("value", json));
            assert_dead(&d, R::InvalidAmount, "properties.value");
        }
        let d = dead(
            Input::Browser,
            &props_with("contents", r#"[{"price":"NaN"}]"#),
        );
        assert_dead(&d, R::InvalidAmount, "properties.contents[].price");
    }

    #[test]
    fn a_number_beyond_f64_is_invalid_json() {
        let d = dead(Input::Browser, &props_with("value", "1e400"));
        assert_dead(&d, R::InvalidJson, "number out of range");
    }

    #[test]
    fn bad_times_are_invalid_time() {
        for json in [
            "0",
            "-1",
            "946684799",
            "4102444800",
            "1697783008000000",
            r#""yesterday""#,
            r#""2023-02-30T00:00:00Z""#,
            r#""NaN""#,
            "true",
            "{}",
        ] {
            let line = format!(r#"{{"event_source_id":"P","event":"E","event_time":{json}}}"#);
            let d = dead(Input::Browser, &line);
            assert_dead(&d, R::InvalidTime, "event_time");
        }
    }

    #[test]
    fn details_never_quote_the_input_value() {
        let secret = "jane.secret@example.com";
        for line in [
            browser_with(r#""user""#, &format!(r#"{{"email":["{secret}"]}}"#)),
            browser_with(r#""user""#, &format!(r#""{secret}""#)),
            props_with("value", &format!(r#""{secret}""#)),
            format!(r#"{{"event_source_id":"P","event":"E","event_time":"{secret}"}}"#),
            format!(r#"{{"event_source_id":"P","event":"E","event_time":1,"x":"{secret}"#),
        ] {
            let d = dead(Input::Browser, &line);
            assert!(!d.detail.contains("jane"), "{}", d.detail);
        }
    }

    #[test]
    fn truncated_and_non_object_json_are_dead_letters() {
        let truncated = &BROWSER_PURCHASE[..BROWSER_PURCHASE.len() / 2];
        assert_dead(&dead(Input::Browser, truncated), R::InvalidJson, "EOF");
        assert_dead(
            &dead(Input::Browser, "{\"event\":}"),
            R::InvalidJson,
            "not JSON",
        );
        assert_dead(&dead(Input::Browser, "{} {}"), R::InvalidJson, "trailing");
        for line in ["[1,2]", "\"CompletePayment\"", "42", "null", "true"] {
            assert_dead(&dead(Input::Browser, line), R::InvalidShape, "record");
            assert_dead(&dead(Input::Server, line), R::InvalidShape, "record");
        }
    }

    #[test]
    fn deeply_nested_json_neither_overflows_the_stack_nor_parses() {
        // Skipped values are read iteratively by serde_json; known objects hit its
        // recursion limit (128) long before the stack.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_dead(&dead(Input::Server, &deep), R::InvalidShape, "record");
        let line =
            format!(r#"{{"event_source_id":"P","event":"E","event_time":1697783008,"x":{deep}}}"#);
        assert_eq!(event(Input::Browser, &line).event, "E");
        let line = format!(r#"{{"event_source_id":"P","data":[{deep}]}}"#);
        assert_dead(&dead(Input::Server, &line), R::InvalidShape, "data[]");
        let unclosed = "{\"user\":".repeat(50_000);
        assert_dead(&dead(Input::Browser, &unclosed), R::InvalidJson, "not JSON");
    }

    const API2_BODY: &str = r#"{"event_source":"web","event_source_id":"CPIXEL1","test_event_code":"T1",
        "data":[
          {"event":"ViewContent","event_time":1697783000,"event_id":"v-1","user":{"ttp":"ttp-1"}},
          {"event":"AddToCart","event_time":1697783004,"event_id":"a-1",
           "properties":{"value":46,"currency":"EUR","contents":[{"content_id":"sku-1","quantity":1,"price":9.5}]}},
          {"event":"CompletePayment","event_time":1697783008,"event_id":"p-1","event_source_id":"OTHERPIXEL",
           "user":{"email":"john.doe@example.com"},"limited_data_use":false}
        ]}"#;

    fn events_of(out: Vec<Parsed>) -> Vec<crate::model::EventFields> {
        out.into_iter()
            .map(|p| match p {
                Parsed::Record(crate::model::Record::Event(e)) => e.fields().map(|t| t.to_string()),
                other => panic!("expected an event, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn api2_body_with_three_events_gives_three_indexed_events() {
        let events = events_of(parse(Input::Server, API2_BODY));
        assert_eq!(events.len(), 3);
        let names: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names, ["ViewContent", "AddToCart", "CompletePayment"]);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.position.index, i as u32);
            assert_eq!(e.position.input, Input::Server);
            assert_eq!(e.source, crate::model::Source::Server);
        }
        assert_eq!(events[0].pixel, "CPIXEL1");
        assert_eq!(events[1].properties.value, Some(Money(46_000_000)));
        assert_eq!(events[1].properties.currency.as_deref(), Some("EUR"));
        assert_eq!(events[2].pixel, "OTHERPIXEL", "an event's own pixel wins");
        assert_eq!(events[2].user.email.as_deref(), Some(JOHN));
    }

    #[test]
    fn api2_single_event_carrying_its_pixel() {
        let line = r#"{"event_source":"web","event_source_id":"CPIXEL1","event":"Purchase",
            "event_id":99,"event_time":"2023-10-20T06:23:28Z","properties":{"value":"1e2","currency":"jpy"}}"#;
        let e = event(Input::Server, line);
        assert_eq!(
            (e.pixel.as_str(), e.event.as_str()),
            ("CPIXEL1", "Purchase")
        );
        assert_eq!(e.event_id.as_deref(), Some("99"));
        assert_eq!(e.event_time, T);
        assert_eq!(e.properties.value, Some(Money(100_000_000)));
        assert_eq!(e.properties.currency.as_deref(), Some("JPY"));
    }

    const LEGACY_TRACK: &str = r#"{"pixel_code":"CPIXEL1","event":"CompletePayment","event_id":"p-1",
        "timestamp":"2023-10-20T06:23:28.000Z",
        "context":{"user":{"email":"John.Doe@example.com","phone_number":"+16505551234","external_id":"User-42","ttp":"ttp-1"},
          "ad":{"callback":"E.C.P.click"},"page":{"url":"https://shop.example/thanks","referrer":"https://ads.example"},
          "ip":"198.51.100.4","user_agent":"Node SDK"},
        "properties":{"value":149.9,"currency":"USD","contents":[{"content_id":"sku-1","quantity":1,"price":149.9}]}}"#;

    #[test]
    fn legacy_track_maps_context_into_user_and_page() {
        let e = event(Input::Server, LEGACY_TRACK);
        assert_eq!(e.pixel, "CPIXEL1");
        assert_eq!(e.event_time, T);
        assert_eq!(e.user.email.as_deref(), Some(JOHN));
        assert_eq!(e.user.phone.as_deref(), Some(PHONE_US));
        assert_eq!(e.user.external_id, Some(sha256_hex("User-42")));
        assert_eq!(e.user.ttp.as_deref(), Some("ttp-1"));
        assert_eq!(e.user.ttclid.as_deref(), Some("E.C.P.click"));
        assert_eq!(e.user.ip.as_deref(), Some("198.51.100.4"));
        assert_eq!(e.user.user_agent.as_deref(), Some("Node SDK"));
        assert_eq!(e.page.url.as_deref(), Some("https://shop.example/thanks"));
        assert_eq!(e.page.referrer.as_deref(), Some("https://ads.example"));
        assert_eq!(e.properties.value, Some(Money(149_900_000)));
    }

    #[test]
    fn legacy_timestamp_must_be_a_string() {
        let line = r#"{"pixel_code":"P","event":"E","timestamp":1697783008}"#;
        assert_dead(
            &dead(Input::Server, line),
            R::InvalidTime,
            "timestamp: expected a date-time string",
        );
        let line = r#"{"pixel_code":"P","event":"E","timestamp":"2023-10-20T06:23:28.000Z","event_time":1697783009}"#;
        assert_eq!(
            event(Input::Server, line).event_time,
            T + 1000,
            "event_time wins"
        );
    }

    #[test]
    fn legacy_batch_event_gets_its_index_and_the_batch_pixel() {
        let line = r#"{"pixel_code":"BATCHPIXEL","batch":[
            {"type":"track","event":"ViewContent","event_id":"v","timestamp":"2023-10-20T06:23:20.000Z"},
            {"type":"track","pixel_code":"OWNPIXEL","event":"AddToCart","event_id":"a","timestamp":"2023-10-20T06:23:28.000Z",
             "context":{"ad":{"callback":"E.C.P.x"}}}]}"#;
        let events = events_of(parse(Input::Server, line));
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].pixel.as_str(), events[0].position.index),
            ("BATCHPIXEL", 0)
        );
        assert_eq!(
            (events[1].pixel.as_str(), events[1].position.index),
            ("OWNPIXEL", 1)
        );
        assert_eq!(events[1].event_time, T);
        assert_eq!(events[1].user.ttclid.as_deref(), Some("E.C.P.x"));
    }

    #[test]
    fn legacy_batch_without_any_pixel_dead_letters_each_event() {
        let line = r#"{"batch":[{"event":"A","timestamp":"2023-10-20T06:23:28Z"},
                                 {"event":"B","timestamp":"2023-10-20T06:23:28Z"}]}"#;
        let out = parse(Input::Server, line);
        assert_eq!(out.len(), 2);
        for (i, p) in out.into_iter().enumerate() {
            let d = dead_of(vec![p]);
            assert_dead(&d, R::MissingField, "event_source_id");
            assert_eq!(d.position.index, i as u32);
        }
    }

    #[test]
    fn a_bad_event_inside_a_good_body_is_its_own_dead_letter() {
        let bad = r#"{"event":"AddToCart","event_time":"not a time","event_id":"a-1"}"#;
        let line = format!(
            r#"{{"event_source_id":"P","data":[
                {{"event":"ViewContent","event_time":1697783000}},
                {bad},
                7,
                {{"event":"CompletePayment","event_time":1697783008}}]}}"#
        );
        let out = parse(Input::Server, &line);
        assert_eq!(out.len(), 4);
        let (first, second, third, fourth) = (&out[0], &out[1], &out[2], &out[3]);
        assert!(matches!(first, Parsed::Record(_)));
        assert!(
            matches!(fourth, Parsed::Record(crate::model::Record::Event(e)) if e.position.index == 3)
        );
        let Parsed::DeadLetter(d) = second else {
            panic!("{second:?}")
        };
        assert_dead(d, R::InvalidTime, "event_time");
        assert_eq!(d.position.index, 1);
        assert_eq!(
            d.original.as_deref(),
            Some(bad),
            "the event's own text, byte for byte"
        );
        let Parsed::DeadLetter(d) = third else {
            panic!("{third:?}")
        };
        assert_dead(d, R::InvalidShape, "data[]");
        assert_eq!((d.position.index, d.original.as_deref()), (2, Some("7")));
    }

    #[test]
    fn a_number_beyond_f64_in_one_event_loses_only_that_event() {
        let bad = r#"{"event":"AddToCart","event_time":1697783004,"properties":{"value":1e400}}"#;
        for (pixel, key, name) in [
            ("event_source_id", "data", "ViewContent"),
            ("pixel_code", "batch", "x"),
        ] {
            let line = format!(
                r#"{{"{pixel}":"P","{key}":[{{"event":"{name}","event_time":1697783000}},{bad},
                   {{"event":"CompletePayment","event_time":1697783008,"ignored":-1e999}}]}}"#
            );
            let out = parse(Input::Server, &line);
            assert_eq!(out.len(), 3, "{out:?}");
            assert!(matches!(&out[0], Parsed::Record(_)));
            assert!(
                matches!(&out[2], Parsed::Record(crate::model::Record::Event(e)) if e.position.index == 2)
            );
            let Parsed::DeadLetter(d) = &out[1] else {
                panic!("{:?}", out[1])
            };
            assert_dead(d, R::InvalidJson, "number out of range");
            assert_eq!((d.position.index, d.original.as_deref()), (1, Some(bad)));
        }
    }

    #[test]
    fn a_number_beyond_f64_in_the_body_fields_is_one_dead_letter() {
        let line = r#"{"event_source_id":"P","event_time":1e400,"data":[{"event":"E","event_time":1697783008}]}"#;
        let d = dead(Input::Server, line);
        assert_dead(&d, R::InvalidJson, "number out of range");
        assert_eq!(d.original.as_deref(), Some(line));
    }

    #[test]
    fn body_with_empty_or_non_array_data_is_one_dead_letter() {
        for data in ["[]", "{}", "null", "\"events\"", "5"] {
            let line = format!(r#"{{"event_source_id":"P","data":{data}}}"#);
            let d = dead(Input::Server, &line);
            assert_dead(&d, R::InvalidShape, "data");
            assert_eq!(
                (d.position.index, d.original.as_deref()),
                (0, Some(line.as_str()))
            );
        }
        let d = dead(Input::Server, r#"{"pixel_code":"P","batch":[]}"#);
        assert_dead(&d, R::InvalidShape, "batch");
    }

    #[test]
    fn body_pixel_of_the_wrong_type_is_one_dead_letter() {
        let d = dead(
            Input::Server,
            r#"{"event_source_id":12,"data":[{"event":"E","event_time":1697783008}]}"#,
        );
        assert_dead(&d, R::InvalidShape, "event_source_id");
    }

    #[test]
    fn truncated_body_is_one_invalid_json_dead_letter() {
        let d = dead(Input::Server, &API2_BODY[..API2_BODY.len() - 20]);
        assert_dead(&d, R::InvalidJson, "EOF");
        assert_eq!(d.position.index, 0);
    }

    #[test]
    fn redacted_bad_event_in_a_body_keeps_no_original() {
        let engine = crate::config::EngineConfig {
            redact_dead_letters: true,
            ..Default::default()
        };
        let p = super::super::Parser::new(&engine, &Default::default());
        let line = r#"{"event_source_id":"P","data":[{"event":"E"}]}"#;
        let d = dead_of(parse_with(&p, Input::Server, line.as_bytes()));
        assert!(d.redacted);
        assert_eq!((d.original, d.original_base64), (None, None));
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let line = r#"{"event_source_id":"P\u0031","event":"View\"Content\"","event_time":1697783008,
            "page":{"url":"https:\/\/shop.example\/a?b=1&c=\u00e9"}}"#;
        let e = event(Input::Browser, line);
        assert_eq!(e.pixel, "P1");
        assert_eq!(e.event, "View\"Content\"");
        assert_eq!(
            e.page.url.as_deref(),
            Some("https://shop.example/a?b=1&c=é")
        );
    }
}
