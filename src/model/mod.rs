//! The records onecount reads and writes, as plain data.
//!
//! Owns: the typed shape of a parsed input (an [`Event`] from the browser or the server, its
//! text packed in one buffer by `event`; an [`OrderChange`] from the order database) and of
//! every output record. Parsing lives in `parse`, the rules in `engine`; this module has no
//! behaviour beyond small accessors and that packing, so every other module can agree on one
//! vocabulary.
//!
//! Times are Unix milliseconds (`i64`) inside the engine; outputs carry Unix seconds under the
//! Events API's own field name `event_time`. Money is [`Money`]: integer micro-units, so sums are
//! exact and the same in every replay.

use serde::{Deserialize, Serialize};

mod event;
mod merged;

pub use event::{Event, Packer, Span};
pub use merged::MergedConversion;

/// Version stamped on every output record, so a reader can tell formats apart during a rolling
/// upgrade.
pub const FORMAT_VERSION: u32 = 1;

/// Which input topic or file a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    Browser,
    Server,
    Orders,
}

impl Input {
    pub const ALL: [Input; 3] = [Input::Browser, Input::Server, Input::Orders];

    pub fn as_str(self) -> &'static str {
        match self {
            Input::Browser => "browser",
            Input::Server => "server",
            Input::Orders => "orders",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which side sent a copy of an event. Declared browser first: on equal event times the browser
/// copy counts as the first one (the rule in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Browser,
    Server,
}

impl Source {
    pub fn input(self) -> Input {
        match self {
            Source::Browser => Input::Browser,
            Source::Server => Input::Server,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.input().as_str()
    }
}

/// Where an input record sits: a file line or a Kafka offset, and for a server body that
/// batches several events, the event's index inside it. Positions order copies that tie on
/// event time, so they must be stable across replays and restarts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub input: Input,
    /// Kafka partition; 0 for a file.
    pub partition: i32,
    /// Kafka offset, or the 1-based line number in a file.
    pub offset: i64,
    /// Index of the event inside a batched server body; 0 otherwise.
    pub index: u32,
}

/// Consent as the copy states it. Absent consent follows `engine.default_consent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    Granted,
    Denied,
}

/// An amount in micro-units of its currency's major unit (149.90 USD = 149_900_000).
/// Integer so that revenue sums are exact and identical across replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(pub i64);

impl Money {
    pub const MICROS_PER_UNIT: i64 = 1_000_000;

    pub fn to_f64(self) -> f64 {
        self.0 as f64 / Self::MICROS_PER_UNIT as f64
    }

    pub fn abs_diff(self, other: Money) -> Money {
        Money((self.0 - other.0).abs())
    }
}

impl Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.to_f64())
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        Ok(Money((v * Money::MICROS_PER_UNIT as f64).round() as i64))
    }
}

/// Match keys, already normalised: email, phone and external_id are SHA-256 hex (hashed by the
/// parser when they arrived in clear); the rest are passed as sent.
///
/// Generic over its text, as the other parts of an event are: `String` in a record read or
/// written as JSON, `&str` to look into an [`Event`], a span of its text inside one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User<S = String> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttclid: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttp: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<S>,
}

/// The match keys onecount reports coverage and parity for, in output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKey {
    Email,
    Phone,
    ExternalId,
    Ttclid,
    Ttp,
}

impl MatchKey {
    pub const ALL: [MatchKey; 5] = [
        MatchKey::Email,
        MatchKey::Phone,
        MatchKey::ExternalId,
        MatchKey::Ttclid,
        MatchKey::Ttp,
    ];
    /// Keys whose presence on one side only is a parity discrepancy (the QA checklist's
    /// "parameter parity": email, phone, external_id). ttclid and ttp are browser-side by nature.
    pub const PARITY: [MatchKey; 3] = [MatchKey::Email, MatchKey::Phone, MatchKey::ExternalId];

    pub fn as_str(self) -> &'static str {
        match self {
            MatchKey::Email => "email",
            MatchKey::Phone => "phone",
            MatchKey::ExternalId => "external_id",
            MatchKey::Ttclid => "ttclid",
            MatchKey::Ttp => "ttp",
        }
    }
}

impl<S> User<S> {
    pub fn get(&self, key: MatchKey) -> Option<&S> {
        match key {
            MatchKey::Email => self.email.as_ref(),
            MatchKey::Phone => self.phone.as_ref(),
            MatchKey::ExternalId => self.external_id.as_ref(),
            MatchKey::Ttclid => self.ttclid.as_ref(),
            MatchKey::Ttp => self.ttp.as_ref(),
        }
    }

