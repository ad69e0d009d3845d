//! The internal log's record format: what ingest writes and the state task reads.
//!
//! Owns: the headers that carry a record's origin (input, partition, offset) or mark a channel
//! idle, the format version, and the value of progress records. Must not: parse input payloads
//! (the state task parses them with the same parser `replay` uses, so the service and replay
//! read input identically).
//!
//! A record of the log is the input record as it came (its value, or none for a tombstone) plus
//! headers. Keeping the original bytes means ingest is a cheap forwarder and a crash replay is
//! recognised by its origin: the same (input, partition, offset) is never applied twice.
//!
//! With the state split over several log partitions, a partition also gets *progress* records:
//! the event times of records that went to other partitions, one entry per input record, in the
//! order ingest forwarded them: input (u8, `Input::index`), input partition (i32), origin offset
//! (i64), observation count (u16), then per observation its kind (u8: 0 an event, 1 an order
//! change) and event time (i64), all big-endian. One record holds entries of any channels: what
//! went elsewhere between two records of a partition reaches it in forward order, so its merge
//! sees the order a single state task would.

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::engine::Observation;
use crate::model::Input;

/// The highest version of the internal log and output record headers this release reads. A
/// release reads every version up to its own, so a rolling upgrade needs no reset.
pub const WIRE_VERSION: u32 = 2;
/// The version written on records whose format has not changed since the first release
/// (forwarded records, markers, outputs): a release before the state split reads them.
const FIRST_VERSION: u32 = 1;
/// The version of progress records (new with the state split): a release before it stops with
/// "upgrade onecount" rather than skip them.
const PROGRESS_VERSION: u32 = 2;

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
/// Header: the value holds the event times of records that went to other state partitions (see
/// the module docs); the header's own value is empty.
pub const PROGRESS_HEADER: &str = "onecount.progress";
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
    /// Ingest was assigned `channel`, or let it go (in a rebalance, or as the instance
    /// stops): its records are coming (from this instance or its next owner), so it holds the
    /// watermark until its next record or its idle marker.
    Assigned(Channel),
    /// Ingest forwarded a record of another channel while `channel` had nothing more to give:
    /// the state task need not wait for it (see `merge`).
    CaughtUp(Channel),
    /// Event times of records that went to other state partitions (the entries are the
    /// record's value, see [`progress_entries`]).
    Progress,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("internal record without an origin or idle header")]
    Unmarked,
    #[error("internal record format version {0} is newer than this release reads ({WIRE_VERSION}): upgrade onecount")]
    TooNew(u32),
    #[error("bad {header} header: {text:?}")]
    Bad { header: &'static str, text: String },
    #[error("progress record cut short or malformed at byte {0}")]
    BadProgress(usize),
}

fn input_name(name: &str) -> Option<Input> {
    Input::ALL.into_iter().find(|i| i.as_str() == name)
}

fn channel_text(c: Channel) -> String {
    format!("{}:{}", c.input.as_str(), c.partition)
}

/// A version header and one more.
fn headers(version: u32, key: &str, value: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(2)
        .insert(Header {
            key: VERSION_HEADER,
            value: Some(itoa::Buffer::new().format(version).as_bytes()),
        })
        .insert(Header {
            key,
            value: Some(value.as_bytes()),
        })
}

/// Headers of a forwarded input record.
pub fn forwarded_headers(channel: Channel, offset: i64) -> OwnedHeaders {
    // One string for the origin: it runs for every record forwarded.
    let mut origin = channel_text(channel);
    origin.push(':');
    origin.push_str(itoa::Buffer::new().format(offset));
    headers(FIRST_VERSION, ORIGIN_HEADER, &origin)
}

/// Headers of a marker about `channel`.
pub fn marker_headers(marker: LogRecord) -> OwnedHeaders {
    let (key, channel) = match marker {
        LogRecord::Idle(c) => (IDLE_HEADER, c),
        LogRecord::Assigned(c) => (ASSIGNED_HEADER, c),
        LogRecord::CaughtUp(c) => (CAUGHT_UP_HEADER, c),
        LogRecord::Forwarded { .. } | LogRecord::Progress => {
            unreachable!("not a marker")
        }
    };
    headers(FIRST_VERSION, key, &channel_text(channel))
}

/// Headers of a progress record (its entries are the value).
pub fn progress_headers() -> OwnedHeaders {
    headers(PROGRESS_VERSION, PROGRESS_HEADER, "")
}

/// Headers of an output record written by state partition `task`.
pub fn output_headers(task: i32) -> OwnedHeaders {
    headers(FIRST_VERSION, TASK_HEADER, itoa::Buffer::new().format(task))
}

const OBSERVATION_BYTES: usize = 9;

