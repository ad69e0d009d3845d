//! Tests of the generator as a whole: determinism, conservation, coverage of every scenario,
//! arrival order, and the files' contents checked by a classifier written here, independently
//! of the generator's own code (it reads the lines back as an input parser would).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;

use super::*;
use crate::config::{ConsentDefault, EngineConfig, OrdersConfig};
use crate::model::DiscrepancyKind;

fn opts(actions: u64, seed: u64) -> GenerateOptions {
    GenerateOptions {
        actions,
        seed,
        ..GenerateOptions::default()
    }
}

fn generated(actions: u64, seed: u64) -> (Truth, VecSink, Vec<(File, i64)>) {
    let mut sink = VecSink::default();
    let (truth, arrivals) = run(&opts(actions, seed), &mut sink, true).unwrap();
    (truth, sink, arrivals)
}

#[test]
fn truth_assumes_the_engine_defaults() {
    let e = EngineConfig::default();
    assert_eq!(e.ttl, Duration::from_millis(TTL_MS as u64));
    assert_eq!(
        e.merge_window,
        Duration::from_millis(MERGE_WINDOW_MS as u64)
    );
    assert_eq!(
        e.allowed_lateness,
        Duration::from_millis(ALLOWED_LATENESS_MS as u64)
    );
    assert_eq!(e.order_wait, Duration::from_millis(ORDER_WAIT_MS as u64));
    assert_eq!(
        (e.value_tolerance * Money::MICROS_PER_UNIT as f64).round() as i64,
        VALUE_TOLERANCE.0
    );
    assert_eq!(e.default_consent, ConsentDefault::Granted);
    assert!(!e.pair_on_ttp);
    assert!(e.purchase_events.iter().any(|n| n == "CompletePayment"));
    assert!(e.max_record_bytes >= 64 * 1024);
    let o = OrdersConfig::default();
    for status in ["refunded", "cancelled", "canceled"] {
        assert!(
            o.non_revenue_statuses.iter().any(|s| s == status),
            "{status}"
        );
    }
    for status in [
        "paid",
        "completed",
        "pending",
        "fulfilled",
        "partially_refunded",
    ] {
        assert!(
            !o.non_revenue_statuses.iter().any(|s| s == status),
            "{status}"
        );
    }
    assert_eq!(o.fields.order_id, "order_id");
    assert_eq!(o.total_scale, None);
}

#[test]
fn same_seed_gives_identical_bytes_and_other_seeds_differ() {
    let (t1, a, _) = generated(3_000, 11);
    let (t2, b, _) = generated(3_000, 11);
    assert_eq!(a, b);
    assert_eq!(t1.to_json(), t2.to_json());
    let (_, c, _) = generated(3_000, 12);
    assert_ne!(a.browser, c.browser);
    assert_ne!(a.server, c.server);
    assert_ne!(a.orders, c.orders);
}

#[test]
fn buckets_sum_to_the_input_records_at_10k_actions() {
    let (truth, _, _) = generated(10_000, 1);
    truth.check_conservation().unwrap();
    assert_eq!(truth.bucket_total(), truth.input_records.total);
    assert!(truth.conversions > 8_000, "{}", truth.conversions);
}

#[test]
fn every_scenario_kind_appears_at_10k_actions() {
    for seed in [1, 2, 3] {
        let (t, _, _) = generated(10_000, seed);
        for kind in DiscrepancyKind::ALL {
            assert!(
                t.discrepancies[kind.as_str()] > 0,
                "seed {seed}: no {kind:?}"
            );
        }
        for (reason, n) in &t.duplicates_by_reason {
            assert!(*n > 0, "seed {seed}: no duplicate {reason}");
        }
        assert!(t.late > 0, "seed {seed}: late");
        assert!(t.orders_tombstones > 0, "seed {seed}: tombstones");
        assert!(t.orders_redelivered > 0, "seed {seed}: redelivered");
        assert!(t.orders_historical > 0, "seed {seed}: historical");
        assert!(t.dead_letters > 0, "seed {seed}: dead letters");
        assert!(t.consent_dropped > 0 && t.merged > 0, "seed {seed}");
        assert!(t.sources.browser > 0 && t.sources.server > 0 && t.sources.both > 0);
        for c in ["USD", "EUR", "GBP", "JPY"] {
            assert!(t.tracked_revenue.get(c).is_some_and(|m| m.0 > 0), "{c}");
            assert!(t.backend_revenue.get(c).is_some_and(|m| m.0 > 0), "{c}");
        }
    }
}

