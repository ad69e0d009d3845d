//! `onecount audit`: the checks over a real generated-and-replayed run agree with the run's own
//! accounting (and the generator's ground truth), the JSON report is complete and stable, a
//! crafted output with a conversion emitted twice and a large revenue drift fails the gate with
//! exit code 1, and unreadable input exits 2 naming the file and line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use onecount::audit::checks::{self, CHECK_IDS};
use onecount::audit::{self, source, AuditOptions, OutputRecord, Report, Status};
use onecount::config::Config;
use onecount::engine::stats::Stats;
use onecount::generate::{generate_to_dir, GenerateOptions, Truth};
use onecount::model::{
    Conversion, DiscrepancyKind, Money, Properties, RevenueWindow, Source, SourcesSeen, User,
    ValueSource, FORMAT_VERSION,
};
use onecount::replay::{replay, ReplayInputs};
use serde_json::Value;

/// Generates `actions` actions and replays them into `dir/output`.
fn generated_run(dir: &Path, actions: u64, seed: u64) -> (PathBuf, Stats, Truth) {
    let input = dir.join("input");
    let out = dir.join("output");
    let truth = generate_to_dir(
        &GenerateOptions {
            actions,
            seed,
            ..GenerateOptions::default()
        },
        &input,
    )
    .expect("generate");
    let inputs = ReplayInputs::in_dir(&input);
    let stats = replay(&Config::default(), &inputs, &out, None).expect("replay");
    (out, stats, truth)
}

fn onecount(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onecount"))
        .args(args)
        .output()
        .expect("run onecount")
}

fn metric(report: &Report, check: &str, name: &str) -> Value {
    report
        .check(check)
        .unwrap_or_else(|| panic!("no check {check}"))
        .metrics
        .get(name)
        .unwrap_or_else(|| panic!("check {check} has no metric {name}"))
        .clone()
}

fn count(report: &Report, check: &str, name: &str) -> u64 {
    metric(report, check, name)
        .as_u64()
        .unwrap_or_else(|| panic!("{check}.{name} is not a count"))
}

