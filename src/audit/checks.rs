//! The checklist: each check grades tallied outputs against named thresholds.
//!
//! Owns: the thresholds (each with the reason for its value), the checks' ids and order, and
//! the revenue roll-ups behind the drift check and its chart. Must not: read records (that is
//! `tally`) or format output (that is `report` and `html`).
//!
//! A threshold is a fraction unless its name says otherwise. "Beyond" a threshold means strictly
//! above it (or below a `_BELOW` one). Where an alert in `prometheus/rules.yml` watches the same
//! thing, the audit uses the alert's threshold, so a release gate and the pager agree.

use std::collections::BTreeMap;

use serde_json::json;

use crate::engine::stats::{Stats, UNATTRIBUTED};
use crate::model::{DiscrepancyKind, Input, MatchKey, Money, RevenueWindow};

use super::report::{
    drift, pct, Check, CurrencyRevenue, HourDrift, PixelRevenue, PixelSources, Records, Report,
    Sources, Status, StatusCounts, TimeRange, REPORT_VERSION,
};
use super::tally::Tally;

/// Check ids, in report order.
pub const OUTPUTS_COMPLETE: &str = "outputs_complete";
pub const ONE_CONVERSION_PER_ACTION: &str = "one_conversion_per_action";
pub const DEDUP_RATES: &str = "dedup_rates";
pub const VALUE_CURRENCY_PARITY: &str = "value_currency_parity";
pub const CURRENCY_CODES: &str = "currency_codes";
pub const PARAMETER_PARITY: &str = "parameter_parity";
pub const CONSENT: &str = "consent";
pub const PURCHASE_PARAMETERS: &str = "purchase_parameters";
pub const REVENUE_DRIFT: &str = "revenue_drift";
pub const ORDER_RECONCILIATION: &str = "order_reconciliation";
pub const DEAD_LETTERS: &str = "dead_letters";

/// Every check id, in the order the report lists them.
pub const CHECK_IDS: [&str; 11] = [
    OUTPUTS_COMPLETE,
    ONE_CONVERSION_PER_ACTION,
    DEDUP_RATES,
    VALUE_CURRENCY_PARITY,
    CURRENCY_CODES,
    PARAMETER_PARITY,
    CONSENT,
    PURCHASE_PARAMETERS,
    REVENUE_DRIFT,
    ORDER_RECONCILIATION,
    DEAD_LETTERS,
];

/// Dedup keys (and purchase order ids) emitted twice within the TTL that still pass: none.
/// "Exactly one conversion per action" is the point of the whole pipeline; a second conversion
/// doubles the action in Ads Manager and inflates ROAS.
pub const DUPLICATE_CONVERSIONS_ALLOWED: u64 = 0;

/// Dedup rate (copies merged or dropped as duplicates, over copies decided) below which the
/// check warns: the floor of the `OnecountDedupRateDropped` alert. With both integrations
/// healthy every action arrives twice and the rate sits near 0.5.
pub const DEDUP_RATE_WARN_BELOW: f64 = 0.15;

/// Pair rate (conversions that merged a browser and a server copy) below which the check warns:
/// the floor of the `OnecountPairRateDropped` alert. Low means the redundant setup is not
/// redundant: one side is lost, or the sides do not share event_ids.
pub const PAIR_RATE_WARN_BELOW: f64 = 0.30;

/// Conversions a pixel needs before its own pair rate is graded: the alerts' volume guard
/// (100 an hour), so that a pixel with a handful of conversions does not warn on noise.
pub const PIXEL_RATE_MIN_CONVERSIONS: u64 = 100;

/// Share of merged conversions with a value or currency disagreement between browser and
/// server beyond which the check fails. The server's value wins (value authority), so one
/// disagreement does not corrupt revenue; but past 5% of actions the two integrations read
/// different carts or prices, and one of them is systematically wrong. Any disagreement warns:
/// TikTok's guidance is that they match exactly.
pub const PARITY_FAIL_ABOVE: f64 = 0.05;

/// Share of conversions with a currency that is not an ISO 4217 code beyond which the check
/// fails. Such a conversion's value is unusable for ROAS; 1% is where it starts to move the
/// revenue totals visibly. Any one warns.
pub const INVALID_CURRENCY_FAIL_ABOVE: f64 = 0.01;

/// Share of merged conversions where one of email, phone or external_id was on one copy only,
/// per key, beyond which the check warns. Parity lifts the match rate; it never changes counts
/// or revenue, so this check never fails.
pub const MATCH_KEY_PARITY_WARN_ABOVE: f64 = 0.05;

/// Share of purchases carrying a hashed email, phone or external_id below which the check
/// warns. A checkout collects at least one; a purchase without any can be matched only by
/// cookie or click id (TikTok's advanced matching).
pub const PURCHASE_IDENTIFIER_COVERAGE_WARN_BELOW: f64 = 0.80;

/// Consent findings (`consent_violation`, `consent_after_emit`) that still pass: none. Consent
/// is not a rate: one event sent for a user who denied is a compliance finding, and the
/// `OnecountConsentViolation` alert fires on any.
pub const CONSENT_FINDINGS_ALLOWED: u64 = 0;

/// Share of purchases without an order id (or without value or currency) beyond which the
/// check fails. Such a purchase escapes order dedup and reconciliation; past 2% the revenue
/// comparison no longer covers the purchases it is meant to. Any one warns.
pub const PURCHASE_MISSING_FAIL_ABOVE: f64 = 0.02;

