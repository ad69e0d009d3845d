//! The event_id cache: one action per (pixel, event, event_id) within the TTL, browser and server
//! copies merged within the merge window, consent applied across every copy of an action.
//!
//! Owns: pending actions (a held copy per source until the watermark passes the merge window),
//! closed keys (12 bytes each, see `keys`), the release queue, and the duplicate and consent
//! buckets. Must not: build outputs for released actions (the engine does, because emission also
//! depends on order dedup and reconciliation); it hands released actions over and is told how
//! they ended through [`Dedup::close`].

use std::borrow::Cow;
use std::collections::BTreeSet;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::model::{Consent, DiscrepancyKind, Event, MatchKey, Source};

use super::changelog::DirtySet;
use super::keys::{Fingerprint, KeyState, KeyTable};
use super::stats::{DuplicateReason, Stats};
use super::{push_discrepancy, Outputs};

/// Bits kept per closed key.
pub mod flags {
    /// Released: emitted as a conversion, or (a purchase) handed to the order side, which may
    /// still drop it as a duplicate order. For consent both are final: a later denied copy
    /// cannot recall it.
    pub const EMITTED: u8 = 1;
    /// Dropped because a copy denied consent.
    pub const CONSENT_DROPPED: u8 = 1 << 1;
    pub const HAS_BROWSER: u8 = 1 << 3;
    pub const HAS_SERVER: u8 = 1 << 4;
    pub const BROWSER_DENIED: u8 = 1 << 5;
    /// The action's one consent_violation has been raised.
    pub const VIOLATION_RAISED: u8 = 1 << 6;

    pub fn of_source(source: crate::model::Source) -> u8 {
        match source {
            crate::model::Source::Browser => HAS_BROWSER,
            crate::model::Source::Server => HAS_SERVER,
        }
    }
}

/// The copies of one user action, from its first copy until release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// `None` for a copy without event_id, which can never be matched again.
    pub fp: Option<Fingerprint>,
    /// The conversion's record key.
    pub key: String,
    // Boxed: actions move in and out of the pending map; moving two inline events (about
    // 1 KB) each time cost a fifth of the engine's time.
    pub browser: Option<Box<Event>>,
    pub server: Option<Box<Event>>,
    /// Event time (ms) of the earliest copy: the action's merge window and TTL start here.
    pub anchor: i64,
    pub missing_event_id: bool,
}

impl Action {
    fn new(
        fp: Option<Fingerprint>,
        key: String,
        event: Box<Event>,
        missing_event_id: bool,
    ) -> Action {
        let anchor = event.event_time;
        let mut action = Action {
            fp,
            key,
            browser: None,
            server: None,
            anchor,
            missing_event_id,
        };
        let source = event.source;
        *action.slot(source) = Some(event);
        action
    }

    fn slot(&mut self, source: Source) -> &mut Option<Box<Event>> {
        match source {
            Source::Browser => &mut self.browser,
            Source::Server => &mut self.server,
        }
    }

    /// The first copy (smaller event time; ties: browser, then input position) and the other.
    pub fn ordered(&self) -> (&Event, Option<&Event>) {
        match (&self.browser, &self.server) {
            (Some(b), Some(s)) => {
                if server_is_first(b, s) {
                    (s, Some(b))
                } else {
                    (b, Some(s))
                }
            }
            (Some(only), None) | (None, Some(only)) => (only, None),
            (None, None) => unreachable!("an action always holds its first copy"),
        }
    }

    /// The key and the copies by value, first copy first (see [`Action::ordered`]).
    pub fn into_parts(self) -> (String, Box<Event>, Option<Box<Event>>) {
        let (first, other) = match (self.browser, self.server) {
            (Some(b), Some(s)) => {
                if server_is_first(&b, &s) {
                    (s, Some(b))
                } else {
                    (b, Some(s))
                }
            }
            (Some(only), None) | (None, Some(only)) => (only, None),
            (None, None) => unreachable!("an action always holds its first copy"),
        };
        (self.key, first, other)
    }

    fn source_flags(&self) -> u8 {
        let mut f = 0;
        if self.browser.is_some() {
            f |= flags::HAS_BROWSER;
        }
        if self.server.is_some() {
            f |= flags::HAS_SERVER;
        }
        f
    }
}