#[test]
fn audit_of_a_replayed_run_counts_what_stats_json_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, stats, truth) = generated_run(tmp.path(), 3_000, 7);
    let report = audit::audit_dir(&out, &AuditOptions::default()).expect("audit");

    // The outputs agree with the accounting, and the engine emitted each action once.
    assert_eq!(
        report.check(checks::OUTPUTS_COMPLETE).unwrap().status,
        Status::Pass,
        "{:#?}",
        report.check(checks::OUTPUTS_COMPLETE)
    );
    assert_eq!(
        report
            .check(checks::ONE_CONVERSION_PER_ACTION)
            .unwrap()
            .status,
        Status::Pass
    );
    assert_eq!(
        count(&report, checks::ONE_CONVERSION_PER_ACTION, "duplicate_keys"),
        0
    );
    assert_eq!(
        count(
            &report,
            checks::ONE_CONVERSION_PER_ACTION,
            "duplicate_order_ids"
        ),
        0
    );
    assert_eq!(
        count(&report, checks::CONSENT, "conversions_from_dropped_actions"),
        0
    );

    // Every number the audit reports that stats.json also holds is equal to it, and to the
    // generator's independent ground truth.
    assert_eq!(report.records.conversions, stats.conversions);
    assert_eq!(report.records.conversions, truth.conversions);
    assert_eq!(report.records.dead_letters, stats.dead_letters);
    assert_eq!(report.records.revenue_windows, stats.revenue_windows);
    assert_eq!(report.conversions_by_sources.both, stats.sources.both);
    assert_eq!(report.conversions_by_sources.browser, stats.sources.browser);
    assert_eq!(report.conversions_by_sources.server, stats.sources.server);
    assert_eq!(report.conversions_by_sources.both, truth.sources.both);
    for kind in DiscrepancyKind::ALL {
        let k = kind.as_str();
        assert_eq!(
            report.discrepancies_by_kind[k], stats.discrepancies[k],
            "discrepancies of kind {k}"
        );
        assert_eq!(report.discrepancies_by_kind[k], truth.discrepancies[k]);
    }
    let d = &stats.discrepancies;
    assert_eq!(count(&report, checks::DEDUP_RATES, "merged"), stats.merged);
    assert_eq!(
        metric(&report, checks::DEDUP_RATES, "dedup_rate").as_f64(),
        Some(
            (stats.merged + stats.duplicates) as f64
                / (stats.conversions + stats.merged + stats.duplicates + stats.consent_dropped)
                    as f64
        )
    );
    assert_eq!(
        metric(&report, checks::DEDUP_RATES, "pair_rate").as_f64(),
        Some(stats.sources.both as f64 / stats.conversions as f64)
    );
    for (check, name) in [
        (checks::VALUE_CURRENCY_PARITY, "value_parity"),
        (checks::VALUE_CURRENCY_PARITY, "currency_parity"),
        (checks::CURRENCY_CODES, "invalid_currency"),
        (checks::CONSENT, "consent_violation"),
        (checks::CONSENT, "consent_after_emit"),
        (checks::PURCHASE_PARAMETERS, "missing_order_id"),
        (checks::ORDER_RECONCILIATION, "order_without_conversion"),
        (checks::ORDER_RECONCILIATION, "conversion_without_order"),
        (checks::ORDER_RECONCILIATION, "value_mismatch"),
        (checks::ORDER_RECONCILIATION, "currency_mismatch"),
    ] {
        assert_eq!(count(&report, check, name), d[name], "{check}.{name}");
    }
    let parity: u64 = ["email", "phone", "external_id"]
        .iter()
        .map(|k| {
            count(
                &report,
                checks::PARAMETER_PARITY,
                &format!("match_key_parity_{k}"),
            )
        })
        .sum();
    assert_eq!(parity, d["match_key_parity"]);
    assert_eq!(
        count(&report, checks::CONSENT, "consent_dropped_copies"),
        stats.consent_dropped
    );
    assert_eq!(
        count(&report, checks::DEAD_LETTERS, "dead_letters"),
        stats.dead_letters
    );
    assert_eq!(
        count(&report, checks::DEAD_LETTERS, "input_records"),
        stats.input_records.total
    );
    // Revenue per currency: the latest windows summed equal the accounting exactly.
    assert!(!report.revenue_by_currency.is_empty());
    for c in &report.revenue_by_currency {
        let tracked = stats.tracked_revenue.get(&c.currency).copied();
        let backend = stats.backend_revenue.get(&c.currency).copied();
        assert_eq!(
            c.tracked_revenue,
            tracked.unwrap_or_default(),
            "{}",
            c.currency
        );
        assert_eq!(
            c.backend_revenue,
            backend.unwrap_or_default(),
            "{}",
            c.currency
        );
    }
    // The drift chart's data: per currency, hourly points summing to the currency's totals.
    for c in &report.revenue_by_currency {
        let hours: Vec<_> = report
            .drift_by_hour
            .iter()
            .filter(|h| h.currency == c.currency)
            .collect();
        let tracked: i64 = hours.iter().map(|h| h.tracked_revenue.0).sum();
        assert_eq!(Money(tracked), c.tracked_revenue);
        assert_eq!(
            hours.last().unwrap().cumulative_drift_ratio,
            c.drift_ratio,
            "{}",
            c.currency
        );
    }

    // The text report prints those same numbers.
    let text = report.to_text();
    for needle in [
        format!("{} conversions", stats.conversions),
        format!("{} consent_violation", d["consent_violation"]),
        format!("{} consent_after_emit", d["consent_after_emit"]),
        format!(
            "{} dead letters of {} input records",
            stats.dead_letters, stats.input_records.total
        ),
        format!(
            "{} of {} conversions merged a browser and a server copy",
            stats.sources.both, stats.conversions
        ),
        format!(
            "{} value and {} currency disagreements in {} merged conversions",
            d["value_parity"], d["currency_parity"], stats.merged
        ),
    ] {
        assert!(
            text.contains(&needle),
            "text report lacks {needle:?}:\n{text}"
        );
    }
}