#[test]
fn files_are_in_arrival_order_and_read_back_as_the_truth_says() {
    let (truth, sink, arrivals) = generated(10_000, 5);
    // Arrival order per file.
    for file in File::ALL {
        let times: Vec<i64> = arrivals
            .iter()
            .filter(|(f, _)| *f == file)
            .map(|(_, a)| *a)
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{file:?}");
    }
    let lines = |file: File| match file {
        File::Browser => &sink.browser,
        File::Server => &sink.server,
        File::Orders => &sink.orders,
    };
    let mut records = BTreeMap::new();
    let mut dead = 0;
    let mut tombstones = 0;
    let mut late_arrivals = 0;
    let o = opts(10_000, 5);
    let quiet_tail =
        o.start_time * 1000 + i64::from(o.span_hours) * 3_600_000 - super::schedule::QUIET_TAIL_MS;
    for file in File::ALL {
        let file_arrivals = arrivals.iter().filter(|(f, _)| *f == file).map(|(_, a)| *a);
        let mut n = 0;
        for (line, arrival) in lines(file).iter().zip(file_arrivals) {
            let read = match file {
                File::Browser => read_browser(line),
                File::Server => read_server(line),
                File::Orders => read_order(line),
            };
            n += read.records;
            dead += read.dead;
            tombstones += u64::from(read.tombstone);
            if read.event_times.len() > 1 {
                // Deliberately late copies are never batched: a batch is prompt.
                assert!(read.event_times.iter().all(|t| arrival - t < 120_000));
            }
            for t in read.event_times {
                assert!(arrival >= t, "{file:?} line arrives before its event time");
                if arrival - t >= 120_000 {
                    late_arrivals += 1;
                    // Deliberately late copies keep out of the span's quiet tail.
                    assert!(
                        arrival <= quiet_tail,
                        "{file:?}: a late copy arrives {} s into the quiet tail",
                        (arrival - quiet_tail) / 1000
                    );
                }
            }
        }
        assert_eq!(
            lines(file).len(),
            arrivals.iter().filter(|(f, _)| *f == file).count()
        );
        records.insert(file, n);
    }
    assert_eq!(
        dead, truth.dead_letters,
        "dead letters by the test's own reading"
    );
    assert_eq!(tombstones, truth.orders_tombstones);
    assert_eq!(records[&File::Browser], truth.input_records.browser);
    assert_eq!(records[&File::Server], truth.input_records.server);
    assert_eq!(records[&File::Orders], truth.input_records.orders);
    // Only the deliberately late copies arrive 2 minutes or more after their event time.
    let by = |r: &str| truth.duplicates_by_reason[r];
    let deliberate = truth.late
        + by("after_release")
        + by("after_merge_window")
        + truth.discrepancies["consent_after_emit"];
    assert!(
        late_arrivals <= deliberate,
        "{late_arrivals} > {deliberate}"
    );
    assert!(late_arrivals >= truth.late + by("after_release"));
}

#[test]
fn generate_to_dir_writes_the_files_and_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let truth = generate_to_dir(&opts(500, 3), dir.path()).unwrap();
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let back: Truth = serde_json::from_str(&read("truth.json")).unwrap();
    assert_eq!(back, truth);
    let orders = read("orders.jsonl");
    assert_eq!(
        orders.lines().count() as u64,
        truth.input_records.orders,
        "one order record per line"
    );
    assert_eq!(
        orders.lines().filter(|l| *l == "null").count() as u64,
        truth.orders_tombstones
    );
    assert_eq!(
        read("browser.jsonl").lines().count() as u64,
        truth.input_records.browser
    );
}

#[test]
fn tiny_and_empty_runs_stay_conserved() {
    for actions in [0, 1, 7, 60] {
        let (truth, _, _) = generated(actions, 9);
        truth.check_conservation().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// The test's own reading of the generated lines.
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Read {
    records: u64,
    dead: u64,
    tombstone: bool,
    /// Event times (ms) of the valid events.
    event_times: Vec<i64>,
}

fn dead_line() -> Read {
    Read {
        records: 1,
        dead: 1,
        ..Read::default()
    }
}

fn parse(line: &Line) -> Option<Value> {
    let text = line.value.as_deref()?;
    serde_json::from_str::<Value>(text).ok()
}

fn time_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            let x = n.as_f64()?;
            if !x.is_finite() || x <= 0.0 {
                return None;
            }
            let x = x as i64;
            Some(match x {
                x if x < 100_000_000_000 => x * 1000,
                x if x < 100_000_000_000_000 => x,
                x if x < 100_000_000_000_000_000 => x / 1000,
                x => x / 1_000_000,
            })
        }
        Value::String(s) => time::OffsetDateTime::parse(s, &Rfc3339)
            .ok()
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64),
        _ => None,
    }
}

