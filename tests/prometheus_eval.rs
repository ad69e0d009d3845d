//! A real Prometheus scrapes a running `onecount demo` and evaluates every PromQL expression of
//! prometheus/rules.yml (recording and alerting) and grafana/dashboards/onecount.json (issue 4).
//!
//! Each expression must evaluate without an error, and its *underlying series* must return at
//! least one sample: the expression with its threshold comparison removed (`X > 0.1` -> `X`,
//! `X < 0.7 * Y` -> `X` and `0.7 * Y`), each operand of `and`/`or`/`unless`, what `absent(X)`
//! watches (`X`), the series an `offset` reads (without the offset: a fresh server has no day-old
//! data), and the whole expression for a `bool` comparison (not a filter). Then every recording
//! rule's series must exist, Prometheus must report every rule healthy, and the dashboard's
//! queries must also run as range queries.
//!
//! What a demo run gives (the `IN_A_DEMO` table, one row per documented metric, checked too):
//! the accounting counters and the revenue gauges move while Prometheus scrapes (the replay
//! spans several 1-second scrapes), so every rate, increase, delta and ratio over them has
//! samples; the restore counters exist at 0 and the two histograms exist with empty buckets
//! (a file run restores nothing and acknowledges nothing to a broker), so their
//! `histogram_quantile` panels return NaN, which is accepted for them only; consumer lag is never
//! exported without a Kafka consumer: the one allow-listed metric, whose expressions
//! (OnecountConsumerLagGrowing, `topic:onecount_consumer_lag_records:sum`, the "Consumer lag"
//! panel) must still evaluate without an error, and whose absence is itself checked so the
//! allow-list cannot go stale.
//!
//! Not weakened into a test that cannot fail: a self-check runs the same checker on a misspelled
//! metric (plain, under `absent()` and under `offset`), on a syntax error and on a many-to-many
//! match, and requires each to be reported.
//!
//! The processes: Prometheus from the Debian package `prometheus` (scripts/install-deps.sh) and
//! the test's own `onecount` binary. Missing ones fail the test; nothing is skipped. Both are
//! killed by a guard, also when the test panics. The rule groups say `interval: 1m`; the test
//! loads a copy of rules.yml whose only change is `interval: 1s` (checked line by line), so a
//! few evaluation cycles take seconds, not minutes. The expressions are the repository's.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::promql::{indent, metric_names, parse_rules};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

// ------------------------------------------------------------------------------------------
// What a demo run exports, per documented metric.

