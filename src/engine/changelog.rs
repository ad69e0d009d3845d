//! The engine's state as a changelog: key -> state record, last write wins.
//!
//! Owns: the byte format of changelog keys and values, and their versioning. A compacted Kafka
//! topic (or any key-value log) holding these entries is enough to rebuild an engine that then
//! behaves exactly as the one that wrote them. Must not: decide what changed (each part of the
//! engine tracks its own dirty keys) or do I/O.
//!
//! Keys are ASCII with a one-letter kind: `m` (watermarks and accounting), `b:<position>` (a copy
//! waiting in the reorder buffer), `a:<fingerprint>` (a dedup key), `d:<fingerprint>` (an order
//! key claimed by a purchase), `o:<order_id>` (an order and its purchase), `w:<window>` (a
//! revenue window). Values start with a format version byte, so a later release can read what
//! an earlier one wrote. Closed dedup keys, the bulk of the state, are 6 bytes of value; the
//! rest is JSON.
//!
//! A dedup key's value is everything the key holds, and a restore puts back exactly that: `c`
//! and its closed entry, `p` and its pending action, or `b` and both. A key holds both when an
//! event_id is reused after its TTL: the new copy starts a pending action while the old action's
//! key stays closed for two TTLs, and a later copy within the old TTL still belongs to the old
//! action. One record rather than a key per part keeps a format 2 record meaning what it meant:
//! the whole state of its key, replaced at once.
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
/// 3: a dedup key's value can hold its closed entry and its pending action together (`b`).
/// 2 (still read): a dedup key's value holds one of them; a key that had both was written as
/// pending. 1 (still read): the meta record holds per-input `max_seen`, not per-channel state.
pub const CHANGELOG_VERSION: u8 = 3;

/// The first format whose dedup key values can be `b` (closed and pending).
const CLOSED_AND_PENDING_SINCE: u8 = 3;

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

fn push_key_state(v: &mut Vec<u8>, state: KeyState) {
    v.extend_from_slice(&state.anchor_s.to_le_bytes());
    v.push(state.flags);
}

fn key_state(state: KeyState) -> Vec<u8> {
    versioned(|v| {
        v.push(b'c');
        push_key_state(v, state);
    })
}

fn push_action(v: &mut Vec<u8>, action: &Action) {
    serde_json::to_writer(v, action).expect("actions serialize");
}

/// `c` + the closed entry (6 bytes), `p` + the pending action (JSON), or `b` + both.
fn dedup_key(record: &KeyRecord) -> Vec<u8> {
    match record {
        KeyRecord::Closed(state) => key_state(*state),
        KeyRecord::Pending(action) => versioned(|v| {
            v.push(b'p');
            push_action(v, action);
        }),
        KeyRecord::ClosedAndPending(state, action) => versioned(|v| {
            v.push(b'b');
            push_key_state(v, *state);
            push_action(v, action);
        }),
    }
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
        StateRecord::DedupKey(fp, r) => (fp_key('a', *fp), r.as_ref().map(dedup_key)),
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

/// Splits off and checks the version byte: the value's format and its body.
fn body<'a>(kind: &'static str, value: &'a [u8]) -> Result<(u8, &'a [u8]), ChangelogError> {
    match value.split_first() {
        None => Err(corrupt(kind, "empty value")),
        Some((&v, _)) if v > CHANGELOG_VERSION => Err(ChangelogError::NewerFormat(v)),
        Some((&v, rest)) => Ok((v, rest)),
    }
}

fn from_json<T: for<'de> Deserialize<'de>>(
    kind: &'static str,
    value: Option<&[u8]>,
) -> Result<Option<T>, ChangelogError> {
    value
        .map(|v| serde_json::from_slice(body(kind, v)?.1).map_err(|e| corrupt(kind, e)))
        .transpose()
}

/// The meta record, of this format or of format 1.
fn decode_meta(value: Option<&[u8]>) -> Result<Option<Meta>, ChangelogError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let (version, json) = body("meta", value)?;
    let meta = if version == 1 {
        serde_json::from_slice::<MetaV1>(json).map(Meta::from)
    } else {
        serde_json::from_slice::<Meta>(json)
    };
    meta.map(Some).map_err(|e| corrupt("meta", e))
}

/// The 5 bytes of a closed entry after its tag: anchor second (little endian), flags.
fn key_state_of([a, b, c, d, flags]: [u8; 5]) -> KeyState {
    KeyState {
        anchor_s: u32::from_le_bytes([a, b, c, d]),
        flags,
    }
}