/// Whether the server copy comes first: smaller event time; ties go to the browser copy, then
/// to the earlier input position.
fn server_is_first(browser: &Event, server: &Event) -> bool {
    (server.event_time, server.source, &server.position)
        < (browser.event_time, browser.source, &browser.position)
}

/// The dedup rules' parameters, in the units they are compared in.
#[derive(Debug, Clone)]
pub struct DedupRules {
    pub ttl_s: i64,
    pub merge_window_ms: i64,
    pub default_denied: bool,
    pub pair_on_ttp: bool,
}

pub struct Dedup {
    rules: DedupRules,
    pending: HashMap<Fingerprint, Action>,
    /// (due time, key): released in this order, which depends only on the data.
    queue: BTreeSet<(i64, Fingerprint)>,
    closed: KeyTable,
    /// Keys changed since the last changelog flush.
    dirty: DirtySet<Fingerprint>,
}

/// A key's state as the changelog records it: everything the key holds, in one record, so a
/// restore puts back exactly that. Transient, like `StateRecord`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum KeyRecord {
    Pending(Action),
    Closed(KeyState),
    /// An event_id reused after its TTL: a new action is pending while the old action's key is
    /// still closed (for two TTLs). Both decide where a later copy goes (see [`Dedup::offer`]),
    /// so both are kept.
    ClosedAndPending(KeyState, Action),
}

impl KeyRecord {
    fn of(closed: Option<KeyState>, pending: Option<&Action>) -> Option<KeyRecord> {
        match (closed, pending) {
            (None, None) => None,
            (Some(state), None) => Some(KeyRecord::Closed(state)),
            (None, Some(action)) => Some(KeyRecord::Pending(action.clone())),
            (Some(state), Some(action)) => Some(KeyRecord::ClosedAndPending(state, action.clone())),
        }
    }

    fn into_parts(record: Option<KeyRecord>) -> (Option<KeyState>, Option<Action>) {
        match record {
            None => (None, None),
            Some(KeyRecord::Closed(state)) => (Some(state), None),
            Some(KeyRecord::Pending(action)) => (None, Some(action)),
            Some(KeyRecord::ClosedAndPending(state, action)) => (Some(state), Some(action)),
        }
    }
}

