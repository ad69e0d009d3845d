//! [`Event`]: one parsed copy, its text packed in one buffer.
//!
//! Owns: the packed layout (every text field a [`Span`] of one `Box<str>`), packing from any
//! [`EventFields`] and looking back into it. Must not: interpret a field (that is `parse` and
//! the engine).
//!
//! Why packed: a copy waits in the engine for its other copy (the merge window plus the allowed
//! lateness, minutes of event time), so at high rates the copies waiting outgrow the CPU caches
//! and each is read cold when its action is released. With a `String` per field that was about
//! twenty scattered allocations per copy, each a cache miss behind a pointer; packed, it is one
//! allocation read front to back (BENCHMARKS.md, session 10).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Consent, EventFields, MatchKey, Money, Page, Position, Properties, Source, User};

/// Starts loading `len` bytes from `start` into the cache. A hint: no effect on any result.
#[inline]
fn prefetch_bytes(start: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for line in 0..len.div_ceil(64) {
            // SAFETY: SSE is part of every x86_64 target, and a prefetch never faults: it
            // reads nothing the program sees, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.cast::<i8>().wrapping_add(line * 64)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

/// Where one text field lies in its event's buffer; made only by a [`Packer`]. `u32` keeps a
/// packed event small: an event's text is bounded by `engine.max_record_bytes`, which the config
/// caps well below 4 GiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    len: u32,
}

/// One copy of a user action, as either side sent it, parsed and with PII hashed.
#[derive(Clone)]
pub struct Event {
    pub source: Source,
    /// Unix milliseconds.
    pub event_time: i64,
    pub consent: Option<Consent>,
    pub position: Position,
    /// Every text field, one after another.
    text: Box<str>,
    pixel: Span,
    event: Span,
    event_id: Option<Span>,
    user: User<Span>,
    properties: Properties<Span>,
    page: Page<Span>,
}

impl Event {
    /// Packs `fields` (a record read back from JSON, a test's copy); the parser packs as it
    /// reads, with a [`Packer`].
    pub fn pack<S: AsRef<str>>(fields: &EventFields<S>) -> Event {
        let mut buf = String::new();
        let mut p = Packer::new(&mut buf);
        let spans = fields.map(|t| p.put(t.as_ref()));
        p.finish(spans)
    }

    /// Every field, the text borrowed from this event.
    pub fn fields(&self) -> EventFields<&str> {
        Event::merged_fields(self, None)
    }

    fn str(&self, span: Span) -> &str {
        let (start, end) = (span.start as usize, (span.start + span.len) as usize);
        debug_assert!(self.text.is_char_boundary(start) && self.text.is_char_boundary(end));
        // SAFETY: spans are made only by `pack`, each around one whole `&str` it appended to
        // this same text, so both ends are in bounds and on character boundaries. (A checked
        // slice tests both boundaries on every read; a conversion reads each field several
        // times.)
        unsafe { self.text.get_unchecked(start..end) }
    }

    /// The merge rule's fields: `first`'s, each one it lacks taken from `other` (`contents` as
    /// a whole), the event_id likewise; value and currency are `first`'s (the caller applies
    /// the value-authority rule). Read field by field: the engine reads a conversion a few
    /// times, and only the chosen contents are collected.
    pub fn merged_fields<'a>(first: &'a Event, other: Option<&'a Event>) -> EventFields<&'a str> {
        let pick = |get: fn(&Event) -> Option<Span>| match (get(first), other) {
            (Some(span), _) => Some(first.str(span)),
            (None, Some(o)) => get(o).map(|span| o.str(span)),
            (None, None) => None,
        };
        let contents = match (&first.properties.contents, other) {
            (Some(items), _) => Some((first, items)),
            (None, Some(o)) => o.properties.contents.as_ref().map(|items| (o, items)),
            (None, None) => None,
        }
        .map(|(e, items)| items.iter().map(|c| c.map(|s| e.str(*s))).collect());
        EventFields {
            source: first.source,
            pixel: first.pixel(),
            event: first.name(),
            event_id: pick(|e| e.event_id),
            event_time: first.event_time,
            user: User {
                email: pick(|e| e.user.email),
                phone: pick(|e| e.user.phone),
                external_id: pick(|e| e.user.external_id),
                ttclid: pick(|e| e.user.ttclid),
                ttp: pick(|e| e.user.ttp),
                ip: pick(|e| e.user.ip),
                user_agent: pick(|e| e.user.user_agent),
            },
            properties: Properties {
                value: first.properties.value,
                currency: first.currency(),
                order_id: pick(|e| e.properties.order_id),
                content_type: pick(|e| e.properties.content_type),
                contents,
                description: pick(|e| e.properties.description),
                query: pick(|e| e.properties.query),
            },
            page: Page {
                url: pick(|e| e.page.url),
                referrer: pick(|e| e.page.referrer),
            },
            consent: first.consent,
            position: first.position.clone(),
        }
    }

    /// Starts loading this copy's fields into the cache, for a caller that knows it reads them
    /// next: the engine applies buffered copies in event-time order, minutes of event time
    /// after they were parsed, when they have long left the cache. A hint only: no effect on
    /// any result.
    #[inline]
    pub fn prefetch(&self) {
        prefetch_bytes((self as *const Event).cast(), std::mem::size_of::<Event>());
    }

    /// Starts loading this copy's text (the fields' bytes, in their own allocation), for a
    /// caller that loaded the copy itself a step earlier with [`Event::prefetch`]: reading the
    /// text's address is then no wait. A hint only, like `prefetch`.
    #[inline]
    pub fn prefetch_text(&self) {
        prefetch_bytes(self.text.as_ptr(), self.text.len());
    }

    /// The pixel code.
    pub fn pixel(&self) -> &str {
        self.str(self.pixel)
    }

    /// The event name (`CompletePayment`, ...).
    pub fn name(&self) -> &str {
        self.str(self.event)
    }

    pub fn event_id(&self) -> Option<&str> {
        self.event_id.map(|s| self.str(s))
    }

    pub fn user_key(&self, key: MatchKey) -> Option<&str> {
        self.user.get(key).map(|s| self.str(*s))
    }

    pub fn value(&self) -> Option<Money> {
        self.properties.value
    }

    pub fn currency(&self) -> Option<&str> {
        self.properties.currency.map(|s| self.str(s))
    }

    pub fn order_id(&self) -> Option<&str> {
        self.properties.order_id.map(|s| self.str(s))
    }
}

/// Builds one event's text: each field is appended as it is read and its span noted, then
/// [`Packer::finish`] copies the text once into the event's exactly sized buffer. The working
/// buffer is the caller's, reused from event to event, so packing allocates once per event.
pub struct Packer<'b> {
    text: &'b mut String,
}

