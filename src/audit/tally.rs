//! The one-pass fold of output records into what the checks grade.
//!
//! Owns: counting conversions, discrepancies, dead letters and revenue windows as they stream
//! by, in any order, and the two indexes the checks need beyond counts: dedup keys and order
//! keys with their event times (to find one action emitted twice), and the latest version of
//! each revenue window. Must not: grade (that is `checks`), or assume the records arrive sorted.
//!
//! Memory: one 128-bit xxh3 fingerprint and one timestamp per conversion (about 40 bytes with
//! the table's load factor), rather than the key itself (about 70 bytes of text plus a `String`).
//! Two different keys share a fingerprint with odds of about n^2 / 2^129: 1.5e-21 at a billion
//! conversions, so a reported duplicate is a duplicate.

use std::collections::BTreeMap;

use hashbrown::hash_map::Entry;
use hashbrown::HashMap;
use xxhash_rust::xxh3::{xxh3_128, Xxh3Default};

use crate::engine::stats::{SourceCounts, MAX_TALLIED_PIXELS};
use crate::model::{
    Conversion, DeadLetter, Discrepancy, DiscrepancyKind, Input, MatchKey, RevenueWindow,
    SourcesSeen, ValueSource,
};

use super::{AuditOptions, OutputRecord};

/// Offending keys kept to name in the report; the counts go on past it.
pub const MAX_EXAMPLES: usize = 10;

/// Records read, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub conversions: u64,
    pub discrepancies: u64,
    pub dead_letters: u64,
    pub revenue_windows: u64,
}

/// Conversions of one pixel by the sources they saw, for its pair rate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PixelTally {
    pub conversions: u64,
    /// Conversions that merged a browser and a server copy.
    pub both: u64,
    pub browser: u64,
    pub server: u64,
}

/// Event times seen per fingerprint. Almost every key is seen once, so the first time lives in
/// one flat table and only keys seen again get a list.
#[derive(Debug, Default)]
struct TimeIndex {
    first: HashMap<u128, i64>,
    more: HashMap<u128, Vec<i64>>,
}

impl TimeIndex {
    /// Records `t` under `fp`; true when an earlier record of `fp` is less than `window` away.
    fn insert(&mut self, fp: u128, t: i64, window: i64) -> bool {
        match self.first.entry(fp) {
            Entry::Vacant(e) => {
                e.insert(t);
                false
            }
            Entry::Occupied(e) => {
                let first = *e.get();
                let more = self.more.entry(fp).or_default();
                let close = std::iter::once(first)
                    .chain(more.iter().copied())
                    .any(|s| (s - t).abs() < window);
                more.push(t);
                close
            }
        }
    }

    fn times(&self, fp: u128) -> impl Iterator<Item = i64> + '_ {
        self.first
            .get(&fp)
            .copied()
            .into_iter()
            .chain(self.more.get(&fp).into_iter().flatten().copied())
    }
}

/// A `consent_violation`: its action was dropped, so no conversion may carry its key.
#[derive(Debug, Clone)]
struct Violation {
    fp: u128,
    /// Unix seconds of the copy that raised it.
    time: i64,
    key: String,
}

/// Everything the checks grade, folded from output records in one pass.
#[derive(Debug)]
pub struct Tally {
    ttl_s: i64,
    purchase_events: Vec<String>,
    pub records: RecordCounts,
    /// Conversions by the sources they saw.
    pub sources: SourceCounts,
    /// Conversions carrying each match key, in [`MatchKey::ALL`] order.
    pub match_keys: [u64; 5],
    pub pixels: BTreeMap<String, PixelTally>,
    /// Earliest and latest conversion event time, Unix seconds.
    pub time_range: Option<(i64, i64)>,
    pub purchases: u64,
    pub purchases_with_order_id: u64,
    /// Purchases emitted without a value (neither copy had one).
    pub purchases_without_value: u64,
    pub purchases_without_currency: u64,
    /// Purchases carrying a hashed email, phone or external_id.
    pub purchases_identified: u64,
    /// Conversions that share their dedup key with an earlier one less than the TTL away.
    pub duplicate_keys: u64,
    pub duplicate_key_examples: Vec<String>,
    /// Purchase conversions that share (pixel, order_id) with an earlier one within the TTL.
    pub duplicate_orders: u64,
    pub duplicate_order_examples: Vec<String>,
    pub discrepancies: BTreeMap<DiscrepancyKind, u64>,
    /// `match_key_parity` findings by key, in [`MatchKey::ALL`] order.
    pub match_key_parity: [u64; 5],
    pub dead_letters_by_input: BTreeMap<Input, u64>,
    keys: TimeIndex,
    order_keys: TimeIndex,
    violations: Vec<Violation>,
    windows: HashMap<String, RevenueWindow>,
}