#[derive(Debug, Clone, Copy, PartialEq)]
enum InDemo {
    /// Changes while Prometheus scrapes the replay: rates, increases and deltas over it have
    /// samples, and the `> 0` guards of the ratio rules pass.
    Moves,
    /// Exported (a gauge set after every batch, or a constant).
    Present,
    /// Exported at 0 for the whole run (a histogram: empty buckets, so a quantile is NaN).
    Zero(&'static str),
    /// Never exported by a file run: the allow-list. Expressions reading only these may return
    /// nothing, and the metric's absence is checked (an entry that stops being true fails).
    Absent(&'static str),
}

/// Per metric. What that makes of each expression in a demo run (the test prints the counts):
/// - samples with values from the replay: every `pixel:`, `pixel_key:`, `pixel_currency:` and
///   `input:` recording rule; the underlying series of OnecountRevenueDrift, OnecountDedupRate-
///   and PairRateDropped, OnecountNoEventsFromInput/FromPixel, OnecountConsentViolation and
///   OnecountDeadLetterSpike (their `offset` guards are checked without the offset); the panels
///   of the dedup, revenue and data-quality rows, "Throughput by input", "Input records by
///   outcome". The `== 0` of OnecountNoEventsFromPixel holds for pixel `unattributed` (its
///   event series exist at 0, the pixel only ever carries orders).
/// - at 0: "Restores" (increase of the restore counters), OnecountRestoreLoop (their increase
///   over 15m), OnecountBrokerUnreachable and "Broker reachable" (`onecount_broker_up`),
///   "Recovery". Present gauges: OnecountDown (`up` is 1), OnecountNotReady (`onecount_ready` is
///   1), "Ready instances", "Watermark lag", "State keys", "State size", "Accounted input
///   records", "Versions running", "Revenue drift, latest closed hour".
/// - NaN (quantiles of empty histograms): "Processing latency" p50/p99, "Restore duration".
/// - nothing (the allow-list): `topic:onecount_consumer_lag_records:sum`,
///   OnecountConsumerLagGrowing, "Consumer lag".
///
/// Whole alert expressions true at the end of a demo (informational: no alert state is checked):
/// OnecountRevenueDrift (pixel/currency pairs with backend revenue but no tracked purchase sit at
/// -1), OnecountConsentViolation (injected by the generator) and OnecountBrokerUnreachable (a file
/// run has no broker: `onecount_broker_up` is 0).
const IN_A_DEMO: &[(&str, InDemo)] = &[
    ("onecount_input_records_total", InDemo::Moves),
    ("onecount_events_received_total", InDemo::Moves),
    ("onecount_conversions_total", InDemo::Moves),
    ("onecount_duplicates_total", InDemo::Moves),
    ("onecount_match_keys_total", InDemo::Moves),
    ("onecount_discrepancies_total", InDemo::Moves),
    ("onecount_consent_dropped_total", InDemo::Moves),
    ("onecount_dead_letters_total", InDemo::Moves),
    ("onecount_tracked_revenue", InDemo::Moves),
    ("onecount_backend_revenue", InDemo::Moves),
    ("onecount_revenue_drift_ratio", InDemo::Present),
    ("onecount_state_keys", InDemo::Present),
    ("onecount_state_bytes", InDemo::Present),
    ("onecount_watermark_lag_seconds", InDemo::Present),
    (
        "onecount_consumer_lag_records",
        InDemo::Absent(
            "set from the Kafka consumer's statistics callback: a file run has no consumer",
        ),
    ),
    (
        "onecount_processing_latency_seconds",
        InDemo::Zero(
            "observed when a batch's output is acknowledged by the broker: a file run has none",
        ),
    ),
    (
        "onecount_restores_total",
        InDemo::Zero("a restore reads the Kafka changelog: a file run restores nothing"),
    ),
    (
        "onecount_restore_duration_seconds",
        InDemo::Zero("a restore reads the Kafka changelog: a file run restores nothing"),
    ),
    (
        "onecount_restored_records_total",
        InDemo::Zero("a restore reads the Kafka changelog: a file run restores nothing"),
    ),
    (
        "onecount_resume_offset",
        InDemo::Zero("set by a restore of the Kafka service: a file run restores nothing"),
    ),
    (
        "onecount_outputs_suppressed_total",
        InDemo::Zero("outputs written again after a Kafka restore: a file run restores nothing"),
    ),
    (
        "onecount_replayed_records_total",
        InDemo::Zero("internal-log records forwarded twice: a file run has no internal log"),
    ),
    (
        "onecount_merge_queued_records",
        InDemo::Zero("the state task's merge of the internal log: a file run has no log"),
    ),
    (
        "onecount_merge_waits_given_up_total",
        InDemo::Zero("the state task's merge of the internal log: a file run has no log"),
    ),
    (
        "onecount_broker_up",
        InDemo::Zero("set from the Kafka clients' statistics: a file run has no broker"),
    ),
    ("onecount_accounted_records", InDemo::Present),
    ("onecount_ready", InDemo::Present),
    ("onecount_build_info", InDemo::Present),
];

/// The metrics table of docs/METRICS.md: name -> type.
fn documented_metrics() -> BTreeMap<String, String> {
    read("docs/METRICS.md")
        .lines()
        .filter(|l| l.starts_with("| `onecount_"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect()
}

/// The demo expectation of a series name (`up` is Prometheus' own and always there).
fn in_demo(series: &str) -> Option<InDemo> {
    if series == "up" {
        return Some(InDemo::Present);
    }
    IN_A_DEMO.iter().find_map(|(family, e)| {
        let family_series = series == *family
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| series.strip_suffix(s) == Some(family));
        family_series.then_some(*e)
    })
}

// ------------------------------------------------------------------------------------------
// prometheus/rules.yml, read as the plain YAML it is written in (no YAML crate here; the
// result is cross-checked against the rules Prometheus itself loaded).

/// rules.yml with every group's `interval:` set to 1s, and nothing else changed.
fn rules_evaluated_every_second(text: &str) -> String {
    let groups = text
        .lines()
        .filter(|l| l.trim_start().starts_with("- name:"))
        .count();
    let mut changed = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("interval:") {
            Some(_) => {
                changed += 1;
                format!("{}interval: 1s", &l[..indent(l)])
            }
            None => l.to_string(),
        })
        .collect();
    assert_eq!(
        changed, groups,
        "expected one `interval:` line per rule group in prometheus/rules.yml"
    );
    out.join("\n") + "\n"
}

// ------------------------------------------------------------------------------------------
// The Grafana dashboard's queries.

/// Grafana's built-in variables, with the values Grafana would use for a 15 s scrape interval
/// (`$__rate_interval` = max(interval + scrape, 4 x scrape) = 1m). Longer names first.
const GRAFANA_BUILTINS: &[(&str, &str)] = &[
    ("$__rate_interval_ms", "60000"),
    ("${__rate_interval}", "1m"),
    ("$__rate_interval", "1m"),
    ("$__interval_ms", "15000"),
    ("${__interval}", "15s"),
    ("$__interval", "15s"),
    ("$__range_ms", "300000"),
    ("$__range_s", "300"),
    ("${__range}", "5m"),
    ("$__range", "5m"),
];

/// Every target expression of the dashboard (rows' nested panels included): (origin, expr).
fn dashboard_targets(board: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(&p["panels"], out);
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    let ref_id = t["refId"].as_str().unwrap_or("?");
                    out.push((format!("panel {title:?} {ref_id}"), expr.to_string()));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&board["panels"], &mut out);
    out
}

/// The expression with Grafana's variables replaced: `$pixel` by `pixel`, built-ins by the
/// table above. Panics on a variable it does not know (the table must grow with the dashboard).
fn substitute(expr: &str, pixel: &str) -> String {
    let mut e = expr.to_string();
    for (var, value) in GRAFANA_BUILTINS {
        e = e.replace(var, value);
    }
    for var in ["${pixel}", "[[pixel]]", "$pixel"] {
        e = e.replace(var, pixel);
    }
    let b = e.as_bytes();
    for (i, _) in e.match_indices('$') {
        let next = b.get(i + 1).copied().unwrap_or(b' ');
        assert!(
            !(next.is_ascii_alphabetic() || next == b'_' || next == b'{'),
            "unknown Grafana variable in {expr:?}: add it to GRAFANA_BUILTINS or substitute()"
        );
    }
    e
}

// ------------------------------------------------------------------------------------------
// PromQL, just enough of it: top-level operators, modifiers, `offset`, `absent()`.

const SET_OPS: &[&str] = &["and", "or", "unless"];
const COMPARISONS: &[&str] = &["==", "!=", ">=", "<=", ">", "<"];

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':' || c == b'.'
}

/// Per byte: is it at nesting depth 0, outside string literals and not a bracket itself?
fn top_level(e: &str) -> Vec<bool> {
    let b = e.as_bytes();
    let mut top = vec![false; b.len()];
    let mut depth = 0i32;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && q != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => top[i] = depth == 0,
        }
        i += 1;
    }
    top
}

