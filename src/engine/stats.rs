//! Accounting: every input record lands in exactly one bucket, and the buckets sum to the input.
//!
//! Owns: the counters behind `stats.json` and the conservation check. Must not: decide a bucket
//! (the engine does); it only counts what it is told.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::model::{
    standard_event_name, Conversion, DeadLetterReason, Discrepancy, DiscrepancyKind, Input,
    MatchKey, Money, Source, SourcesSeen,
};

/// Distinct pixel codes tallied one by one in `Stats::pixels`; later ones are tallied as
/// `other`. A bound on memory, far above the metrics' label cap.
pub const MAX_TALLIED_PIXELS: usize = 10_000;

/// The pixel an order-side finding is attributed to when nothing names one.
pub const UNATTRIBUTED: &str = "unattributed";

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

/// The bucket an input record lands in: the keys of `stats.outcomes` and the `outcome` label of
/// `onecount_input_records_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Conversion,
    Merged,
    Duplicate,
    ConsentDropped,
    DeadLetter,
    Late,
    OrderApplied,
    OrderRedelivered,
    OrderTombstone,
    OrderHistorical,
}

impl Outcome {
    pub const ALL: [Outcome; 10] = [
        Outcome::Conversion,
        Outcome::Merged,
        Outcome::Duplicate,
        Outcome::ConsentDropped,
        Outcome::DeadLetter,
        Outcome::Late,
        Outcome::OrderApplied,
        Outcome::OrderRedelivered,
        Outcome::OrderTombstone,
        Outcome::OrderHistorical,
    ];

    /// The buckets a record of `input` can land in.
    pub fn of(input: Input) -> &'static [Outcome] {
        match input {
            Input::Browser | Input::Server => &Outcome::ALL[..6],
            Input::Orders => &[
                Outcome::DeadLetter,
                Outcome::OrderApplied,
                Outcome::OrderRedelivered,
                Outcome::OrderTombstone,
                Outcome::OrderHistorical,
            ],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Conversion => "conversion",
            Outcome::Merged => "merged",
            Outcome::Duplicate => "duplicate",
            Outcome::ConsentDropped => "consent_dropped",
            Outcome::DeadLetter => "dead_letter",
            Outcome::Late => "late",
            Outcome::OrderApplied => "order_applied",
            Outcome::OrderRedelivered => "order_redelivered",
            Outcome::OrderTombstone => "order_tombstone",
            Outcome::OrderHistorical => "order_historical",
        }
    }
}

/// Input records by input and [`Outcome`]. Counted in an array, not a map of names: a
/// conversion counts one or two outcomes, and two string-keyed lookups each cost more than the
/// rest of its accounting. Written as `{input: {outcome: n}}` (names in order, only the
/// outcomes that happened), as a map of maps would be.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcomes([[Option<u64>; Outcome::ALL.len()]; Input::ALL.len()]);

impl Outcomes {
    /// The count of `outcome` for `input`, created at 0 (so it is written) the first time.
    pub fn count_mut(&mut self, input: Input, outcome: Outcome) -> &mut u64 {
        self.0[input.index()][outcome as usize].get_or_insert(0)
    }

    /// The count of `outcome` for `input`; `None` if it never happened.
    pub fn get(&self, input: Input, outcome: Outcome) -> Option<u64> {
        self.0[input.index()][outcome as usize]
    }

    /// Every count that happened.
    pub fn iter(&self) -> impl Iterator<Item = (Input, Outcome, u64)> + '_ {
        Input::ALL.into_iter().flat_map(move |input| {
            Outcome::ALL
                .into_iter()
                .filter_map(move |o| self.get(input, o).map(|n| (input, o, n)))
        })
    }
}

impl Serialize for Outcomes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        for (input, outcome, n) in self.iter() {
            map.entry(input.as_str())
                .or_default()
                .insert(outcome.as_str(), n);
        }
        map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Outcomes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut outcomes = Outcomes::default();
        for (input, counts) in BTreeMap::<Input, BTreeMap<Outcome, u64>>::deserialize(d)? {
            for (outcome, n) in counts {
                *outcomes.count_mut(input, outcome) = n;
            }
        }
        Ok(outcomes)
    }
}

/// Conversions carrying each match key: an array by [`MatchKey`] for the same reason as
/// [`Outcomes`]. Written as `{key: n}` (names in order, only the keys seen).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchKeyCounts([u64; MatchKey::ALL.len()]);

