//! The expected outcome of a generated traffic set: what a correct engine must count.
//!
//! Owns: the [`Truth`] record written as `truth.json`, the accounting buckets every generated
//! input record is tagged with ([`Bucket`]), and the conservation check (the buckets sum to the
//! input count). Must not: decide outcomes. The scenario plan decides them; this module only
//! adds them up. Keys serialise in a fixed order (struct fields, then `BTreeMap`s), so the same
//! plan always gives byte-identical JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{DiscrepancyKind, Money, SourcesSeen};

/// Why a copy is counted as a duplicate (the keys of `duplicates_by_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DupReason {
    SameSource,
    AfterMergeWindow,
    AfterRelease,
    DuplicateOrder,
}

impl DupReason {
    pub(crate) const ALL: [DupReason; 4] = [
        DupReason::SameSource,
        DupReason::AfterMergeWindow,
        DupReason::AfterRelease,
        DupReason::DuplicateOrder,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DupReason::SameSource => "same_source",
            DupReason::AfterMergeWindow => "after_merge_window",
            DupReason::AfterRelease => "after_release",
            DupReason::DuplicateOrder => "duplicate_order",
        }
    }
}

/// The one accounting bucket an input record lands in. A line carries one per input record
/// it holds (a server body with N events carries N).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bucket {
    /// The first copy of an emitted conversion.
    Conversion,
    /// Another copy merged into an emitted conversion.
    Merged,
    Duplicate(DupReason),
    /// Dropped because a copy of its action denied consent.
    ConsentDropped,
    /// A denied copy that arrives after its action was emitted: counted in `consent_dropped`
    /// and raises one `consent_after_emit`.
    ConsentAfterEmit,
    Late,
    DeadLetter,
    OrderApplied,
    OrderRedelivered,
    OrderTombstone,
    OrderHistorical,
}

/// Input records per file; a server body counts one per event, a malformed line one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecords {
    pub browser: u64,
    pub server: u64,
    pub orders: u64,
    pub total: u64,
}

/// Emitted conversions by the sources they saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    pub browser: u64,
    pub server: u64,
    pub both: u64,
}

/// The exact counts a correct replay of the generated files must report (`truth.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    /// Emitted conversions (one first copy each).
    pub conversions: u64,
    /// Copies merged into a conversion besides its first.
    pub merged: u64,
    pub duplicates: u64,
    /// same_source, after_merge_window, after_release, duplicate_order.
    pub duplicates_by_reason: BTreeMap<String, u64>,
    pub consent_dropped: u64,
    pub dead_letters: u64,
    pub late: u64,
    pub orders_applied: u64,
    pub orders_redelivered: u64,
    pub orders_tombstones: u64,
    pub orders_historical: u64,
    /// Every kind of `DiscrepancyKind::ALL`, zero when none.
    pub discrepancies: BTreeMap<String, u64>,
    pub input_records: InputRecords,
    /// Emitted purchase conversions' values by conversion currency.
    pub tracked_revenue: BTreeMap<String, Money>,
    /// Final totals of non-historical orders that count as revenue, by order currency.
    pub backend_revenue: BTreeMap<String, Money>,
    pub sources: SourceCounts,
}

impl Default for Truth {
    fn default() -> Self {
        Truth::new()
    }
}