/// Binary operators at the top level: (start, end, operator).
fn top_level_ops(e: &str) -> Vec<(usize, usize, String)> {
    let b = e.as_bytes();
    let top = top_level(e);
    let mut ops = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !top[i] {
            i += 1;
            continue;
        }
        if is_word_byte(b[i]) {
            let start = i;
            while i < b.len() && top[i] && is_word_byte(b[i]) {
                i += 1;
            }
            if SET_OPS.contains(&&e[start..i]) {
                ops.push((start, i, e[start..i].to_string()));
            }
            continue;
        }
        let len = match e.get(i..i + 2) {
            Some("==" | "!=" | ">=" | "<=") => 2,
            _ if b[i] == b'>' || b[i] == b'<' => 1,
            _ => 0,
        };
        if len > 0 {
            ops.push((i, i + len, e[i..i + len].to_string()));
            i += len;
        } else {
            i += 1;
        }
    }
    ops
}

/// Index of the bracket closing the one at `open`.
fn matching(e: &str, open: usize) -> Option<usize> {
    let b = e.as_bytes();
    let (o, c) = (
        b[open],
        match b[open] {
            b'(' => b')',
            b'[' => b']',
            b'{' => b'}',
            _ => return None,
        },
    );
    let mut depth = 0;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && q != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            x if x == o => depth += 1,
            x if x == c => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn strip_parens(e: &str) -> &str {
    let mut e = e.trim();
    while e.starts_with('(') && matching(e, 0) == Some(e.len() - 1) {
        e = e[1..e.len() - 1].trim();
    }
    e
}

/// A binary expression split at an operator, with its modifiers (`bool`, `on (...)`,
/// `ignoring (...)`, `group_left (...)`, `group_right (...)`).
#[derive(Debug)]
struct Split<'a> {
    lhs: &'a str,
    op: String,
    modifiers: &'a str,
    rhs: &'a str,
    bool_modifier: bool,
}

/// Splits at the last top-level operator of `class`: PromQL binary operators are
/// left-associative, so the last one of the lowest precedence present is the root.
fn split_last<'a>(e: &'a str, class: &[&str]) -> Option<Split<'a>> {
    let (start, end, op) = top_level_ops(e)
        .into_iter()
        .rfind(|(_, _, op)| class.contains(&op.as_str()))?;
    let mut rest = &e[end..];
    let mut bool_modifier = false;
    loop {
        let t = rest.trim_start();
        let word: String = t
            .bytes()
            .take_while(|c| is_word_byte(*c))
            .map(char::from)
            .collect();
        match word.as_str() {
            "bool" => {
                bool_modifier = true;
                rest = &t[word.len()..];
            }
            "on" | "ignoring" | "group_left" | "group_right" => {
                let after = t[word.len()..].trim_start();
                rest = if after.starts_with('(') {
                    let close = matching(after, 0).expect("unclosed label list");
                    &after[close + 1..]
                } else {
                    assert!(word.starts_with("group_"), "{word} needs a label list: {e}");
                    after
                };
            }
            _ => break,
        }
    }
    let rhs_start = e.len() - rest.len();
    Some(Split {
        lhs: &e[..start],
        op,
        modifiers: e[end..rhs_start].trim(),
        rhs: rest,
        bool_modifier,
    })
}

fn is_number(e: &str) -> bool {
    let e = strip_parens(e);
    let e = e.strip_prefix(['+', '-']).unwrap_or(e).trim();
    e.parse::<f64>().is_ok() || e.eq_ignore_ascii_case("inf") || e.eq_ignore_ascii_case("nan")
}

/// `f(inner)` as a whole: `inner`.
fn call_arg<'a>(e: &'a str, function: &str) -> Option<&'a str> {
    let rest = e.strip_prefix(function)?.trim_start();
    let open = e.len() - rest.len();
    (rest.starts_with('(') && matching(e, open) == Some(e.len() - 1))
        .then(|| &e[open + 1..e.len() - 1])
}

/// `offset <duration>` modifiers (start, end), including the whitespace before them.
fn offsets(e: &str) -> Vec<(usize, usize)> {
    let b = e.as_bytes();
    let in_string = {
        // `offset` inside a string literal is not a modifier (depth does not matter here)
        let mut in_string = vec![false; b.len()];
        let mut i = 0;
        while i < b.len() {
            if let q @ (b'"' | b'\'' | b'`') = b[i] {
                let s = i;
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && q != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                for f in in_string.iter_mut().take((i + 1).min(b.len())).skip(s) {
                    *f = true;
                }
            }
            i += 1;
        }
        in_string
    };
    let mut found = Vec::new();
    for (i, _) in e.match_indices("offset") {
        let before = i.checked_sub(1).map(|j| b[j]);
        let after = b.get(i + 6).copied();
        if in_string[i]
            || before.is_some_and(is_word_byte)
            || !after.is_some_and(|c| c.is_ascii_whitespace())
        {
            continue;
        }
        let mut end = i + 6;
        while end < b.len() && b[end].is_ascii_whitespace() {
            end += 1;
        }
        if b.get(end) == Some(&b'-') {
            end += 1;
        }
        let dur_start = end;
        while end < b.len() && b[end].is_ascii_alphanumeric() {
            end += 1;
        }
        assert!(end > dur_start, "offset without a duration: {e}");
        let mut start = i;
        while start > 0 && b[start - 1].is_ascii_whitespace() {
            start -= 1;
        }
        found.push((start, end));
    }
    found
}

fn strip_offsets(e: &str) -> String {
    let mut out = e.to_string();
    for (start, end) in offsets(e).into_iter().rev() {
        out.replace_range(start..end, "");
    }
    out
}

/// The selector each `offset` applies to (`name{...}[range]`), without the offset.
fn offset_selectors(e: &str) -> Vec<String> {
    let b = e.as_bytes();
    offsets(e)
        .into_iter()
        .map(|(start, _)| {
            let end = start;
            let mut i = end;
            if i > 0 && b[i - 1] == b']' {
                i = e[..i - 1].rfind('[').expect("unopened range");
            }
            if i > 0 && b[i - 1] == b'}' {
                i = e[..i - 1].rfind('{').expect("unopened matcher");
            }
            while i > 0 && is_word_byte(b[i - 1]) && b[i - 1] != b'.' {
                i -= 1;
            }
            let selector = &e[i..end];
            assert!(
                selector
                    .bytes()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':'),
                "offset on something other than a plain selector in {e:?}: teach the test"
            );
            strip_offsets(selector)
        })
        .collect()
}