fn decode_key_state(kind: &'static str, body: &[u8]) -> Result<KeyState, ChangelogError> {
    match body {
        [b'c', state @ ..] => state
            .try_into()
            .map(key_state_of)
            .map_err(|_| corrupt(kind, "closed key is not 6 bytes")),
        _ => Err(corrupt(kind, "closed key is not 6 bytes")),
    }
}

fn decode_action(json: &[u8]) -> Result<Action, ChangelogError> {
    serde_json::from_slice(json).map_err(|e| corrupt("dedup key", e))
}

/// A dedup key's value, of this format or an earlier one (format 2 has no `b`).
fn decode_dedup_key(value: &[u8]) -> Result<KeyRecord, ChangelogError> {
    Ok(match body("dedup key", value)? {
        (_, [b'p', json @ ..]) => KeyRecord::Pending(decode_action(json)?),
        (version, [b'b', both @ ..]) if version >= CLOSED_AND_PENDING_SINCE => {
            let Some((state, json)) = both.split_first_chunk::<5>() else {
                return Err(corrupt("dedup key", "closed entry cut short"));
            };
            KeyRecord::ClosedAndPending(key_state_of(*state), decode_action(json)?)
        }
        (version, [b'b', ..]) => {
            return Err(corrupt(
                "dedup key",
                format!("closed and pending in a format {version} value"),
            ))
        }
        (_, closed) => KeyRecord::Closed(decode_key_state("dedup key", closed)?),
    })
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
            StateRecord::DedupKey(fp, value.map(decode_dedup_key).transpose()?)
        }
        "d" => {
            let fp = parse_fp("order key", rest)?;
            let state = value
                .map(|v| decode_key_state("order key", body("order key", v)?.1))
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

    fn action(event_time: i64) -> Action {
        let event = Event::bare(
            crate::model::Source::Server,
            event_time,
            Position {
                input: Input::Server,
                partition: 0,
                offset: 9,
                index: 0,
            },
        );
        Action {
            fp: Some(Fingerprint::of(&["P", "AddToCart", "e1"])),
            key: "P/AddToCart/e1".into(),
            browser: None,
            server: Some(Box::new(event)),
            anchor: event_time,
            missing_event_id: false,
        }
    }

    fn dedup_entry(value: Vec<u8>) -> ChangelogEntry {
        ChangelogEntry {
            key: fp_key('a', Fingerprint::of(&["P", "AddToCart", "e1"])),
            value: Some(value),
        }
    }

    #[test]
    fn closed_entry_and_pending_action_of_one_key_round_trip_in_one_value() {
        let fp = Fingerprint::of(&["P", "AddToCart", "e1"]);
        let closed = KeyState {
            anchor_s: 0x0102_0304,
            flags: 9,
        };
        let record =
            StateRecord::DedupKey(fp, Some(KeyRecord::ClosedAndPending(closed, action(5_000))));
        let e = encode(&record);
        let value = e.value.as_ref().unwrap();
        assert_eq!(value[..7], [CHANGELOG_VERSION, b'b', 4, 3, 2, 1, 9]);
        assert_eq!(decode(&e).unwrap(), record);
    }

    #[test]
    fn dedup_values_of_format_2_still_decode() {
        let closed = dedup_entry(vec![2, b'c', 7, 0, 0, 0, 3]);
        assert_eq!(
            decode(&closed).unwrap(),
            StateRecord::DedupKey(
                Fingerprint::of(&["P", "AddToCart", "e1"]),
                Some(KeyRecord::Closed(KeyState {
                    anchor_s: 7,
                    flags: 3
                }))
            )
        );
        // Format 2 wrote a pending action as `p` and its JSON, as format 3 does.
        let mut value = vec![2, b'p'];
        serde_json::to_writer(&mut value, &action(5_000)).unwrap();
        assert_eq!(
            decode(&dedup_entry(value)).unwrap(),
            StateRecord::DedupKey(
                Fingerprint::of(&["P", "AddToCart", "e1"]),
                Some(KeyRecord::Pending(action(5_000)))
            )
        );
    }

    #[test]
    fn closed_and_pending_in_a_format_2_value_is_corrupt() {
        let mut value = vec![2, b'b', 7, 0, 0, 0, 3];
        serde_json::to_writer(&mut value, &action(5_000)).unwrap();
        assert!(matches!(
            decode(&dedup_entry(value)),
            Err(ChangelogError::Corrupt { .. })
        ));
        assert!(matches!(
            decode(&dedup_entry(vec![CHANGELOG_VERSION, b'b', 7, 0])),
            Err(ChangelogError::Corrupt { .. })
        ));
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