/// Revenue drift, |tracked - backend| / backend over the audited range, beyond which a pixel
/// and currency (or a currency over all pixels) fails: the `OnecountRevenueDrift` alert's 10%.
pub const DRIFT_FAIL_ABOVE: f64 = 0.10;

/// Revenue orders (or purchases) a pixel and currency needs before its drift is graded. Below
/// it one odd order moves the ratio by more than the threshold, so the row is reported and
/// warns instead.
pub const DRIFT_MIN_VOLUME: u64 = 10;

/// Share of revenue orders no conversion claimed (`order_without_conversion`) beyond which the
/// check fails: lost signal of that size alone moves revenue past the drift alert's 10%.
pub const ORDER_WITHOUT_CONVERSION_FAIL_ABOVE: f64 = 0.10;
/// ... and beyond which it warns: a few lost purchases are normal (ad blockers on a browser-only
/// path, a server outage); above 2% the redundancy is not covering them.
pub const ORDER_WITHOUT_CONVERSION_WARN_ABOVE: f64 = 0.02;

/// Share of purchases with an order id whose order never came (`conversion_without_order`)
/// beyond which the check fails (over-counted revenue, the same 10% as the drift alert) ...
pub const CONVERSION_WITHOUT_ORDER_FAIL_ABOVE: f64 = 0.10;
/// ... and warns (test orders, orders of another shop, a lagging orders feed).
pub const CONVERSION_WITHOUT_ORDER_WARN_ABOVE: f64 = 0.02;

/// Share of purchases with an order id whose value or currency differs from the order's
/// (`value_mismatch` + `currency_mismatch`) beyond which the check fails: the shop reports
/// the wrong value (tax, shipping, discounts) systematically ...
pub const ORDER_MISMATCH_FAIL_ABOVE: f64 = 0.05;
/// ... and warns (a few edited orders are normal).
pub const ORDER_MISMATCH_WARN_ABOVE: f64 = 0.01;

/// Share of input records dead-lettered beyond which the check fails: the floor of the
/// `OnecountDeadLetterSpike` alert; a percent of unparseable input is a broken producer ...
pub const DEAD_LETTER_FAIL_ABOVE: f64 = 0.01;
/// ... and beyond which it warns (a stray malformed line per thousand is normal noise).
pub const DEAD_LETTER_WARN_ABOVE: f64 = 0.001;

/// `part / whole`, `None` when `whole` is 0.
pub fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// `Fail` beyond `fail`, `Warn` beyond `warn`, else `Pass`; nothing to grade passes.
fn grade(value: Option<f64>, warn: f64, fail: f64) -> Status {
    match value {
        Some(v) if v > fail => Status::Fail,
        Some(v) if v > warn => Status::Warn,
        _ => Status::Pass,
    }
}

fn hours(ttl_s: i64) -> String {
    if ttl_s % 3600 == 0 {
        format!("{} h", ttl_s / 3600)
    } else {
        format!("{ttl_s} s")
    }
}

/// Grades a tally. `stats` is the run's accounting where there is one.
pub fn evaluate(source: &str, tally: &Tally, stats: Option<&Stats>) -> Report {
    let revenue = Revenue::roll_up(tally);
    let checks = vec![
        outputs_complete(tally, stats),
        one_conversion_per_action(tally),
        dedup_rates(tally, stats),
        value_currency_parity(tally),
        currency_codes(tally),
        parameter_parity(tally),
        consent(tally, stats),
        purchase_parameters(tally),
        revenue_drift(&revenue),
        order_reconciliation(tally, &revenue),
        dead_letters(tally, stats),
    ];
    debug_assert!(checks.iter().map(|c| c.id).eq(CHECK_IDS));
    let mut counts = StatusCounts::default();
    for c in &checks {
        match c.status {
            Status::Pass => counts.pass += 1,
            Status::Warn => counts.warn += 1,
            Status::Fail => counts.fail += 1,
        }
    }
    let r = &tally.records;
    Report {
        format_version: REPORT_VERSION,
        source: source.to_string(),
        status: checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Pass),
        counts,
        time_range: tally
            .time_range
            .map(|(first, last)| TimeRange { first, last }),
        records: Records {
            conversions: r.conversions,
            discrepancies: r.discrepancies,
            dead_letters: r.dead_letters,
            revenue_windows: r.revenue_windows,
        },
        checks,
        conversions_by_sources: Sources {
            both: tally.sources.both,
            browser: tally.sources.browser,
            server: tally.sources.server,
        },
        conversions_by_pixel: tally
            .pixels
            .iter()
            .map(|(pixel, p)| PixelSources {
                pixel: pixel.clone(),
                both: p.both,
                browser: p.browser,
                server: p.server,
                pair_rate: share(p.both, p.conversions),
            })
            .collect(),
        discrepancies_by_kind: DiscrepancyKind::ALL
            .iter()
            .map(|k| (k.as_str(), tally.discrepancy_count(*k)))
            .collect(),
        revenue_by_currency: revenue.currencies,
        revenue_by_pixel: revenue.pixels,
        drift_by_hour: revenue.hours,
    }
}