/// One series an expression's check queries, and why.
#[derive(Debug, Clone, PartialEq)]
struct Part {
    expr: String,
    why: String,
}

/// The underlying series of an expression (see the top of this file).
fn underlying(expr: &str) -> Vec<Part> {
    fn collect(e: &str, why: String, out: &mut Vec<Part>) {
        let e = strip_parens(e);
        // Lowest precedence first: or; and/unless; comparisons.
        for class in [&["or"][..], &["and", "unless"], COMPARISONS] {
            let Some(s) = split_last(e, class) else {
                continue;
            };
            let m = if s.modifiers.is_empty() {
                String::new()
            } else {
                format!(" {}", s.modifiers)
            };
            if SET_OPS.contains(&s.op.as_str()) {
                collect(s.lhs, format!("left operand of `{}{m}`", s.op), out);
                collect(s.rhs, format!("right operand of `{}{m}`", s.op), out);
            } else if s.bool_modifier {
                // `X > bool 1` keeps every series (0 or 1): it is not a filter.
                out.push(Part {
                    expr: strip_offsets(e),
                    why: format!("`{}{m}` is not a filter: the whole comparison", s.op),
                });
            } else {
                for (side, name) in [(s.lhs, "left"), (s.rhs, "right")] {
                    if is_number(side) {
                        continue;
                    }
                    let other = if name == "left" { s.rhs } else { s.lhs };
                    let what = if is_number(other) {
                        format!("threshold `{} {}` removed", s.op, other.trim())
                    } else {
                        format!("{name} side of `{}{m}`", s.op)
                    };
                    collect(side, what, out);
                }
            }
            return;
        }
        for f in ["absent_over_time", "absent"] {
            if let Some(inner) = call_arg(e, f) {
                // absent(X) answers 1 when X is missing: the signal it watches is X.
                collect(inner, format!("what `{f}()` watches"), out);
                return;
            }
        }
        let stripped = strip_offsets(e);
        let why = if stripped != e {
            format!("{why}, `offset` removed")
        } else {
            why
        };
        out.push(Part {
            expr: stripped,
            why,
        });
    }
    let mut parts = Vec::new();
    collect(expr, "the expression".to_string(), &mut parts);
    for selector in offset_selectors(expr) {
        parts.push(Part {
            expr: selector,
            why: "the series an `offset` reads, now".to_string(),
        });
    }
    let mut seen = BTreeSet::new();
    parts.retain(|p| seen.insert(normalise(&p.expr)));
    parts
}

fn normalise(e: &str) -> String {
    e.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn underlying_series_of_the_rule_shapes() {
    let exprs = |e: &str| -> Vec<String> {
        underlying(e)
            .into_iter()
            .map(|p| normalise(&p.expr))
            .collect()
    };
    assert_eq!(exprs("up{job=\"onecount\"} == 0"), ["up{job=\"onecount\"}"]);
    assert_eq!(exprs("x > bool 0.5"), ["x > bool 0.5"]);
    assert_eq!(exprs("(0.1 < x)"), ["x"]);
    assert_eq!(exprs("x < -0.10"), ["x"]);
    // Revenue drift: two thresholds on one series.
    assert_eq!(exprs("r > 0.10\nor\nr < -0.10"), ["r"]);
    // Dedup rate: a vector comparison with an offset, or a threshold, and a volume guard.
    assert_eq!(
        exprs(
            "(\n  d\n    < 0.7 * (d offset 1d)\n  or\n  d < 0.15\n)\nand on (pixel)\nc * 3600 >= 100"
        ),
        ["d", "0.7 * (d)", "c * 3600"]
    );
    // No events: increase == 0, guarded by an offset series, or absent().
    let parts = underlying(
        "(\n  sum by (input) (increase(m[30m])) == 0\n  and on (input)\n  sum by (input) (m offset 30m)\n)\nor absent(m{input=\"browser\"})",
    );
    let got: Vec<(String, &str)> = parts
        .iter()
        .map(|p| (normalise(&p.expr), p.why.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "sum by (input) (increase(m[30m]))".to_string(),
                "threshold `== 0` removed"
            ),
            (
                "sum by (input) (m)".to_string(),
                "right operand of `and on (input)`, `offset` removed"
            ),
            (
                "m{input=\"browser\"}".to_string(),
                "what `absent()` watches"
            ),
            ("m".to_string(), "the series an `offset` reads, now"),
        ]
    );
    // An offset on a range selector inside a function; unless.
    assert_eq!(
        exprs("sum by (p) (increase(e[30m] offset 1d)) > 0\nunless\nsum by (p) (increase(e[30m])) > 0"),
        ["sum by (p) (increase(e[30m]))", "e[30m]"]
    );
    // Dead-letter spike: a chain of `and`, a threshold inside an `or` inside arithmetic.
    assert_eq!(
        exprs("a > 0.01\nand\na\n  > 3 * (\n    b offset 1h\n    or\n    a * 0\n  )\nand on (input)\nsum by (input) (increase(c{x=\"a>b\"}[10m])) >= 10"),
        ["a", "3 * ( b or a * 0 )", "sum by (input) (increase(c{x=\"a>b\"}[10m]))", "b"]
    );
    // A ratio guarded by `> 0` inside the expression is not a top-level threshold.
    assert_eq!(
        exprs("a / on (p) group_left () (b > 0)"),
        ["a / on (p) group_left () (b > 0)"]
    );
    assert_eq!(
        exprs("deriv(t[15m]) > 0\nand\nt > 10000"),
        ["deriv(t[15m])", "t"]
    );
    // Grafana variables.
    assert_eq!(
        substitute(
            "rate(x{pixel=~\"$pixel\"}[$__rate_interval]) / $__range_s",
            ".*"
        ),
        "rate(x{pixel=~\".*\"}[1m]) / 300"
    );
}

