//! The engine's state as a changelog: key -> state record, last write wins.
//!
//! Owns: the byte format of changelog keys and values, and their versioning. A compacted Kafka
//! topic (or any key-value log) holding these entries is enough to rebuild an engine that then
//! behaves exactly as the one that wrote them. Must not: decide what changed (each part of the
//! engine tracks its own dirty keys) or do I/O.
//!
//! Keys are ASCII with a one-letter kind: `m` (watermarks and accounting), `b:<position>` (a copy
//! waiting in the reorder buffer), `a:<fingerprint>` (a dedup key: pending action or closed
//! key), `d:<fingerprint>` (an order key claimed by a purchase), `o:<order_id>` (an order and
//! its purchase), `w:<window>` (a revenue window). Values start with a format version byte, so
//! a later release can read what an earlier one wrote. Closed dedup keys, the bulk of the state,
//! are 6 bytes of value; the rest is JSON.
//!
//! Every key the engine forgets gets a tombstone (`value: None`) at the next flush: expired
//! state (closed dedup keys, order keys, orders and emitted revenue windows two TTLs behind
//! the watermark), buffered copies once applied, an order id's stale entry. A compacted topic
//! then holds the live state only, so a restore reads about two TTLs of keys however long the
//! history. The price is one more write per key, when it expires; expiry runs every quarter
//! TTL of event time, so the flush after a sweep carries a quarter TTL's worth of tombstones.

use serde::{Deserialize, Serialize};

use crate::model::{Event, Input, Position};

use super::dedup::{Action, KeyRecord};
use super::keys::{Fingerprint, KeyState};
use super::reconcile::Entry as OrderEntry;
use super::revenue::{Window, WindowKey};
use super::stats::Stats;
use super::watermark::{Channel, ChannelMark};

/// Keys changed since the last changelog flush. Off unless a runtime keeps a changelog: a replay
/// that never flushes one must not pay a set entry per key.
#[derive(Debug)]
pub struct DirtySet<K> {
    keys: Option<hashbrown::HashSet<K>>,
}

impl<K> Default for DirtySet<K> {
    fn default() -> Self {
        DirtySet { keys: None }
    }
}

impl<K: std::hash::Hash + Eq + Ord> DirtySet<K> {
    pub fn enable(&mut self) {
        self.keys.get_or_insert_with(hashbrown::HashSet::new);
    }

    pub fn mark(&mut self, key: K) {
        if let Some(keys) = &mut self.keys {
            keys.insert(key);
        }
    }

    /// Marks the key `key()` builds, building it only when tracking: a removal that has to
    /// clone its key to mark it costs nothing when no changelog is kept.
    pub fn mark_with(&mut self, key: impl FnOnce() -> K) {
        if let Some(keys) = &mut self.keys {
            keys.insert(key());
        }
    }

    /// The changed keys, sorted so a run's changelog is reproducible byte for byte.
    pub fn drain_sorted(&mut self) -> Vec<K> {
        let mut keys: Vec<K> = self
            .keys
            .as_mut()
            .map(|k| k.drain().collect())
            .unwrap_or_default();
        keys.sort_unstable();
        keys
    }
}

/// Format version of changelog values this release writes (and the newest it reads).
/// 2: the meta record holds per-channel watermark state; 1 (still read): per-input `max_seen`.
pub const CHANGELOG_VERSION: u8 = 2;

/// One changelog record. `value: None` is a tombstone: the key is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogEntry {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChangelogError {
    #[error("changelog key of unknown kind")]
    UnknownKey,
    #[error("changelog value written by a newer release (format {0}); upgrade onecount")]
    NewerFormat(u8),
    #[error("changelog {kind} record is corrupt: {reason}")]
    Corrupt { kind: &'static str, reason: String },
}

/// The engine-wide record: where each channel stands (with its idle and finished flags), the
/// inputs that have ended, the engine watermark, the accounting, the next sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub channels: Vec<ChannelMark>,
    pub finished_inputs: Vec<Input>,
    pub watermark: Option<i64>,
    pub next_expiry: i64,
    pub stats: Stats,
}

/// The meta record of format 1: the highest event time per input, no idle or finished flags.
#[derive(Deserialize)]
struct MetaV1 {
    max_seen: [Option<i64>; 3],
    watermark: Option<i64>,
    next_expiry: i64,
    stats: Stats,
}

impl From<MetaV1> for Meta {
    /// Format 1 was only written by the file replay, whose inputs are partition 0, and it
    /// restored neither idle nor finished flags: this is exactly what it rebuilt.
    fn from(v1: MetaV1) -> Meta {
        Meta {
            channels: Input::ALL
                .into_iter()
                .zip(v1.max_seen)
                .filter_map(|(input, max_seen)| {
                    max_seen.map(|max_seen| ChannelMark {
                        channel: Channel::new(input, 0),
                        max_seen: Some(max_seen),
                        idle: false,
                        finished: false,
                    })
                })
                .collect(),
            finished_inputs: Vec::new(),
            watermark: v1.watermark,
            next_expiry: v1.next_expiry,
            stats: v1.stats,
        }
    }
}