/// The outputs are all there: they agree with the run's own accounting, and that accounting
/// is conserved. An audit over a truncated file would grade the wrong numbers.
fn outputs_complete(tally: &Tally, stats: Option<&Stats>) -> Check {
    let mut c = Check::new(
        OUTPUTS_COMPLETE,
        "Outputs complete and consistent with stats.json",
    );
    let r = &tally.records;
    c.metric("conversions", r.conversions)
        .metric("discrepancies", r.discrepancies)
        .metric("dead_letters", r.dead_letters)
        .metric("revenue_windows", r.revenue_windows);
    let Some(stats) = stats else {
        c.metric("input_records", json!(null))
            .metric("accounted", json!(null));
        c.summary = "no stats.json: the outputs cannot be checked against the accounting".into();
        c.raise(Status::Warn, c.summary.clone());
        return c;
    };
    c.metric("input_records", stats.input_records.total)
        .metric("accounted", stats.accounted());
    let mut compare = |what: String, file: u64, accounted: u64| {
        if file != accounted {
            c.raise(
                Status::Fail,
                format!("{what}: {file} in the outputs, {accounted} in stats.json"),
            );
        }
    };
    compare(
        "input records in buckets".into(),
        stats.accounted(),
        stats.input_records.total,
    );
    compare("conversions".into(), r.conversions, stats.conversions);
    compare(
        "conversions seen by both sources".into(),
        tally.sources.both,
        stats.sources.both,
    );
    compare(
        "browser-only conversions".into(),
        tally.sources.browser,
        stats.sources.browser,
    );
    compare(
        "server-only conversions".into(),
        tally.sources.server,
        stats.sources.server,
    );
    compare("dead letters".into(), r.dead_letters, stats.dead_letters);
    compare(
        "revenue windows (every version)".into(),
        r.revenue_windows,
        stats.revenue_windows,
    );
    for kind in DiscrepancyKind::ALL {
        let accounted = stats.discrepancies.get(kind.as_str()).copied().unwrap_or(0);
        compare(
            format!("{} discrepancies", kind.as_str()),
            tally.discrepancy_count(kind),
            accounted,
        );
    }
    let mut tracked: BTreeMap<&str, Money> = BTreeMap::new();
    let mut backend: BTreeMap<&str, Money> = BTreeMap::new();
    for w in tally.latest_windows() {
        tracked.entry(&w.currency).or_default().0 += w.tracked_revenue.0;
        backend.entry(&w.currency).or_default().0 += w.backend_revenue.0;
    }
    for (name, windows, accounted) in [
        ("tracked", &tracked, &stats.tracked_revenue),
        ("backend", &backend, &stats.backend_revenue),
    ] {
        let currencies: std::collections::BTreeSet<&str> = windows
            .keys()
            .copied()
            .chain(accounted.keys().map(String::as_str))
            .collect();
        for cur in currencies {
            let w = windows.get(cur).copied().unwrap_or_default();
            let a = accounted.get(cur).copied().unwrap_or_default();
            if w != a {
                c.raise(
                    Status::Fail,
                    format!(
                        "{name} revenue in {cur}: {:.2} in the revenue windows, {:.2} in stats.json",
                        w.to_f64(),
                        a.to_f64()
                    ),
                );
            }
        }
    }
    c.summary = if c.status == Status::Pass {
        format!(
            "every count and revenue total in the outputs equals stats.json; {} input records, all accounted for",
            stats.input_records.total
        )
    } else {
        format!(
            "{} differences between the outputs and stats.json: the outputs are incomplete or from another run",
            c.findings.len()
        )
    };
    c
}

fn one_conversion_per_action(t: &Tally) -> Check {
    let mut c = Check::new(
        ONE_CONVERSION_PER_ACTION,
        "Exactly one conversion per action",
    );
    let ttl = hours(t.ttl_s());
    c.metric("conversions", t.records.conversions)
        .metric("duplicate_keys", t.duplicate_keys)
        .metric("purchases_with_order_id", t.purchases_with_order_id)
        .metric("duplicate_order_ids", t.duplicate_orders)
        .metric(
            "duplicate_order_conversions_dropped",
            t.discrepancy_count(DiscrepancyKind::DuplicateOrderConversion),
        )
        .metric("ttl_seconds", t.ttl_s())
        .threshold(
            "duplicate_keys_fail_above",
            DUPLICATE_CONVERSIONS_ALLOWED as f64,
        )
        .threshold(
            "duplicate_order_ids_fail_above",
            DUPLICATE_CONVERSIONS_ALLOWED as f64,
        );
    if t.duplicate_keys > DUPLICATE_CONVERSIONS_ALLOWED {
        c.raise(
            Status::Fail,
            format!(
                "{} conversions repeat a dedup key less than {ttl} after another: {}",
                t.duplicate_keys,
                t.duplicate_key_examples.join(", ")
            ),
        );
    }
    if t.duplicate_orders > DUPLICATE_CONVERSIONS_ALLOWED {
        c.raise(
            Status::Fail,
            format!(
                "{} purchase conversions repeat a pixel's order id less than {ttl} after another: {}",
                t.duplicate_orders,
                t.duplicate_order_examples.join(", ")
            ),
        );
    }
    c.summary = format!(
        "{} conversions, {} with a dedup key already converted less than {ttl} before; {} purchases with an order id, {} converting an order twice ({} reloaded purchases were dropped by the engine)",
        t.records.conversions,
        t.duplicate_keys,
        t.purchases_with_order_id,
        t.duplicate_orders,
        t.discrepancy_count(DiscrepancyKind::DuplicateOrderConversion)
    );
    c
}