impl<'b> Packer<'b> {
    pub fn new(buf: &'b mut String) -> Packer<'b> {
        buf.clear();
        Packer { text: buf }
    }

    #[inline]
    pub fn put(&mut self, t: &str) -> Span {
        self.put_with(|text| text.push_str(t))
    }

    #[inline]
    pub fn opt<S: AsRef<str>>(&mut self, t: &Option<S>) -> Option<Span> {
        t.as_ref().map(|t| self.put(t.as_ref()))
    }

    /// The span of what `write` appends (a field normalised on its way in).
    #[inline]
    pub fn put_with(&mut self, write: impl FnOnce(&mut String)) -> Span {
        let start = self.text.len();
        write(self.text);
        Span {
            start: offset(start),
            len: offset(self.text.len() - start),
        }
    }

    /// The event whose text fields are `spans` of what was put.
    pub fn finish(self, spans: EventFields<Span>) -> Event {
        Event {
            source: spans.source,
            event_time: spans.event_time,
            consent: spans.consent,
            position: spans.position,
            text: Box::from(self.text.as_str()),
            pixel: spans.pixel,
            event: spans.event,
            event_id: spans.event_id,
            user: spans.user,
            properties: spans.properties,
            page: spans.page,
        }
    }
}

fn offset(n: usize) -> u32 {
    u32::try_from(n).expect("an event's text is bounded by engine.max_record_bytes (< 4 GiB)")
}

impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.fields() == other.fields()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fields().fmt(f)
    }
}

/// As [`EventFields`]: the changelog's JSON for a waiting copy is unchanged by the packing.
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.fields().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EventFields::<String>::deserialize(d).map(|f| Event::pack(&f))
    }
}

/// A bare copy for unit tests elsewhere in the crate: pixel `P`, `AddToCart`, event_id `e1`,
/// no user, properties or page.
#[cfg(test)]
impl Event {
    pub(crate) fn bare(source: Source, event_time: i64, position: Position) -> Event {
        Event::pack(&EventFields::<String> {
            source,
            pixel: "P".into(),
            event: "AddToCart".into(),
            event_id: Some("e1".into()),
            event_time,
            user: Default::default(),
            properties: Default::default(),
            page: Default::default(),
            consent: None,
            position,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Content, Input};

    fn fields() -> EventFields {
        EventFields {
            source: Source::Browser,
            pixel: "PIXEL".into(),
            event: "CompletePayment".into(),
            event_id: Some("e-1".into()),
            event_time: 1_700_000_000_000,
            user: User {
                email: Some("a".repeat(64)),
                ttp: Some("ttp-1".into()),
                ..User::default()
            },
            properties: Properties {
                value: Some(Money(1_500_000)),
                currency: Some("EUR".into()),
                order_id: Some("o-9".into()),
                contents: Some(vec![
                    Content {
                        content_id: Some("sku-1".into()),
                        quantity: Some(2),
                        ..Content::default()
                    },
                    Content::default(),
                ]),
                query: Some(String::new()),
                ..Properties::default()
            },
            page: Page {
                url: None,
                referrer: Some("https://ref.example/ü".into()),
            },
            consent: Some(Consent::Granted),
            position: Position {
                input: Input::Browser,
                partition: 3,
                offset: 17,
                index: 2,
            },
        }
    }

    #[test]
    fn packing_keeps_every_field() {
        let f = fields();
        let e = Event::pack(&f);
        assert_eq!(e.fields(), f.map(|t| t.as_str()));
        assert_eq!(e.pixel(), "PIXEL");
        assert_eq!(e.name(), "CompletePayment");
        assert_eq!(e.event_id(), Some("e-1"));
        assert_eq!(e.user_key(MatchKey::Email), Some(&*"a".repeat(64)));
        assert_eq!(e.user_key(MatchKey::Phone), None);
        assert_eq!(e.currency(), Some("EUR"));
        assert_eq!(e.order_id(), Some("o-9"));
        assert_eq!(e.value(), Some(Money(1_500_000)));
    }

    #[test]
    fn the_text_is_one_exact_buffer() {
        let f = fields();
        let e = Event::pack(&f);
        let expected = "PIXEL".len()
            + "CompletePayment".len()
            + "e-1".len()
            + 64
            + "ttp-1".len()
            + "EUR".len()
            + "o-9".len()
            + "sku-1".len()
            + "https://ref.example/ü".len();
        assert_eq!(e.text.len(), expected);
    }

    #[test]
    fn json_is_that_of_its_fields_and_reads_back() {
        let f = fields();
        let e = Event::pack(&f);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, serde_json::to_string(&f).unwrap());
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        assert_eq!(format!("{back:?}"), format!("{:?}", f.map(|t| t.as_str())));
    }
}
