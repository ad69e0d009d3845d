//! What `demo` prints: the run's accounting set against the generator's ground truth.
//!
//! Owns: comparing `stats.json` with `truth.json` key by key, and the human-readable summary.
//! Must not: compute either side (the engine fills `Stats`, the generator's own plan fills
//! `Truth`); it only lines them up.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::engine::stats::Stats;
use crate::generate::Truth;
use crate::model::Money;

/// Every count where the run differs from the truth, as `key: expected X, got Y`.
pub fn differences(truth: &Truth, stats: &Stats) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut check = |key: &str, expected: u64, got: u64| {
        if expected != got {
            diffs.push(format!("{key}: expected {expected}, got {got}"));
        }
    };
    check(
        "input_records.browser",
        truth.input_records.browser,
        stats.input_records.browser,
    );
    check(
        "input_records.server",
        truth.input_records.server,
        stats.input_records.server,
    );
    check(
        "input_records.orders",
        truth.input_records.orders,
        stats.input_records.orders,
    );
    check(
        "input_records.total",
        truth.input_records.total,
        stats.input_records.total,
    );
    check("conversions", truth.conversions, stats.conversions);
    check("merged", truth.merged, stats.merged);
    check("duplicates", truth.duplicates, stats.duplicates);
    check(
        "consent_dropped",
        truth.consent_dropped,
        stats.consent_dropped,
    );
    check("dead_letters", truth.dead_letters, stats.dead_letters);
    check("late", truth.late, stats.late);
    check("orders_applied", truth.orders_applied, stats.orders_applied);
    check(
        "orders_redelivered",
        truth.orders_redelivered,
        stats.orders_redelivered,
    );
    check(
        "orders_tombstones",
        truth.orders_tombstones,
        stats.orders_tombstones,
    );
    check(
        "orders_historical",
        truth.orders_historical,
        stats.orders_historical,
    );
    check(
        "sources.browser",
        truth.sources.browser,
        stats.sources.browser,
    );
    check("sources.server", truth.sources.server, stats.sources.server);
    check("sources.both", truth.sources.both, stats.sources.both);
    for (name, expected, got) in [
        (
            "duplicates_by_reason",
            &truth.duplicates_by_reason,
            &stats.duplicates_by_reason,
        ),
        ("discrepancies", &truth.discrepancies, &stats.discrepancies),
    ] {
        for key in expected.keys().chain(got.keys()) {
            let e = expected.get(key).copied().unwrap_or(0);
            let g = got.get(key).copied().unwrap_or(0);
            check(&format!("{name}.{key}"), e, g);
        }
    }
    for (name, expected, got) in [
        (
            "tracked_revenue",
            &truth.tracked_revenue,
            &stats.tracked_revenue,
        ),
        (
            "backend_revenue",
            &truth.backend_revenue,
            &stats.backend_revenue,
        ),
    ] {
        for key in expected.keys().chain(got.keys()) {
            let e = nonzero(expected, key);
            let g = nonzero(got, key);
            if e != g {
                diffs.push(format!(
                    "{name}.{key}: expected {}, got {}",
                    e.to_f64(),
                    g.to_f64()
                ));
            }
        }
    }
    diffs.sort();
    diffs.dedup();
    diffs
}

fn nonzero(map: &BTreeMap<String, Money>, key: &str) -> Money {
    map.get(key).copied().unwrap_or_default()
}

/// The demo's report: what happened to the input, as a data platform team reads it.
pub fn summary(stats: &Stats, seconds: f64) -> String {
    let mut s = String::new();
    let events = stats.input_records.browser + stats.input_records.server;
    let copies_kept = stats.conversions + stats.merged;
    let _ = writeln!(s, "input: {} records ({} browser, {} server events, {} order changes) in {:.2}s, {:.0} records/s",
        stats.input_records.total, stats.input_records.browser, stats.input_records.server,
        stats.input_records.orders, seconds, stats.input_records.total as f64 / seconds.max(1e-9));
    let _ = writeln!(
        s,
        "conversions: {} (both sources {}, browser only {}, server only {})",
        stats.conversions, stats.sources.both, stats.sources.browser, stats.sources.server
    );
    let _ = writeln!(s, "dedup rate: {:.1}% of events were copies merged or dropped as duplicates; pair rate {:.1}% of conversions seen by both sources",
        pct(stats.merged + stats.duplicates, events), pct(stats.sources.both, stats.conversions));
    let _ = writeln!(s, "events kept: {copies_kept}, duplicates: {}, consent dropped: {}, dead letters: {}, late: {}",
        stats.duplicates, stats.consent_dropped, stats.dead_letters, stats.late);
    let reasons: Vec<String> = stats
        .duplicates_by_reason
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(s, "duplicates by reason: {}", reasons.join(", "));
    let _ = writeln!(
        s,
        "orders: {} applied, {} redelivered, {} tombstones, {} historical",
        stats.orders_applied,
        stats.orders_redelivered,
        stats.orders_tombstones,
        stats.orders_historical
    );
    let _ = writeln!(s, "discrepancies:");
    for (kind, n) in stats.discrepancies.iter().filter(|(_, n)| **n > 0) {
        let _ = writeln!(s, "  {kind:<28} {n}");
    }
    let _ = writeln!(s, "revenue (tracked vs backend, drift):");
    let currencies: std::collections::BTreeSet<&String> = stats
        .tracked_revenue
        .keys()
        .chain(stats.backend_revenue.keys())
        .collect();
    for c in currencies {
        let t = nonzero(&stats.tracked_revenue, c).to_f64();
        let b = nonzero(&stats.backend_revenue, c).to_f64();
        let drift = if b != 0.0 {
            format!("{:+.2}%", (t - b) / b * 100.0)
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            s,
            "  {c:<8} tracked {t:>14.2}  backend {b:>14.2}  drift {drift}"
        );
    }
    s
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}