#[test]
fn json_report_has_every_check_with_stable_keys_and_the_exit_code_follows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, stats, _) = generated_run(tmp.path(), 1_500, 3);
    let dir = out.to_str().unwrap();
    let run = onecount(&["audit", "--dir", dir, "--format", "json"]);
    assert!(
        run.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json: Value = serde_json::from_slice(&run.stdout).expect("JSON report");

    let ids: Vec<&str> = json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, CHECK_IDS, "every check, in order");
    let mut fails = 0;
    for c in json["checks"].as_array().unwrap() {
        for key in [
            "id",
            "title",
            "status",
            "summary",
            "metrics",
            "thresholds",
            "findings",
        ] {
            assert!(c.get(key).is_some(), "check {} lacks {key}", c["id"]);
        }
        let status = c["status"].as_str().unwrap();
        assert!(["pass", "warn", "fail"].contains(&status), "{status}");
        fails += u64::from(status == "fail");
        assert!(!c["metrics"].as_object().unwrap().is_empty(), "{}", c["id"]);
        assert!(!c["summary"].as_str().unwrap().is_empty());
        // A check that does not pass says why.
        if status != "pass" {
            assert!(!c["findings"].as_array().unwrap().is_empty(), "{}", c["id"]);
        }
    }
    for key in [
        "format_version",
        "source",
        "status",
        "counts",
        "time_range",
        "records",
        "checks",
        "conversions_by_sources",
        "conversions_by_pixel",
        "discrepancies_by_kind",
        "revenue_by_currency",
        "revenue_by_pixel",
        "drift_by_hour",
    ] {
        assert!(json.get(key).is_some(), "report lacks {key}");
    }
    assert_eq!(json["counts"]["fail"].as_u64(), Some(fails));
    assert_eq!(
        json["records"]["conversions"].as_u64(),
        Some(stats.conversions)
    );
    assert_eq!(
        json["discrepancies_by_kind"].as_object().unwrap().len(),
        DiscrepancyKind::ALL.len()
    );
    assert_eq!(
        run.status.code(),
        Some(if fails > 0 { 1 } else { 0 }),
        "exit code 1 exactly when a check fails"
    );
    assert_eq!(json["status"] == "fail", fails > 0);

    // Stable: the same outputs give the same bytes.
    let again = onecount(&["audit", "--dir", dir, "--format", "json"]);
    assert_eq!(run.stdout, again.stdout);

    // Text is the default, and --out writes the report to a file with the result on stdout.
    let text = onecount(&["audit", "--dir", dir]);
    assert_eq!(text.status.code(), run.status.code());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.starts_with("onecount audit of "), "{text}");
    let file = tmp.path().join("audit.json");
    let to_file = onecount(&[
        "audit",
        "--dir",
        dir,
        "--format",
        "json",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(to_file.status.code(), run.status.code());
    assert_eq!(std::fs::read(&file).unwrap(), run.stdout);
    assert!(String::from_utf8_lossy(&to_file.stdout).contains("report written to"));
}

#[test]
fn the_checks_take_records_in_any_order() {
    // The Kafka mode will feed records interleaved from four topics: the report must not
    // depend on the order.
    let tmp = tempfile::tempdir().unwrap();
    let (out, _, _) = generated_run(tmp.path(), 800, 11);
    let options = AuditOptions::default();
    let stats = source::read_stats(&out).unwrap();
    let mut records: Vec<OutputRecord> = source::DirRecords::open(&out)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let in_order = audit::audit("run", records.clone(), Some(&stats), &options);
    records.reverse();
    let reversed = audit::audit("run", records.clone(), Some(&stats), &options);
    // Interleave the kinds: every other record from the back.
    let (a, b): (Vec<_>, Vec<_>) = records
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let interleaved = audit::audit(
        "run",
        b.into_iter().chain(a).map(|(_, r)| r),
        Some(&stats),
        &options,
    );
    assert_eq!(in_order, reversed);
    assert_eq!(in_order, interleaved);
    let from_dir = audit::audit_dir(&out, &options).unwrap();
    assert_eq!(from_dir.checks, in_order.checks);
}

// ---- A crafted output directory -------------------------------------------------------------

const P1: &str = "C4AUDITPIXEL01";
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;

fn conversion(event: &str, event_id: &str, time: i64, sources: SourcesSeen) -> Conversion {
    Conversion {
        format_version: FORMAT_VERSION,
        key: format!("{P1}/{event}/{event_id}"),
        event_source_id: P1.into(),
        event: event.into(),
        event_id: Some(event_id.into()),
        event_time: time,
        user: User {
            email: Some("a".repeat(64)),
            ..User::default()
        },
        properties: Properties::default(),
        page: Default::default(),
        sources,
        first_source: Source::Browser,
        value_source: ValueSource::None,
    }
}

fn purchase(event_id: &str, time: i64, order_id: &str, value: i64) -> Conversion {
    let mut c = conversion("CompletePayment", event_id, time, SourcesSeen::Both);
    c.properties.order_id = Some(order_id.into());
    c.properties.value = Some(Money(value * Money::MICROS_PER_UNIT));
    c.properties.currency = Some("USD".into());
    c.value_source = ValueSource::Server;
    c
}

fn window(hour: i64, orders: u64, purchases: u64, tracked: i64, backend: i64) -> RevenueWindow {
    let hour_start = T0 + hour * 3600;
    let (tracked, backend) = (
        Money(tracked * Money::MICROS_PER_UNIT),
        Money(backend * Money::MICROS_PER_UNIT),
    );
    RevenueWindow {
        format_version: FORMAT_VERSION,
        key: format!("{P1}/USD/{hour_start}"),
        event_source_id: P1.into(),
        currency: "USD".into(),
        hour_start,
        version: 1,
        orders,
        purchases,
        matched: orders.min(purchases),
        tracked_revenue: tracked,
        backend_revenue: backend,
        drift_ratio: (backend.0 != 0).then(|| (tracked.0 - backend.0) as f64 / backend.0 as f64),
    }
}

/// Writes `conversions` and `windows` as a replay would, with a `stats.json` that accounts for
/// them exactly (built with the engine's own `Stats` methods), so only the crafted faults fail.
fn write_output_dir(dir: &Path, conversions: &[Conversion], windows: &[RevenueWindow]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut stats = Stats::default();
    for c in conversions {
        stats.input(c.first_source.input());
        if c.sources == SourcesSeen::Both {
            stats.input(match c.first_source {
                Source::Browser => Source::Server.input(),
                Source::Server => Source::Browser.input(),
            });
        }
        stats.conversion(c);
    }
    for w in windows {
        stats.track_revenue(&w.event_source_id, &w.currency, w.tracked_revenue);
        stats.backend_revenue(&w.event_source_id, &w.currency, w.backend_revenue);
    }
    stats.revenue_windows = windows.len() as u64;
    std::fs::write(dir.join(source::CONVERSIONS), jsonl(conversions)).unwrap();
    std::fs::write(dir.join(source::REVENUE_WINDOWS), jsonl(windows)).unwrap();
    std::fs::write(dir.join(source::DISCREPANCIES), "").unwrap();
    std::fs::write(dir.join(source::DEAD_LETTERS), "").unwrap();
    std::fs::write(
        dir.join(source::STATS),
        serde_json::to_vec_pretty(&stats).unwrap(),
    )
    .unwrap();
}

/// Records one JSON object per line, as a replay writes them.
fn jsonl<T: serde::Serialize>(records: &[T]) -> String {
    records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect()
}

/// A healthy base: 20 purchases over 10 hours, all merged, each order tracked at its value.
fn healthy() -> (Vec<Conversion>, Vec<RevenueWindow>) {
    let mut conversions = Vec::new();
    let mut windows = Vec::new();
    for hour in 0..10 {
        for i in 0..2 {
            let n = hour * 2 + i;
            conversions.push(purchase(
                &format!("e{n}"),
                T0 + hour * 3600 + i * 60,
                &format!("o{n}"),
                50,
            ));
        }
        windows.push(window(hour, 2, 2, 100, 100));
    }
    // The same ViewContent key twice, exactly the TTL (48 h) apart: two actions, not a
    // duplicate (docs/RULES.md: a copy at t >= f + ttl starts a new action).
    conversions.push(conversion("ViewContent", "v1", T0, SourcesSeen::Both));
    conversions.push(conversion(
        "ViewContent",
        "v1",
        T0 + 48 * 3600,
        SourcesSeen::Both,
    ));
    (conversions, windows)
}

#[test]
fn healthy_crafted_outputs_pass_and_exit_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let (conversions, windows) = healthy();
    write_output_dir(tmp.path(), &conversions, &windows);
    let run = onecount(&["audit", "--dir", tmp.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{text}");
    assert!(
        text.contains("audit PASS: 0 failed, 0 warnings, 11 passed"),
        "{text}"
    );
    assert!(
        text.contains("22 conversions, 0 with a dedup key already converted"),
        "{text}"
    );
}

#[test]
fn duplicate_conversion_within_48h_and_large_drift_fail_the_gate() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut conversions, mut windows) = healthy();
    // The same action emitted twice: e3's key again 47 hours later (inside the 48 h TTL),
    // for another order.
    conversions.push(purchase("e3", T0 + 3600 + 60 + 47 * 3600, "o99", 50));
    // Hour 10: 12 orders booked 1200, purchases tracked 3000 (drift +150%, over all hours
    // (1000 + 3000) / (1000 + 1200) - 1 = +81.8%).
    windows.push(window(10, 12, 12, 3000, 1200));
    write_output_dir(tmp.path(), &conversions, &windows);
    let dir = tmp.path().to_str().unwrap();

    let run = onecount(&["audit", "--dir", dir, "--format", "json"]);
    assert_eq!(run.status.code(), Some(1), "a failing check exits 1");
    let json: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(json["status"], "fail");
    let check = |id: &str| {
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()
            .clone()
    };
    let once = check(checks::ONE_CONVERSION_PER_ACTION);
    assert_eq!(once["status"], "fail", "{once:#}");
    assert_eq!(once["metrics"]["duplicate_keys"], 1);
    assert_eq!(once["metrics"]["duplicate_order_ids"], 0);
    let finding = once["findings"][0].as_str().unwrap();
    assert!(
        finding.contains(&format!("{P1}/CompletePayment/e3")),
        "{finding}"
    );

    let drift = check(checks::REVENUE_DRIFT);
    assert_eq!(drift["status"], "fail", "{drift:#}");
    assert_eq!(drift["metrics"]["currencies_failed"], 1);
    assert_eq!(drift["metrics"]["pixel_currency_pairs_failed"], 1);
    let ratio = drift["metrics"]["worst_currency_drift_ratio"]
        .as_f64()
        .unwrap();
    assert!((ratio - (4000.0 / 2200.0 - 1.0)).abs() < 1e-9, "{ratio}");
    assert_eq!(drift["metrics"]["currency_hours_beyond"], 1);

    // Only the crafted faults fail: the outputs are otherwise complete and consistent.
    let failed: Vec<&str> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        [checks::ONE_CONVERSION_PER_ACTION, checks::REVENUE_DRIFT]
    );
    assert_eq!(check(checks::OUTPUTS_COMPLETE)["status"], "pass");

    // The text report says the same, and exits the same.
    let text = onecount(&["audit", "--dir", dir]);
    assert_eq!(text.status.code(), Some(1));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("FAIL  Exactly one conversion per action"),
        "{text}"
    );
    assert!(
        text.contains("FAIL  Tracked revenue vs order revenue (drift)"),
        "{text}"
    );
    assert!(text.contains("USD +81.8%"), "{text}");
    assert!(text.contains("audit FAIL: 2 failed"), "{text}");
}