fn dedup_rates(t: &Tally, stats: Option<&Stats>) -> Check {
    let mut c = Check::new(
        DEDUP_RATES,
        "Browser and server copies deduplicated (dedup and pair rates)",
    );
    // The alerts' definitions (docs/METRICS.md): copies decided = first copies + merged +
    // duplicates + consent drops.
    let dedup_rate = stats.and_then(|s| {
        share(
            s.merged + s.duplicates,
            s.conversions + s.merged + s.duplicates + s.consent_dropped,
        )
    });
    let pair_rate = share(t.sources.both, t.records.conversions);
    c.metric("dedup_rate", dedup_rate)
        .metric("pair_rate", pair_rate)
        .metric("merged", t.sources.both)
        .metric("browser_only", t.sources.browser)
        .metric("server_only", t.sources.server)
        .metric("duplicates", stats.map(|s| s.duplicates))
        .threshold("dedup_rate_warn_below", DEDUP_RATE_WARN_BELOW)
        .threshold("pair_rate_warn_below", PAIR_RATE_WARN_BELOW)
        .threshold("pixel_min_conversions", PIXEL_RATE_MIN_CONVERSIONS as f64);
    if let Some(r) = dedup_rate.filter(|r| *r < DEDUP_RATE_WARN_BELOW) {
        c.raise(
            Status::Warn,
            format!(
                "dedup rate {} is below {}",
                pct(Some(r)),
                pct(Some(DEDUP_RATE_WARN_BELOW))
            ),
        );
    }
    if let Some(r) = pair_rate.filter(|r| *r < PAIR_RATE_WARN_BELOW) {
        c.raise(
            Status::Warn,
            format!(
                "pair rate {} is below {}",
                pct(Some(r)),
                pct(Some(PAIR_RATE_WARN_BELOW))
            ),
        );
    }
    for (pixel, p) in &t.pixels {
        if p.conversions < PIXEL_RATE_MIN_CONVERSIONS {
            continue;
        }
        let r = share(p.both, p.conversions);
        if r.is_some_and(|r| r < PAIR_RATE_WARN_BELOW) {
            c.raise(
                Status::Warn,
                format!(
                    "pixel {pixel}: pair rate {} over {} conversions",
                    pct(r),
                    p.conversions
                ),
            );
        }
    }
    let dedup = match dedup_rate {
        Some(r) => format!("dedup rate {} of copies decided", pct(Some(r))),
        None => "dedup rate unknown without stats.json".into(),
    };
    c.summary = format!(
        "{dedup}; pair rate {} ({} of {} conversions merged a browser and a server copy; {} browser only, {} server only)",
        pct(pair_rate),
        t.sources.both,
        t.records.conversions,
        t.sources.browser,
        t.sources.server
    );
    c
}

fn value_currency_parity(t: &Tally) -> Check {
    let mut c = Check::new(
        VALUE_CURRENCY_PARITY,
        "Browser/server value and currency parity",
    );
    let merged = t.sources.both;
    let value = t.discrepancy_count(DiscrepancyKind::ValueParity);
    let currency = t.discrepancy_count(DiscrepancyKind::CurrencyParity);
    let s = share(value + currency, merged);
    c.metric("merged", merged)
        .metric("value_parity", value)
        .metric("currency_parity", currency)
        .metric("share", s)
        .threshold("warn_above", 0.0)
        .threshold("fail_above", PARITY_FAIL_ABOVE);
    match grade(s, 0.0, PARITY_FAIL_ABOVE) {
        Status::Pass => {}
        status => c.raise(
            status,
            format!(
                "{} of merged conversions disagree between browser and server ({value} on value, {currency} on currency)",
                pct(s)
            ),
        ),
    }
    if merged == 0 {
        c.raise(
            Status::Warn,
            "no conversion merged a browser and a server copy: parity cannot be checked".into(),
        );
    }
    c.summary = format!(
        "{value} value and {currency} currency disagreements in {merged} merged conversions ({})",
        pct(s)
    );
    c
}

fn currency_codes(t: &Tally) -> Check {
    let mut c = Check::new(CURRENCY_CODES, "Currencies are ISO 4217 codes");
    let invalid = t.discrepancy_count(DiscrepancyKind::InvalidCurrency);
    let s = share(invalid, t.records.conversions);
    c.metric("conversions", t.records.conversions)
        .metric("invalid_currency", invalid)
        .metric("share", s)
        .threshold("warn_above", 0.0)
        .threshold("fail_above", INVALID_CURRENCY_FAIL_ABOVE);
    match grade(s, 0.0, INVALID_CURRENCY_FAIL_ABOVE) {
        Status::Pass => {}
        status => c.raise(
            status,
            format!(
                "{} of conversions carry a currency that is not an ISO 4217 code",
                pct(s)
            ),
        ),
    }
    c.summary = format!(
        "{invalid} of {} conversions with an invalid currency ({})",
        t.records.conversions,
        pct(s)
    );
    c
}