/// Appends the entry of one input record of `channel` at `origin` to a progress record's value.
pub fn append_progress(
    value: &mut Vec<u8>,
    channel: Channel,
    origin: i64,
    observations: &[Observation],
) {
    let count = u16::try_from(observations.len()).expect("a record holds at most 65535 events");
    value.push(channel.input.index() as u8);
    value.extend_from_slice(&channel.partition.to_be_bytes());
    value.extend_from_slice(&origin.to_be_bytes());
    value.extend_from_slice(&count.to_be_bytes());
    for o in observations {
        let kind = match o {
            Observation::Event(_) => 0u8,
            Observation::Order(_) => 1u8,
        };
        value.push(kind);
        value.extend_from_slice(&o.time().to_be_bytes());
    }
}

/// One input record's entry in a progress record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressEntry<'v> {
    pub channel: Channel,
    pub origin: i64,
    /// Its observations, read with [`observations`].
    pub observations: &'v [u8],
}

/// An entry's fixed part: input, partition, origin, count.
const ENTRY_HEAD_BYTES: usize = 1 + 4 + 8 + 2;

/// The entries of a progress record's value. Checked whole before any is given, so a malformed
/// record is rejected, never applied in part.
pub fn progress_entries(value: &[u8]) -> Result<Vec<ProgressEntry<'_>>, WireError> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at < value.len() {
        let bad = WireError::BadProgress(at);
        let head = value.get(at..at + ENTRY_HEAD_BYTES).ok_or(bad.clone())?;
        let input = *Input::ALL.get(usize::from(head[0])).ok_or(bad.clone())?;
        let partition = i32::from_be_bytes(head[1..5].try_into().expect("4 bytes"));
        let origin = i64::from_be_bytes(head[5..13].try_into().expect("8 bytes"));
        let count = usize::from(u16::from_be_bytes([head[13], head[14]]));
        let start = at + ENTRY_HEAD_BYTES;
        let body = value
            .get(start..start + count * OBSERVATION_BYTES)
            .ok_or(bad.clone())?;
        if body.chunks(OBSERVATION_BYTES).any(|o| o[0] > 1) {
            return Err(bad);
        }
        entries.push(ProgressEntry {
            channel: Channel { input, partition },
            origin,
            observations: body,
        });
        at = start + body.len();
    }
    Ok(entries)
}

/// The observations of one entry of [`progress_entries`].
pub fn observations(entry: &[u8]) -> impl Iterator<Item = Observation> + '_ {
    entry.chunks_exact(OBSERVATION_BYTES).map(|o| {
        let time = i64::from_be_bytes(o[1..].try_into().expect("8 bytes"));
        if o[0] == 0 {
            Observation::Event(time)
        } else {
            Observation::Order(time)
        }
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
    if header(headers, PROGRESS_HEADER).is_some() {
        return Ok(LogRecord::Progress);
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
        let m = message(progress_headers());
        assert_eq!(read(m.headers()), Ok(LogRecord::Progress));
        assert_eq!(header(m.headers(), VERSION_HEADER), Some("2"));
        let m = message(forwarded_headers(c, 1));
        assert_eq!(
            header(m.headers(), VERSION_HEADER),
            Some("1"),
            "a release before the split reads what has not changed"
        );
        // The longest origin there can be.
        for input in Input::ALL {
            let widest = Channel {
                input,
                partition: i32::MAX,
            };
            let m = message(forwarded_headers(widest, i64::MAX));
            assert_eq!(
                read(m.headers()),
                Ok(LogRecord::Forwarded {
                    channel: widest,
                    offset: i64::MAX
                })
            );
        }
    }

    #[test]
    fn progress_entries_round_trip_and_a_cut_record_is_rejected_whole() {
        let mut value = Vec::new();
        let (b, o) = (
            Channel::new(Input::Browser, 2),
            Channel::new(Input::Orders, i32::MAX),
        );
        let first = [Observation::Event(-5), Observation::Order(i64::MAX)];
        append_progress(&mut value, b, 7, &first);
        append_progress(&mut value, o, 9, &[]);
        append_progress(&mut value, b, 12, &[Observation::Event(1_700_000_000_000)]);
        let entries = progress_entries(&value).unwrap();
        let read: Vec<(Channel, i64, Vec<Observation>)> = entries
            .iter()
            .map(|e| (e.channel, e.origin, observations(e.observations).collect()))
            .collect();
        assert_eq!(
            read,
            vec![
                (b, 7, first.to_vec()),
                (o, 9, vec![]),
                (b, 12, vec![Observation::Event(1_700_000_000_000)])
            ]
        );
        for cut in 1..value.len() {
            if progress_entries(&value[..cut]).is_ok() {
                // Only a cut between entries reads: 33 bytes (15 + 2 x 9), then 48.
                assert!([33, 48].contains(&cut), "cut at {cut} read");
            }
        }
        let mut bad_kind = value.clone();
        bad_kind[15] = 7;
        assert_eq!(progress_entries(&bad_kind), Err(WireError::BadProgress(0)));
        let mut bad_input = value.clone();
        bad_input[33] = 3;
        assert_eq!(
            progress_entries(&bad_input),
            Err(WireError::BadProgress(33))
        );
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
