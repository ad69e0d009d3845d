//! Turns input bytes into typed records or dead letters.
//!
//! Owns: the accepted input shapes (browser Pixel events; Events API 2.0 bodies, single events
//! and the older pixel/track and pixel/batch shapes; order rows, plain or in a Debezium envelope),
//! time and amount parsing, and hashing of clear PII (via `pii`). Must not: apply any dedup or
//! reconciliation rule, keep state, or put an input value in an error message (it may be PII).
//!
//! Layout: this file checks what holds for every input (null, size, blank, UTF-8) and builds
//! dead letters; `event` reads browser and server events, `order` order changes; `json` is the
//! lenient borrowed reader they share, `time`, `amount` and `decimal` the value rules. Each
//! failing record gets exactly one dead letter per event it held (a body that cannot be split
//! is one), so the accounting buckets add up.

mod amount;
mod decimal;
mod event;
mod json;
mod order;
mod time;

pub use amount::AmountError;
pub use event::EventError;
pub use json::{JsonError, WrongType};
pub use order::OrderError;
pub use time::{parse_datetime_ms, TimeError};

use base64::Engine;

use std::cell::RefCell;

use crate::config::{EngineConfig, OrdersConfig};
use crate::model::{DeadLetter, DeadLetterReason, Input, Position, Record, FORMAT_VERSION};

/// What one input record became: records (a server body may hold several events) and dead
/// letters (a body may hold bad events beside good ones).
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Record(Record),
    DeadLetter(DeadLetter),
}

/// Parses input records for one configuration. Holds no state between records that changes
/// what they parse to (a memo of the last order schema only saves reading it again).
pub struct Parser {
    engine: EngineConfig,
    orders: OrdersConfig,
    schemas: order::SchemaMemo,
    /// The working buffer events are packed through, kept so packing allocates once per event.
    event_text: RefCell<String>,
}

/// An error that dead-letters a record: its reason, and (`Display`) the detail, which names the
/// field or rule and never the input value.
pub(crate) trait Reject: std::fmt::Display {
    fn reason(&self) -> DeadLetterReason;
}

/// What is wrong with a record before its shape is even looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("null message value: only the orders input has tombstones")]
    Null,
    #[error("empty or whitespace-only record")]
    Blank,
    #[error("record is {size} bytes, over engine.max_record_bytes ({max}); not parsed")]
    TooLarge { size: usize, max: usize },
    #[error("not UTF-8: invalid byte at offset {0}")]
    NotUtf8(usize),
}

impl Reject for InputError {
    fn reason(&self) -> DeadLetterReason {
        match self {
            InputError::Null | InputError::Blank => DeadLetterReason::Empty,
            InputError::TooLarge { .. } => DeadLetterReason::TooLarge,
            InputError::NotUtf8(_) => DeadLetterReason::InvalidJson,
        }
    }
}

/// Where the parsers of one record put what they produce.
pub(crate) struct Sink<'p> {
    redact: bool,
    /// Position of the record; events of a body differ only in `index`.
    position: Position,
    /// The whole record, the `original` of its dead letters unless one event's text is given.
    record: &'p [u8],
    out: &'p mut Vec<Parsed>,
    /// Where an event's text is gathered before it is packed (see `model::Packer`).
    pub(crate) event_text: &'p mut String,
}

impl Sink<'_> {
    pub(crate) fn position(&self, index: u32) -> Position {
        Position {
            index,
            ..self.position.clone()
        }
    }

    pub(crate) fn record(&mut self, record: Record) {
        self.out.push(Parsed::Record(record));
    }

    /// Whether dead letters keep original bytes (not redacted).
    pub(crate) fn keeps_original(&self) -> bool {
        !self.redact
    }

    /// Dead-letters event `index` of the record, keeping the whole record as its original.
    pub(crate) fn reject(&mut self, index: u32, error: &dyn Reject) {
        let record = self.record;
        self.reject_with_original(index, error, record);
    }

    /// Dead-letters event `index` of the record with `original` as its original bytes.
    pub(crate) fn reject_with_original(&mut self, index: u32, error: &dyn Reject, original: &[u8]) {
        let (original, original_base64) = if self.redact {
            (None, None)
        } else {
            match std::str::from_utf8(original) {
                Ok(text) => (Some(text.to_owned()), None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(original)),
                ),
            }
        };
        let position = self.position(index);
        self.out.push(Parsed::DeadLetter(DeadLetter {
            format_version: FORMAT_VERSION,
            input: position.input,
            position,
            reason: error.reason(),
            detail: error.to_string(),
            original,
            original_base64,
            redacted: self.redact,
        }));
    }
}

