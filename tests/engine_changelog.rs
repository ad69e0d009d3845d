//! A restored engine continues exactly where the one that wrote the changelog stopped.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use onecount::config::{EngineConfig, OrdersConfig};
use onecount::engine::changelog::ChangelogEntry;
use onecount::engine::{Engine, Outputs, StateSize};
use onecount::generate::{generate, GenerateOptions, VecSink};
use onecount::model::{Input, Source, SourcesSeen};
use onecount::parse::{Parsed, Parser};
use proptest::prelude::*;
use support::*;

#[derive(Debug, Clone)]
enum Draw {
    Copy {
        key: u8,
        server: bool,
        offset_ms: i64,
        denied: bool,
        order: Option<u8>,
        cents: i64,
    },
    Order {
        order: u8,
        offset_ms: i64,
        cents: i64,
        refunded: bool,
    },
}

fn draw() -> impl Strategy<Value = Draw> {
    let offset = prop_oneof![4 => 0..10 * MIN, 2 => 0..3 * HOUR, 1 => 0..6 * HOUR];
    prop_oneof![
        4 => (0u8..8, any::<bool>(), offset.clone(), prop::bool::weighted(0.1), prop::option::weighted(0.5, 0u8..4), 100i64..900)
            .prop_map(|(key, server, offset_ms, denied, order, cents)| Draw::Copy { key, server, offset_ms, denied, order, cents }),
        1 => (0u8..4, offset, 100i64..900, prop::bool::weighted(0.2))
            .prop_map(|(order, offset_ms, cents, refunded)| Draw::Order { order, offset_ms, cents, refunded }),
    ]
}

fn records(draws: &[Draw]) -> Vec<Parsed> {
    draws
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Draw::Copy {
                key,
                server,
                offset_ms,
                denied,
                order: o,
                cents,
            } => {
                let source = if *server {
                    Source::Server
                } else {
                    Source::Browser
                };
                let name = if o.is_some() {
                    "CompletePayment"
                } else {
                    "AddToCart"
                };
                let mut c = copy(source, name, &format!("k{key}"), T0 + offset_ms)
                    .value(*cents as f64 / 100.0, "USD")
                    .at(i as i64);
                if let Some(o) = o {
                    c = c.order(&format!("o{o}"));
                }
                if *denied {
                    c = c.denied();
                }
                c.rec()
            }
            Draw::Order {
                order: o,
                offset_ms,
                cents,
                refunded,
            } => {
                let mut row = order(
                    &format!("o{o}"),
                    *cents as f64 / 100.0,
                    "USD",
                    T0 + offset_ms,
                );
                if *refunded {
                    row = row.status("refunded", T0 + offset_ms + HOUR);
                }
                row.rec()
            }
        })
        .collect()
}

fn config() -> EngineConfig {
    EngineConfig {
        ttl: Duration::from_secs(4 * 3600),
        order_wait: Duration::from_secs(1800),
        ..EngineConfig::default()
    }
}

fn concat(mut a: Outputs, b: Outputs) -> Outputs {
    a.conversions.extend(b.conversions);
    a.discrepancies.extend(b.discrepancies);
    a.dead_letters.extend(b.dead_letters);
    a.revenue_windows.extend(b.revenue_windows);
    a
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Checkpoint every few records; at a random checkpoint, throw the engine away and rebuild
    /// it from the changelog alone: the outputs and accounting equal an uninterrupted run.
    #[test]
    fn restored_engine_reproduces_an_uninterrupted_run(
        draws in prop::collection::vec(draw(), 1..40),
        every in 1usize..6,
        cut_at in 0usize..40,
    ) {
        let config = config();
        let orders = OrdersConfig::default();
        let input = records(&draws);
        let cut = (cut_at % input.len()) / every * every;

        let mut whole = Engine::new(&config, &orders);
        let mut whole_out = Outputs::default();
        for r in input.iter().cloned() {
            whole.process(r, &mut whole_out);
        }
        whole.flush(&mut whole_out);

        let mut first = Engine::new(&config, &orders).with_changelog();
        let mut before = Outputs::default();
        let mut changelog: Vec<ChangelogEntry> = Vec::new();
        for (i, r) in input.iter().cloned().enumerate() {
            if i == cut {
                break;
            }
            first.process(r, &mut before);
            if (i + 1) % every == 0 {
                changelog.extend(first.take_changes());
            }
        }
        changelog.extend(first.take_changes());
        drop(first);

        let mut second = Engine::restore(&config, &orders, changelog).expect("restore");
        let mut after = Outputs::default();
        for r in input.iter().skip(cut).cloned() {
            second.process(r, &mut after);
        }
        second.flush(&mut after);

        prop_assert_eq!(concat(before, after), whole_out);
        prop_assert_eq!(second.stats(), whole.stats());
    }
}