/// A decoded changelog record. Transient (decoded, applied, dropped), so its size spread does
/// not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum StateRecord {
    Meta(Option<Meta>),
    Buffered(Position, Option<Event>),
    DedupKey(Fingerprint, Option<KeyRecord>),
    OrderKey(Fingerprint, Option<KeyState>),
    Order(String, Option<OrderEntry>),
    Window(WindowKey, Option<Window>),
}

const META_KEY: &[u8] = b"m";

fn versioned(payload: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = vec![CHANGELOG_VERSION];
    payload(&mut v);
    v
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    versioned(|v| serde_json::to_writer(v, value).expect("state records serialize"))
}

fn key_state(state: KeyState) -> Vec<u8> {
    versioned(|v| {
        v.push(b'c');
        v.extend_from_slice(&state.anchor_s.to_le_bytes());
        v.push(state.flags);
    })
}

fn position_key(p: &Position) -> Vec<u8> {
    format!(
        "b:{}:{}:{}:{}",
        p.input.as_str(),
        p.partition,
        p.offset,
        p.index
    )
    .into_bytes()
}

fn fp_key(kind: char, fp: Fingerprint) -> Vec<u8> {
    format!("{kind}:{:014x}", fp.raw()).into_bytes()
}

/// Encodes one record.
pub fn encode(record: &StateRecord) -> ChangelogEntry {
    let (key, value) = match record {
        StateRecord::Meta(m) => (META_KEY.to_vec(), m.as_ref().map(json)),
        StateRecord::Buffered(p, e) => (position_key(p), e.as_ref().map(json)),
        StateRecord::DedupKey(fp, r) => (
            fp_key('a', *fp),
            r.as_ref().map(|r| match r {
                KeyRecord::Closed(s) => key_state(*s),
                KeyRecord::Pending(action) => versioned(|v| {
                    v.push(b'p');
                    serde_json::to_writer(v, action).expect("actions serialize");
                }),
            }),
        ),
        StateRecord::OrderKey(fp, s) => (fp_key('d', *fp), s.map(key_state)),
        StateRecord::Order(id, e) => (format!("o:{id}").into_bytes(), e.as_ref().map(json)),
        StateRecord::Window(k, w) => {
            let key = format!(
                "w:{}",
                serde_json::to_string(k).expect("window keys serialize")
            );
            (key.into_bytes(), w.as_ref().map(json))
        }
    };
    ChangelogEntry { key, value }
}

fn corrupt(kind: &'static str, reason: impl ToString) -> ChangelogError {
    ChangelogError::Corrupt {
        kind,
        reason: reason.to_string(),
    }
}

/// Splits off and checks the version byte.
fn body<'a>(kind: &'static str, value: &'a [u8]) -> Result<&'a [u8], ChangelogError> {
    match value.split_first() {
        None => Err(corrupt(kind, "empty value")),
        Some((&v, _)) if v > CHANGELOG_VERSION => Err(ChangelogError::NewerFormat(v)),
        Some((_, rest)) => Ok(rest),
    }
}

fn from_json<T: for<'de> Deserialize<'de>>(
    kind: &'static str,
    value: Option<&[u8]>,
) -> Result<Option<T>, ChangelogError> {
    value
        .map(|v| serde_json::from_slice(body(kind, v)?).map_err(|e| corrupt(kind, e)))
        .transpose()
}

/// The meta record, of this format or of format 1.
fn decode_meta(value: Option<&[u8]>) -> Result<Option<Meta>, ChangelogError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let json = body("meta", value)?;
    let meta = if value[0] == 1 {
        serde_json::from_slice::<MetaV1>(json).map(Meta::from)
    } else {
        serde_json::from_slice::<Meta>(json)
    };
    meta.map(Some).map_err(|e| corrupt("meta", e))
}

fn decode_key_state(kind: &'static str, body: &[u8]) -> Result<KeyState, ChangelogError> {
    match body {
        [b'c', a, b, c, d, flags] => Ok(KeyState {
            anchor_s: u32::from_le_bytes([*a, *b, *c, *d]),
            flags: *flags,
        }),
        _ => Err(corrupt(kind, "closed key is not 6 bytes")),
    }
}

fn parse_fp(kind: &'static str, text: &str) -> Result<Fingerprint, ChangelogError> {
    u64::from_str_radix(text, 16)
        .map(Fingerprint::from_raw)
        .map_err(|e| corrupt(kind, e))
}