impl Parser {
    pub fn new(engine: &EngineConfig, orders: &OrdersConfig) -> Parser {
        Parser {
            engine: engine.clone(),
            orders: orders.clone(),
            schemas: order::SchemaMemo::default(),
            event_text: RefCell::default(),
        }
    }

    /// Parses one record of `input` found at (`partition`, `offset`): a file line or a Kafka
    /// message value (`None` for a null value, i.e. a tombstone), appending what it became to
    /// `out`. Never panics, whatever the bytes.
    pub fn parse(
        &self,
        input: Input,
        partition: i32,
        offset: i64,
        bytes: Option<&[u8]>,
        out: &mut Vec<Parsed>,
    ) {
        let position = Position {
            input,
            partition,
            offset,
            index: 0,
        };
        let mut event_text = self.event_text.borrow_mut();
        let mut sink = Sink {
            redact: self.engine.redact_dead_letters,
            position,
            record: bytes.unwrap_or_default(),
            out,
            event_text: &mut event_text,
        };
        let Some(bytes) = bytes else {
            return match input {
                Input::Orders => sink.record(Record::Tombstone(sink.position(0))),
                Input::Browser | Input::Server => sink.reject(0, &InputError::Null),
            };
        };
        if bytes.len() > self.engine.max_record_bytes {
            let error = InputError::TooLarge {
                size: bytes.len(),
                max: self.engine.max_record_bytes,
            };
            return sink.reject(0, &error);
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return sink.reject(0, &InputError::Blank);
        }
        // SIMD validation (under half the instructions of the standard library's); only an
        // invalid record is validated again, for the offset its dead letter names.
        let text = match simdutf8::basic::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => return sink.reject(0, &InputError::NotUtf8(e.valid_up_to())),
            },
        };
        // A byte-order mark is not JSON; an editor may still have put one there.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        match input {
            Input::Browser => event::parse_browser(text, &mut sink),
            Input::Server => event::parse_server(text, &mut sink),
            Input::Orders => {
                match order::parse_order(text, &self.orders, &self.schemas, sink.position(0)) {
                    Ok(record) => sink.record(record),
                    Err(e) => sink.reject(0, &e),
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testkit {
    //! Helpers shared by the parser's unit tests.
    use super::*;
    use crate::model::{DeadLetter, EventFields, OrderChange};

    pub fn parser() -> Parser {
        Parser::new(&EngineConfig::default(), &OrdersConfig::default())
    }

    pub fn parse_with(p: &Parser, input: Input, bytes: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        p.parse(input, 3, 42, Some(bytes), &mut out);
        out
    }

    pub fn parse(input: Input, text: &str) -> Vec<Parsed> {
        parse_with(&parser(), input, text.as_bytes())
    }

    /// The fields of the one event `text` must give.
    #[track_caller]
    pub fn event(input: Input, text: &str) -> EventFields {
        match one(parse(input, text)) {
            Parsed::Record(Record::Event(e)) => e.fields().map(|t| t.to_string()),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The one dead letter `text` must give.
    #[track_caller]
    pub fn dead(input: Input, text: &str) -> DeadLetter {
        dead_of(parse(input, text))
    }

    #[track_caller]
    pub fn dead_of(out: Vec<Parsed>) -> DeadLetter {
        match one(out) {
            Parsed::DeadLetter(d) => d,
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn order_with(p: &Parser, text: &str) -> OrderChange {
        match one(parse_with(p, Input::Orders, text.as_bytes())) {
            Parsed::Record(Record::Order(o)) => o,
            other => panic!("expected an order change, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn one(mut out: Vec<Parsed>) -> Parsed {
        assert_eq!(out.len(), 1, "expected one output, got {out:?}");
        out.remove(0)
    }

    /// Asserts a dead letter's reason and that its detail mentions `field`.
    #[track_caller]
    pub fn assert_dead(d: &DeadLetter, reason: DeadLetterReason, field: &str) {
        assert_eq!(d.reason, reason, "{d:?}");
        assert!(
            d.detail.contains(field),
            "detail {:?} lacks {field:?}",
            d.detail
        );
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_and_whitespace_records_are_empty_dead_letters() {
        for input in Input::ALL {
            for text in ["", " ", "\n", "\r\n\t  "] {
                let d = dead(input, text);
                assert_eq!(d.reason, DeadLetterReason::Empty, "{input:?} {text:?}");
                assert_eq!(d.original.as_deref(), Some(text));
            }
        }
    }

    #[test]
    fn null_value_is_a_tombstone_on_orders_and_empty_elsewhere() {
        let p = parser();
        let mut out = Vec::new();
        p.parse(Input::Orders, 0, 7, None, &mut out);
        let expected = Position {
            input: Input::Orders,
            partition: 0,
            offset: 7,
            index: 0,
        };
        assert_eq!(out, vec![Parsed::Record(Record::Tombstone(expected))]);
        for input in [Input::Browser, Input::Server] {
            let mut out = Vec::new();
            p.parse(input, 0, 7, None, &mut out);
            let d = dead_of(out);
            assert_eq!(d.reason, DeadLetterReason::Empty);
            assert_eq!(d.original.as_deref(), Some(""));
        }
    }

    #[test]
    fn a_record_over_max_record_bytes_is_too_large_and_not_parsed() {
        let line = format!(r#"{{"event":"{}"}}"#, "x".repeat(1_100_000));
        for input in Input::ALL {
            let d = dead_of(parse(input, &line));
            assert_dead(&d, DeadLetterReason::TooLarge, "max_record_bytes");
            assert!(
                d.detail.contains(&format!("{} bytes", line.len())),
                "{}",
                d.detail
            );
            assert_eq!(d.original.as_ref().map(String::len), Some(line.len()));
        }
    }

    #[test]
    fn invalid_utf8_is_invalid_json_with_the_original_in_base64() {
        let bytes = b"{\"event\":\"Purchase\xff\xfe\"}";
        for input in Input::ALL {
            let d = dead_of(parse_with(&parser(), input, bytes));
            assert_dead(&d, DeadLetterReason::InvalidJson, "UTF-8");
            assert_eq!(d.original, None);
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(d.original_base64.unwrap())
                .unwrap();
            assert_eq!(decoded, bytes);
        }
    }

    #[test]
    fn dead_letters_carry_version_input_and_position() {
        let d = dead(Input::Server, "{not json");
        assert_eq!(d.format_version, FORMAT_VERSION);
        assert_eq!(d.input, Input::Server);
        let expected = Position {
            input: Input::Server,
            partition: 3,
            offset: 42,
            index: 0,
        };
        assert_eq!(d.position, expected);
        assert!(!d.redacted);
    }

    #[test]
    fn redaction_drops_both_original_fields() {
        let engine = EngineConfig {
            redact_dead_letters: true,
            ..EngineConfig::default()
        };
        let p = Parser::new(&engine, &OrdersConfig::default());
        let d = dead_of(parse_with(
            &p,
            Input::Browser,
            br#"{"event":"x","user":{"email":"a@b.c"}}"#,
        ));
        assert!(d.redacted);
        assert_eq!((d.original, d.original_base64), (None, None));
        let d = dead_of(parse_with(&p, Input::Orders, b"\xff"));
        assert!(d.redacted);
        assert_eq!((d.original, d.original_base64), (None, None));
    }

    #[test]
    fn a_byte_order_mark_before_the_json_is_ignored() {
        let line = "\u{feff}{\"event_source_id\":\"P\",\"event\":\"ViewContent\",\"event_time\":1697783008}";
        assert_eq!(event(Input::Browser, line).event, "ViewContent");
    }

    fn any_input() -> impl Strategy<Value = Input> {
        prop_oneof![
            Just(Input::Browser),
            Just(Input::Server),
            Just(Input::Orders)
        ]
    }

    /// JSON-ish text: the characters JSON is made of, the field names the parser looks for.
    fn jsonish() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just(":".to_owned()),
            Just(",".to_owned()),
            Just("null".to_owned()),
            Just("\"data\"".to_owned()),
            Just("\"batch\"".to_owned()),
            Just("\"event\"".to_owned()),
            Just("\"event_time\"".to_owned()),
            Just("\"timestamp\"".to_owned()),
            Just("\"event_source_id\"".to_owned()),
            Just("\"properties\"".to_owned()),
            Just("\"value\"".to_owned()),
            Just("\"contents\"".to_owned()),
            Just("\"user\"".to_owned()),
            Just("\"context\"".to_owned()),
            Just("\"op\"".to_owned()),
            Just("\"after\"".to_owned()),
            Just("\"before\"".to_owned()),
            Just("\"schema\"".to_owned()),
            Just("\"payload\"".to_owned()),
            Just("\"total\"".to_owned()),
            Just("\"Oo4=\"".to_owned()),
            Just("\"2024-05-01T10:00:00.123456Z\"".to_owned()),
            Just("1697783008".to_owned()),
            Just("-1e999".to_owned()),
            Just("\"NaN\"".to_owned()),
            "-?[0-9]{1,20}(\\.[0-9]{1,8})?(e-?[0-9]{1,3})?",
            "\"[a-zA-Z0-9 @.+\\-:\u{1F600}\u{05D0}\\\\]{0,12}\"",
        ];
        proptest::collection::vec(token, 0..40).prop_map(|t| t.concat())
    }

    /// Generated JSON values over the field names the parser reads, nested a few levels.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[ -~\u{1F600}\u{0627}]{0,10}".prop_map(Value::String),
            prop_oneof![
                Just("Oo4="),
                Just("1e2"),
                Just("149.90"),
                Just("d"),
                Just("c")
            ]
            .prop_map(|s| Value::String(s.to_owned())),
            (946_684_800u64..4_102_444_800).prop_map(Value::from),
        ];
        let key = prop_oneof![
            Just("event_source_id"),
            Just("pixel_code"),
            Just("event"),
            Just("event_id"),
            Just("event_time"),
            Just("timestamp"),
            Just("user"),
            Just("email"),
            Just("phone"),
            Just("context"),
            Just("ad"),
            Just("callback"),
            Just("properties"),
            Just("value"),
            Just("currency"),
            Just("contents"),
            Just("quantity"),
            Just("price"),
            Just("page"),
            Just("consent"),
            Just("data"),
            Just("batch"),
            Just("op"),
            Just("after"),
            Just("before"),
            Just("source"),
            Just("lsn"),
            Just("ts_ms"),
            Just("schema"),
            Just("payload"),
            Just("fields"),
            Just("field"),
            Just("parameters"),
            Just("scale"),
            Just("order_id"),
            Just("total"),
            Just("created_at"),
            Just("updated_at"),
            Just("status"),
            Just("shop"),
        ];
        leaf.prop_recursive(4, 48, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..8).prop_map(|entries| {
                    serde_json::Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    /// Parsing must not panic and must account for the record: at least one output, and
    /// every dead letter says why in our words.
    fn check(input: Input, bytes: &[u8]) {
        let mut out = Vec::new();
        parser().parse(input, 0, 1, Some(bytes), &mut out);
        assert!(!out.is_empty());
        for parsed in &out {
            if let Parsed::DeadLetter(d) = parsed {
                assert!(!d.detail.is_empty());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_never_panics_on_arbitrary_bytes(
            input in any_input(),
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            check(input, &bytes);
        }

        #[test]
        fn parse_never_panics_on_jsonish_text(input in any_input(), text in jsonish()) {
            check(input, text.as_bytes());
        }

        #[test]
        fn parse_never_panics_on_generated_json(input in any_input(), value in json_value()) {
            check(input, value.to_string().as_bytes());
        }
    }
}