impl Truth {
    /// All counts zero, with every duplicate reason and discrepancy kind present.
    pub fn new() -> Truth {
        Truth {
            conversions: 0,
            merged: 0,
            duplicates: 0,
            duplicates_by_reason: DupReason::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), 0))
                .collect(),
            consent_dropped: 0,
            dead_letters: 0,
            late: 0,
            orders_applied: 0,
            orders_redelivered: 0,
            orders_tombstones: 0,
            orders_historical: 0,
            discrepancies: DiscrepancyKind::ALL
                .iter()
                .map(|k| (k.as_str().to_string(), 0))
                .collect(),
            input_records: InputRecords::default(),
            tracked_revenue: BTreeMap::new(),
            backend_revenue: BTreeMap::new(),
            sources: SourceCounts::default(),
        }
    }

    /// Sum of the accounting buckets; equals `input_records.total` when conserved.
    pub fn bucket_total(&self) -> u64 {
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

    /// Every input record is in exactly one bucket, and the breakdowns add up.
    pub fn check_conservation(&self) -> Result<(), String> {
        let i = &self.input_records;
        if i.browser + i.server + i.orders != i.total {
            return Err(format!("input_records parts do not sum to total: {i:?}"));
        }
        if self.bucket_total() != i.total {
            return Err(format!(
                "buckets sum to {} but there are {} input records",
                self.bucket_total(),
                i.total
            ));
        }
        let by_reason: u64 = self.duplicates_by_reason.values().sum();
        if by_reason != self.duplicates {
            return Err(format!(
                "duplicates_by_reason sums to {by_reason}, duplicates is {}",
                self.duplicates
            ));
        }
        let s = &self.sources;
        if s.browser + s.server + s.both != self.conversions {
            return Err(format!(
                "sources {s:?} do not sum to {} conversions",
                self.conversions
            ));
        }
        Ok(())
    }

    /// `truth.json`: pretty, keys in a fixed order, newline-terminated.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("truth serialises");
        text.push('\n');
        text
    }

    pub(crate) fn count(&mut self, bucket: Bucket) {
        match bucket {
            Bucket::Conversion => self.conversions += 1,
            Bucket::Merged => self.merged += 1,
            Bucket::Duplicate(reason) => {
                self.duplicates += 1;
                *self
                    .duplicates_by_reason
                    .get_mut(reason.as_str())
                    .expect("every reason is present") += 1;
            }
            Bucket::ConsentDropped => self.consent_dropped += 1,
            Bucket::ConsentAfterEmit => {
                self.consent_dropped += 1;
                self.discrepancy(DiscrepancyKind::ConsentAfterEmit);
            }
            Bucket::Late => self.late += 1,
            Bucket::DeadLetter => self.dead_letters += 1,
            Bucket::OrderApplied => self.orders_applied += 1,
            Bucket::OrderRedelivered => self.orders_redelivered += 1,
            Bucket::OrderTombstone => self.orders_tombstones += 1,
            Bucket::OrderHistorical => self.orders_historical += 1,
        }
    }

    pub(crate) fn discrepancy(&mut self, kind: DiscrepancyKind) {
        *self
            .discrepancies
            .get_mut(kind.as_str())
            .expect("every kind is present") += 1;
    }

    #[cfg(test)]
    pub(crate) fn discrepancy_count(&self, kind: DiscrepancyKind) -> u64 {
        self.discrepancies[kind.as_str()]
    }

    pub(crate) fn source(&mut self, sources: SourcesSeen) {
        match sources {
            SourcesSeen::Browser => self.sources.browser += 1,
            SourcesSeen::Server => self.sources.server += 1,
            SourcesSeen::Both => self.sources.both += 1,
        }
    }

    pub(crate) fn tracked(&mut self, currency: &str, value: Money) {
        add(&mut self.tracked_revenue, currency, value);
    }

    pub(crate) fn backend(&mut self, currency: &str, total: Money) {
        add(&mut self.backend_revenue, currency, total);
    }
}

fn add(map: &mut BTreeMap<String, Money>, currency: &str, amount: Money) {
    match map.get_mut(currency) {
        Some(sum) => sum.0 += amount.0,
        None => {
            map.insert(currency.to_string(), amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_truth_lists_every_reason_and_kind_at_zero() {
        let t = Truth::new();
        assert_eq!(t.duplicates_by_reason.len(), DupReason::ALL.len());
        assert_eq!(t.discrepancies.len(), DiscrepancyKind::ALL.len());
        assert!(t.discrepancies.values().all(|&n| n == 0));
        t.check_conservation().unwrap();
    }

    #[test]
    fn consent_after_emit_counts_a_drop_and_a_discrepancy() {
        let mut t = Truth::new();
        t.count(Bucket::ConsentAfterEmit);
        assert_eq!(t.consent_dropped, 1);
        assert_eq!(t.discrepancy_count(DiscrepancyKind::ConsentAfterEmit), 1);
    }

    #[test]
    fn unbalanced_buckets_fail_conservation() {
        let mut t = Truth::new();
        t.input_records.browser = 2;
        t.input_records.total = 2;
        t.count(Bucket::Conversion);
        t.source(SourcesSeen::Browser);
        assert!(t.check_conservation().is_err());
        t.count(Bucket::Merged);
        t.check_conservation().unwrap();
    }

    #[test]
    fn json_round_trips_with_revenue_as_numbers() {
        let mut t = Truth::new();
        t.tracked("USD", Money(149_900_000));
        t.tracked("USD", Money(100_000));
        let text = t.to_json();
        assert!(text.contains("\"USD\": 150.0"), "{text}");
        let back: Truth = serde_json::from_str(&text).unwrap();
        assert_eq!(back, t);
    }
}
