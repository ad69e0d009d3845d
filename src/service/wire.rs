//! The internal log's record format: what ingest writes and the state task reads.
//!
//! Owns: the headers that carry a record's origin (input, partition, offset) or mark a channel
//! idle, and the format version. Must not: parse payloads (the state task parses them with the
//! same parser `replay` uses, so the service and replay read input identically).
//!
//! A record of the log is the input record as it came (its value, or none for a tombstone) plus
//! headers. Keeping the original bytes means ingest is a cheap forwarder and a crash replay is
//! recognised by its origin: the same (input, partition, offset) is never applied twice.

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::model::Input;

/// The version of the internal log and output record headers. A release reads every version up
/// to its own, so a rolling upgrade needs no reset.
pub const WIRE_VERSION: u32 = 1;

/// Header: the format version (decimal).
pub const VERSION_HEADER: &str = "onecount.v";
/// Header: where a forwarded record comes from, `<input>:<partition>:<offset>`.
pub const ORIGIN_HEADER: &str = "onecount.origin";
/// Header: a channel went idle, `<input>:<partition>` (no value).
pub const IDLE_HEADER: &str = "onecount.idle";
/// Header: ingest was assigned a channel, `<input>:<partition>` (no value).
pub const ASSIGNED_HEADER: &str = "onecount.assigned";
/// Header: ingest forwarded past a channel that had nothing more for it, `<input>:<partition>`
/// (no value). A release before it skips the record (its state task does not merge channels).
pub const CAUGHT_UP_HEADER: &str = "onecount.caught_up";
/// Header on outputs: the state partition that wrote it (outputs are recognised per task).
pub const TASK_HEADER: &str = "onecount.task";

pub use crate::engine::watermark::Channel;

/// A record of the internal log, as the state task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    /// An input record from `channel` at `offset`.
    Forwarded { channel: Channel, offset: i64 },
    /// Ingest saw nothing on `channel` for `engine.idle_timeout`.
    Idle(Channel),
    /// Ingest was assigned `channel`: its records are coming, so it holds the watermark until
    /// its first record or its idle marker.
    Assigned(Channel),
    /// Ingest forwarded a record of another channel while `channel` had nothing more to give:
    /// the state task need not wait for it (see `merge`).
    CaughtUp(Channel),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("internal record without an origin or idle header")]
    Unmarked,
    #[error("internal record format version {0} is newer than this release reads ({WIRE_VERSION}): upgrade onecount")]
    TooNew(u32),
    #[error("bad {header} header: {text:?}")]
    Bad { header: &'static str, text: String },
}

fn input_name(name: &str) -> Option<Input> {
    Input::ALL.into_iter().find(|i| i.as_str() == name)
}

fn channel_text(c: Channel) -> String {
    format!("{}:{}", c.input.as_str(), c.partition)
}

/// Headers of a forwarded input record.
pub fn forwarded_headers(channel: Channel, offset: i64) -> OwnedHeaders {
    let origin = format!("{}:{offset}", channel_text(channel));
    OwnedHeaders::new_with_capacity(2)
        .insert(Header {
            key: VERSION_HEADER,
            value: Some(WIRE_VERSION.to_string().as_bytes()),
        })
        .insert(Header {
            key: ORIGIN_HEADER,
            value: Some(origin.as_bytes()),
        })
}

/// Headers of a marker about `channel`.
pub fn marker_headers(marker: LogRecord) -> OwnedHeaders {
    let (key, channel) = match marker {
        LogRecord::Idle(c) => (IDLE_HEADER, c),
        LogRecord::Assigned(c) => (ASSIGNED_HEADER, c),
        LogRecord::CaughtUp(c) => (CAUGHT_UP_HEADER, c),
        LogRecord::Forwarded { .. } => unreachable!("a forwarded record is not a marker"),
    };
    OwnedHeaders::new_with_capacity(2)
        .insert(Header {
            key: VERSION_HEADER,
            value: Some(WIRE_VERSION.to_string().as_bytes()),
        })
        .insert(Header {
            key,
            value: Some(channel_text(channel).as_bytes()),
        })
}