#[test]
fn purchase_converting_an_order_twice_fails_and_a_conversion_from_a_consent_dropped_action_fails() {
    let (mut conversions, windows) = healthy();
    // Order o5 converted again by another action 2 hours later.
    conversions.push(purchase("e500", T0 + 5 * 3600, "o5", 50));
    let mut records: Vec<OutputRecord> = conversions
        .into_iter()
        .map(OutputRecord::Conversion)
        .chain(windows.into_iter().map(OutputRecord::RevenueWindow))
        .collect();
    // A consent_violation whose copy lies inside an emitted conversion's action (e7, emitted at
    // T0 + 3h + 60 s): the engine dropped that action, so the conversion must not exist.
    let mut d = onecount::model::Discrepancy::new(
        DiscrepancyKind::ConsentViolation,
        format!("consent_violation/{P1}/CompletePayment/e7"),
        (T0 + 3 * 3600 + 120) * 1000,
    );
    d.event_source_id = Some(P1.into());
    d.event = Some("CompletePayment".into());
    d.event_id = Some("e7".into());
    records.push(OutputRecord::Discrepancy(d));
    let report = audit::audit("crafted", records, None, &AuditOptions::default());

    let once = report.check(checks::ONE_CONVERSION_PER_ACTION).unwrap();
    assert_eq!(once.status, Status::Fail);
    assert_eq!(once.metrics["duplicate_keys"], 0);
    assert_eq!(once.metrics["duplicate_order_ids"], 1);
    let consent = report.check(checks::CONSENT).unwrap();
    assert_eq!(consent.status, Status::Fail);
    assert_eq!(consent.metrics["conversions_from_dropped_actions"], 1);
    assert!(consent
        .findings
        .iter()
        .any(|f| f.contains(&format!("{P1}/CompletePayment/e7"))));
    // Without stats.json the checks that need input counts say so instead of guessing.
    let complete = report.check(checks::OUTPUTS_COMPLETE).unwrap();
    assert_eq!(complete.status, Status::Warn);
    assert_eq!(
        report.check(checks::DEDUP_RATES).unwrap().metrics["dedup_rate"],
        Value::Null
    );
}