#[test]
fn rules_copy_changes_only_the_group_intervals() {
    let text = read("prometheus/rules.yml");
    let copy = rules_evaluated_every_second(&text);
    let (a, b): (Vec<&str>, Vec<&str>) = (text.lines().collect(), copy.lines().collect());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        if x != y {
            assert!(
                x.trim_start().starts_with("interval:") && y.trim() == "interval: 1s",
                "{x} -> {y}"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// Processes and HTTP.

/// A child process killed when dropped (also while a failing test unwinds), its output in a file.
struct Proc {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let out = File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name,
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Panics with its log if the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} output (tail) ---\n{}", self.name, self.log_tail());
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free port")
        .port()
}

/// GET over HTTP/1.0 (no chunked answers): status code and body.
fn http_get(port: u16, target: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {target} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let bad = || std::io::Error::other(format!("not an HTTP answer: {text:.200}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((code, body.to_string()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Polls `probe` every 250 ms until it answers, checking that `procs` still run; panics with
/// `what` after `timeout`.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    procs: &mut [&mut Proc],
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        for p in procs.iter_mut() {
            p.assert_running();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .chain([PathBuf::from("/usr/bin").join(program)])
        .find(|p| p.is_file())
}

// ------------------------------------------------------------------------------------------
// Prometheus' HTTP API.

#[derive(Debug, Clone)]
struct Sample {
    labels: String,
    value: f64,
}

fn parse_value(v: &Value) -> f64 {
    match v.as_str().unwrap_or("") {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s
            .parse()
            .unwrap_or_else(|_| panic!("not a sample value: {v}")),
    }
}

fn labels(metric: &Value) -> String {
    let pairs: Vec<String> = metric
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

struct Api {
    port: u16,
}

impl Api {
    /// The `data` of a successful answer; an error answer (or warnings) as text.
    fn get(&self, target: &str) -> Result<Value, String> {
        let (code, body) = http_get(self.port, target).map_err(|e| format!("GET {target}: {e}"))?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {code}, not JSON ({e}): {body:.300}"))?;
        if json["status"] != "success" {
            return Err(format!(
                "HTTP {code} {}: {}",
                json["errorType"].as_str().unwrap_or("?"),
                json["error"].as_str().unwrap_or("?")
            ));
        }
        if let Some(w) = json["warnings"].as_array().filter(|w| !w.is_empty()) {
            return Err(format!("warnings: {w:?}"));
        }
        Ok(json["data"].clone())
    }

    /// An instant query's samples (a range selector's series count with their last sample).
    fn query(&self, expr: &str) -> Result<Vec<Sample>, String> {
        let data = self.get(&format!("/api/v1/query?query={}", urlencode(expr)))?;
        let result = &data["result"];
        Ok(match data["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    labels: labels(&s["metric"]),
                    value: parse_value(&s["value"][1]),
                })
                .collect(),
            Some("matrix") => result
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    labels: labels(&s["metric"]),
                    value: parse_value(&s["values"].as_array().unwrap().last().unwrap()[1]),
                })
                .collect(),
            Some("scalar") | Some("string") => vec![Sample {
                labels: String::new(),
                value: parse_value(&result[1]),
            }],
            other => return Err(format!("unexpected result type {other:?}")),
        })
    }

    fn query_range(&self, expr: &str, seconds: u64, step: u64) -> Result<usize, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let data = self.get(&format!(
            "/api/v1/query_range?query={}&start={}&end={now}&step={step}",
            urlencode(expr),
            now - seconds
        ))?;
        Ok(data["result"].as_array().map_or(0, Vec::len))
    }

    /// A single number (panics if the query fails).
    fn scalar(&self, expr: &str) -> Option<f64> {
        let samples = self.query(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        samples.first().map(|s| s.value)
    }

    fn format(&self, expr: &str) -> Result<String, String> {
        self.get(&format!("/api/v1/format_query?query={}", urlencode(expr)))
            .map(|d| d.as_str().unwrap_or_default().to_string())
    }
}

/// Unix seconds of an RFC 3339 UTC time as Prometheus writes it (2026-01-02T03:04:05.678Z).
fn rfc3339_seconds(s: &str) -> f64 {
    let parse = || -> Option<f64> {
        let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
        let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
        let (y, m, day) = (d.next()??, d.next()??, d.next()??);
        let mut t = time.split(':');
        let (h, min) = (
            t.next()?.parse::<i64>().ok()?,
            t.next()?.parse::<i64>().ok()?,
        );
        let sec: f64 = t.next()?.parse().ok()?;
        // days from 1970-01-01 (Howard Hinnant's days_from_civil)
        let y = if m <= 2 { y - 1 } else { y };
        let era = if y >= 0 { y } else { y - 399 } / 400;
        let yoe = y - era * 400;
        let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
        let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
        Some((days * 86_400 + h * 3600 + min * 60) as f64 + sec)
    };
    parse().unwrap_or_else(|| panic!("not an RFC 3339 UTC time: {s}"))
}

#[test]
fn rfc3339_parse() {
    assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), 0.0);
    assert_eq!(rfc3339_seconds("2026-01-01T00:00:00Z"), 1_767_225_600.0);
    assert_eq!(rfc3339_seconds("2024-02-29T12:00:01.5Z"), 1_709_208_001.5);
}

// ------------------------------------------------------------------------------------------
// The running pair.

/// Prometheus scraping a demo, both killed when dropped (demo first: fields drop in order).
struct Stack {
    demo: Proc,
    prometheus: Proc,
    api: Api,
    demo_port: u16,
    _dir: tempfile::TempDir,
}

const STARTUP: Duration = Duration::from_secs(60);
/// Generating and replaying the larger demo on a slow, shared machine.
const DEMO_RUN: Duration = Duration::from_secs(600);