/// Decodes one record.
pub fn decode(entry: &ChangelogEntry) -> Result<StateRecord, ChangelogError> {
    let key = std::str::from_utf8(&entry.key).map_err(|_| ChangelogError::UnknownKey)?;
    let value = entry.value.as_deref();
    if key.as_bytes() == META_KEY {
        return Ok(StateRecord::Meta(decode_meta(value)?));
    }
    let (kind, rest) = key.split_once(':').ok_or(ChangelogError::UnknownKey)?;
    Ok(match kind {
        "b" => {
            let event: Option<Event> = from_json("buffered copy", value)?;
            let mut parts = rest.split(':');
            let input = match parts.next() {
                Some("browser") => crate::model::Input::Browser,
                Some("server") => crate::model::Input::Server,
                Some("orders") => crate::model::Input::Orders,
                _ => return Err(corrupt("buffered copy", "unknown input in key")),
            };
            let mut num = || -> Result<i64, ChangelogError> {
                parts
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| corrupt("buffered copy", "bad position in key"))
            };
            let position = Position {
                input,
                partition: num()? as i32,
                offset: num()?,
                index: num()? as u32,
            };
            StateRecord::Buffered(position, event)
        }
        "a" => {
            let fp = parse_fp("dedup key", rest)?;
            let record = match value {
                None => None,
                Some(v) => Some(match body("dedup key", v)? {
                    [b'p', json @ ..] => KeyRecord::Pending(
                        serde_json::from_slice::<Action>(json)
                            .map_err(|e| corrupt("dedup key", e))?,
                    ),
                    closed => KeyRecord::Closed(decode_key_state("dedup key", closed)?),
                }),
            };
            StateRecord::DedupKey(fp, record)
        }
        "d" => {
            let fp = parse_fp("order key", rest)?;
            let state = value
                .map(|v| decode_key_state("order key", body("order key", v)?))
                .transpose()?;
            StateRecord::OrderKey(fp, state)
        }
        "o" => StateRecord::Order(rest.to_string(), from_json("order", value)?),
        "w" => {
            let key: WindowKey = serde_json::from_str(rest).map_err(|e| corrupt("window", e))?;
            StateRecord::Window(key, from_json("window", value)?)
        }
        _ => return Err(ChangelogError::UnknownKey),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_key_value_is_six_bytes_plus_version() {
        let e = encode(&StateRecord::DedupKey(
            Fingerprint::of(&["p", "e", "id"]),
            Some(KeyRecord::Closed(KeyState {
                anchor_s: 7,
                flags: 3,
            })),
        ));
        assert_eq!(e.value.as_ref().map(Vec::len), Some(7));
        assert_eq!(
            decode(&e).unwrap(),
            StateRecord::DedupKey(
                Fingerprint::of(&["p", "e", "id"]),
                Some(KeyRecord::Closed(KeyState {
                    anchor_s: 7,
                    flags: 3
                }))
            )
        );
    }

    #[test]
    fn value_from_a_newer_release_is_refused_with_a_clear_error() {
        let mut e = encode(&StateRecord::OrderKey(
            Fingerprint::of(&["x"]),
            Some(KeyState {
                anchor_s: 1,
                flags: 0,
            }),
        ));
        e.value.as_mut().unwrap()[0] = CHANGELOG_VERSION + 1;
        assert_eq!(
            decode(&e),
            Err(ChangelogError::NewerFormat(CHANGELOG_VERSION + 1))
        );
    }

    #[test]
    fn meta_of_format_1_restores_per_input_positions_as_partition_0() {
        let stats = serde_json::to_value(Stats::default()).unwrap();
        let v1 = serde_json::json!({
            "max_seen": [1000, null, 500],
            "watermark": 400,
            "next_expiry": 7,
            "stats": stats,
        });
        let mut value = vec![1u8];
        serde_json::to_writer(&mut value, &v1).unwrap();
        let decoded = decode(&ChangelogEntry {
            key: META_KEY.to_vec(),
            value: Some(value),
        })
        .unwrap();
        let mark = |input, max_seen| ChannelMark {
            channel: Channel::new(input, 0),
            max_seen,
            idle: false,
            finished: false,
        };
        assert_eq!(
            decoded,
            StateRecord::Meta(Some(Meta {
                channels: vec![
                    mark(Input::Browser, Some(1000)),
                    mark(Input::Orders, Some(500))
                ],
                finished_inputs: vec![],
                watermark: Some(400),
                next_expiry: 7,
                stats: Stats::default(),
            }))
        );
    }

    #[test]
    fn meta_round_trips_channel_flags() {
        let meta = Meta {
            channels: vec![ChannelMark {
                channel: Channel::new(Input::Server, 5),
                max_seen: Some(9),
                idle: true,
                finished: false,
            }],
            finished_inputs: vec![Input::Orders],
            watermark: Some(3),
            next_expiry: 4,
            stats: Stats::default(),
        };
        let e = encode(&StateRecord::Meta(Some(meta.clone())));
        assert_eq!(e.value.as_ref().unwrap()[0], CHANGELOG_VERSION);
        assert_eq!(decode(&e).unwrap(), StateRecord::Meta(Some(meta)));
    }

    #[test]
    fn tombstones_decode_to_absent_state() {
        let e = ChangelogEntry {
            key: b"o:order-1".to_vec(),
            value: None,
        };
        assert_eq!(
            decode(&e).unwrap(),
            StateRecord::Order("order-1".into(), None)
        );
    }

    #[test]
    fn unknown_key_kind_is_an_error() {
        let e = ChangelogEntry {
            key: b"z:1".to_vec(),
            value: None,
        };
        assert_eq!(decode(&e), Err(ChangelogError::UnknownKey));
    }
}