fn amount_ok(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
        Value::String(s) => s.parse::<f64>().is_ok_and(|x| x.is_finite()),
        _ => false,
    }
}

fn nonempty_str(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

/// A browser event or an Events API 2.0 event; `pixel` says whether the pixel is known.
fn event_time(e: &Value, pixel: bool, time_key: &str) -> Option<i64> {
    let obj = e.as_object()?;
    if !pixel || !nonempty_str(obj.get("event")) {
        return None;
    }
    for key in ["user", "page"] {
        if obj.get(key).is_some_and(|u| !u.is_object()) {
            return None;
        }
    }
    if let Some(props) = obj.get("properties") {
        let props = props.as_object()?;
        if props.get("value").is_some_and(|v| !amount_ok(v)) {
            return None;
        }
    }
    time_ms(obj.get(time_key)?)
}

fn read_browser(line: &Line) -> Read {
    let Some(v) = parse(line) else {
        return dead_line();
    };
    let pixel = nonempty_str(v.get("event_source_id"));
    match event_time(&v, pixel, "event_time") {
        Some(t) => {
            assert_eq!(
                line.key.as_deref(),
                v.get("event_id")
                    .map(|id| id.as_str().map_or(id.to_string(), str::to_string))
                    .filter(|id| !id.is_empty())
                    .as_deref(),
                "browser lines are keyed by event_id"
            );
            Read {
                records: 1,
                event_times: vec![t],
                ..Read::default()
            }
        }
        None => dead_line(),
    }
}

fn read_server(line: &Line) -> Read {
    assert_eq!(line.key, None, "server lines are unkeyed");
    let Some(v) = parse(line) else {
        return dead_line();
    };
    let (events, legacy, pixel): (Vec<&Value>, bool, bool) = if let Some(data) = v.get("data") {
        let Some(data) = data.as_array().filter(|d| !d.is_empty()) else {
            return dead_line();
        };
        (
            data.iter().collect(),
            false,
            nonempty_str(v.get("event_source_id")),
        )
    } else if let Some(batch) = v.get("batch") {
        let Some(batch) = batch.as_array().filter(|d| !d.is_empty()) else {
            return dead_line();
        };
        (
            batch.iter().collect(),
            true,
            nonempty_str(v.get("pixel_code")),
        )
    } else if v.get("pixel_code").is_some() {
        (vec![&v], true, nonempty_str(v.get("pixel_code")))
    } else {
        (vec![&v], false, nonempty_str(v.get("event_source_id")))
    };
    let mut read = Read::default();
    for e in events {
        read.records += 1;
        let t = if legacy {
            event_time(e, pixel, "timestamp")
        } else {
            event_time(e, pixel, "event_time")
        };
        match t {
            Some(t) => read.event_times.push(t),
            None => read.dead += 1,
        }
    }
    read
}

fn read_order(line: &Line) -> Read {
    if line.value.is_none() {
        assert!(line.key.is_some(), "a tombstone carries its order's key");
        return Read {
            records: 1,
            tombstone: true,
            ..Read::default()
        };
    }
    let Some(v) = parse(line) else {
        return dead_line();
    };
    let ok = if let Some(payload) = v.get("payload").or(v.get("op").map(|_| &v)) {
        let envelope = payload;
        match envelope.get("op").and_then(Value::as_str) {
            Some("d") => envelope
                .get("before")
                .is_some_and(|b| b.get("order_id").is_some_and(|id| !id.is_null())),
            Some("c" | "u" | "r") => envelope.get("after").is_some_and(|a| {
                a.get("order_id").is_some_and(|id| !id.is_null())
                    && a.get("total").is_some_and(|t| {
                        amount_ok(t)
                            || t.as_str().is_some_and(|s| {
                                use base64::Engine as _;
                                base64::engine::general_purpose::STANDARD.decode(s).is_ok()
                            })
                    })
                    && a.get("currency").is_some_and(Value::is_string)
                    && a.get("created_at").and_then(time_ms).is_some()
            }),
            _ => false,
        }
    } else {
        v.get("order_id").is_some_and(|id| !id.is_null())
            && v.get("total").is_some_and(amount_ok)
            && v.get("currency").is_some_and(Value::is_string)
            && v.get("created_at").and_then(time_ms).is_some()
    };
    if !ok {
        return dead_line();
    }
    let id = v
        .get("payload")
        .unwrap_or(&v)
        .pointer("/after/order_id")
        .or(v.pointer("/payload/before/order_id"))
        .or(v.pointer("/before/order_id"))
        .or(v.get("order_id"))
        .map(|id| id.as_str().map_or(id.to_string(), str::to_string));
    assert_eq!(line.key, id, "orders are keyed by order_id");
    Read {
        records: 1,
        ..Read::default()
    }
}