#[test]
fn duplicate_arriving_after_a_restore_is_still_caught() {
    let config = EngineConfig::default();
    let orders = OrdersConfig::default();
    let mut engine = Engine::new(&config, &orders).with_changelog();
    let mut out = Outputs::default();
    engine.process(
        browser("CompletePayment", "e1", T0)
            .order("o1")
            .value(5.0, "USD")
            .rec(),
        &mut out,
    );
    engine.flush(&mut out);
    assert_eq!(out.conversions.len(), 1);
    let changelog = engine.take_changes();
    drop(engine);

    let mut restored = Engine::restore(&config, &orders, changelog).unwrap();
    let mut out = Outputs::default();
    restored.process(
        server("CompletePayment", "e1", T0 + HOUR)
            .order("o1")
            .value(5.0, "USD")
            .rec(),
        &mut out,
    );
    restored.process(
        browser("CompletePayment", "e2", T0 + HOUR)
            .order("o1")
            .value(5.0, "USD")
            .rec(),
        &mut out,
    );
    restored.flush(&mut out);
    assert!(out.conversions.is_empty(), "{:?}", out.conversions);
    assert_eq!(restored.stats().duplicates, 2);
    assert_eq!(kinds(&out), ["duplicate_order_conversion"]);
}

/// Channel state survives a restore, idle flags included: a restored engine whose lagging
/// partition was declared idle does not let that partition hold the watermark again, and the
/// last `mark_idle_channel` releases the same tail as in the uninterrupted engine.
#[test]
fn restore_keeps_each_channels_position_and_idle_flag() {
    use onecount::model::Input;
    let config = EngineConfig::default();
    let orders = OrdersConfig::default();
    let before = |engine: &mut Engine, out: &mut Outputs| {
        engine.process(browser("ViewContent", "a", T0).rec(), out);
        engine.process(
            browser("ViewContent", "slow", T0 - HOUR).partition(1).rec(),
            out,
        );
        engine.process(server("ViewContent", "a", T0 + SEC).partition(2).rec(), out);
        engine.mark_idle_channel(Input::Browser, 1, out);
    };
    let after = |engine: &mut Engine, out: &mut Outputs| {
        engine.process(browser("ViewContent", "b", T0 + 20 * MIN).rec(), out);
        engine.process(
            server("ViewContent", "b", T0 + 20 * MIN).partition(2).rec(),
            out,
        );
        engine.mark_idle_channel(Input::Browser, 0, out);
        engine.mark_idle_channel(Input::Server, 2, out);
    };

    let mut whole = Engine::new(&config, &orders);
    let mut whole_out = Outputs::default();
    before(&mut whole, &mut whole_out);
    let watermark = whole.watermark();
    after(&mut whole, &mut whole_out);

    let mut first = Engine::new(&config, &orders).with_changelog();
    let mut out = Outputs::default();
    before(&mut first, &mut out);
    let changelog = first.take_changes();
    drop(first);
    let mut second = Engine::restore(&config, &orders, changelog).expect("restore");
    assert_eq!(second.watermark(), watermark);
    assert_eq!(second.highest_seen(Input::Browser), Some(T0));
    after(&mut second, &mut out);

    assert_eq!(
        keys(&whole_out),
        [
            "PIXEL1/ViewContent/slow",
            "PIXEL1/ViewContent/a",
            "PIXEL1/ViewContent/b"
        ],
        "a released while browser partition 1 is idle; b by the all-idle flush"
    );
    assert_eq!(out, whole_out);
    assert_eq!(second.stats(), whole.stats());
}