impl Stack {
    fn start(prometheus_bin: &Path, actions: u64) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let (demo_port, prom_port) = loop {
            let (a, b) = (free_port(), free_port());
            if a != b {
                break (a, b);
            }
        };
        let rules = dir.path().join("rules.yml");
        std::fs::write(
            &rules,
            rules_evaluated_every_second(&read("prometheus/rules.yml")),
        )
        .unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: onecount\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [\"127.0.0.1:{demo_port}\"]\n",
                rules.display()
            ),
        )
        .unwrap();

        // Prometheus first: it scrapes the demo's port from the moment /metrics opens, so the
        // replay is seen while its counters move.
        let mut prometheus = Proc::spawn(
            "prometheus",
            Command::new(prometheus_bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
            dir.path().join("prometheus.log"),
        );
        wait_for(
            "Prometheus /-/ready",
            STARTUP,
            &mut [&mut prometheus],
            || {
                http_get(prom_port, "/-/ready")
                    .ok()
                    .filter(|(code, _)| *code == 200)
            },
        );
        // Its scrape manager picks targets up a few seconds after it is ready: wait for the
        // first (failed) scrape of the demo's port, so the whole replay is scraped.
        let api = Api { port: prom_port };
        wait_for(
            "Prometheus' first scrape of the demo's port",
            STARTUP,
            &mut [&mut prometheus],
            || {
                api.query(r#"up{job="onecount"}"#)
                    .ok()
                    .filter(|s| !s.is_empty())
            },
        );

        let demo = Proc::spawn(
            "onecount demo",
            Command::new(env!("CARGO_BIN_EXE_onecount")).args([
                "demo",
                "--actions",
                &actions.to_string(),
                "--dir",
                dir.path().join("demo").to_str().unwrap(),
                "--metrics-listen",
                &format!("127.0.0.1:{demo_port}"),
                "--linger",
                "1h",
            ]),
            dir.path().join("demo.log"),
        );
        Stack {
            demo,
            prometheus,
            api: Api { port: prom_port },
            demo_port,
            _dir: dir,
        }
    }

    fn wait<T>(&mut self, what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> T {
        wait_for(
            what,
            timeout,
            &mut [&mut self.demo, &mut self.prometheus],
            probe,
        )
    }

    /// Waits for the replay to end and Prometheus to hold its final values; returns
    /// Prometheus' clock at that point.
    fn wait_for_the_whole_run(&mut self) -> f64 {
        let port = self.demo_port;
        self.wait("the demo's /metrics", DEMO_RUN, || {
            http_get(port, "/metrics").ok().filter(|(c, _)| *c == 200)
        });
        let log = self.demo.log.clone();
        self.wait("the demo to finish its replay", DEMO_RUN, || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|l| l.contains("replayed into"))
        });
        let (_, body) = http_get(port, "/metrics").expect("the demo's /metrics");
        let total: f64 = body
            .lines()
            .filter(|l| l.starts_with("onecount_input_records_total{"))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum();
        assert!(total > 0.0, "the demo read no record:\n{body:.2000}");
        let api = Api {
            port: self.api.port,
        };
        self.wait(
            "Prometheus to scrape the final counts (and at least 3 scrapes)",
            STARTUP,
            || {
                let scraped = api.scalar("sum(onecount_input_records_total)")?;
                let up = api.scalar(r#"min(up{job="onecount"})"#)?;
                let scrapes = api.scalar(r#"sum(count_over_time(up{job="onecount"}[1h]))"#)?;
                (scraped == total && up == 1.0 && scrapes >= 3.0).then_some(())
            },
        );
        api.scalar("time()").unwrap()
    }

    /// Documented metrics whose `Moves` expectation Prometheus did not see (the replay ended
    /// between two scrapes, or a real regression).
    fn not_moving(&self) -> Vec<String> {
        IN_A_DEMO
            .iter()
            .filter(|(_, e)| *e == InDemo::Moves)
            .filter(|(m, _)| {
                !self
                    .api
                    .scalar(&format!("sum(changes({m}[1h]))"))
                    .is_some_and(|n| n > 0.0)
            })
            .map(|(m, _)| m.to_string())
            .collect()
    }
}

// ------------------------------------------------------------------------------------------
// The checks.

/// What an expression's check found.
struct Checked {
    problems: Vec<String>,
    notes: Vec<String>,
    /// The report line: samples of the whole expression, then of each underlying part.
    line: String,
}

struct Checker<'a> {
    api: &'a Api,
    /// Recording rule name -> expression, to follow a recorded series to the metrics it reads.
    recorded: BTreeMap<String, String>,
}