fn parameter_parity(t: &Tally) -> Check {
    let mut c = Check::new(
        PARAMETER_PARITY,
        "Parameter parity (email, phone, external_id) and match-key coverage",
    );
    let merged = t.sources.both;
    c.metric("merged", merged)
        .threshold("match_key_parity_warn_above", MATCH_KEY_PARITY_WARN_ABOVE)
        .threshold(
            "purchase_identifier_coverage_warn_below",
            PURCHASE_IDENTIFIER_COVERAGE_WARN_BELOW,
        );
    let mut parity = Vec::new();
    for key in MatchKey::PARITY {
        let n = MatchKey::ALL
            .iter()
            .position(|m| *m == key)
            .map_or(0, |i| t.match_key_parity[i]);
        let s = share(n, merged);
        let (count_name, share_name) = match key {
            MatchKey::Email => ("match_key_parity_email", "match_key_parity_email_share"),
            MatchKey::Phone => ("match_key_parity_phone", "match_key_parity_phone_share"),
            _ => (
                "match_key_parity_external_id",
                "match_key_parity_external_id_share",
            ),
        };
        c.metric(count_name, n).metric(share_name, s);
        if s.is_some_and(|s| s > MATCH_KEY_PARITY_WARN_ABOVE) {
            c.raise(
                Status::Warn,
                format!(
                    "{} is on one copy only in {} of merged conversions",
                    key.as_str(),
                    pct(s)
                ),
            );
        }
        parity.push(format!("{} {n}", key.as_str()));
    }
    let mut coverage = Vec::new();
    for (key, n) in MatchKey::ALL.iter().zip(t.match_keys) {
        let s = share(n, t.records.conversions);
        let name = match key {
            MatchKey::Email => "coverage_email",
            MatchKey::Phone => "coverage_phone",
            MatchKey::ExternalId => "coverage_external_id",
            MatchKey::Ttclid => "coverage_ttclid",
            MatchKey::Ttp => "coverage_ttp",
        };
        c.metric(name, s);
        coverage.push(format!("{} {}", key.as_str(), pct(s)));
    }
    let identified = share(t.purchases_identified, t.purchases);
    c.metric("purchases", t.purchases)
        .metric("purchase_identifier_coverage", identified);
    if identified.is_some_and(|s| s < PURCHASE_IDENTIFIER_COVERAGE_WARN_BELOW) {
        c.raise(
            Status::Warn,
            format!(
                "only {} of purchases carry a hashed email, phone or external_id",
                pct(identified)
            ),
        );
    }
    c.summary = format!(
        "match keys on one copy only, of {merged} merged conversions: {}; coverage of all conversions: {}; purchases with email, phone or external_id: {}",
        parity.join(", "),
        coverage.join(", "),
        pct(identified)
    );
    c
}

fn consent(t: &Tally, stats: Option<&Stats>) -> Check {
    let mut c = Check::new(CONSENT, "Consent honoured");
    let violations = t.discrepancy_count(DiscrepancyKind::ConsentViolation);
    let after_emit = t.discrepancy_count(DiscrepancyKind::ConsentAfterEmit);
    let (emitted, examples) = t.conversions_from_dropped_actions();
    c.metric("consent_violation", violations)
        .metric("consent_after_emit", after_emit)
        .metric("consent_dropped_copies", stats.map(|s| s.consent_dropped))
        .metric("violations_joined", t.joinable_violations())
        .metric("conversions_from_dropped_actions", emitted)
        .threshold("fail_above", CONSENT_FINDINGS_ALLOWED as f64);
    if violations > CONSENT_FINDINGS_ALLOWED {
        c.raise(
            Status::Fail,
            format!("{violations} server copies sent for actions whose browser copy denied consent (consent_violation)"),
        );
    }
    if after_emit > CONSENT_FINDINGS_ALLOWED {
        c.raise(
            Status::Fail,
            format!("{after_emit} denials arrived after their action was already emitted (consent_after_emit)"),
        );
    }
    if emitted > CONSENT_FINDINGS_ALLOWED {
        c.raise(
            Status::Fail,
            format!(
                "{emitted} conversions were emitted for actions dropped for consent: {}",
                examples.join(", ")
            ),
        );
    }
    let dropped = match stats {
        Some(s) => format!("{} copies dropped for denied consent", s.consent_dropped),
        None => "consent drops unknown without stats.json".into(),
    };
    c.summary = format!(
        "{dropped}; {violations} consent_violation, {after_emit} consent_after_emit; {emitted} conversions from a dropped action ({} violations checked against conversion keys)",
        t.joinable_violations()
    );
    c
}

fn purchase_parameters(t: &Tally) -> Check {
    let mut c = Check::new(
        PURCHASE_PARAMETERS,
        "Purchases carry order id, value and currency",
    );
    let missing_order = t.discrepancy_count(DiscrepancyKind::MissingOrderId);
    let shares = [
        ("order id", missing_order, share(missing_order, t.purchases)),
        (
            "value",
            t.purchases_without_value,
            share(t.purchases_without_value, t.purchases),
        ),
        (
            "currency",
            t.purchases_without_currency,
            share(t.purchases_without_currency, t.purchases),
        ),
    ];
    c.metric("purchases", t.purchases)
        .metric("missing_order_id", missing_order)
        .metric("missing_order_id_share", shares[0].2)
        .metric("without_value", t.purchases_without_value)
        .metric("without_value_share", shares[1].2)
        .metric("without_currency", t.purchases_without_currency)
        .metric("without_currency_share", shares[2].2)
        .threshold("warn_above", 0.0)
        .threshold("fail_above", PURCHASE_MISSING_FAIL_ABOVE);
    for (what, n, s) in shares {
        match grade(s, 0.0, PURCHASE_MISSING_FAIL_ABOVE) {
            Status::Pass => {}
            status => c.raise(status, format!("{n} purchases ({}) without {what}", pct(s))),
        }
    }
    c.summary = format!(
        "{} purchases: {} without order id ({}), {} without value, {} without currency",
        t.purchases,
        missing_order,
        pct(shares[0].2),
        t.purchases_without_value,
        t.purchases_without_currency
    );
    c
}

/// The revenue windows rolled up per pixel and currency, per currency, and per currency and
/// hour.
struct Revenue {
    pixels: Vec<PixelRevenue>,
    currencies: Vec<CurrencyRevenue>,
    hours: Vec<HourDrift>,
    /// Revenue orders over every window (latest versions).
    orders: u64,
}

fn drift_ratio(tracked: Money, backend: Money) -> Option<f64> {
    (backend.0 != 0).then(|| (tracked.0 - backend.0) as f64 / backend.0 as f64)
}