/// A changelog topic: every batch as written, and what compaction leaves of it (the latest
/// record of each key; a tombstone removes the key once `delete.retention.ms` has passed).
#[derive(Default)]
struct ChangelogTopic {
    /// Every record, in the order written.
    raw: Vec<ChangelogEntry>,
    /// The latest record of each key, tombstones included.
    latest: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl ChangelogTopic {
    fn apply(&mut self, entries: Vec<ChangelogEntry>) {
        for entry in entries {
            self.latest.insert(entry.key.clone(), entry.value.clone());
            self.raw.push(entry);
        }
    }

    /// The topic once compaction has run and its tombstones have been deleted.
    fn entries(&self) -> Vec<ChangelogEntry> {
        self.live_records()
            .map(|(k, v)| ChangelogEntry {
                key: k.clone(),
                value: Some(v.clone()),
            })
            .collect()
    }

    /// The topic compacted, its tombstones not deleted yet.
    /// The topic as a restore may read it: compacted, compacted before the tombstones are
    /// removed, and as written (before any compaction).
    fn readings(&self) -> [(&'static str, Vec<ChangelogEntry>); 3] {
        [
            ("compacted", self.entries()),
            ("compacted, tombstones kept", self.entries_with_tombstones()),
            ("as written", self.raw.clone()),
        ]
    }

    fn entries_with_tombstones(&self) -> Vec<ChangelogEntry> {
        self.latest
            .iter()
            .map(|(k, v)| ChangelogEntry {
                key: k.clone(),
                value: v.clone(),
            })
            .collect()
    }

    fn live_records(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.latest
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    }

    fn is_live(&self, key: &[u8]) -> bool {
        self.latest.get(key).is_some_and(Option::is_some)
    }

    fn bytes(&self) -> usize {
        self.live_records().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Live keys of one kind (the key's first byte: `a` dedup key, `d` order key, `o` order,
    /// `w` revenue window, `b` buffered copy, `m` meta).
    fn live(&self, kind: u8) -> usize {
        self.live_records().filter(|(k, _)| k[0] == kind).count()
    }

    /// Keys of one kind ever written, tombstoned or not.
    fn ever(&self, kind: u8) -> usize {
        self.latest.keys().filter(|k| k[0] == kind).count()
    }
}

/// Keys the first changelog batch wrote are all gone from the compacted changelog once the
/// watermark is two TTLs past them: the dedup key, the order key, the order and the revenue
/// window each get a tombstone at the checkpoint after the sweep that forgot them.
#[test]
fn keys_two_ttls_behind_the_watermark_are_tombstoned_at_the_next_checkpoint() {
    let config = EngineConfig::default();
    let orders = OrdersConfig::default();
    let ttl = 48 * HOUR;
    let mut engine = Engine::new(&config, &orders).with_changelog();
    let mut out = Outputs::default();
    engine.process(order("o1", 5.0, "USD", T0).rec(), &mut out);
    engine.process(
        browser("CompletePayment", "e1", T0)
            .order("o1")
            .value(5.0, "USD")
            .rec(),
        &mut out,
    );
    engine.process(order("o0", 1.0, "USD", T0 + 3 * HOUR).rec(), &mut out);
    engine.process(browser("ViewContent", "v0", T0 + 3 * HOUR).rec(), &mut out);
    assert_eq!(out.conversions.len(), 1);
    let mut log = ChangelogTopic::default();
    log.apply(engine.take_changes());
    let first: Vec<Vec<u8>> = log
        .live_records()
        .map(|(k, _)| k.clone())
        .filter(|k| k[0] != b'm')
        .collect();
    for kind in [b'a', b'd', b'o', b'w'] {
        assert!(
            first.iter().any(|k| k[0] == kind),
            "{} written",
            kind as char
        );
    }

    // Both channels move two TTLs and an hour on: the sweep forgets everything above.
    let later = T0 + 2 * ttl + 5 * HOUR;
    engine.process(order("o2", 5.0, "USD", later).rec(), &mut out);
    engine.process(browser("ViewContent", "v1", later).rec(), &mut out);
    let size = engine.state_size();
    assert_eq!((size.closed_keys, size.order_keys), (0, 0), "{size:?}");
    let batch = engine.take_changes();
    let tombstones: BTreeSet<Vec<u8>> = batch
        .iter()
        .filter(|e| e.value.is_none())
        .map(|e| e.key.clone())
        .collect();
    log.apply(batch);
    for key in &first {
        let key_text = String::from_utf8_lossy(key);
        assert!(tombstones.contains(key), "{key_text} not tombstoned");
        assert!(!log.is_live(key), "{key_text} still live");
    }
    assert_eq!(counts(&log), counts_of(engine.state_size()));
    let restored = Engine::restore(&config, &orders, log.entries()).expect("restore");
    assert_eq!(
        counts_of(restored.state_size()),
        counts_of(engine.state_size())
    );
}

/// Live keys per kind in a compacted changelog: dedup keys, order keys, orders, windows, copies.
fn counts(log: &ChangelogTopic) -> [usize; 5] {
    [b'a', b'd', b'o', b'w', b'b'].map(|k| log.live(k))
}

/// The same from the engine's side. A key both pending and closed (an event_id reused after
/// its TTL, within the new action's merge window) is one changelog key and counted twice here:
/// dedup keys match exactly only when nothing is pending, as after a flush.
fn counts_of(size: StateSize) -> [usize; 5] {
    [
        size.pending_actions + size.closed_keys,
        size.order_keys,
        size.orders,
        size.revenue_windows,
        size.reordering,
    ]
}

/// One input record, or the end of an input, in the order `replay` would apply them.
#[derive(Clone)]
enum Step {
    Record(Box<Parsed>),
    Finish(Input),
}

fn run(engine: &mut Engine, step: Step, out: &mut Outputs) {
    match step {
        Step::Record(p) => engine.process(*p, out),
        Step::Finish(input) => engine.finish_input(input, out),
    }
}

/// Ten days of generated traffic (the default TTL is 48 hours, so keys expire throughout),
/// interleaved as `replay` interleaves the three files.
fn ten_days() -> &'static [Step] {
    static STEPS: OnceLock<Vec<Step>> = OnceLock::new();
    STEPS.get_or_init(|| {
        let mut sink = VecSink::default();
        generate(
            &GenerateOptions {
                actions: 20_000,
                seed: 11,
                span_hours: 240,
                ..GenerateOptions::default()
            },
            &mut sink,
        )
        .unwrap();
        let config = EngineConfig::default();
        let orders = OrdersConfig::default();
        let parser = Parser::new(&config, &orders);
        let lines = [&sink.browser, &sink.server, &sink.orders];
        let mut next = [0usize; 3];
        let mut open = [true; 3];
        let mut engine = Engine::new(&config, &orders);
        let mut out = Outputs::default();
        let mut parsed = Vec::new();
        let mut steps = Vec::new();
        while let Some(input) = Input::ALL
            .into_iter()
            .filter(|i| open[i.index()])
            .min_by_key(|i| (engine.highest_seen(*i).unwrap_or(i64::MIN), i.index()))
        {
            let i = input.index();
            let Some(line) = lines[i].get(next[i]) else {
                open[i] = false;
                steps.push(Step::Finish(input));
                engine.finish_input(input, &mut out);
                continue;
            };
            let bytes = line.value.as_deref().map(str::as_bytes);
            parser.parse(input, 0, next[i] as i64, bytes, &mut parsed);
            next[i] += 1;
            for p in parsed.drain(..) {
                steps.push(Step::Record(Box::new(p.clone())));
                engine.process(p, &mut out);
            }
            out.clear();
        }
        steps
    })
}

/// Over ten days of traffic with checkpoints every 500 records, the compacted changelog holds
/// exactly the engine's live state, not every key it ever held: restore time follows the live
/// state, and the topic stops growing.
#[test]
fn compacted_changelog_holds_only_the_live_state_after_days_of_traffic() {
    let config = EngineConfig::default();
    let orders = OrdersConfig::default();
    let mut engine = Engine::new(&config, &orders).with_changelog();
    let mut out = Outputs::default();
    let mut log = ChangelogTopic::default();
    for (i, step) in ten_days().iter().cloned().enumerate() {
        run(&mut engine, step, &mut out);
        out.clear();
        if (i + 1) % 500 == 0 {
            log.apply(engine.take_changes());
            let size = engine.state_size();
            let (live, state) = (counts(&log), counts_of(size));
            assert_eq!(live[1..], state[1..], "after step {i}");
            let dedup_keys = size.pending_actions.max(size.closed_keys)..=state[0];
            assert!(
                dedup_keys.contains(&live[0]),
                "after step {i}: {live:?} {size:?}"
            );
        }
    }
    engine.flush(&mut out);
    log.apply(engine.take_changes());
    let size = engine.state_size();
    assert_eq!(counts(&log), counts_of(size), "at the end");
    for kind in [b'a', b'd', b'o', b'w'] {
        assert!(
            log.live(kind) < log.ever(kind),
            "{}: {} live of {} ever written: nothing expired",
            kind as char,
            log.live(kind),
            log.ever(kind)
        );
    }
    eprintln!(
        "compacted changelog: {} live keys ({} bytes) of {} ever written",
        log.live_records().count(),
        log.bytes(),
        log.latest.len()
    );
    let restored = Engine::restore(&config, &orders, log.entries()).expect("restore");
    assert_eq!(counts_of(restored.state_size()), counts_of(size));
    assert_eq!(restored.stats(), engine.stats());
}

/// Restoring from the compacted changelog (tombstones applied, as a compacted topic holds it)
/// in the middle of ten days of traffic gives the outputs and accounting of an uninterrupted
/// run: forgetting expired keys on both sides changes nothing.
#[test]
fn restore_from_compacted_changelog_with_expired_keys_reproduces_an_uninterrupted_run() {
    let config = EngineConfig::default();
    let orders = OrdersConfig::default();
    let steps = ten_days();

    let mut whole = Engine::new(&config, &orders);
    let mut whole_out = Outputs::default();
    for step in steps.iter().cloned() {
        run(&mut whole, step, &mut whole_out);
    }
    whole.flush(&mut whole_out);

    for cut in [steps.len() / 2, steps.len() * 4 / 5] {
        let mut first = Engine::new(&config, &orders).with_changelog();
        let mut before = Outputs::default();
        let mut log = ChangelogTopic::default();
        for (i, step) in steps[..cut].iter().cloned().enumerate() {
            run(&mut first, step, &mut before);
            if (i + 1) % 500 == 0 {
                log.apply(first.take_changes());
            }
        }
        log.apply(first.take_changes());
        assert!(
            log.live(b'a') < log.ever(b'a'),
            "no dedup key expired by {cut}"
        );
        drop(first);

        for (topic, entries) in log.readings() {
            let mut second = Engine::restore(&config, &orders, entries).expect("restore");
            let mut after = Outputs::default();
            for step in steps[cut..].iter().cloned() {
                run(&mut second, step, &mut after);
            }
            second.flush(&mut after);
            let both = concat(before.clone(), after);
            assert!(both == whole_out, "cut at {cut}, {topic}: outputs differ");
            assert_eq!(second.stats(), whole.stats(), "cut at {cut}, {topic}");
        }
    }
}

/// Records before and after the checkpoint of `tests/fixtures/changelog_v2.txt`, every one at a
/// fixed position so the state (and the changelog) does not depend on which tests ran first. At
/// the checkpoint the state holds a closed key (e1), a pending action (e2), buffered copies (e3,
/// e4), an order key, orders and a revenue window.
fn format_2_scenario() -> (Vec<Parsed>, Vec<Parsed>) {
    let paid = |s: Copy| s.order("o1").value(5.0, "USD");
    let before = vec![
        order("o1", 5.0, "USD", T0).at(1).rec(),
        paid(browser("CompletePayment", "e1", T0)).at(1).rec(),
        paid(server("CompletePayment", "e1", T0 + MIN)).at(1).rec(),
        browser("AddToCart", "e2", T0 + HOUR).at(2).rec(),
        order("o2", 7.0, "USD", T0 + HOUR + 14 * MIN).at(2).rec(),
        server("AddToCart", "e3", T0 + HOUR + 14 * MIN).at(2).rec(),
        browser("ViewContent", "e4", T0 + HOUR + 20 * MIN)
            .at(3)
            .rec(),
    ];
    let after = vec![
        browser("AddToCart", "e3", T0 + HOUR + 15 * MIN).at(4).rec(),
        server("AddToCart", "e2", T0 + HOUR + 2 * MIN).at(3).rec(),
        paid(browser("CompletePayment", "e1", T0 + 2 * HOUR))
            .at(5)
            .rec(),
        order("o1", 5.0, "USD", T0)
            .status("refunded", T0 + 3 * HOUR)
            .at(3)
            .rec(),
    ];
    (before, after)
}

/// The changelog format 2 fixture, as written.
fn format_2_fixture() -> Vec<ChangelogEntry> {
    let text = include_str!("fixtures/changelog_v2.txt");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|line| {
            let (key, value) = line.split_once('\t').expect("key TAB value");
            let value = (value != "-").then(|| {
                (0..value.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&value[i..i + 2], 16).expect("hex"))
                    .collect()
            });
            ChangelogEntry {
                key: key.as_bytes().to_vec(),
                value,
            }
        })
        .collect()
}

/// A changelog the previous release wrote (format 2) restores in this one: a rolling upgrade
/// needs no reset. The restored engine continues as the engine that wrote it would have.
#[test]
fn changelog_of_format_2_restores_and_continues_as_an_uninterrupted_run() {
    let config = EngineConfig::default();
    let orders = OrdersConfig::default();
    let (before, after) = format_2_scenario();
    let fixture = format_2_fixture();
    assert!(fixture
        .iter()
        .all(|e| e.value.as_ref().is_none_or(|v| v[0] == 2)));
    let dedup_values: BTreeSet<u8> = fixture
        .iter()
        .filter(|e| e.key[0] == b'a')
        .filter_map(|e| e.value.as_ref().map(|v| v[1]))
        .collect();
    assert_eq!(
        dedup_values,
        BTreeSet::from([b'c', b'p']),
        "closed and pending"
    );
    assert!(fixture.iter().any(|e| e.value.is_none()), "tombstones");

    let mut whole = Engine::new(&config, &orders);
    let mut before_out = Outputs::default();
    for r in before {
        whole.process(r, &mut before_out);
    }
    let mut whole_out = before_out.clone();
    for r in after.iter().cloned() {
        whole.process(r, &mut whole_out);
    }
    whole.flush(&mut whole_out);

    let mut restored = Engine::restore(&config, &orders, fixture).expect("format 2 restores");
    let size = restored.state_size();
    assert_eq!(
        (size.closed_keys, size.pending_actions, size.reordering),
        (1, 1, 2),
        "{size:?}"
    );
    let mut after_out = Outputs::default();
    for r in after {
        restored.process(r, &mut after_out);
    }
    restored.flush(&mut after_out);
    assert_eq!(concat(before_out, after_out), whole_out);
    assert_eq!(restored.stats(), whole.stats());
    assert_eq!(
        keys(&whole_out),
        [
            "PIXEL1/CompletePayment/e1",
            "PIXEL1/AddToCart/e2",
            "PIXEL1/AddToCart/e3",
            "PIXEL1/ViewContent/e4"
        ]
    );
}

/// An event_id reused after its TTL starts a new action while the old one's closed key still
/// lives: the fingerprint has a closed entry and a pending action at once. A copy within the old
/// action's TTL belongs to the old one (a duplicate), also after a restore from a checkpoint
/// taken while both exist: the changelog keeps both.
#[test]
fn restore_while_a_key_is_both_closed_and_pending_keeps_the_closed_entry() {
    let config = EngineConfig::default();
    let orders = OrdersConfig::default();
    let ttl = 48 * HOUR;
    let before = [
        browser("AddToCart", "e1", T0).rec(),
        browser("AddToCart", "x", T0 + HOUR).rec(),
        server("AddToCart", "x", T0 + HOUR).rec(),
        // The TTL of e1's action is over: a new action, pending for its merge window.
        server("AddToCart", "e1", T0 + ttl).rec(),
        browser("AddToCart", "y", T0 + ttl + 11 * MIN).rec(),
        server("AddToCart", "y", T0 + ttl + 11 * MIN).rec(),
    ];
    // Within the old action's TTL, and within the new action's merge window.
    let after = [browser("AddToCart", "e1", T0 + ttl - MIN).rec()];

    let mut whole = Engine::new(&config, &orders);
    let mut whole_out = Outputs::default();
    for r in before.iter().chain(&after).cloned() {
        whole.process(r, &mut whole_out);
    }
    whole.flush(&mut whole_out);
    let e1: Vec<_> = whole_out
        .conversions
        .iter()
        .filter(|c| c.view().event_id == Some("e1"))
        .map(|c| c.sources())
        .collect();
    assert_eq!(e1, [SourcesSeen::Browser, SourcesSeen::Server]);
    assert_eq!(dup(whole.stats(), "same_source"), 1);

    let mut first = Engine::new(&config, &orders).with_changelog();
    let mut out = Outputs::default();
    let mut log = ChangelogTopic::default();
    for r in before.iter().cloned() {
        first.process(r, &mut out);
        log.apply(first.take_changes());
    }
    let size = first.state_size();
    assert_eq!((size.pending_actions, size.closed_keys), (1, 2), "{size:?}");
    // One changelog key per fingerprint (e1, x): e1's holds its closed entry and its pending
    // action together.
    assert_eq!(log.live(b'a'), 2);
    let both: Vec<_> = log
        .live_records()
        .filter(|(k, v)| k[0] == b'a' && v[1] == b'b')
        .collect();
    assert_eq!(both.len(), 1, "e1 is closed and pending");
    drop(first);

    for (topic, entries) in log.readings() {
        let mut second = Engine::restore(&config, &orders, entries).expect("restore");
        assert_eq!(second.state_size(), size, "{topic}");
        let mut rest = out.clone();
        for r in after.iter().cloned() {
            second.process(r, &mut rest);
        }
        second.flush(&mut rest);
        assert_eq!(rest, whole_out, "{topic}");
        assert_eq!(second.stats(), whole.stats(), "{topic}");
    }
}