impl MatchKeyCounts {
    pub fn count_mut(&mut self, key: MatchKey) -> &mut u64 {
        &mut self.0[key as usize]
    }

    /// Every key seen, with its count.
    pub fn iter(&self) -> impl Iterator<Item = (MatchKey, u64)> + '_ {
        MatchKey::ALL
            .into_iter()
            .map(|k| (k, self.0[k as usize]))
            .filter(|&(_, n)| n > 0)
    }
}

impl Serialize for MatchKeyCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<&str, u64> = self.iter().map(|(k, n)| (k.as_str(), n)).collect();
        map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for MatchKeyCounts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut counts = MatchKeyCounts::default();
        for (key, n) in HashMap::<MatchKey, u64>::deserialize(d)? {
            *counts.count_mut(key) = n;
        }
        Ok(counts)
    }
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

/// Copies by input (browser, server).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CopyCounts {
    pub browser: u64,
    pub server: u64,
}

impl CopyCounts {
    fn add(&mut self, source: Source, n: u64) {
        match source {
            Source::Browser => self.browser += n,
            Source::Server => self.server += n,
        }
    }
}

/// What happened per pixel: the breakdown behind the per-pixel metrics and dashboards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PixelStats {
    /// Event copies that parsed, on arrival (late ones included).
    pub events: CopyCounts,
    /// Conversions by event name (standard TikTok names; others as `other`) and sources.
    pub conversions: BTreeMap<String, SourceCounts>,
    pub duplicates: BTreeMap<String, u64>,
    pub consent_dropped: CopyCounts,
    pub discrepancies: BTreeMap<String, u64>,
    /// Conversions carrying each match key.
    pub match_keys: MatchKeyCounts,
    pub tracked_revenue: BTreeMap<String, Money>,
    pub backend_revenue: BTreeMap<String, Money>,
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
    /// The same, per pixel code.
    pub pixels: BTreeMap<String, PixelStats>,
    /// Every input record's bucket, per input ([`Outcome::of`]).
    pub outcomes: Outcomes,
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
            pixels: BTreeMap::new(),
            outcomes: Outcomes::default(),
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

    fn outcome(&mut self, input: Input, outcome: Outcome, n: u64) {
        *self.outcomes.count_mut(input, outcome) += n;
    }

    fn pixel(&mut self, pixel: &str) -> &mut PixelStats {
        // A lookup and a get rather than `entry(pixel.to_string())`: no allocation on the hot
        // path, where the pixel is almost always known already.
        if self.pixels.contains_key(pixel) {
            return self.pixels.get_mut(pixel).expect("contained");
        }
        let key = if self.pixels.len() < MAX_TALLIED_PIXELS {
            pixel
        } else {
            "other"
        };
        self.pixels.entry(key.to_string()).or_default()
    }

    /// An event copy parsed and reached the engine.
    pub fn received(&mut self, pixel: &str, source: Source) {
        self.pixel(pixel).events.add(source, 1);
    }

    pub fn conversion<S: AsRef<str>>(&mut self, conversion: &Conversion<S>) {
        self.conversions += 1;
        let tally = |c: &mut SourceCounts| match conversion.sources {
            SourcesSeen::Browser => c.browser += 1,
            SourcesSeen::Server => c.server += 1,
            SourcesSeen::Both => c.both += 1,
        };
        tally(&mut self.sources);
        self.outcome(conversion.first_source.input(), Outcome::Conversion, 1);
        if conversion.sources == SourcesSeen::Both {
            self.merged += 1;
            let other = match conversion.first_source {
                Source::Browser => Input::Server,
                Source::Server => Input::Browser,
            };
            self.outcome(other, Outcome::Merged, 1);
        }
        let p = self.pixel(conversion.event_source_id.as_ref());
        let event = standard_event_name(conversion.event.as_ref());
        match p.conversions.get_mut(event) {
            Some(c) => tally(c),
            None => {
                let mut c = SourceCounts::default();
                tally(&mut c);
                p.conversions.insert(event.to_string(), c);
            }
        }
        for key in MatchKey::ALL {
            if conversion.user.key(key).is_some() {
                *p.match_keys.count_mut(key) += 1;
            }
        }
    }

    pub fn duplicates(
        &mut self,
        pixel: &str,
        source: Source,
        reason: DuplicateReason,
        copies: u64,
    ) {
        self.duplicates += copies;
        self.outcome(source.input(), Outcome::Duplicate, copies);
        bump(&mut self.duplicates_by_reason, reason.as_str(), copies);
        bump(&mut self.pixel(pixel).duplicates, reason.as_str(), copies);
    }

    pub fn consent_dropped(&mut self, pixel: &str, source: Source, copies: u64) {
        self.consent_dropped += copies;
        self.outcome(source.input(), Outcome::ConsentDropped, copies);
        self.pixel(pixel).consent_dropped.add(source, copies);
    }

    pub fn dead_letter(&mut self, input: Input, reason: DeadLetterReason) {
        self.dead_letters += 1;
        self.outcome(input, Outcome::DeadLetter, 1);
        bump(&mut self.dead_letters_by_reason, reason.as_str(), 1);
    }

    pub fn late(&mut self, input: Input) {
        self.late += 1;
        self.outcome(input, Outcome::Late, 1);
    }

    pub fn order(&mut self, outcome: OrderOutcome) {
        let (counter, name) = match outcome {
            OrderOutcome::Applied => (&mut self.orders_applied, Outcome::OrderApplied),
            OrderOutcome::Redelivered => (&mut self.orders_redelivered, Outcome::OrderRedelivered),
            OrderOutcome::Tombstone => (&mut self.orders_tombstones, Outcome::OrderTombstone),
            OrderOutcome::Historical => (&mut self.orders_historical, Outcome::OrderHistorical),
        };
        *counter += 1;
        self.outcome(Input::Orders, name, 1);
    }

    pub fn discrepancy(&mut self, d: &Discrepancy) {
        let kind = d.kind.as_str();
        bump(&mut self.discrepancies, kind, 1);
        let pixel = d.event_source_id.as_deref().unwrap_or(UNATTRIBUTED);
        bump(&mut self.pixel(pixel).discrepancies, kind, 1);
    }

    pub fn track_revenue(&mut self, pixel: &str, currency: &str, delta: Money) {
        add_money(&mut self.tracked_revenue, currency, delta);
        add_money(&mut self.pixel(pixel).tracked_revenue, currency, delta);
    }

    pub fn backend_revenue(&mut self, pixel: &str, currency: &str, delta: Money) {
        add_money(&mut self.backend_revenue, currency, delta);
        add_money(&mut self.pixel(pixel).backend_revenue, currency, delta);
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

fn bump(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    match map.get_mut(key) {
        Some(v) => *v += n,
        None => {
            map.insert(key.to_string(), n);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The arrays are written exactly as the maps of names they replaced were (`stats.json`
    /// and the changelog's checkpoints keep their format) and read back the same.
    #[test]
    fn outcomes_and_match_keys_are_written_as_maps_of_names() {
        let mut stats = Stats::default();
        stats.late(Input::Server);
        stats.order(OrderOutcome::Tombstone);
        stats.dead_letter(Input::Browser, DeadLetterReason::InvalidJson);
        stats.dead_letter(Input::Browser, DeadLetterReason::InvalidJson);
        *stats.outcomes.count_mut(Input::Browser, Outcome::Merged) = 0;
        let p = stats.pixel("PIXEL1");
        *p.match_keys.count_mut(MatchKey::Ttp) = 3;
        *p.match_keys.count_mut(MatchKey::Email) = 1;

        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(
            json["outcomes"].to_string(),
            r#"{"browser":{"dead_letter":2,"merged":0},"orders":{"order_tombstone":1},"server":{"late":1}}"#
        );
        assert_eq!(
            json["pixels"]["PIXEL1"]["match_keys"].to_string(),
            r#"{"email":1,"ttp":3}"#
        );
        let back: Stats = serde_json::from_value(json).unwrap();
        assert_eq!(back, stats);
    }

    #[test]
    fn an_unknown_outcome_or_match_key_is_an_error() {
        let outcome = serde_json::from_str::<Outcomes>(r#"{"browser":{"teleported":1}}"#);
        assert!(outcome.unwrap_err().to_string().contains("teleported"));
        let input = serde_json::from_str::<Outcomes>(r#"{"fax":{"late":1}}"#);
        assert!(input.unwrap_err().to_string().contains("fax"));
        let key = serde_json::from_str::<MatchKeyCounts>(r#"{"ssn":1}"#);
        assert!(key.unwrap_err().to_string().contains("ssn"));
    }
}