#[test]
fn unreadable_input_exits_2_naming_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (conversions, windows) = healthy();

    // No such directory.
    let missing = dir.join("nope");
    let run = onecount(&["audit", "--dir", missing.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("cannot read") && err.contains("nope"), "{err}");
    assert!(run.stdout.is_empty());

    // A file missing from an output directory.
    write_output_dir(dir, &conversions, &windows);
    std::fs::remove_file(dir.join(source::REVENUE_WINDOWS)).unwrap();
    let run = onecount(&["audit", "--dir", dir.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("revenue_windows.jsonl"), "{err}");
    assert_eq!(
        err.matches("No such file").count(),
        1,
        "the cause once: {err}"
    );

    // A line that is not a record: file and line named.
    write_output_dir(dir, &conversions, &windows);
    let mut text = std::fs::read_to_string(dir.join(source::CONVERSIONS)).unwrap();
    text.push_str("{\"format_version\":1,\"key\":3}\n");
    std::fs::write(dir.join(source::CONVERSIONS), text).unwrap();
    let run = onecount(&["audit", "--dir", dir.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("conversions.jsonl line 23 is not a valid conversion record"),
        "{err}"
    );

    // A newer format is named as such.
    write_output_dir(dir, &conversions, &windows);
    std::fs::write(
        dir.join(source::DISCREPANCIES),
        "{\"format_version\":2,\"kind\":\"brand_new\"}\n",
    )
    .unwrap();
    let run = onecount(&["audit", "--dir", dir.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("discrepancies.jsonl line 1: format_version 2"),
        "{err}"
    );

    // A broken dead letter is reported without echoing its bytes (they may be PII in clear).
    write_output_dir(dir, &conversions, &windows);
    std::fs::write(
        dir.join(source::DEAD_LETTERS),
        "{\"format_version\":1,\"input\":\"browser\",\"original\":\"alice@example.com\",\"reason\":42}\n",
    )
    .unwrap();
    let run = onecount(&["audit", "--dir", dir.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("dead_letters.jsonl line 1"), "{err}");
    assert!(!err.contains("alice"), "{err}");

    // stats.json that is not the accounting.
    write_output_dir(dir, &conversions, &windows);
    std::fs::write(dir.join(source::STATS), "{}").unwrap();
    let run = onecount(&["audit", "--dir", dir.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("stats.json"));
}

#[test]
fn pixel_drift_that_unattributed_orders_could_explain_warns_and_one_they_cannot_fails() {
    // P1 tracks 1200 against 1000 of its own orders (+20%). Orders no pixel claimed are
    // credited to no one; if they were P1's the drift would be (1200 - (1000 + u)) / (1000 + u).
    let audit_with = |unattributed: i64| {
        let mut records = vec![OutputRecord::RevenueWindow(window(0, 20, 20, 1200, 1000))];
        let mut w = window(0, 2, 0, 0, unattributed);
        w.event_source_id = onecount::engine::stats::UNATTRIBUTED.into();
        w.key = format!("unattributed/USD/{}", w.hour_start);
        records.push(OutputRecord::RevenueWindow(w));
        audit::audit("crafted", records, None, &AuditOptions::default())
    };
    // u = 100: +9.1% with them, so P1 only warns; the currency as a whole is within 10%.
    let report = audit_with(100);
    let p1 = &report.revenue_by_pixel[0];
    assert_eq!(p1.pixel, P1);
    assert_eq!(p1.status, Some(Status::Warn));
    assert!((p1.drift_ratio.unwrap() - 0.2).abs() < 1e-12);
    assert!((p1.drift_ratio_with_unattributed.unwrap() - (1200.0 / 1100.0 - 1.0)).abs() < 1e-12);
    assert_eq!(
        report.revenue_by_pixel[1].status, None,
        "unattributed is not graded"
    );
    assert_eq!(report.revenue_by_currency[0].status, Status::Pass);
    assert_eq!(
        report.check(checks::REVENUE_DRIFT).unwrap().status,
        Status::Warn
    );
    // u = 50: +14.3% even with every unattributed order, and the currency too: both fail.
    let report = audit_with(50);
    assert_eq!(report.revenue_by_pixel[0].status, Some(Status::Fail));
    assert_eq!(report.revenue_by_currency[0].status, Status::Fail);
    assert_eq!(
        report.check(checks::REVENUE_DRIFT).unwrap().status,
        Status::Fail
    );
    // The same drift on fewer than 10 orders and purchases is reported, not graded.
    let report = audit::audit(
        "crafted",
        [OutputRecord::RevenueWindow(window(0, 9, 9, 1200, 1000))],
        None,
        &AuditOptions::default(),
    );
    assert_eq!(report.revenue_by_pixel[0].status, Some(Status::Warn));
    assert_eq!(
        report.check(checks::REVENUE_DRIFT).unwrap().status,
        Status::Warn
    );
}

#[test]
fn a_re_emitted_revenue_window_counts_once_at_its_latest_version() {
    // A refund re-emits the hour's window with version 2: the compacted topic's view.
    let mut v2 = window(0, 20, 20, 1000, 800);
    v2.version = 2;
    let records = [
        OutputRecord::RevenueWindow(window(0, 20, 20, 1000, 1000)),
        OutputRecord::RevenueWindow(v2.clone()),
    ];
    let forward = audit::audit("a", records.clone(), None, &AuditOptions::default());
    let mut backward = records;
    backward.reverse();
    let backward = audit::audit("a", backward, None, &AuditOptions::default());
    for report in [forward, backward] {
        assert_eq!(report.records.revenue_windows, 2);
        let c = &report.revenue_by_currency[0];
        assert_eq!(c.backend_revenue, v2.backend_revenue);
        assert_eq!(c.drift_ratio, Some(0.25));
    }
}