impl Tally {
    pub fn new(options: &AuditOptions) -> Tally {
        Tally {
            ttl_s: options.ttl.as_secs() as i64,
            purchase_events: options.purchase_events.clone(),
            records: RecordCounts::default(),
            sources: SourceCounts::default(),
            match_keys: [0; 5],
            pixels: BTreeMap::new(),
            time_range: None,
            purchases: 0,
            purchases_with_order_id: 0,
            purchases_without_value: 0,
            purchases_without_currency: 0,
            purchases_identified: 0,
            duplicate_keys: 0,
            duplicate_key_examples: Vec::new(),
            duplicate_orders: 0,
            duplicate_order_examples: Vec::new(),
            discrepancies: DiscrepancyKind::ALL.iter().map(|k| (*k, 0)).collect(),
            match_key_parity: [0; 5],
            dead_letters_by_input: BTreeMap::new(),
            keys: TimeIndex::default(),
            order_keys: TimeIndex::default(),
            violations: Vec::new(),
            windows: HashMap::new(),
        }
    }

    /// The dedup TTL the tally compares times against, in seconds.
    pub fn ttl_s(&self) -> i64 {
        self.ttl_s
    }

    pub fn observe(&mut self, record: &OutputRecord) {
        match record {
            OutputRecord::Conversion(c) => self.conversion(c),
            OutputRecord::Discrepancy(d) => self.discrepancy(d),
            OutputRecord::DeadLetter(d) => self.dead_letter(d),
            OutputRecord::RevenueWindow(w) => self.revenue_window(w),
        }
    }

    pub fn conversion(&mut self, c: &Conversion) {
        self.records.conversions += 1;
        match c.sources {
            SourcesSeen::Browser => self.sources.browser += 1,
            SourcesSeen::Server => self.sources.server += 1,
            SourcesSeen::Both => self.sources.both += 1,
        }
        for (n, key) in self.match_keys.iter_mut().zip(MatchKey::ALL) {
            if c.user.key(key).is_some() {
                *n += 1;
            }
        }
        let pixel = if self.pixels.contains_key(&c.event_source_id)
            || self.pixels.len() < MAX_TALLIED_PIXELS
        {
            c.event_source_id.as_str()
        } else {
            "other"
        };
        if !self.pixels.contains_key(pixel) {
            self.pixels.insert(pixel.to_string(), PixelTally::default());
        }
        let p = self.pixels.get_mut(pixel).expect("inserted above");
        p.conversions += 1;
        match c.sources {
            SourcesSeen::Browser => p.browser += 1,
            SourcesSeen::Server => p.server += 1,
            SourcesSeen::Both => p.both += 1,
        }
        let t = c.event_time;
        self.time_range = Some(match self.time_range {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });

        if self.keys.insert(xxh3_128(c.key.as_bytes()), t, self.ttl_s) {
            self.duplicate_keys += 1;
            if self.duplicate_key_examples.len() < MAX_EXAMPLES {
                self.duplicate_key_examples.push(c.key.clone());
            }
        }

        if !self.purchase_events.contains(&c.event) {
            return;
        }
        self.purchases += 1;
        if c.properties.value.is_none() || c.value_source == ValueSource::None {
            self.purchases_without_value += 1;
        }
        if c.properties.currency.is_none() {
            self.purchases_without_currency += 1;
        }
        if MatchKey::PARITY.iter().any(|k| c.user.key(*k).is_some()) {
            self.purchases_identified += 1;
        }
        let Some(order_id) = &c.properties.order_id else {
            return;
        };
        self.purchases_with_order_id += 1;
        let mut h = Xxh3Default::new();
        h.update(c.event_source_id.as_bytes());
        h.update(&[0]);
        h.update(order_id.as_bytes());
        if self.order_keys.insert(h.digest128(), t, self.ttl_s) {
            self.duplicate_orders += 1;
            if self.duplicate_order_examples.len() < MAX_EXAMPLES {
                self.duplicate_order_examples
                    .push(format!("{}/order {order_id}", c.event_source_id));
            }
        }
    }

