//! Prometheus metrics, exactly as docs/METRICS.md specifies them.
//!
//! Owns: the metric families on an owned `Registry`, bounding label values (pixel cap, standard
//! event names, ISO currencies), and bringing the counters up to the engine's accounting after
//! each batch. Must not: count anything itself. The engine's `Stats` is the one place an
//! occurrence is counted; this module only exports how far each count rose above what it
//! already exported, so the metrics and `stats.json` can never disagree, and a state restored to
//! an earlier checkpoint counts nothing twice.

use std::collections::{BTreeMap, HashSet};

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::currency::is_iso4217;
use crate::engine::stats::{DuplicateReason, Outcome, Stats, UNATTRIBUTED};
use crate::engine::StateSize;
use crate::model::{DeadLetterReason, DiscrepancyKind, Input, MatchKey, RevenueWindow};

/// The label a value takes once the cap is reached or when it is not a valid code.
pub const OTHER: &str = "other";

/// Bounds pixel codes as label values: the configured pixels, then the first `cap` valid codes
/// seen; anything else is `other`.
#[derive(Debug)]
pub struct PixelLabels {
    cap: usize,
    known: HashSet<String>,
}

impl PixelLabels {
    pub fn new(cap: usize, configured: &[String]) -> PixelLabels {
        let mut labels = PixelLabels {
            cap,
            known: HashSet::new(),
        };
        for p in configured {
            if valid_pixel(p) {
                labels.known.insert(p.clone());
            }
        }
        labels
    }

    /// The label for a pixel code, and whether it is new (its series must be created).
    pub fn label(&mut self, pixel: &str) -> (String, bool) {
        if pixel == UNATTRIBUTED || pixel == OTHER || self.known.contains(pixel) {
            return (pixel.to_string(), false);
        }
        if valid_pixel(pixel) && self.known.len() < self.cap {
            self.known.insert(pixel.to_string());
            return (pixel.to_string(), true);
        }
        (OTHER.to_string(), false)
    }
}

fn valid_pixel(p: &str) -> bool {
    (1..=64).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && p != OTHER
        && p != UNATTRIBUTED
}

/// A currency as a label value: an ISO 4217 code, else `other`.
pub fn currency_label(code: &str) -> &str {
    if is_iso4217(code) {
        code
    } else {
        OTHER
    }
}

const DEAD_LETTER_REASONS: [DeadLetterReason; 7] = [
    DeadLetterReason::Empty,
    DeadLetterReason::TooLarge,
    DeadLetterReason::InvalidJson,
    DeadLetterReason::InvalidShape,
    DeadLetterReason::MissingField,
    DeadLetterReason::InvalidTime,
    DeadLetterReason::InvalidAmount,
];

/// Pixels beyond this many get the `other` label (configured pixels always keep theirs).
pub const DEFAULT_MAX_PIXELS: usize = 100;

pub struct Metrics {
    registry: Registry,
    pixels: PixelLabels,
    input_records: IntCounterVec,
    events_received: IntCounterVec,
    conversions: IntCounterVec,
    duplicates: IntCounterVec,
    match_keys: IntCounterVec,
    discrepancies: IntCounterVec,
    consent_dropped: IntCounterVec,
    dead_letters: IntCounterVec,
    tracked_revenue: GaugeVec,
    backend_revenue: GaugeVec,
    drift_ratio: GaugeVec,
    state_keys: IntGaugeVec,
    state_bytes: IntGauge,
    accounted: IntGauge,
    watermark_lag: GaugeVec,
    pub consumer_lag: IntGaugeVec,
    pub latency: Histogram,
    pub restores: IntCounter,
    pub restore_duration: Histogram,
    pub restored_records: IntCounter,
    pub ready: IntGauge,
    pub resume_offset: IntGauge,
    pub outputs_suppressed: IntCounter,
    pub replayed_records: IntCounter,
    pub merge_queued: IntGauge,
    pub merge_waits_given_up: IntCounterVec,
    pub broker_up: IntGauge,
    /// The highest value each counter has exported, per key of the engine's accounting (only
    /// the counts are used): each look exports only what a count rises above its mark.
    high_water: Stats,
}