impl Checker<'_> {
    /// The scraped series an expression finally reads, through recording rules.
    fn leaves(&self, expr: &str) -> BTreeSet<String> {
        let mut leaves = BTreeSet::new();
        let mut pending: Vec<String> = metric_names(expr).into_iter().collect();
        let mut seen = BTreeSet::new();
        while let Some(name) = pending.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            match self.recorded.get(&name) {
                Some(e) => pending.extend(metric_names(e)),
                None => {
                    leaves.insert(name);
                }
            }
        }
        leaves
    }

    /// Why an empty answer is acceptable: every scraped series it reads is allow-listed.
    fn allowed_empty(&self, expr: &str) -> Option<String> {
        let leaves = self.leaves(expr);
        let reasons: Option<BTreeSet<String>> = leaves
            .iter()
            .map(|l| match in_demo(l) {
                Some(InDemo::Absent(why)) => Some(format!("{l}: {why}")),
                _ => None,
            })
            .collect();
        reasons
            .filter(|r| !r.is_empty())
            .map(|r| r.into_iter().collect::<Vec<_>>().join("; "))
    }

    /// Why an all-NaN answer is acceptable: it reads a histogram with no observations.
    fn allowed_nan(&self, expr: &str) -> Option<String> {
        self.leaves(expr).iter().find_map(|l| match in_demo(l) {
            Some(InDemo::Zero(why)) if l.ends_with("_bucket") => {
                Some(format!("{l} has no observations ({why})"))
            }
            _ => None,
        })
    }

    fn check(&self, origin: &str, expr: &str) -> Checked {
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        let where_ = |what: &str| format!("{origin}: {what}\n    expr: {}", normalise(expr));
        let whole = match self.api.query(expr) {
            Ok(s) => s.len().to_string(),
            Err(e) => {
                problems.push(where_(&format!("returns an error: {e}")));
                "error".to_string()
            }
        };
        let mut counts = Vec::new();
        for part in underlying(expr) {
            let at = |what: &str| {
                format!(
                    "{origin}: underlying series ({}) {what}\n    part: {}\n    expr: {}",
                    part.why,
                    normalise(&part.expr),
                    normalise(expr)
                )
            };
            match self.api.query(&part.expr) {
                Err(e) => {
                    // The same error as the whole expression's is reported once.
                    if normalise(&part.expr) != normalise(expr) {
                        problems.push(at(&format!("returns an error: {e}")));
                    }
                    counts.push("error".to_string());
                }
                Ok(samples) if samples.is_empty() => {
                    counts.push("0".to_string());
                    match self.allowed_empty(&part.expr) {
                        Some(why) => notes.push(format!(
                            "{origin}: `{}` returns nothing, allow-listed: {why}",
                            normalise(&part.expr)
                        )),
                        None => problems.push(at("returns nothing")),
                    }
                }
                Ok(samples) => {
                    counts.push(samples.len().to_string());
                    if samples.iter().all(|s| s.value.is_nan()) {
                        match self.allowed_nan(&part.expr) {
                            Some(why) => notes.push(format!(
                                "{origin}: `{}` is NaN: {why}",
                                normalise(&part.expr)
                            )),
                            None => problems
                                .push(at(&format!("returns only NaN ({})", samples[0].labels))),
                        }
                    }
                }
            }
        }
        Checked {
            problems,
            notes,
            line: format!(
                "{origin:<62} whole {whole:>5}  underlying [{}]",
                counts.join(", ")
            ),
        }
    }
}