    pub fn discrepancy(&mut self, d: &Discrepancy) {
        self.records.discrepancies += 1;
        *self.discrepancies.entry(d.kind).or_default() += 1;
        match d.kind {
            DiscrepancyKind::MatchKeyParity => {
                if let Some(i) = d
                    .match_key
                    .and_then(|k| MatchKey::ALL.iter().position(|m| *m == k))
                {
                    self.match_key_parity[i] += 1;
                }
            }
            DiscrepancyKind::ConsentViolation => {
                // The action's dedup key, as conversions spell it. Without event_id (pairing on
                // _ttp) the key cannot be rebuilt from the finding: counted, not joined.
                if let (Some(pixel), Some(event), Some(id)) =
                    (&d.event_source_id, &d.event, &d.event_id)
                {
                    let key = format!("{pixel}/{event}/{id}");
                    self.violations.push(Violation {
                        fp: xxh3_128(key.as_bytes()),
                        time: d.time,
                        key,
                    });
                }
            }
            _ => {}
        }
    }

    pub fn dead_letter(&mut self, d: &DeadLetter) {
        self.records.dead_letters += 1;
        *self.dead_letters_by_input.entry(d.input).or_default() += 1;
    }

    /// Keeps the latest version of each window (a compacted topic's view).
    pub fn revenue_window(&mut self, w: &RevenueWindow) {
        self.records.revenue_windows += 1;
        match self.windows.get_mut(&w.key) {
            Some(old) if old.version >= w.version => {}
            Some(old) => *old = w.clone(),
            None => {
                self.windows.insert(w.key.clone(), w.clone());
            }
        }
    }

    /// The latest version of every revenue window, by pixel, currency and hour.
    pub fn latest_windows(&self) -> Vec<&RevenueWindow> {
        let mut v: Vec<&RevenueWindow> = self.windows.values().collect();
        v.sort_by(|a, b| {
            (&a.event_source_id, &a.currency, a.hour_start).cmp(&(
                &b.event_source_id,
                &b.currency,
                b.hour_start,
            ))
        });
        v
    }

    /// Conversions emitted for an action that a `consent_violation` says was dropped: the
    /// violating copy lies within the TTL after a conversion of the same key, so it belonged to
    /// that emitted action (docs/RULES.md: a copy within the TTL of an action belongs to it).
    /// Returns their count and up to [`MAX_EXAMPLES`] keys.
    pub fn conversions_from_dropped_actions(&self) -> (u64, Vec<String>) {
        let mut n = 0;
        let mut examples = Vec::new();
        for v in &self.violations {
            let hit = self
                .keys
                .times(v.fp)
                .any(|t| t <= v.time && v.time < t + self.ttl_s);
            if hit {
                n += 1;
                if examples.len() < MAX_EXAMPLES {
                    examples.push(v.key.clone());
                }
            }
        }
        (n, examples)
    }

    /// How many `consent_violation` findings could be joined to conversion keys.
    pub fn joinable_violations(&self) -> u64 {
        self.violations.len() as u64
    }

    pub fn discrepancy_count(&self, kind: DiscrepancyKind) -> u64 {
        self.discrepancies.get(&kind).copied().unwrap_or(0)
    }
}
