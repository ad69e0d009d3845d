//! [`MergedConversion`]: a released action's conversion, kept as its packed copies.
//!
//! Owns: the merge rule's reading of two copies (the first copy's fields win, the other adds
//! what it lacks; value and currency together from the authoritative copy) as a
//! [`Conversion`] view. Must not: decide which copy is first or which has authority (the
//! engine does, when it releases the action).
//!
//! Why a view: the merged record is written once and read a few times by the engine's
//! accounting; building it as owned strings cost an allocation and a copy per field per
//! conversion (callgrind, session 10), while its text is already in the copies' buffers.

use std::fmt;

use serde::{Serialize, Serializer};

use super::{Conversion, Event, SourcesSeen, ValueSource, FORMAT_VERSION};

/// A conversion as the engine emits it: its copies, merged when it is read or written. Its
/// JSON is that of the [`Conversion`] it stands for ([`MergedConversion::view`]).
#[derive(Clone)]
pub struct MergedConversion {
    /// The dedup key; the record key.
    key: String,
    /// The copy whose fields win.
    first: Box<Event>,
    other: Option<Box<Event>>,
    value_source: ValueSource,
}

impl MergedConversion {
    /// `first` and `other` as the engine ordered them; `value_source` names the copy whose
    /// value and currency the conversion carries, and must be one it holds.
    pub fn new(
        key: String,
        first: Box<Event>,
        other: Option<Box<Event>>,
        value_source: ValueSource,
    ) -> MergedConversion {
        MergedConversion {
            key,
            first,
            other,
            value_source,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn sources(&self) -> SourcesSeen {
        match (&self.other, self.first.source) {
            (Some(_), _) => SourcesSeen::Both,
            (None, crate::model::Source::Browser) => SourcesSeen::Browser,
            (None, crate::model::Source::Server) => SourcesSeen::Server,
        }
    }

    fn copy(&self, source: crate::model::Source) -> Option<&Event> {
        [Some(&*self.first), self.other.as_deref()]
            .into_iter()
            .flatten()
            .find(|e| e.source == source)
    }

    /// The conversion record, its text borrowed from the copies.
    pub fn view(&self) -> Conversion<&str> {
        use crate::model::Source::{Browser, Server};
        let mut merged = Event::merged_fields(&self.first, self.other.as_deref());
        let priced = |source| self.copy(source).map(|e| (e.value(), e.currency()));
        let (value, currency) = match self.value_source {
            ValueSource::Server => priced(Server).unwrap_or_default(),
            ValueSource::Browser => priced(Browser).unwrap_or_default(),
            ValueSource::None => {
                let currency = [Server, Browser]
                    .into_iter()
                    .find_map(|source| self.copy(source)?.currency());
                (None, currency)
            }
        };
        merged.properties.value = value;
        merged.properties.currency = currency;
        Conversion {
            format_version: FORMAT_VERSION,
            key: &self.key,
            event_source_id: merged.pixel,
            event: merged.event,
            event_id: merged.event_id,
            event_time: merged.event_time.div_euclid(1000),
            user: merged.user,
            properties: merged.properties,
            page: merged.page,
            sources: self.sources(),
            first_source: merged.source,
            value_source: self.value_source,
        }
    }

    /// The record with its own text, as a reader of the output gets it.
    pub fn to_conversion(&self) -> Conversion {
        let v = self.view();
        let owned = |s: &&str| s.to_string();
        Conversion {
            format_version: v.format_version,
            key: v.key.to_owned(),
            event_source_id: v.event_source_id.to_owned(),
            event: v.event.to_owned(),
            event_id: v.event_id.map(str::to_owned),
            event_time: v.event_time,
            user: v.user.map(owned),
            properties: v.properties.map(owned),
            page: v.page.map(owned),
            sources: v.sources,
            first_source: v.first_source,
            value_source: v.value_source,
        }
    }
}

impl PartialEq for MergedConversion {
    fn eq(&self, other: &MergedConversion) -> bool {
        self.view() == other.view()
    }
}

impl fmt::Debug for MergedConversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.view().fmt(f)
    }
}

impl Serialize for MergedConversion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(s)
    }
}