/// Headers of an output record written by state partition `task`.
pub fn output_headers(task: i32) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(2)
        .insert(Header {
            key: VERSION_HEADER,
            value: Some(WIRE_VERSION.to_string().as_bytes()),
        })
        .insert(Header {
            key: TASK_HEADER,
            value: Some(task.to_string().as_bytes()),
        })
}

/// The value of header `key`, if present and UTF-8.
pub fn header<'h, H: Headers>(headers: Option<&'h H>, key: &str) -> Option<&'h str> {
    headers?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

fn parse_channel<'t>(header: &'static str, text: &'t str) -> Result<(Channel, &'t str), WireError> {
    let bad = || WireError::Bad {
        header,
        text: text.chars().take(80).collect(),
    };
    let mut parts = text.splitn(3, ':');
    let input = parts.next().and_then(input_name).ok_or_else(bad)?;
    let partition = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    Ok((Channel { input, partition }, parts.next().unwrap_or("")))
}

/// Reads a record of the internal log from its headers.
pub fn read<H: Headers>(headers: Option<&H>) -> Result<LogRecord, WireError> {
    if let Some(v) = header(headers, VERSION_HEADER) {
        let version: u32 = v.parse().map_err(|_| WireError::Bad {
            header: VERSION_HEADER,
            text: v.to_string(),
        })?;
        if version > WIRE_VERSION {
            return Err(WireError::TooNew(version));
        }
    }
    if let Some(text) = header(headers, ORIGIN_HEADER) {
        let (channel, rest) = parse_channel(ORIGIN_HEADER, text)?;
        let offset = rest.parse().map_err(|_| WireError::Bad {
            header: ORIGIN_HEADER,
            text: text.to_string(),
        })?;
        return Ok(LogRecord::Forwarded { channel, offset });
    }
    for (key, marker) in [
        (IDLE_HEADER, LogRecord::Idle as fn(Channel) -> LogRecord),
        (ASSIGNED_HEADER, LogRecord::Assigned),
        (CAUGHT_UP_HEADER, LogRecord::CaughtUp),
    ] {
        if let Some(text) = header(headers, key) {
            let (channel, rest) = parse_channel(key, text)?;
            if !rest.is_empty() {
                return Err(WireError::Bad {
                    header: key,
                    text: text.to_string(),
                });
            }
            return Ok(marker(channel));
        }
    }
    Err(WireError::Unmarked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Message, OwnedMessage, Timestamp};

    fn message(headers: OwnedHeaders) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(headers),
        )
    }

    #[test]
    fn origin_and_idle_headers_round_trip() {
        let c = Channel {
            input: Input::Server,
            partition: 7,
        };
        let m = message(forwarded_headers(c, 12345));
        assert_eq!(
            read(m.headers()),
            Ok(LogRecord::Forwarded {
                channel: c,
                offset: 12345
            })
        );
        let m = message(marker_headers(LogRecord::Idle(c)));
        assert_eq!(read(m.headers()), Ok(LogRecord::Idle(c)));
        let m = message(marker_headers(LogRecord::Assigned(c)));
        assert_eq!(read(m.headers()), Ok(LogRecord::Assigned(c)));
        let m = message(marker_headers(LogRecord::CaughtUp(c)));
        assert_eq!(read(m.headers()), Ok(LogRecord::CaughtUp(c)));
    }

    #[test]
    fn unknown_or_newer_records_are_errors() {
        let m = message(OwnedHeaders::new());
        assert_eq!(read(m.headers()), Err(WireError::Unmarked));
        let newer = OwnedHeaders::new().insert(Header {
            key: VERSION_HEADER,
            value: Some("99"),
        });
        assert_eq!(read(message(newer).headers()), Err(WireError::TooNew(99)));
        let bad = OwnedHeaders::new().insert(Header {
            key: ORIGIN_HEADER,
            value: Some("pixel:1:2"),
        });
        assert!(matches!(
            read(message(bad).headers()),
            Err(WireError::Bad { .. })
        ));
    }
}
