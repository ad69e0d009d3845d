//! Accounting: every input record lands in exactly one bucket, and the buckets sum to the input.
//!
//! Owns: the counters behind `stats.json` and the conservation check. Must not: decide a bucket
//! (the engine does); it only counts what it is told.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{DeadLetterReason, DiscrepancyKind, Input, Money, SourcesSeen};

/// Why a copy was dropped as a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicateReason {
    /// Its source already had a copy in the action (a retry, a reload).
    SameSource,
    /// The other source's copy, with event times further apart than the merge window.
    AfterMergeWindow,
    /// The other source's copy within the merge window, arriving after the action was released.
    AfterRelease,
    /// A purchase action for an order key another action already converted.
    DuplicateOrder,
}

impl DuplicateReason {
    pub const ALL: [DuplicateReason; 4] = [
        DuplicateReason::SameSource,
        DuplicateReason::AfterMergeWindow,
        DuplicateReason::AfterRelease,
        DuplicateReason::DuplicateOrder,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DuplicateReason::SameSource => "same_source",
            DuplicateReason::AfterMergeWindow => "after_merge_window",
            DuplicateReason::AfterRelease => "after_release",
            DuplicateReason::DuplicateOrder => "duplicate_order",
        }
    }
}

/// What happened to an order change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderOutcome {
    Applied,
    Redelivered,
    Tombstone,
    Historical,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputRecords {
    pub browser: u64,
    pub server: u64,
    pub orders: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceCounts {
    pub browser: u64,
    pub server: u64,
    pub both: u64,
}

/// The accounting, as written to `stats.json`. Keys match `truth.json` where both have them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub input_records: InputRecords,
    pub conversions: u64,
    pub merged: u64,
    pub duplicates: u64,
    pub duplicates_by_reason: BTreeMap<String, u64>,
    pub consent_dropped: u64,
    pub dead_letters: u64,
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    pub late: u64,
    pub orders_applied: u64,
    pub orders_redelivered: u64,
    pub orders_tombstones: u64,
    pub orders_historical: u64,
    pub discrepancies: BTreeMap<String, u64>,
    pub sources: SourceCounts,
    pub revenue_windows: u64,
    /// Purchase conversions' values by currency.
    pub tracked_revenue: BTreeMap<String, Money>,
    /// Revenue-counting orders' totals by currency, as reconciled and updated.
    pub backend_revenue: BTreeMap<String, Money>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            input_records: InputRecords::default(),
            conversions: 0,
            merged: 0,
            duplicates: 0,
            duplicates_by_reason: DuplicateReason::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), 0))
                .collect(),
            consent_dropped: 0,
            dead_letters: 0,
            dead_letters_by_reason: BTreeMap::new(),
            late: 0,
            orders_applied: 0,
            orders_redelivered: 0,
            orders_tombstones: 0,
            orders_historical: 0,
            discrepancies: DiscrepancyKind::ALL
                .iter()
                .map(|k| (k.as_str().to_string(), 0))
                .collect(),
            sources: SourceCounts::default(),
            revenue_windows: 0,
            tracked_revenue: BTreeMap::new(),
            backend_revenue: BTreeMap::new(),
        }
    }
}

impl Stats {
    pub fn input(&mut self, input: Input) {
        match input {
            Input::Browser => self.input_records.browser += 1,
            Input::Server => self.input_records.server += 1,
            Input::Orders => self.input_records.orders += 1,
        }
        self.input_records.total += 1;
    }

    pub fn conversion(&mut self, sources: SourcesSeen) {
        self.conversions += 1;
        match sources {
            SourcesSeen::Browser => self.sources.browser += 1,
            SourcesSeen::Server => self.sources.server += 1,
            SourcesSeen::Both => {
                self.sources.both += 1;
                self.merged += 1;
            }
        }
    }

    pub fn duplicates(&mut self, reason: DuplicateReason, copies: u64) {
        self.duplicates += copies;
        *self
            .duplicates_by_reason
            .entry(reason.as_str().to_string())
            .or_default() += copies;
    }

    pub fn consent_dropped(&mut self, copies: u64) {
        self.consent_dropped += copies;
    }

    pub fn dead_letter(&mut self, reason: DeadLetterReason) {
        self.dead_letters += 1;
        *self
            .dead_letters_by_reason
            .entry(reason.as_str().to_string())
            .or_default() += 1;
    }

    pub fn late(&mut self) {
        self.late += 1;
    }

    pub fn order(&mut self, outcome: OrderOutcome) {
        match outcome {
            OrderOutcome::Applied => self.orders_applied += 1,
            OrderOutcome::Redelivered => self.orders_redelivered += 1,
            OrderOutcome::Tombstone => self.orders_tombstones += 1,
            OrderOutcome::Historical => self.orders_historical += 1,
        }
    }

    pub fn discrepancy(&mut self, kind: DiscrepancyKind) {
        *self
            .discrepancies
            .entry(kind.as_str().to_string())
            .or_default() += 1;
    }

    pub fn track_revenue(&mut self, currency: &str, delta: Money) {
        add_money(&mut self.tracked_revenue, currency, delta);
    }

    pub fn backend_revenue(&mut self, currency: &str, delta: Money) {
        add_money(&mut self.backend_revenue, currency, delta);
    }

    /// The sum of all buckets: equals `input_records.total` once nothing is pending.
    pub fn accounted(&self) -> u64 {
        self.conversions
            + self.merged
            + self.duplicates
            + self.consent_dropped
            + self.dead_letters
            + self.late
            + self.orders_applied
            + self.orders_redelivered
            + self.orders_tombstones
            + self.orders_historical
    }
}

fn add_money(map: &mut BTreeMap<String, Money>, currency: &str, delta: Money) {
    if delta.0 == 0 {
        return;
    }
    match map.get_mut(currency) {
        Some(m) => m.0 += delta.0,
        None => {
            map.insert(currency.to_string(), delta);
        }
    }
}