    pub fn map<'a, T>(&'a self, mut f: impl FnMut(&'a S) -> T) -> User<T> {
        User {
            email: self.email.as_ref().map(&mut f),
            phone: self.phone.as_ref().map(&mut f),
            external_id: self.external_id.as_ref().map(&mut f),
            ttclid: self.ttclid.as_ref().map(&mut f),
            ttp: self.ttp.as_ref().map(&mut f),
            ip: self.ip.as_ref().map(&mut f),
            user_agent: self.user_agent.as_ref().map(&mut f),
        }
    }
}

impl<S: AsRef<str>> User<S> {
    pub fn key(&self, key: MatchKey) -> Option<&str> {
        self.get(key).map(AsRef::as_ref)
    }
}

/// One line item of `properties.contents`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content<S = String> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_id: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_name: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_category: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Money>,
}

/// Event parameters. `currency` is upper-cased by the parser; whether it is a valid ISO 4217
/// code is the engine's business (an unknown code is a discrepancy, not a dead letter).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Properties<S = String> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contents: Option<Vec<Content<S>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<S>,
}

impl<S> Content<S> {
    pub fn map<'a, T>(&'a self, mut f: impl FnMut(&'a S) -> T) -> Content<T> {
        Content {
            content_id: self.content_id.as_ref().map(&mut f),
            content_name: self.content_name.as_ref().map(&mut f),
            content_category: self.content_category.as_ref().map(&mut f),
            brand: self.brand.as_ref().map(&mut f),
            quantity: self.quantity,
            price: self.price,
        }
    }
}

impl<S> Properties<S> {
    pub fn map<'a, T>(&'a self, mut f: impl FnMut(&'a S) -> T) -> Properties<T> {
        Properties {
            value: self.value,
            currency: self.currency.as_ref().map(&mut f),
            order_id: self.order_id.as_ref().map(&mut f),
            content_type: self.content_type.as_ref().map(&mut f),
            contents: self
                .contents
                .as_ref()
                .map(|items| items.iter().map(|c| c.map(&mut f)).collect()),
            description: self.description.as_ref().map(&mut f),
            query: self.query.as_ref().map(&mut f),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page<S = String> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer: Option<S>,
}

impl<S> Page<S> {
    pub fn map<'a, T>(&'a self, mut f: impl FnMut(&'a S) -> T) -> Page<T> {
        Page {
            url: self.url.as_ref().map(&mut f),
            referrer: self.referrer.as_ref().map(&mut f),
        }
    }
}

/// One copy of a user action's fields, over any text: `String` for the JSON it is read from and
/// written as (the changelog's buffered and pending copies), `&str` for a look into an
/// [`Event`] (see [`Event::fields`]), a span of its text inside one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFields<S = String> {
    pub source: Source,
    /// The pixel code (`event_source_id`, or `pixel_code` in the older API shape).
    pub pixel: S,
    pub event: S,
    /// `None` when the copy carried no (or an empty) event_id.
    pub event_id: Option<S>,
    /// Unix milliseconds.
    pub event_time: i64,
    pub user: User<S>,
    pub properties: Properties<S>,
    pub page: Page<S>,
    pub consent: Option<Consent>,
    pub position: Position,
}

impl<S> EventFields<S> {
    pub fn map<'a, T>(&'a self, mut f: impl FnMut(&'a S) -> T) -> EventFields<T> {
        EventFields {
            source: self.source,
            pixel: f(&self.pixel),
            event: f(&self.event),
            event_id: self.event_id.as_ref().map(&mut f),
            event_time: self.event_time,
            user: self.user.map(&mut f),
            properties: self.properties.map(&mut f),
            page: self.page.map(&mut f),
            consent: self.consent,
            position: self.position.clone(),
        }
    }
}

/// What a change to an order row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderOp {
    /// Insert, update or snapshot read: the row as it now is.
    Upsert,
    /// The row was deleted: it no longer counts as revenue.
    Delete,
}

/// One change to one order, from a plain JSON row or a Debezium change event.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderChange {
    pub op: OrderOp,
    pub order_id: String,
    /// The order total; `None` on a delete that carries only the key.
    pub total: Option<Money>,
    /// Upper-cased; `None` on a key-only delete.
    pub currency: Option<String>,
    /// Lower-cased (paid, refunded, cancelled, ...).
    pub status: Option<String>,
    /// Unix ms; `None` on a key-only delete.
    pub created_at: Option<i64>,
    /// When the change happened, Unix ms: `updated_at`, else Debezium's `source.ts_ms`, else
    /// `created_at`. This is the orders input's event time.
    pub changed_at: i64,
    /// The pixel the order's shop maps to, when the config maps shops to pixels.
    pub pixel: Option<String>,
    /// Identity of the change in the source database's log (Debezium `source.lsn`), used to
    /// recognise a change redelivered after a connector crash.
    pub lsn: Option<i64>,
    pub position: Position,
}

