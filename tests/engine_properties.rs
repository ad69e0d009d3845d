//! Properties over arrival orders: the watermark decides when, never what.

mod support;

use std::time::Duration;

use onecount::config::EngineConfig;
use onecount::engine::stats::Stats;
use onecount::engine::Outputs;
use onecount::model::Source;
use onecount::parse::Parsed;
use proptest::prelude::*;
use support::*;

/// One copy as the strategy draws it: key, source, time offset, flags.
#[derive(Debug, Clone)]
struct Draw {
    key: u8,
    server: bool,
    offset_ms: i64,
    denied: bool,
    purchase_order: Option<u8>,
    value_cents: i64,
}

fn time_offset() -> impl Strategy<Value = i64> {
    // Gaps inside the merge window, just beyond it, and beyond the TTL (1 h in these tests).
    prop_oneof![
        4 => 0..5 * MIN,
        2 => 5 * MIN..6 * MIN,
        2 => (HOUR - MIN)..(HOUR + 2 * MIN),
        1 => 2 * HOUR..3 * HOUR,
    ]
}

fn draw() -> impl Strategy<Value = Draw> {
    (
        0u8..6,
        any::<bool>(),
        time_offset(),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.4, 0u8..3),
        0i64..5000,
    )
        .prop_map(
            |(key, server, offset_ms, denied, purchase_order, value_cents)| Draw {
                key,
                server,
                offset_ms,
                denied,
                purchase_order,
                value_cents,
            },
        )
}

/// Builds the copies with positions fixed before any shuffling, as Kafka offsets are.
fn copies(draws: &[Draw]) -> Vec<Copy> {
    draws
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let source = if d.server {
                Source::Server
            } else {
                Source::Browser
            };
            let name = if d.purchase_order.is_some() {
                "CompletePayment"
            } else {
                "AddToCart"
            };
            let mut c = copy(source, name, &format!("k{}", d.key), T0 + d.offset_ms)
                .value(d.value_cents as f64 / 100.0, "USD")
                .at(i as i64);
            if let Some(o) = d.purchase_order {
                c = c.order(&format!("o{o}"));
            }
            if d.denied {
                c = c.denied();
            }
            c
        })
        .collect()
}

fn config(lateness: Duration) -> EngineConfig {
    EngineConfig {
        ttl: Duration::from_secs(3600),
        allowed_lateness: lateness,
        ..EngineConfig::default()
    }
}

fn run_copies(config: &EngineConfig, copies: &[Copy]) -> (Outputs, Stats) {
    run_with(
        config,
        copies
            .iter()
            .cloned()
            .map(Copy::rec)
            .collect::<Vec<Parsed>>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With lateness covering the whole spread, every copy waits for the watermark and is
    /// applied in event-time order: any arrival order gives the same outputs, in the same order.
    #[test]
    fn any_arrival_order_within_lateness_gives_identical_outputs(
        draws in prop::collection::vec(draw(), 1..24),
        seed in any::<u64>(),
    ) {
        let config = config(Duration::from_secs(10 * 3600));
        let sorted = copies(&draws);
        let mut shuffled = sorted.clone();
        shuffle(&mut shuffled, seed);
        let (a, sa) = run_copies(&config, &sorted);
        let (b, sb) = run_copies(&config, &shuffled);
        prop_assert_eq!(a, b);
        prop_assert_eq!(sa, sb);
    }

    /// With the default 10 min lateness, copies that arrive out of order by less than it give
    /// exactly what event-time order gives.
    #[test]
    fn jitter_smaller_than_lateness_changes_nothing(
        draws in prop::collection::vec(draw(), 1..24),
        jitter in prop::collection::vec(0..10 * MIN, 24),
    ) {
        let config = config(Duration::from_secs(600));
        let mut in_time_order = copies(&draws);
        in_time_order.sort_by_key(|c| (c.0.event_time, c.0.source, c.0.position.offset));
        let mut arrival: Vec<(i64, Copy)> = in_time_order
            .iter()
            .cloned()
            .zip(jitter.iter())
            .map(|(c, j)| (c.0.event_time + j, c))
            .collect();
        arrival.sort_by_key(|(a, c)| (*a, c.0.position.offset));
        let jittered: Vec<Copy> = arrival.into_iter().map(|(_, c)| c).collect();
        let (a, sa) = run_copies(&config, &in_time_order);
        let (b, sb) = run_copies(&config, &jittered);
        prop_assert_eq!(a, b);
        prop_assert_eq!(sa, sb);
    }

    /// Whatever the arrival order, even far behind the watermark: every copy lands in exactly
    /// one bucket (checked by `run_with`), and no key is emitted twice within its TTL.
    #[test]
    fn conservation_and_one_conversion_per_key_within_ttl_hold_for_any_order(
        draws in prop::collection::vec(draw(), 1..32),
        seed in any::<u64>(),
    ) {
        let config = config(Duration::from_secs(60));
        let mut shuffled = copies(&draws);
        shuffle(&mut shuffled, seed);
        let (out, stats) = run_copies(&config, &shuffled);
        prop_assert_eq!(stats.input_records.total, draws.len() as u64);
        let mut emitted: Vec<(String, i64)> =
            out.conversions.iter().map(|c| (c.key().to_owned(), c.view().event_time)).collect();
        emitted.sort();
        for pair in emitted.windows(2) {
            if pair[0].0 == pair[1].0 {
                prop_assert!(pair[1].1 - pair[0].1 >= 3600, "{:?} emitted twice within its TTL", pair);
            }
        }
    }
}

/// A deterministic Fisher-Yates shuffle (proptest shrinks the seed).
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = (seed % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