/// The checker must report what it is there to catch.
fn self_check(checker: &Checker) -> Vec<String> {
    let cases: [(&str, &str); 7] = [
        (r#"upp{job="onecount"} == 0"#, "returns nothing"),
        (
            r#"absent(onecount_input_records_totl{input="browser"})"#,
            "(what `absent()` watches) returns nothing",
        ),
        (
            "onecount_ready < 0.7 * (onecount_redy offset 1d)",
            "(the series an `offset` reads, now) returns nothing",
        ),
        (
            "onecount_ready == 0 and on () onecount_build_inf",
            "(right operand of `and on ()`) returns nothing",
        ),
        (
            "sum by (pixel) (rate(onecount_conversions_total[1h])",
            "returns an error: HTTP 400 bad_data",
        ),
        (
            "onecount_input_records_total / on (input) onecount_input_records_total",
            "returns an error: HTTP 422 execution",
        ),
        ("(onecount_ready - onecount_ready) / 0", "returns only NaN"),
    ];
    let mut problems = Vec::new();
    for (expr, expected) in cases {
        let checked = checker.check("self-check", expr);
        if !checked.problems.iter().any(|p| p.contains(expected)) {
            problems.push(format!(
                "self-check: {expr:?} should be reported as {expected:?}, got {:?}",
                checked.problems
            ));
        }
    }
    // A threshold that filters everything out is fine: its underlying series has data.
    let checked = checker.check("self-check", "onecount_ready > 5");
    if !checked.problems.is_empty() {
        problems.push(format!(
            "self-check: `onecount_ready > 5` should pass (underlying onecount_ready): {:?}",
            checked.problems
        ));
    }
    problems
}

#[test]
fn prometheus_evaluates_every_rule_and_dashboard_expression_on_a_running_onecount() {
    let prometheus_bin = find_on_path("prometheus").unwrap_or_else(|| {
        panic!(
            "no `prometheus` binary on PATH or in /usr/bin: it comes with the Debian package \
             `prometheus` (scripts/install-deps.sh installs it)"
        )
    });
    let onecount = Path::new(env!("CARGO_BIN_EXE_onecount"));
    assert!(onecount.is_file(), "{} is missing", onecount.display());

    let rules = parse_rules(&read("prometheus/rules.yml"));
    let board: Value = serde_json::from_str(&read("grafana/dashboards/onecount.json"))
        .expect("grafana/dashboards/onecount.json is not JSON");
    let targets = dashboard_targets(&board);
    assert!(rules.len() >= 10 && targets.len() >= 10);

    // Every documented metric has a demo expectation, and nothing else does.
    let documented = documented_metrics();
    let expected: BTreeSet<&str> = IN_A_DEMO.iter().map(|(m, _)| *m).collect();
    assert_eq!(
        documented
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        expected,
        "IN_A_DEMO must have one row per metric of docs/METRICS.md"
    );

    // The replay must span a scrape for rates over it to exist. On a machine fast enough to
    // replay the first size between two 1-second scrapes, run a larger one.
    let sizes = [200_000u64, 800_000];
    let mut attempt = 0;
    let (mut stack, final_scrape) = loop {
        let mut stack = Stack::start(&prometheus_bin, sizes[attempt]);
        let t = stack.wait_for_the_whole_run();
        let still = stack.not_moving();
        if still.is_empty() {
            break (stack, t);
        }
        attempt += 1;
        assert!(
            attempt < sizes.len(),
            "Prometheus never saw these counters/gauges change during a {}-action replay: {still:?}\n\
             (they move during a replay; a metric updated only at the end would do this)",
            sizes[attempt - 1]
        );
        eprintln!(
            "{} actions replayed between two scrapes ({still:?} unseen moving); trying {}",
            sizes[attempt - 1],
            sizes[attempt]
        );
    };
    let api = &Api {
        port: stack.api.port,
    };
    let mut problems: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut report: Vec<String> = Vec::new();

    // Prometheus loaded the rules the text parser read, and evaluated each a few times after
    // the run's final scrape, without an error.
    let loaded = stack.wait(
        "every rule evaluated 3 times after the final scrape",
        STARTUP,
        || {
            let data = api.get("/api/v1/rules").expect("/api/v1/rules");
            let rules: Vec<Value> = data["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            rules
                .iter()
                .all(|r| {
                    r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| rfc3339_seconds(t) >= final_scrape + 2.5)
                })
                .then_some(rules)
        },
    );
    let loaded: BTreeMap<&str, &Value> = loaded
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r))
        .collect();
    assert_eq!(
        loaded.keys().copied().collect::<BTreeSet<_>>(),
        rules
            .iter()
            .map(|r| r.name.as_str())
            .collect::<BTreeSet<_>>(),
        "the rules Prometheus loaded differ from those read from prometheus/rules.yml"
    );
    assert_eq!(loaded.len(), rules.len(), "a rule name is used twice");
    for r in &rules {
        let l = loaded[r.name.as_str()];
        let kind = if r.alert { "alerting" } else { "recording" };
        assert_eq!(l["type"], kind, "{}", r.name);
        // Same expression: both normalised by Prometheus' own formatter.
        let ours = api
            .format(&r.expr)
            .unwrap_or_else(|e| format!("error: {e}"));
        let theirs = api.format(l["query"].as_str().unwrap()).unwrap();
        assert_eq!(
            ours, theirs,
            "{}: expression read differently from Prometheus",
            r.name
        );
        if l["health"] != "ok" || l["lastError"].as_str().is_some_and(|e| !e.is_empty()) {
            problems.push(format!(
                "rule {}: Prometheus reports health {} ({})",
                r.name, l["health"], l["lastError"]
            ));
        }
    }

    // Each documented metric is what a demo run makes of it.
    for (family, expect) in IN_A_DEMO {
        let histogram = documented[*family] == "histogram";
        let series = if histogram {
            format!("{family}_bucket")
        } else {
            family.to_string()
        };
        let n = api.query(&series).map(|s| s.len()).unwrap_or(0);
        match expect {
            InDemo::Moves | InDemo::Present if n == 0 => {
                problems.push(format!("{series}: not exported by the demo"))
            }
            InDemo::Zero(_) if n == 0 => problems.push(format!(
                "{series}: expected to exist at 0, not exported (a series must exist before its \
                 first increment, docs/METRICS.md)"
            )),
            InDemo::Zero(_) => {
                let value = if histogram {
                    format!("{family}_count")
                } else {
                    series.clone()
                };
                if api.scalar(&format!("sum({value})")) != Some(0.0) {
                    problems.push(format!("{value}: expected 0 in a file run"));
                }
            }
            InDemo::Absent(why) if n > 0 => problems.push(format!(
                "{series} is exported by the demo: drop it from the allow-list ({why})"
            )),
            _ => {}
        }
    }

    // The dashboard's pixel variable: its query has values, the busiest is the real one.
    let pixels = api
        .get(&format!(
            "/api/v1/label/pixel/values?{}={}",
            urlencode("match[]"),
            urlencode("onecount_events_received_total")
        ))
        .expect("label values");
    let busiest = api
        .query("topk(1, sum by (pixel) (onecount_conversions_total))")
        .unwrap();
    let pixel = busiest
        .first()
        .and_then(|s| s.labels.split('"').nth(1).map(str::to_string))
        .expect("no pixel with conversions");
    assert!(
        pixels
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == pixel.as_str()),
        "the $pixel variable's values {pixels} lack {pixel}"
    );

    let recorded: BTreeMap<String, String> = rules
        .iter()
        .filter(|r| !r.alert)
        .map(|r| (r.name.clone(), r.expr.clone()))
        .collect();
    let checker = Checker { api, recorded };
    problems.extend(self_check(&checker));

    // Every expression.
    let mut expressions: Vec<(String, String)> = rules
        .iter()
        .map(|r| {
            let kind = if r.alert { "alert" } else { "record" };
            (format!("rules.yml {kind} {}", r.name), r.expr.clone())
        })
        .collect();
    let mut dashboard_count = 0;
    for (origin, expr) in &targets {
        let mut variants = vec![("", substitute(expr, ".*"))];
        if expr.contains("pixel") && expr.contains('$') {
            variants = vec![
                (" [$pixel=All]", substitute(expr, ".*")),
                (" [$pixel=one]", substitute(expr, &pixel)),
            ];
        }
        for (suffix, e) in variants {
            // Grafana runs these as range queries: those must not fail either.
            if let Err(err) = api.query_range(&e, 120, 5) {
                problems.push(format!(
                    "dashboard {origin}{suffix}: range query returns an error: {err}\n    expr: {}",
                    normalise(&e)
                ));
            }
            expressions.push((format!("dashboard {origin}{suffix}"), e));
            dashboard_count += 1;
        }
    }
    for (origin, expr) in &expressions {
        let checked = checker.check(origin, expr);
        problems.extend(checked.problems);
        notes.extend(checked.notes);
        report.push(checked.line);
    }

    // Every recording rule's series, by name.
    for name in checker.recorded.keys() {
        match api.query(name) {
            Ok(s) if s.is_empty() => match checker.allowed_empty(name) {
                Some(why) => notes.push(format!("recorded {name}: none, allow-listed: {why}")),
                None => problems.push(format!("recording rule {name}: its series has no sample")),
            },
            Ok(s) => report.push(format!(
                "{:<62} recorded {:>5}",
                format!("record {name}"),
                s.len()
            )),
            Err(e) => problems.push(format!("recording rule {name}: {e}")),
        }
    }
    stack.prometheus.assert_running();
    stack.demo.assert_running();

    println!(
        "{} expressions: {} rules, {} dashboard queries (pixel {pixel}; {} actions)\n{}\nnotes:\n  {}",
        expressions.len(),
        rules.len(),
        dashboard_count,
        sizes[attempt],
        report.join("\n"),
        notes.join("\n  ")
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}\n\nnotes:\n  {}",
        problems.len(),
        problems.join("\n"),
        notes.join("\n  ")
    );
}