/// What a parsed input record is. A tombstone (a null value: Debezium writes one after each
/// delete) is counted and skipped. An event is boxed where it is parsed: it is moved several
/// times on its way into the engine, which keeps it boxed while it waits.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Event(Box<Event>),
    Order(OrderChange),
    Tombstone(Position),
}

/// TikTok's standard event names: metric labels take an event name from this list, so custom
/// names (unbounded input) are reported as `other`.
pub const STANDARD_EVENTS: [&str; 23] = [
    "AddPaymentInfo",
    "AddToCart",
    "AddToWishlist",
    "ApplicationApproval",
    "ClickButton",
    "CompletePayment",
    "CompleteRegistration",
    "Contact",
    "CustomizeProduct",
    "Download",
    "FindLocation",
    "InitiateCheckout",
    "Lead",
    "Pageview",
    "PlaceAnOrder",
    "Purchase",
    "Schedule",
    "Search",
    "StartTrial",
    "SubmitApplication",
    "SubmitForm",
    "Subscribe",
    "ViewContent",
];

/// The event name as a bounded label: itself if standard, else `other`.
pub fn standard_event_name(name: &str) -> &str {
    // A scan, not a binary search: comparing two names of different lengths costs nothing, and
    // few of the 23 share a length, where every step of the search compared bytes.
    if STANDARD_EVENTS.contains(&name) {
        name
    } else {
        "other"
    }
}

/// Which sources an emitted conversion saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourcesSeen {
    Browser,
    Server,
    Both,
}

/// Where a conversion's value and currency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    Server,
    Browser,
    None,
}

/// The one record emitted per user action: the merged event under the Events API field names.
/// `Conversion` (of `String`) is the record as read back; the engine emits a
/// [`MergedConversion`], whose JSON is this record with its text borrowed (`Conversion<&str>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversion<S = String> {
    pub format_version: u32,
    /// The dedup key `pixel/event/event_id`; Kafka record key of the conversion.
    pub key: S,
    pub event_source_id: S,
    pub event: S,
    /// Absent when neither copy had one (see the `missing_event_id` discrepancy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<S>,
    /// Unix seconds of the first copy.
    pub event_time: i64,
    pub user: User<S>,
    pub properties: Properties<S>,
    #[serde(skip_serializing_if = "is_default_page", default)]
    pub page: Page<S>,
    pub sources: SourcesSeen,
    /// Which copy came first (its fields win the merge).
    pub first_source: Source,
    pub value_source: ValueSource,
}

fn is_default_page<S>(p: &Page<S>) -> bool {
    p.url.is_none() && p.referrer.is_none()
}

/// Every kind of discrepancy onecount reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscrepancyKind {
    /// A copy without event_id: emitted as its own conversion, but it cannot be deduplicated.
    MissingEventId,
    /// A purchase without order_id: emitted, but not reconciled.
    MissingOrderId,
    /// A second purchase action for an order already converted (a reloaded thank-you page).
    DuplicateOrderConversion,
    /// A currency that is not an ISO 4217 code.
    InvalidCurrency,
    /// Browser and server copies of one action disagree on value.
    ValueParity,
    /// Browser and server copies of one action disagree on currency.
    CurrencyParity,
    /// A match key present on one copy only.
    MatchKeyParity,
    /// A server copy of an action whose browser copy denied consent.
    ConsentViolation,
    /// A denied copy that arrived after its action had been emitted.
    ConsentAfterEmit,
    /// An order that no conversion claimed within `order_wait` (signal loss).
    OrderWithoutConversion,
    /// A purchase conversion whose order never came within `order_wait`.
    ConversionWithoutOrder,
    /// A conversion's value differs from its order's total beyond `value_tolerance`.
    ValueMismatch,
    /// A conversion's currency differs from its order's.
    CurrencyMismatch,
}

impl DiscrepancyKind {
    pub const ALL: [DiscrepancyKind; 13] = [
        DiscrepancyKind::MissingEventId,
        DiscrepancyKind::MissingOrderId,
        DiscrepancyKind::DuplicateOrderConversion,
        DiscrepancyKind::InvalidCurrency,
        DiscrepancyKind::ValueParity,
        DiscrepancyKind::CurrencyParity,
        DiscrepancyKind::MatchKeyParity,
        DiscrepancyKind::ConsentViolation,
        DiscrepancyKind::ConsentAfterEmit,
        DiscrepancyKind::OrderWithoutConversion,
        DiscrepancyKind::ConversionWithoutOrder,
        DiscrepancyKind::ValueMismatch,
        DiscrepancyKind::CurrencyMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DiscrepancyKind::MissingEventId => "missing_event_id",
            DiscrepancyKind::MissingOrderId => "missing_order_id",
            DiscrepancyKind::DuplicateOrderConversion => "duplicate_order_conversion",
            DiscrepancyKind::InvalidCurrency => "invalid_currency",
            DiscrepancyKind::ValueParity => "value_parity",
            DiscrepancyKind::CurrencyParity => "currency_parity",
            DiscrepancyKind::MatchKeyParity => "match_key_parity",
            DiscrepancyKind::ConsentViolation => "consent_violation",
            DiscrepancyKind::ConsentAfterEmit => "consent_after_emit",
            DiscrepancyKind::OrderWithoutConversion => "order_without_conversion",
            DiscrepancyKind::ConversionWithoutOrder => "conversion_without_order",
            DiscrepancyKind::ValueMismatch => "value_mismatch",
            DiscrepancyKind::CurrencyMismatch => "currency_mismatch",
        }
    }
}

