//! A restored engine continues exactly where the one that wrote the changelog stopped.

mod support;

use std::time::Duration;

use onecount::config::{EngineConfig, OrdersConfig};
use onecount::engine::changelog::ChangelogEntry;
use onecount::engine::{Engine, Outputs};
use onecount::model::Source;
use onecount::parse::Parsed;
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