fn seconds(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

impl Dedup {
    pub fn new(rules: DedupRules) -> Dedup {
        Dedup {
            rules,
            pending: HashMap::new(),
            queue: BTreeSet::new(),
            closed: KeyTable::default(),
            dirty: DirtySet::default(),
        }
    }

    /// Offers one copy. Copies that complete nothing are counted here; actions that are ready
    /// (a copy without event_id, any copy with a merge window of 0, a pending action superseded
    /// after its TTL) are appended to `released`.
    pub fn offer(
        &mut self,
        event: Box<Event>,
        stats: &mut Stats,
        out: &mut Outputs,
        released: &mut Vec<Action>,
    ) {
        let denied = match event.consent {
            Some(c) => c == Consent::Denied,
            None => self.rules.default_denied,
        };
        let key_id: Option<Cow<'_, str>> = match (event.event_id(), event.user_key(MatchKey::Ttp)) {
            (Some(id), _) => Some(Cow::Borrowed(id)),
            (None, Some(ttp)) if self.rules.pair_on_ttp => Some(Cow::Owned(format!("ttp:{ttp}"))),
            _ => None,
        };
        let Some(key_id) = key_id else {
            if denied {
                stats.consent_dropped(event.pixel(), event.source, 1);
                return;
            }
            let p = &event.position;
            let key = format!(
                "{}/{}/~{}:{}:{}:{}",
                event.pixel(),
                event.name(),
                event.source.as_str(),
                p.partition,
                p.offset,
                p.index
            );
            released.push(Action::new(None, key, event, true));
            return;
        };
        let fp = Fingerprint::of(&[event.pixel(), event.name(), &key_id]);
        let t = event.event_time;

        // The closed state is checked first: while a key has both, the closed action is the
        // older one, and a copy within its TTL belongs to it even when it is also within the
        // merge window of the newer, pending action.
        if let Some(state) = self.closed.get(fp) {
            if seconds(t) < i64::from(state.anchor_s) + self.rules.ttl_s {
                self.offer_to_closed(fp, state, &event, denied, stats, out);
                return;
            }
        }

        if let Some(action) = self.pending.get(&fp) {
            if seconds(t) >= seconds(action.anchor) + self.rules.ttl_s {
                // Its TTL is over while it still waits (an input held the watermark back): the
                // old action is complete, this copy starts a new one.
                let old = self.remove_pending(fp);
                released.push(old);
            } else {
                self.offer_to_pending(fp, event, denied, stats, out);
                return;
            }
        }

        let missing_event_id = event.event_id().is_none();
        if denied {
            stats.consent_dropped(event.pixel(), event.source, 1);
            let mut f = flags::CONSENT_DROPPED | flags::of_source(event.source);
            if event.source == Source::Browser {
                f |= flags::BROWSER_DENIED;
            }
            self.close_key(fp, t, f);
            return;
        }
        let key = [event.pixel(), "/", event.name(), "/", &key_id].concat();
        let action = Action::new(Some(fp), key, event, missing_event_id);
        if self.rules.merge_window_ms == 0 {
            released.push(action);
            return;
        }
        self.queue
            .insert((action.anchor + self.rules.merge_window_ms, fp));
        self.pending.insert(fp, action);
        self.dirty.mark(fp);
    }

    fn offer_to_pending(
        &mut self,
        fp: Fingerprint,
        event: Box<Event>,
        denied: bool,
        stats: &mut Stats,
        out: &mut Outputs,
    ) {
        if denied {
            let action = self.remove_pending(fp);
            for copy in [&action.browser, &action.server].into_iter().flatten() {
                stats.consent_dropped(copy.pixel(), copy.source, 1);
            }
            stats.consent_dropped(event.pixel(), event.source, 1);
            let mut f =
                flags::CONSENT_DROPPED | action.source_flags() | flags::of_source(event.source);
            if event.source == Source::Browser {
                f |= flags::BROWSER_DENIED;
                if action.server.is_some() {
                    f |= flags::VIOLATION_RAISED;
                    consent_violation(&event, stats, out);
                }
            }
            self.close_key(fp, action.anchor.min(event.event_time), f);
            return;
        }
        let window = self.rules.merge_window_ms;
        let action = self.pending.get_mut(&fp).expect("checked by caller");
        if action.slot(event.source).is_some() {
            stats.duplicates(event.pixel(), event.source, DuplicateReason::SameSource, 1);
            return;
        }
        if (event.event_time - action.anchor).abs() > window {
            stats.duplicates(
                event.pixel(),
                event.source,
                DuplicateReason::AfterMergeWindow,
                1,
            );
            return;
        }
        let t = event.event_time;
        self.dirty.mark(fp);
        let source = event.source;
        *action.slot(source) = Some(event);
        if t < action.anchor {
            self.queue.remove(&(action.anchor + window, fp));
            action.anchor = t;
            self.queue.insert((t + window, fp));
        }
    }

    fn offer_to_closed(
        &mut self,
        fp: Fingerprint,
        state: KeyState,
        event: &Event,
        denied: bool,
        stats: &mut Stats,
        out: &mut Outputs,
    ) {
        let mut f = state.flags | flags::of_source(event.source);
        if state.flags & flags::CONSENT_DROPPED != 0 {
            stats.consent_dropped(event.pixel(), event.source, 1);
            if denied && event.source == Source::Browser {
                f |= flags::BROWSER_DENIED;
            }
            let violation = flags::BROWSER_DENIED | flags::HAS_SERVER;
            if f & violation == violation && f & flags::VIOLATION_RAISED == 0 {
                f |= flags::VIOLATION_RAISED;
                consent_violation(event, stats, out);
            }
        } else if denied {
            stats.consent_dropped(event.pixel(), event.source, 1);
            if state.flags & flags::EMITTED != 0 {
                let mut d = super::discrepancy_about(
                    DiscrepancyKind::ConsentAfterEmit,
                    event,
                    &format!(
                        "{}:{}:{}",
                        event.position.partition, event.position.offset, event.position.index
                    ),
                );
                d.source = Some(event.source);
                push_discrepancy(d, stats, out);
            }
        } else {
            let reason = if state.flags & flags::of_source(event.source) != 0 {
                DuplicateReason::SameSource
            } else if (event.event_time - i64::from(state.anchor_s) * 1000).abs()
                > self.rules.merge_window_ms
            {
                DuplicateReason::AfterMergeWindow
            } else {
                DuplicateReason::AfterRelease
            };
            stats.duplicates(event.pixel(), event.source, reason, 1);
        }
        self.closed.put(
            fp,
            KeyState {
                anchor_s: state.anchor_s,
                flags: f,
            },
        );
        self.dirty.mark(fp);
    }

    /// Records that a released action ended with `outcome` (`flags::EMITTED`).
    pub fn close(&mut self, action: &Action, outcome: u8) {
        if let Some(fp) = action.fp {
            self.close_key(fp, action.anchor, outcome | action.source_flags());
        }
    }

    fn close_key(&mut self, fp: Fingerprint, anchor_ms: i64, flags: u8) {
        let anchor_s = u32::try_from(seconds(anchor_ms).max(0)).unwrap_or(u32::MAX);
        self.closed.put(fp, KeyState { anchor_s, flags });
        self.dirty.mark(fp);
    }

    fn remove_pending(&mut self, fp: Fingerprint) -> Action {
        let action = self.pending.remove(&fp).expect("pending action");
        self.dirty.mark(fp);
        self.queue
            .remove(&(action.anchor + self.rules.merge_window_ms, fp));
        action
    }

    /// Due time of the earliest pending release.
    pub fn next_due(&self) -> Option<i64> {
        self.queue.first().map(|(due, _)| *due)
    }

    /// Releases the earliest pending action.
    pub fn release_next(&mut self) -> Option<Action> {
        let (_, fp) = self.queue.pop_first()?;
        self.dirty.mark(fp);
        self.pending.remove(&fp)
    }

    /// Forgets closed keys that no copy still counted on time can reach (anchored more than
    /// two TTLs behind the watermark: a copy within the TTL of such a key would be late). Each
    /// forgotten key is marked changed, so the changelog tombstones it; the key may still be
    /// pending (a new action under a reused event_id), in which case its record then holds the
    /// pending action alone.
    pub fn expire(&mut self, watermark: i64) {
        let cutoff = seconds(watermark) - 2 * self.rules.ttl_s;
        let cutoff_s = u32::try_from(cutoff.max(0)).unwrap_or(u32::MAX);
        let dirty = &mut self.dirty;
        self.closed.expire_before(cutoff_s, |fp| dirty.mark(fp));
    }

    /// Starts tracking changed keys for the changelog.
    pub fn track_changes(&mut self) {
        self.dirty.enable();
    }

    /// The state of every key changed since the last call: its closed entry and its pending
    /// action, whichever it has (`None`: the key is gone).
    pub fn take_changes(&mut self) -> impl Iterator<Item = (Fingerprint, Option<KeyRecord>)> + '_ {
        let (closed, pending) = (&self.closed, &self.pending);
        self.dirty
            .drain_sorted()
            .into_iter()
            .map(move |fp| (fp, KeyRecord::of(closed.get(fp), pending.get(&fp))))
    }

    /// Puts back one key from the changelog: the record replaces all the key held (`None`
    /// removes it).
    pub fn restore(&mut self, fp: Fingerprint, record: Option<KeyRecord>) {
        if let Some(old) = self.pending.remove(&fp) {
            self.queue
                .remove(&(old.anchor + self.rules.merge_window_ms, fp));
        }
        self.closed.remove(fp);
        let (closed, pending) = KeyRecord::into_parts(record);
        if let Some(state) = closed {
            self.closed.put(fp, state);
        }
        if let Some(action) = pending {
            self.queue
                .insert((action.anchor + self.rules.merge_window_ms, fp));
            self.pending.insert(fp, action);
        }
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn closed_len(&self) -> usize {
        self.closed.len()
    }

    pub fn closed_bytes(&self) -> usize {
        self.closed.allocated_bytes()
    }
}

fn consent_violation(event: &Event, stats: &mut Stats, out: &mut Outputs) {
    let d = super::discrepancy_about(DiscrepancyKind::ConsentViolation, event, "");
    push_discrepancy(d, stats, out);
}