fn beyond(ratio: Option<f64>) -> bool {
    ratio.is_some_and(|r| r.abs() > DRIFT_FAIL_ABOVE)
}

/// How far a revenue row is off: within the threshold, beyond it on too little volume to
/// grade, beyond it only as attributed (`unattributed` orders of its currency could bring it
/// back), or beyond it whoever those orders belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drift {
    Within,
    LowVolume,
    Explainable,
    Beyond,
}

impl Drift {
    fn status(self) -> Status {
        match self {
            Drift::Within => Status::Pass,
            Drift::LowVolume | Drift::Explainable => Status::Warn,
            Drift::Beyond => Status::Fail,
        }
    }
}

/// Grades tracked against backend revenue. `unattributed` is backend revenue of the same
/// currency that no pixel claimed: the audit cannot tell whose it is, so a row fails only when
/// no share of it would bring the drift within the threshold. Crediting backend revenue only
/// lowers the drift, so the possible drifts run from "all of it" (`lo`) to "none of it" (`hi`).
/// Tracked revenue with no backend revenue at all is off without bound.
fn classify(
    orders: u64,
    purchases: u64,
    tracked: Money,
    backend: Money,
    unattributed: Money,
) -> Drift {
    let hi = match drift_ratio(tracked, backend) {
        Some(r) => r,
        None if tracked.0 > 0 => f64::INFINITY,
        None => 0.0,
    };
    let lo = drift_ratio(tracked, Money(backend.0 + unattributed.0)).unwrap_or(hi);
    if hi.abs() <= DRIFT_FAIL_ABOVE {
        Drift::Within
    } else if orders.max(purchases) < DRIFT_MIN_VOLUME {
        Drift::LowVolume
    } else if lo > DRIFT_FAIL_ABOVE || hi < -DRIFT_FAIL_ABOVE {
        Drift::Beyond
    } else {
        Drift::Explainable
    }
}

impl Revenue {
    fn roll_up(t: &Tally) -> Revenue {
        let windows = t.latest_windows();
        let mut pixels: Vec<PixelRevenue> = Vec::new();
        let mut currencies: BTreeMap<&str, CurrencyRevenue> = BTreeMap::new();
        let mut hours: BTreeMap<(&str, i64), (Money, Money)> = BTreeMap::new();
        let mut orders = 0;
        for w in &windows {
            orders += w.orders;
            let h = hours.entry((&w.currency, w.hour_start)).or_default();
            h.0 .0 += w.tracked_revenue.0;
            h.1 .0 += w.backend_revenue.0;
            let cur = currencies
                .entry(&w.currency)
                .or_insert_with(|| CurrencyRevenue {
                    currency: w.currency.clone(),
                    orders: 0,
                    purchases: 0,
                    tracked_revenue: Money(0),
                    backend_revenue: Money(0),
                    unattributed_backend_revenue: Money(0),
                    drift_ratio: None,
                    status: Status::Pass,
                });
            cur.orders += w.orders;
            cur.purchases += w.purchases;
            cur.tracked_revenue.0 += w.tracked_revenue.0;
            cur.backend_revenue.0 += w.backend_revenue.0;
            if w.event_source_id == UNATTRIBUTED {
                cur.unattributed_backend_revenue.0 += w.backend_revenue.0;
            }
            // Windows come sorted by pixel, currency, hour: extend the last row or start one.
            let same = pixels
                .last()
                .is_some_and(|p| p.pixel == w.event_source_id && p.currency == w.currency);
            if !same {
                pixels.push(PixelRevenue {
                    pixel: w.event_source_id.clone(),
                    currency: w.currency.clone(),
                    orders: 0,
                    purchases: 0,
                    matched: 0,
                    tracked_revenue: Money(0),
                    backend_revenue: Money(0),
                    drift_ratio: None,
                    drift_ratio_with_unattributed: None,
                    hours: 0,
                    hours_beyond: 0,
                    status: None,
                });
            }
            add_window(pixels.last_mut().expect("pushed above"), w);
        }
        let currencies: Vec<CurrencyRevenue> = currencies
            .into_values()
            .map(|mut c| {
                c.drift_ratio = drift_ratio(c.tracked_revenue, c.backend_revenue);
                c.status = classify(
                    c.orders,
                    c.purchases,
                    c.tracked_revenue,
                    c.backend_revenue,
                    Money(0),
                )
                .status();
                c
            })
            .collect();
        for p in &mut pixels {
            p.drift_ratio = drift_ratio(p.tracked_revenue, p.backend_revenue);
            if p.pixel == UNATTRIBUTED {
                continue;
            }
            let unattributed = currencies
                .iter()
                .find(|c| c.currency == p.currency)
                .map_or(Money(0), |c| c.unattributed_backend_revenue);
            if unattributed.0 != 0 {
                p.drift_ratio_with_unattributed = drift_ratio(
                    p.tracked_revenue,
                    Money(p.backend_revenue.0 + unattributed.0),
                );
            }
            p.status = Some(
                classify(
                    p.orders,
                    p.purchases,
                    p.tracked_revenue,
                    p.backend_revenue,
                    unattributed,
                )
                .status(),
            );
        }
        let mut running: BTreeMap<&str, (Money, Money)> = BTreeMap::new();
        let hours = hours
            .into_iter()
            .map(|((currency, hour_start), (tracked, backend))| {
                let sum = running.entry(currency).or_default();
                sum.0 .0 += tracked.0;
                sum.1 .0 += backend.0;
                HourDrift {
                    currency: currency.to_string(),
                    hour_start,
                    tracked_revenue: tracked,
                    backend_revenue: backend,
                    drift_ratio: drift_ratio(tracked, backend),
                    cumulative_drift_ratio: drift_ratio(sum.0, sum.1),
                }
            })
            .collect();
        Revenue {
            pixels,
            currencies,
            hours,
            orders,
        }
    }
}