/// A typed finding: the kind plus the ids and values it is about. Fields that do not apply to
/// a kind are absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discrepancy {
    pub format_version: u32,
    pub kind: DiscrepancyKind,
    /// Kafka record key: the kind plus the ids, unique per finding.
    pub key: String,
    /// Unix seconds of the action or order the finding is about.
    pub time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_source_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The input a single-copy finding is about (missing_event_id, consent_after_emit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_key: Option<MatchKey>,
    /// The side that has the match key (match_key_parity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present_on: Option<Source>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser_value: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_value: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser_currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion_value: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion_currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_total: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_currency: Option<String>,
    /// The offending code (invalid_currency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

impl Discrepancy {
    /// A finding of `kind` about the thing keyed `key` at `time_ms`; the caller fills in the
    /// ids and values that apply.
    pub fn new(kind: DiscrepancyKind, key: String, time_ms: i64) -> Self {
        Discrepancy {
            format_version: FORMAT_VERSION,
            kind,
            key,
            time: time_ms.div_euclid(1000),
            event_source_id: None,
            event: None,
            event_id: None,
            order_id: None,
            source: None,
            match_key: None,
            present_on: None,
            browser_value: None,
            server_value: None,
            browser_currency: None,
            server_currency: None,
            conversion_value: None,
            conversion_currency: None,
            order_total: None,
            order_currency: None,
            currency: None,
        }
    }
}

/// Why an input record could not be used. Bounded: it is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Empty line or empty message.
    Empty,
    /// Larger than `max_record_bytes`.
    TooLarge,
    /// Not UTF-8 or not JSON.
    InvalidJson,
    /// JSON, but not the shape of this input (wrong types, not an object, an empty batch).
    InvalidShape,
    /// A required field is absent or empty.
    MissingField,
    /// event_time / timestamp / created_at absent, unparseable or out of range.
    InvalidTime,
    /// value / total not a finite number in range.
    InvalidAmount,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Empty => "empty",
            DeadLetterReason::TooLarge => "too_large",
            DeadLetterReason::InvalidJson => "invalid_json",
            DeadLetterReason::InvalidShape => "invalid_shape",
            DeadLetterReason::MissingField => "missing_field",
            DeadLetterReason::InvalidTime => "invalid_time",
            DeadLetterReason::InvalidAmount => "invalid_amount",
        }
    }
}

/// An input record quarantined for reprocessing. The one output that keeps original bytes;
/// `redact_dead_letters` drops them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    pub format_version: u32,
    pub input: Input,
    pub position: Position,
    pub reason: DeadLetterReason,
    /// Which field or rule failed, in our words (never the offending value: it may be PII).
    pub detail: String,
    /// The original bytes as text when they are UTF-8 ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// ... else base64. Both absent when redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_base64: Option<String>,
    pub redacted: bool,
}

/// Tracked vs backend revenue for one pixel, currency and UTC hour. Re-emitted with a higher
/// `version` when a late conversion, a refund or a cancel changes it; keyed so a compacted topic
/// keeps the latest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevenueWindow {
    pub format_version: u32,
    /// `pixel/currency/hour_start`.
    pub key: String,
    pub event_source_id: String,
    pub currency: String,
    /// Unix seconds of the hour's start (UTC).
    pub hour_start: i64,
    pub version: u32,
    /// Orders created in the hour that count as revenue (not cancelled, refunded or deleted).
    pub orders: u64,
    /// Purchase conversions whose event_time falls in the hour.
    pub purchases: u64,
    /// Orders of the hour that a conversion claimed.
    pub matched: u64,
    pub tracked_revenue: Money,
    pub backend_revenue: Money,
    /// (tracked - backend) / backend; absent when backend revenue is zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_ratio: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_event_names_pass_and_others_are_bounded() {
        for name in STANDARD_EVENTS {
            assert_eq!(standard_event_name(name), name);
        }
        for name in [
            "",
            "viewcontent",
            "ViewContent ",
            "Purchase2",
            "MyCustomEvent",
            "Lea",
        ] {
            assert_eq!(standard_event_name(name), "other", "{name:?}");
        }
    }
}