/// Registers a collector built from constant, valid options (so failure is a programming
/// error) and returns the handle the code updates.
fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    built: prometheus::Result<C>,
) -> C {
    let collector = built.expect("metric options are constants");
    registry
        .register(Box::new(collector.clone()))
        .expect("each family is registered once");
    collector
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(registry, GaugeVec::new(Opts::new(name, help), labels))
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    register(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())),
    )
}

impl Metrics {
    /// Registers every family; `configured_pixels` (shop mappings, default pixel) keep their own
    /// label whatever the cap.
    pub fn new(max_pixels: usize, configured_pixels: &[String]) -> Metrics {
        let r = Registry::new();
        let accounted = register(
            &r,
            IntGauge::new(
                "onecount_accounted_records",
                "Input records the engine's state accounts for (every bucket), restored with it.",
            ),
        );
        let state_bytes = register(
            &r,
            IntGauge::new(
                "onecount_state_bytes",
                "Estimated heap bytes of the engine's state.",
            ),
        );
        let ready = register(
            &r,
            IntGauge::new(
                "onecount_ready",
                "1 when partitions are assigned, state is restored and the broker is reachable.",
            ),
        );
        let restores = register(
            &r,
            IntCounter::new(
                "onecount_restores_total",
                "State restorations from the changelog.",
            ),
        );
        let restored_records = register(
            &r,
            IntCounter::new(
                "onecount_restored_records_total",
                "Changelog records read by restorations.",
            ),
        );
        let resume_offset = register(
            &r,
            IntGauge::new(
                "onecount_resume_offset",
                "Internal-log offset the state task resumed from at its last restoration.",
            ),
        );
        let outputs_suppressed = register(
            &r,
            IntCounter::new(
                "onecount_outputs_suppressed_total",
                "Outputs a restored state task produced again and found already written after its \
                 last checkpoint, so did not write twice.",
            ),
        );
        let replayed_records = register(
            &r,
            IntCounter::new(
                "onecount_replayed_records_total",
                "Internal-log records skipped because their input record was applied before \
                 (forwarded again after an ingest crash or rebalance).",
            ),
        );
        let merge_queued = register(
            &r,
            IntGauge::new(
                "onecount_merge_queued_records",
                "Internal-log items the state task holds back in its merge, waiting for an input \
                 partition behind them in event time.",
            ),
        );
        let merge_waits_given_up = counter(
            &r,
            "onecount_merge_waits_given_up_total",
            "Times a state task's merge gave up waiting for an input partition with \
             service.merge_queue_limit items held back: the others went ahead of it, and \
             outcomes may differ from replay's.",
            &["input"],
        );
        // At 0 from the start: an alert sees the first give-up as an increase.
        for input in Input::ALL {
            merge_waits_given_up.with_label_values(&[input.as_str()]);
        }
        let broker_up = register(
            &r,
            IntGauge::new(
                "onecount_broker_up",
                "1 while the Kafka cluster is reachable, else 0.",
            ),
        );
        let build_info = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "onecount_build_info",
                    "Always 1; the version label is the crate version.",
                ),
                &["version"],
            ),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let state_keys = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "onecount_state_keys",
                    "Live entries in the engine's state, by kind.",
                ),
                &["kind"],
            ),
        );
        let consumer_lag = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "onecount_consumer_lag_records",
                    "Records between this instance's consumer positions and the high watermarks.",
                ),
                &["topic"],
            ),
        );

        let m = Metrics {
            input_records: counter(
                &r,
                "onecount_input_records_total",
                "Input records by the accounting bucket they landed in.",
                &["input", "outcome"],
            ),
            events_received: counter(
                &r,
                "onecount_events_received_total",
                "Browser and server event copies that parsed, on arrival.",
                &["pixel", "input"],
            ),
            conversions: counter(
                &r,
                "onecount_conversions_total",
                "Conversions emitted, by the copies they merged.",
                &["pixel", "event", "sources"],
            ),
            duplicates: counter(
                &r,
                "onecount_duplicates_total",
                "Copies dropped as duplicates.",
                &["pixel", "reason"],
            ),
            match_keys: counter(
                &r,
                "onecount_match_keys_total",
                "Emitted conversions carrying the match key.",
                &["pixel", "key"],
            ),
            discrepancies: counter(
                &r,
                "onecount_discrepancies_total",
                "Discrepancy records, by kind.",
                &["pixel", "kind"],
            ),
            consent_dropped: counter(
                &r,
                "onecount_consent_dropped_total",
                "Copies dropped for denied consent.",
                &["pixel", "input"],
            ),
            dead_letters: counter(
                &r,
                "onecount_dead_letters_total",
                "Records that could not be parsed.",
                &["input", "reason"],
            ),
            tracked_revenue: gauge(
                &r,
                "onecount_tracked_revenue",
                "Running total of purchase conversions' values, in major units.",
                &["pixel", "currency"],
            ),
            backend_revenue: gauge(
                &r,
                "onecount_backend_revenue",
                "Running total of revenue-counting orders' totals, in major units.",
                &["pixel", "currency"],
            ),
            drift_ratio: gauge(
                &r,
                "onecount_revenue_drift_ratio",
                "(tracked - backend) / backend of the latest emitted hourly revenue window.",
                &["pixel", "currency"],
            ),
            watermark_lag: gauge(
                &r,
                "onecount_watermark_lag_seconds",
                "Wall clock minus the input's event-time watermark.",
                &["input"],
            ),
            latency: histogram(
                &r,
                "onecount_processing_latency_seconds",
                "Seconds from a batch being polled to its outputs acknowledged and offsets stored.",
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            restore_duration: histogram(
                &r,
                "onecount_restore_duration_seconds",
                "Seconds one restoration took.",
                &[
                    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                ],
            ),
            state_keys,
            state_bytes,
            accounted,
            consumer_lag,
            restores,
            restored_records,
            ready,
            resume_offset,
            outputs_suppressed,
            replayed_records,
            merge_queued,
            merge_waits_given_up,
            broker_up,
            registry: r,
            pixels: PixelLabels::new(max_pixels, configured_pixels),
            high_water: Stats::default(),
        };
        for input in Input::ALL {
            for outcome in Outcome::of(input) {
                m.input_records
                    .with_label_values(&[input.as_str(), outcome.as_str()]);
            }
            for reason in DEAD_LETTER_REASONS {
                m.dead_letters
                    .with_label_values(&[input.as_str(), reason.as_str()]);
            }
        }
        for p in configured_pixels {
            m.create_pixel_series(p);
        }
        m.create_pixel_series(UNATTRIBUTED);
        m
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The counters of a pixel label exist at 0 from its first use, so `increase()` sees its
    /// first increment.
    fn create_pixel_series(&self, pixel: &str) {
        // `unattributed` names orders no pixel claims: it never receives events, and a series
        // stuck at 0 would keep "No events detected" firing for it.
        if pixel != UNATTRIBUTED {
            for input in ["browser", "server"] {
                self.events_received.with_label_values(&[pixel, input]);
                self.consent_dropped.with_label_values(&[pixel, input]);
            }
        }
        for reason in DuplicateReason::ALL {
            self.duplicates.with_label_values(&[pixel, reason.as_str()]);
        }
        for key in MatchKey::ALL {
            self.match_keys.with_label_values(&[pixel, key.as_str()]);
        }
        for kind in DiscrepancyKind::ALL {
            self.discrepancies
                .with_label_values(&[pixel, kind.as_str()]);
        }
    }

    fn pixel_label(&mut self, pixel: &str) -> String {
        let (label, new) = self.pixels.label(pixel);
        if new {
            self.create_pixel_series(&label);
        }
        label
    }

    /// Brings every counter up to `stats` (the engine's accounting) and sets the revenue gauges
    /// to it.
    ///
    /// A counter exports only how far its count rises above the highest value it exported
    /// before (its high-water mark, per key of the accounting); a count at or below the mark
    /// exports nothing. A state task restored in the same process goes back to its checkpoint,
    /// below what was exported, and processes the records after it again: the counters stay
    /// where they are until the engine passes the mark, so those records are not counted twice
    /// and no counter ever goes back. The first look in a process exports the totals the state
    /// was restored with.
    pub fn observe_stats(&mut self, stats: &Stats) {
        let mut marks = std::mem::take(&mut self.high_water);
        self.apply_stats(&mut marks, stats, true);
        self.high_water = marks;
    }

    /// [`Metrics::observe_stats`] for one of several engines that share these metrics (the
    /// service's state partitions): each has its own high-water marks, `marks`, kept by the
    /// caller across restores of its state, so the counters add up what every engine counted.
    pub fn observe_stats_of(&mut self, marks: &mut Stats, stats: &Stats) {
        self.apply_stats(marks, stats, true);
    }

    /// Raises the high-water marks `marks` to `stats` without exporting them: the service
    /// calls it with the totals a state partition was restored with, so its counters count
    /// what this process did, from 0, as Prometheus counters do. Exported instead, a restart
    /// would show the whole restored history as one burst (its checkpoint lies a little behind
    /// what the previous process exported, which `rate()` reads as a counter reset). Marks
    /// only rise: a partition restored again in the same process keeps what it exported.
    pub fn count_from(&mut self, marks: &mut Stats, stats: &Stats) {
        self.apply_stats(marks, stats, false);
    }

    fn apply_stats(&mut self, marks: &mut Stats, stats: &Stats, export: bool) {
        let inc = |family: &IntCounterVec, labels: &[&str], delta: u64| {
            if export && delta > 0 {
                family.with_label_values(labels).inc_by(delta);
            }
        };
        for (input, outcome, n) in stats.outcomes.iter() {
            inc(
                &self.input_records,
                &[input.as_str(), outcome.as_str()],
                rise(marks.outcomes.count_mut(input, outcome), n),
            );
        }
        let mut tracked: BTreeMap<(String, String), f64> = BTreeMap::new();
        let mut backend: BTreeMap<(String, String), f64> = BTreeMap::new();
        for (pixel, p) in &stats.pixels {
            let label = self.pixel_label(pixel);
            let mark = slot(&mut marks.pixels, pixel);
            inc(
                &self.events_received,
                &[&label, "browser"],
                rise(&mut mark.events.browser, p.events.browser),
            );
            inc(
                &self.events_received,
                &[&label, "server"],
                rise(&mut mark.events.server, p.events.server),
            );
            inc(
                &self.consent_dropped,
                &[&label, "browser"],
                rise(&mut mark.consent_dropped.browser, p.consent_dropped.browser),
            );
            inc(
                &self.consent_dropped,
                &[&label, "server"],
                rise(&mut mark.consent_dropped.server, p.consent_dropped.server),
            );
            for (event, c) in &p.conversions {
                let marks = slot(&mut mark.conversions, event);
                for (sources, n, m) in [
                    ("both", c.both, &mut marks.both),
                    ("browser", c.browser, &mut marks.browser),
                    ("server", c.server, &mut marks.server),
                ] {
                    inc(&self.conversions, &[&label, event, sources], rise(m, n));
                }
            }
            for (map, marks, family) in [
                (&p.duplicates, &mut mark.duplicates, &self.duplicates),
                (
                    &p.discrepancies,
                    &mut mark.discrepancies,
                    &self.discrepancies,
                ),
            ] {
                for (k, n) in map {
                    inc(family, &[&label, k], rise(slot(marks, k), *n));
                }
            }
            for (key, n) in p.match_keys.iter() {
                inc(
                    &self.match_keys,
                    &[&label, key.as_str()],
                    rise(mark.match_keys.count_mut(key), n),
                );
            }
            for (totals, map) in [
                (&mut tracked, &p.tracked_revenue),
                (&mut backend, &p.backend_revenue),
            ] {
                for (currency, m) in map {
                    *totals
                        .entry((label.clone(), currency_label(currency).to_string()))
                        .or_default() += m.to_f64();
                }
            }
        }
        for ((pixel, currency), v) in tracked {
            self.tracked_revenue
                .with_label_values(&[&pixel, &currency])
                .set(v);
        }
        for ((pixel, currency), v) in backend {
            self.backend_revenue
                .with_label_values(&[&pixel, &currency])
                .set(v);
        }
    }

    /// A dead letter, by input and reason, as the runtime writes it (the accounting keeps
    /// reasons over all inputs only; each dead letter is written exactly once).
    pub fn observe_dead_letter(&self, input: Input, reason: DeadLetterReason) {
        self.dead_letters
            .with_label_values(&[input.as_str(), reason.as_str()])
            .inc();
    }

    /// The drift of each revenue window emitted.
    pub fn observe_windows(&mut self, windows: &[RevenueWindow]) {
        for w in windows {
            if let Some(drift) = w.drift_ratio {
                let pixel = self.pixel_label(&w.event_source_id);
                self.drift_ratio
                    .with_label_values(&[&pixel, currency_label(&w.currency)])
                    .set(drift);
            }
        }
    }

    /// The engine's total accounting, restored with its state: unlike the counters, it goes
    /// back to the checkpoint at an in-process restore.
    pub fn observe_accounted(&self, accounted: u64) {
        self.accounted.set(accounted as i64);
    }

    pub fn observe_state(&self, size: &StateSize) {
        for (kind, n) in [
            ("pending_actions", size.pending_actions),
            ("closed_keys", size.closed_keys),
            ("order_keys", size.order_keys),
            ("orders", size.orders),
            ("revenue_windows", size.revenue_windows),
            ("reordering", size.reordering),
        ] {
            self.state_keys.with_label_values(&[kind]).set(n as i64);
        }
        self.state_bytes.set(size.closed_key_bytes as i64);
    }

    /// Wall clock (`now_ms`) minus each input's watermark, for inputs that have seen data.
    pub fn observe_watermarks(&self, now_ms: i64, watermarks: &[(Input, Option<i64>)]) {
        for (input, wm) in watermarks {
            if let Some(wm) = wm {
                self.watermark_lag
                    .with_label_values(&[input.as_str()])
                    .set((now_ms - wm) as f64 / 1000.0);
            }
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(registry: &Registry) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

/// How far `n` rises above `mark`, the highest value exported so far, raising the mark to it.
fn rise(mark: &mut u64, n: u64) -> u64 {
    let delta = n.saturating_sub(*mark);
    *mark = (*mark).max(n);
    delta
}

/// The mark of `key`, created at its default the first time (no allocation once it exists).
fn slot<'a, V: Default>(marks: &'a mut BTreeMap<String, V>, key: &str) -> &'a mut V {
    if !marks.contains_key(key) {
        marks.insert(key.to_string(), V::default());
    }
    marks.get_mut(key).expect("inserted above")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Money;

    const PIXEL: &str = "PIXEL1";

    /// An accounting where every count of one pixel is `n`, with `n` in tracked revenue.
    fn stats_at(n: u64) -> Stats {
        let mut s = Stats::default();
        *s.outcomes.count_mut(Input::Browser, Outcome::Conversion) = n;
        add_pixel(&mut s, PIXEL, n);
        s
    }

    fn add_pixel(s: &mut Stats, pixel: &str, n: u64) {
        let p = s.pixels.entry(pixel.to_string()).or_default();
        p.events.browser = n;
        p.consent_dropped.server = n;
        p.conversions
            .entry("Purchase".to_string())
            .or_default()
            .both = n;
        p.duplicates.insert("same_source".to_string(), n);
        p.discrepancies.insert("value_parity".to_string(), n);
        *p.match_keys.count_mut(MatchKey::Email) = n;
        p.tracked_revenue
            .insert("EUR".to_string(), Money(n as i64 * Money::MICROS_PER_UNIT));
    }

    /// Every counter `stats_at` sets, for `pixel`.
    fn counts(m: &Metrics, pixel: &str) -> [u64; 7] {
        [
            m.input_records
                .with_label_values(&["browser", "conversion"])
                .get(),
            m.events_received
                .with_label_values(&[pixel, "browser"])
                .get(),
            m.consent_dropped
                .with_label_values(&[pixel, "server"])
                .get(),
            m.conversions
                .with_label_values(&[pixel, "Purchase", "both"])
                .get(),
            m.duplicates
                .with_label_values(&[pixel, "same_source"])
                .get(),
            m.discrepancies
                .with_label_values(&[pixel, "value_parity"])
                .get(),
            m.match_keys.with_label_values(&[pixel, "email"]).get(),
        ]
    }

    #[test]
    fn counts_processed_again_after_a_restore_are_not_exported_twice() {
        let mut m = Metrics::new(DEFAULT_MAX_PIXELS, &[]);
        m.observe_stats(&stats_at(10));
        assert_eq!(counts(&m, PIXEL), [10; 7]);
        // Restored to a checkpoint at 6: below what is exported, nothing moves.
        m.observe_stats(&stats_at(6));
        assert_eq!(counts(&m, PIXEL), [10; 7]);
        // The records after the checkpoint processed again: still nothing.
        m.observe_stats(&stats_at(10));
        assert_eq!(counts(&m, PIXEL), [10; 7]);
        // New records: only they count.
        m.observe_stats(&stats_at(12));
        assert_eq!(counts(&m, PIXEL), [12; 7]);
    }

    #[test]
    fn a_new_process_counts_only_what_it_adds_to_the_state_it_restored() {
        let mut m = Metrics::new(DEFAULT_MAX_PIXELS, &[]);
        let mut marks = Stats::default();
        m.count_from(&mut marks, &stats_at(10));
        assert_eq!(counts(&m, PIXEL), [0; 7]);
        m.observe_stats_of(&mut marks, &stats_at(13));
        assert_eq!(counts(&m, PIXEL), [3; 7]);
        // Restored again in this process, to a checkpoint at 11: what is processed again
        // up to 13 was exported already; only what passes it counts.
        m.count_from(&mut marks, &stats_at(11));
        m.observe_stats_of(&mut marks, &stats_at(13));
        assert_eq!(counts(&m, PIXEL), [3; 7]);
        m.observe_stats_of(&mut marks, &stats_at(14));
        assert_eq!(counts(&m, PIXEL), [4; 7]);
    }

    #[test]
    fn engines_with_their_own_marks_add_up() {
        let mut m = Metrics::new(DEFAULT_MAX_PIXELS, &[]);
        let (mut a, mut b) = (Stats::default(), Stats::default());
        m.observe_stats_of(&mut a, &stats_at(5));
        m.observe_stats_of(&mut b, &stats_at(2));
        assert_eq!(counts(&m, PIXEL), [7; 7]);
    }

    #[test]
    fn a_key_first_seen_after_a_restore_is_exported() {
        let mut m = Metrics::new(DEFAULT_MAX_PIXELS, &[]);
        m.observe_stats(&stats_at(10));
        let mut restored = stats_at(6);
        *restored
            .outcomes
            .count_mut(Input::Browser, Outcome::Duplicate) = 2;
        add_pixel(&mut restored, "PIXEL2", 3);
        m.observe_stats(&restored);
        assert_eq!(counts(&m, PIXEL), [10; 7]);
        assert_eq!(
            m.input_records
                .with_label_values(&["browser", "duplicate"])
                .get(),
            2
        );
        assert_eq!(counts(&m, "PIXEL2")[1..], [3; 6]);
    }

    #[test]
    fn revenue_gauges_follow_the_restored_state() {
        let mut m = Metrics::new(DEFAULT_MAX_PIXELS, &[]);
        let revenue = |m: &Metrics| m.tracked_revenue.with_label_values(&[PIXEL, "EUR"]).get();
        m.observe_stats(&stats_at(10));
        assert_eq!(revenue(&m), 10.0);
        m.observe_stats(&stats_at(6));
        assert_eq!(revenue(&m), 6.0);
        m.observe_stats(&stats_at(12));
        assert_eq!(revenue(&m), 12.0);
    }
}