fn add_window(p: &mut PixelRevenue, w: &RevenueWindow) {
    p.orders += w.orders;
    p.purchases += w.purchases;
    p.matched += w.matched;
    p.tracked_revenue.0 += w.tracked_revenue.0;
    p.backend_revenue.0 += w.backend_revenue.0;
    p.hours += 1;
    if beyond(drift_ratio(w.tracked_revenue, w.backend_revenue)) {
        p.hours_beyond += 1;
    }
}

fn revenue_drift(r: &Revenue) -> Check {
    let mut c = Check::new(REVENUE_DRIFT, "Tracked revenue vs order revenue (drift)");
    let graded: Vec<&PixelRevenue> = r.pixels.iter().filter(|p| p.status.is_some()).collect();
    let failed = graded
        .iter()
        .filter(|p| p.status == Some(Status::Fail))
        .count();
    let currencies_failed = r
        .currencies
        .iter()
        .filter(|c| c.status == Status::Fail)
        .count();
    let worst = r
        .currencies
        .iter()
        .filter_map(|c| c.drift_ratio)
        .max_by(|a, b| a.abs().total_cmp(&b.abs()));
    let hours_beyond = r.hours.iter().filter(|h| beyond(h.drift_ratio)).count();
    c.metric("pixel_currency_pairs", graded.len())
        .metric("pixel_currency_pairs_failed", failed)
        .metric("currencies", r.currencies.len())
        .metric("currencies_failed", currencies_failed)
        .metric("worst_currency_drift_ratio", worst)
        .metric("currency_hours", r.hours.len())
        .metric("currency_hours_beyond", hours_beyond)
        .threshold("fail_above_abs", DRIFT_FAIL_ABOVE)
        .threshold("min_volume", DRIFT_MIN_VOLUME as f64);
    for cur in &r.currencies {
        if cur.status != Status::Pass {
            c.raise(
                cur.status,
                format!(
                    "{} over all pixels: tracked {:.2}, backend {:.2}, drift {}{}",
                    cur.currency,
                    cur.tracked_revenue.to_f64(),
                    cur.backend_revenue.to_f64(),
                    drift(cur.drift_ratio),
                    why_not_graded(cur.status, cur.orders, cur.purchases)
                ),
            );
        }
    }
    let mut low_volume = Vec::new();
    for p in &graded {
        let status = p.status.unwrap_or(Status::Pass);
        if status == Status::Pass {
            continue;
        }
        if status == Status::Warn && p.orders.max(p.purchases) < DRIFT_MIN_VOLUME {
            low_volume.push(format!(
                "{} in {} {} ({} orders, {} purchases)",
                p.pixel,
                p.currency,
                drift(p.drift_ratio),
                p.orders,
                p.purchases
            ));
            continue;
        }
        c.raise(
            status,
            format!(
                "pixel {} in {}: tracked {:.2}, backend {:.2}, drift {}{}",
                p.pixel,
                p.currency,
                p.tracked_revenue.to_f64(),
                p.backend_revenue.to_f64(),
                drift(p.drift_ratio),
                row_note(status, p)
            ),
        );
    }
    if !low_volume.is_empty() {
        c.raise(
            Status::Warn,
            format!(
                "{} pixel/currency pairs beyond ±{:.0}% on fewer than {DRIFT_MIN_VOLUME} orders and purchases, too few to grade: {}",
                low_volume.len(),
                DRIFT_FAIL_ABOVE * 100.0,
                low_volume.join("; ")
            ),
        );
    }
    if r.pixels.is_empty() {
        c.raise(
            Status::Warn,
            "no revenue window: no purchase or order to compare".into(),
        );
    }
    let per_currency: Vec<String> = r
        .currencies
        .iter()
        .map(|c| format!("{} {}", c.currency, drift(c.drift_ratio)))
        .collect();
    c.summary = format!(
        "drift over the range by currency: {}; {failed} of {} pixel/currency pairs fail; {hours_beyond} of {} currency-hours beyond ±{:.0}%",
        if per_currency.is_empty() {
            "none".to_string()
        } else {
            per_currency.join(", ")
        },
        graded.len(),
        r.hours.len(),
        DRIFT_FAIL_ABOVE * 100.0,
    );
    c
}

/// Why a currency beyond the threshold only warns.
fn why_not_graded(status: Status, orders: u64, purchases: u64) -> String {
    if status == Status::Warn && orders.max(purchases) < DRIFT_MIN_VOLUME {
        format!(" (only {orders} revenue orders and {purchases} purchases: too few to grade)")
    } else {
        String::new()
    }
}

/// What a pixel row beyond the threshold means, where the windows tell.
fn row_note(status: Status, p: &PixelRevenue) -> String {
    if p.purchases == 0 && p.matched > 0 {
        // Over the whole range an order's claiming purchase is in some window of the pixel;
        // none in this currency means it was in another one.
        format!(
            " (no purchase in {}: its {} matched orders were claimed by purchases in another currency, see currency_mismatch)",
            p.currency, p.matched
        )
    } else if status == Status::Warn {
        format!(
            " (drift {} if the currency's unattributed orders were this pixel's: map shops to pixels with [orders.shops] or set orders.default_pixel)",
            drift(p.drift_ratio_with_unattributed)
        )
    } else {
        String::new()
    }
}

fn order_reconciliation(t: &Tally, r: &Revenue) -> Check {
    let mut c = Check::new(ORDER_RECONCILIATION, "Purchases reconcile with orders");
    let orders = r.orders;
    let purchases = t.purchases_with_order_id;
    let owc = t.discrepancy_count(DiscrepancyKind::OrderWithoutConversion);
    let cwo = t.discrepancy_count(DiscrepancyKind::ConversionWithoutOrder);
    let vm = t.discrepancy_count(DiscrepancyKind::ValueMismatch);
    let cm = t.discrepancy_count(DiscrepancyKind::CurrencyMismatch);
    let owc_s = share(owc, orders);
    let cwo_s = share(cwo, purchases);
    let mm_s = share(vm + cm, purchases);
    c.metric("revenue_orders", orders)
        .metric("purchases_with_order_id", purchases)
        .metric("order_without_conversion", owc)
        .metric("order_without_conversion_share", owc_s)
        .metric("conversion_without_order", cwo)
        .metric("conversion_without_order_share", cwo_s)
        .metric("value_mismatch", vm)
        .metric("currency_mismatch", cm)
        .metric("mismatch_share", mm_s)
        .threshold(
            "order_without_conversion_warn_above",
            ORDER_WITHOUT_CONVERSION_WARN_ABOVE,
        )
        .threshold(
            "order_without_conversion_fail_above",
            ORDER_WITHOUT_CONVERSION_FAIL_ABOVE,
        )
        .threshold(
            "conversion_without_order_warn_above",
            CONVERSION_WITHOUT_ORDER_WARN_ABOVE,
        )
        .threshold(
            "conversion_without_order_fail_above",
            CONVERSION_WITHOUT_ORDER_FAIL_ABOVE,
        )
        .threshold("mismatch_warn_above", ORDER_MISMATCH_WARN_ABOVE)
        .threshold("mismatch_fail_above", ORDER_MISMATCH_FAIL_ABOVE);
    let graded = [
        (
            owc_s,
            ORDER_WITHOUT_CONVERSION_WARN_ABOVE,
            ORDER_WITHOUT_CONVERSION_FAIL_ABOVE,
            format!(
                "{owc} of {orders} revenue orders ({}) had no conversion (order_without_conversion)",
                pct(owc_s)
            ),
        ),
        (
            cwo_s,
            CONVERSION_WITHOUT_ORDER_WARN_ABOVE,
            CONVERSION_WITHOUT_ORDER_FAIL_ABOVE,
            format!(
                "{cwo} of {purchases} purchases with an order id ({}) never saw their order (conversion_without_order)",
                pct(cwo_s)
            ),
        ),
        (
            mm_s,
            ORDER_MISMATCH_WARN_ABOVE,
            ORDER_MISMATCH_FAIL_ABOVE,
            format!(
                "{} of {purchases} purchases with an order id ({}) differ from their order ({vm} value_mismatch, {cm} currency_mismatch)",
                vm + cm,
                pct(mm_s)
            ),
        ),
    ];
    for (s, warn, fail, finding) in graded {
        match grade(s, warn, fail) {
            Status::Pass => {}
            status => c.raise(status, finding),
        }
    }
    if orders == 0 && purchases == 0 {
        c.raise(
            Status::Warn,
            "no revenue order and no purchase with an order id: nothing to reconcile".into(),
        );
    }
    c.summary = format!(
        "{orders} revenue orders, {purchases} purchases with an order id: order_without_conversion {}, conversion_without_order {}, value/currency mismatch {}",
        pct(owc_s),
        pct(cwo_s),
        pct(mm_s)
    );
    c
}

fn dead_letters(t: &Tally, stats: Option<&Stats>) -> Check {
    let mut c = Check::new(DEAD_LETTERS, "Dead letters");
    let n = t.records.dead_letters;
    let input = stats.map(|s| s.input_records.total);
    let s = input.and_then(|i| share(n, i));
    c.metric("dead_letters", n)
        .metric("input_records", input)
        .metric("share", s)
        .threshold("warn_above", DEAD_LETTER_WARN_ABOVE)
        .threshold("fail_above", DEAD_LETTER_FAIL_ABOVE);
    for input in Input::ALL {
        let name = match input {
            Input::Browser => "browser",
            Input::Server => "server",
            Input::Orders => "orders",
        };
        c.metric(
            name,
            t.dead_letters_by_input.get(&input).copied().unwrap_or(0),
        );
    }
    let by_input: Vec<String> = t
        .dead_letters_by_input
        .iter()
        .map(|(i, n)| format!("{} {n}", i.as_str()))
        .collect();
    match (
        grade(s, DEAD_LETTER_WARN_ABOVE, DEAD_LETTER_FAIL_ABOVE),
        input,
    ) {
        (Status::Pass, Some(_)) => {}
        (status, Some(_)) => c.raise(
            status,
            format!("{} of input records could not be parsed", pct(s)),
        ),
        (_, None) if n > 0 => c.raise(
            Status::Warn,
            format!("{n} dead letters; their share is unknown without stats.json"),
        ),
        (_, None) => {}
    }
    c.summary = format!(
        "{n} dead letters of {} input records ({}){}",
        input.map_or("an unknown number of".to_string(), |i| i.to_string()),
        pct(s),
        if by_input.is_empty() {
            String::new()
        } else {
            format!(": {}", by_input.join(", "))
        }
    );
    c
}
