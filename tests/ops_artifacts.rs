//! The operations artifacts hold together: the metrics contract (docs/METRICS.md), the Prometheus
//! rules and their unit tests (prometheus/), the Prometheus config, the generated Grafana
//! dashboard (grafana/, tools/dashboard/), docker-compose.yml and the Dockerfile.
//!
//! promtool comes from the Debian package `prometheus` (scripts/install-deps.sh): a missing
//! promtool fails these tests, it does not skip them. The dashboard check rebuilds the JSON with
//! tools/dashboard/build.sh (python3 and the pinned grafana-foundation-sdk from PyPI) and fails
//! if that fails. Docker is optional: `docker compose config` runs where the compose plugin is
//! installed; elsewhere the compose file is parsed with PyYAML where python3 has it, and checked
//! as text always.

mod common;

use common::promql::{indent, metric_names, parse_rules, Rule};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Runs a command from the repository root; panics (naming the command) if it cannot start.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} {}: {e}{}",
                args.join(" "),
                if program == "promtool" {
                    " (promtool is in the Debian package `prometheus`: scripts/install-deps.sh)"
                } else {
                    ""
                }
            )
        })
}

fn assert_success(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        tail(&stdout),
        tail(&stderr)
    );
    stdout
}

/// The last few thousand characters of a tool's output (pip lists every version it knows).
fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(4000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

// ------------------------------------------------------------------------------------------
// The contract, as docs/METRICS.md states it.

#[derive(Debug)]
struct Metric {
    kind: String,
    labels: Vec<String>,
}

/// The metrics table of docs/METRICS.md: name -> type and labels.
fn documented_metrics() -> BTreeMap<String, Metric> {
    let doc = read("docs/METRICS.md");
    let mut metrics = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `onecount_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "", name, type, labels, meaning, moves when, ""
        assert!(
            cells.len() >= 6,
            "metrics table row with too few cells: {line}"
        );
        let name = cells[1].trim_matches('`').to_string();
        let labels = if cells[3] == "none" {
            Vec::new()
        } else {
            cells[3]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_string())
                .collect()
        };
        let metric = Metric {
            kind: cells[2].to_string(),
            labels,
        };
        assert!(
            metrics.insert(name.clone(), metric).is_none(),
            "{name} is documented twice"
        );
    }
    assert!(
        metrics.len() >= 20,
        "docs/METRICS.md documents only {} metrics",
        metrics.len()
    );
    metrics
}

/// Every series name a documented metric exposes (histograms: _bucket, _sum, _count).
fn documented_series() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (name, metric) in documented_metrics() {
        if metric.kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name);
        }
    }
    names
}

#[test]
fn metrics_contract_follows_prometheus_naming_and_bounded_labels() {
    // The labels the contract allows: fixed lists or input values bounded as METRICS.md says.
    let bounded: BTreeSet<&str> = [
        "input", "outcome", "pixel", "event", "sources", "reason", "key", "kind", "currency",
        "topic", "version",
    ]
    .into();
    let doc = read("docs/METRICS.md");
    // First cells of the labels table ("| `pixel` |", "| `outcome`, `sources`, ... |").
    let label_rows: Vec<&str> = doc
        .lines()
        .skip_while(|l| !l.starts_with("### Labels"))
        .filter(|l| l.starts_with("| `"))
        .map(|l| l.split('|').nth(1).unwrap())
        .collect();
    for (name, metric) in documented_metrics() {
        assert!(name.starts_with("onecount_"), "{name}: not under onecount_");
        match metric.kind.as_str() {
            "counter" => assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            ),
            "gauge" | "histogram" => {
                assert!(
                    !name.ends_with("_total"),
                    "{} {name} must not end in _total",
                    metric.kind
                )
            }
            other => panic!("{name}: unknown type {other}"),
        }
        for unit in [
            "_milliseconds",
            "_ms",
            "_minutes",
            "_hours",
            "_kilobytes",
            "_megabytes",
        ] {
            assert!(!name.contains(unit), "{name}: not a base unit ({unit})");
        }
        for label in &metric.labels {
            assert!(
                bounded.contains(label.as_str()),
                "{name}: label {label} is not one of the bounded labels"
            );
            assert!(
                label_rows
                    .iter()
                    .any(|cell| cell.contains(&format!("`{label}`"))),
                "{name}: label {label} has no row in the labels table of docs/METRICS.md"
            );
        }
    }
    // The ones the service, the rules and the dashboard rely on.
    let metrics = documented_metrics();
    for name in [
        "onecount_input_records_total",
        "onecount_events_received_total",
        "onecount_conversions_total",
        "onecount_duplicates_total",
        "onecount_match_keys_total",
        "onecount_discrepancies_total",
        "onecount_consent_dropped_total",
        "onecount_dead_letters_total",
        "onecount_tracked_revenue",
        "onecount_backend_revenue",
        "onecount_revenue_drift_ratio",
        "onecount_state_keys",
        "onecount_state_bytes",
        "onecount_watermark_lag_seconds",
        "onecount_consumer_lag_records",
        "onecount_processing_latency_seconds",
        "onecount_restores_total",
        "onecount_restore_duration_seconds",
        "onecount_restored_records_total",
        "onecount_ready",
        "onecount_build_info",
    ] {
        assert!(
            metrics.contains_key(name),
            "docs/METRICS.md does not document {name}"
        );
    }
    // Every discrepancy kind, duplicate reason and dead-letter reason of the engine is listed.
    for value in [
        "missing_event_id",
        "missing_order_id",
        "duplicate_order_conversion",
        "invalid_currency",
        "value_parity",
        "currency_parity",
        "match_key_parity",
        "consent_violation",
        "consent_after_emit",
        "order_without_conversion",
        "conversion_without_order",
        "value_mismatch",
        "currency_mismatch",
        "same_source",
        "after_merge_window",
        "after_release",
        "duplicate_order",
        "empty",
        "too_large",
        "invalid_json",
        "invalid_shape",
        "missing_field",
        "invalid_time",
        "invalid_amount",
    ] {
        assert!(
            doc.contains(&format!("`{value}`")),
            "docs/METRICS.md does not list {value}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// prometheus/rules.yml, read as the plain YAML it is written in (no YAML crate here).

fn rules() -> Vec<Rule> {
    let rules = parse_rules(&read("prometheus/rules.yml"));
    assert!(rules.iter().any(|r| r.alert) && rules.iter().any(|r| !r.alert));
    for r in &rules {
        assert!(!r.expr.is_empty(), "rule {} has no expr", r.name);
    }
    rules
}

#[test]
fn rules_pass_promtool_check() {
    let out = run("promtool", &["check", "rules", "prometheus/rules.yml"]);
    let stdout = assert_success(&out, "promtool check rules prometheus/rules.yml");
    assert!(stdout.contains("SUCCESS"), "{stdout}");
}

#[test]
fn rules_pass_their_promtool_unit_tests() {
    let out = run("promtool", &["test", "rules", "prometheus/rules_test.yml"]);
    let stdout = assert_success(&out, "promtool test rules prometheus/rules_test.yml");
    assert!(stdout.contains("SUCCESS"), "{stdout}");
}

#[test]
fn prometheus_config_is_valid_and_scrapes_onecount_with_the_rules() {
    let out = run(
        "promtool",
        &["check", "config", "prometheus/prometheus.yml"],
    );
    let stdout = assert_success(&out, "promtool check config prometheus/prometheus.yml");
    assert!(stdout.contains("1 rule files found"), "{stdout}");
    let config = read("prometheus/prometheus.yml");
    assert!(
        config.contains("- rules.yml"),
        "prometheus.yml does not load rules.yml"
    );
    // OnecountDown selects up{job="onecount"}.
    assert!(
        config.contains("job_name: onecount"),
        "no onecount scrape job"
    );
}

#[test]
fn every_alert_has_severity_annotations_runbook_and_both_test_cases() {
    let doc = read("docs/METRICS.md");
    let headings: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let tests = read("prometheus/rules_test.yml");
    let (firing, silent) = alert_test_cases(&tests);

    let alerts: Vec<Rule> = rules().into_iter().filter(|r| r.alert).collect();
    assert!(alerts.len() >= 8, "only {} alerts", alerts.len());
    for a in &alerts {
        let severity = a.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{}: severity must be critical or warning, is {severity:?}",
            a.name
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                a.annotations.get(key).is_some_and(|v| !v.is_empty()),
                "{}: no {key} annotation",
                a.name
            );
        }
        let anchor = a.annotations["runbook_url"]
            .strip_prefix("docs/METRICS.md#")
            .unwrap_or_else(|| panic!("{}: runbook_url must point into docs/METRICS.md", a.name));
        assert!(
            headings.contains(anchor) && anchor == a.name.to_lowercase(),
            "{}: no runbook section '### {}' in docs/METRICS.md",
            a.name,
            a.name
        );
        assert!(
            doc.contains(&format!("| [{}](#{anchor}) |", a.name)),
            "{}: not in the alert table of docs/METRICS.md",
            a.name
        );
        assert!(
            firing.contains(&a.name),
            "{}: no rules_test.yml case where it fires",
            a.name
        );
        assert!(
            silent.contains(&a.name),
            "{}: no rules_test.yml case where it must not fire",
            a.name
        );
    }

    // Every recording rule is evaluated by a promql_expr_test.
    let expr_tests: Vec<&str> = tests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- expr:"))
        .collect();
    for r in rules().iter().filter(|r| !r.alert) {
        assert!(
            expr_tests.iter().any(|e| metric_names(e).contains(&r.name)),
            "recording rule {} has no promql_expr_test",
            r.name
        );
    }
}

/// Alert names with an `alert_rule_test` case expecting alerts, and with one expecting none.
fn alert_test_cases(tests: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut firing, mut silent) = (BTreeSet::new(), BTreeSet::new());
    let mut current: Option<String> = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts without alertname");
            if rest.trim() == "[]" {
                silent.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    (firing, silent)
}

// ------------------------------------------------------------------------------------------
// PromQL: which metric names an expression reads.

#[test]
fn promql_metric_name_extraction() {
    let names = metric_names(
        r#"sum by (pixel, key) (rate(onecount_match_keys_total{pixel=~"$pixel",key!="a b"}[$__rate_interval]))
           / on (pixel) group_left () (pixel:onecount_conversions:rate1h offset 1d > 0.5 * 1e6)
           and absent(up{job="onecount"}) or histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))"#,
    );
    let expected: BTreeSet<String> = [
        "onecount_match_keys_total",
        "pixel:onecount_conversions:rate1h",
        "up",
        "x_bucket",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, expected);
}

#[test]
fn rules_read_only_documented_metrics_and_recording_rules() {
    let rules = rules();
    let mut known = documented_series();
    known.insert("up".to_string()); // Prometheus' own, for OnecountDown
    known.extend(rules.iter().filter(|r| !r.alert).map(|r| r.name.clone()));
    for r in &rules {
        for name in metric_names(&r.expr) {
            assert!(
                known.contains(&name),
                "rule {}: {name} is not in docs/METRICS.md",
                r.name
            );
        }
    }
    // Every recording rule of the METRICS.md table exists, and the other way round.
    let doc = read("docs/METRICS.md");
    for r in rules.iter().filter(|r| !r.alert) {
        assert!(
            doc.contains(&format!("`{}`", r.name)),
            "{} is not documented",
            r.name
        );
    }
}

// ------------------------------------------------------------------------------------------
// The Grafana dashboard.

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("grafana/dashboards/onecount.json"))
        .expect("grafana/dashboards/onecount.json is not valid JSON")
}

#[test]
fn dashboard_has_the_expected_panels_and_queries_only_documented_metrics() {
    let board = dashboard();
    assert_eq!(board["uid"], "onecount");
    assert_eq!(board["title"], "onecount");
    let panels = board["panels"].as_array().expect("panels");

    let titles: BTreeSet<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for expected in [
        "Dedup",
        "Revenue",
        "Data quality",
        "Pipeline",
        "Dedup rate by pixel",
        "Pair rate by pixel",
        "Conversions by source",
        "Duplicates by reason",
        "Revenue per hour: tracked vs backend",
        "Revenue drift, last hour",
        "Revenue drift, latest closed hour",
        "Discrepancies by kind",
        "Match-key coverage",
        "Consent drops",
        "Consent violations",
        "Dead letters by reason",
        "Dead-letter share",
        "Ready instances",
        "Throughput by input",
        "Input records by outcome",
        "Consumer lag",
        "Watermark lag",
        "Processing latency",
        "State keys",
        "State size",
        "Restores",
        "Restore duration",
    ] {
        assert!(
            titles.contains(expected),
            "dashboard has no panel {expected:?}"
        );
    }

    let mut known = documented_series();
    known.extend(rules().into_iter().filter(|r| !r.alert).map(|r| r.name));
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title}: no id"));
        assert!(ids.insert(id), "panel id {id} used twice");
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {title} is wider than the grid");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {title}: datasource"
        );
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title}: no targets"));
        assert!(!targets.is_empty(), "panel {title}: no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title}: no expr"));
            let names = metric_names(expr);
            assert!(!names.is_empty(), "panel {title}: {expr} reads no metric");
            for name in names {
                assert!(
                    known.contains(&name),
                    "panel {title}: {name} is neither in docs/METRICS.md nor a recording rule"
                );
                used.insert(name);
            }
        }
    }
    // The template variables query documented metrics too.
    for v in board["templating"]["list"].as_array().expect("templating") {
        if v["type"] == "query" {
            let q = v["query"].as_str().expect("variable query");
            let metric = q
                .strip_prefix("label_values(")
                .and_then(|q| q.split(',').next())
                .unwrap_or_else(|| panic!("unexpected variable query {q}"));
            assert!(known.contains(metric), "variable query reads {metric}");
            used.insert(metric.to_string());
        }
    }
    // Every documented metric is on the dashboard, directly or through recording rules.
    let recorded: BTreeMap<String, String> = rules()
        .into_iter()
        .filter(|r| !r.alert)
        .map(|r| (r.name, r.expr))
        .collect();
    let mut pending: Vec<String> = used.iter().cloned().collect();
    while let Some(name) = pending.pop() {
        if let Some(expr) = recorded.get(&name) {
            for m in metric_names(expr) {
                if used.insert(m.clone()) {
                    pending.push(m);
                }
            }
        }
    }
    for (name, metric) in documented_metrics() {
        let shown = if metric.kind == "histogram" {
            used.contains(&format!("{name}_bucket"))
        } else {
            used.contains(&name)
        };
        assert!(shown, "{name} appears on no dashboard panel");
    }
}

#[test]
fn dashboard_json_is_what_the_generator_builds() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("onecount.json");
    let out = run(
        "bash",
        &["tools/dashboard/build.sh", fresh.to_str().unwrap()],
    );
    assert_success(&out, "tools/dashboard/build.sh (grafana-foundation-sdk)");
    let fresh = std::fs::read_to_string(&fresh).unwrap();
    let committed = read("grafana/dashboards/onecount.json");
    assert!(
        fresh == committed,
        "grafana/dashboards/onecount.json differs from the generator's output: \
         run tools/dashboard/build.sh and commit the result"
    );
}

#[test]
fn grafana_provisioning_points_at_prometheus_and_the_dashboard_folder() {
    let datasource = read("grafana/provisioning/datasources/prometheus.yml");
    assert!(datasource.contains("type: prometheus"));
    assert!(datasource.contains("url: http://prometheus:9090"));
    let provider = read("grafana/provisioning/dashboards/onecount.yml");
    let compose = read("docker-compose.yml");
    let path = provider
        .lines()
        .find_map(|l| l.trim().strip_prefix("path:"))
        .expect("dashboard provider has no path")
        .trim();
    assert!(
        compose.contains(&format!("./grafana/dashboards:{path}")),
        "docker-compose.yml does not mount grafana/dashboards at {path}"
    );
}

// ------------------------------------------------------------------------------------------
// docker-compose.yml and the Dockerfile.

/// `- ./path:/target[:ro]` bind mounts of the compose file.
fn bind_sources(compose: &str) -> Vec<String> {
    compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./"))
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect()
}

#[test]
fn compose_file_is_valid_and_references_existing_files() {
    let compose = read("docker-compose.yml");
    assert!(!compose.contains('\t'), "tabs in docker-compose.yml");

    // Text-level structure: top-level keys, the five services, their commands and files.
    for key in ["name:", "services:", "configs:", "volumes:"] {
        assert!(
            compose
                .lines()
                .any(|l| l == key || l.starts_with(&format!("{key} "))),
            "no top-level {key}"
        );
    }
    let services: BTreeSet<&str> = compose
        .lines()
        .skip_while(|l| *l != "services:")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' ') || l.starts_with('#'))
        .filter(|l| indent(l) == 2 && l.trim_end().ends_with(':'))
        .map(|l| l.trim().trim_end_matches(':'))
        .collect();
    let expected: BTreeSet<&str> =
        ["kafka", "onecount", "generator", "prometheus", "grafana"].into();
    assert_eq!(services, expected, "services of docker-compose.yml");
    assert!(
        compose.contains("image: apache/kafka:"),
        "Kafka must be the official apache/kafka image"
    );
    assert!(
        compose.contains("KAFKA_PROCESS_ROLES: broker,controller"),
        "Kafka must run in KRaft mode"
    );
    assert!(compose.contains(r#"command: ["run", "--config", "/etc/onecount/onecount.toml"]"#));
    assert!(compose.contains(r#"command: ["generate", "--kafka", "kafka:9092", "--config", "/etc/onecount/onecount.toml", "--actions", "100000"]"#));
    assert!(compose.contains("dockerfile: Dockerfile"));
    let sources = bind_sources(&compose);
    for wanted in ["prometheus", "grafana/provisioning", "grafana/dashboards"] {
        assert!(
            sources.iter().any(|s| s == wanted),
            "{wanted} is not mounted"
        );
    }
    for source in &sources {
        assert!(
            root().join(source).exists(),
            "docker-compose.yml mounts ./{source}, which does not exist"
        );
    }
    // Prometheus scrapes the port onecount listens on in the compose config.
    let prometheus = read("prometheus/prometheus.yml");
    assert!(
        compose.contains(r#"listen = "0.0.0.0:9464""#) && prometheus.contains(r#""onecount:9464""#)
    );

    // A real YAML parse, where python3 has PyYAML.
    if python_has_yaml() {
        let out = run(
            "python3",
            &["-c", "import json, sys, yaml; json.dump(yaml.safe_load(open('docker-compose.yml')), sys.stdout)"],
        );
        let json = assert_success(&out, "PyYAML parse of docker-compose.yml");
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        let parsed: BTreeSet<&str> = doc["services"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(parsed, expected);
        assert_eq!(doc["services"]["onecount"]["build"]["context"], ".");
        assert_eq!(doc["services"]["generator"]["command"][0], "generate");
        assert!(doc["configs"]["onecount-toml"]["content"]
            .as_str()
            .unwrap()
            .contains("[http]"));
        for (name, service) in doc["services"].as_object().unwrap() {
            assert!(service["image"].is_string(), "service {name} has no image");
            for v in service["volumes"].as_array().into_iter().flatten() {
                let v = v.as_str().unwrap();
                if let Some(src) = v.strip_prefix("./") {
                    let src = src.split(':').next().unwrap();
                    assert!(
                        root().join(src).exists(),
                        "{name} mounts ./{src}, which does not exist"
                    );
                }
            }
        }
    } else {
        eprintln!("python3 has no PyYAML: docker-compose.yml checked as text only");
    }

    // The compose plugin validates against the compose specification where it is installed.
    if docker_compose_available() {
        let out = run(
            "docker",
            &["compose", "-f", "docker-compose.yml", "config", "--quiet"],
        );
        assert_success(&out, "docker compose config");
    } else {
        eprintln!(
            "no `docker compose` here: docker-compose.yml not validated against the compose spec"
        );
    }
}

/// The onecount commands of docker-compose.yml get past their arguments: run here with the
/// config file swapped for one that does not exist, each fails on reading that file and not on
/// a flag (the generator once lacked a required one and would have restarted forever).
#[test]
fn compose_commands_are_accepted_by_onecount() {
    let compose = read("docker-compose.yml");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml").display().to_string();
    let commands: Vec<Vec<String>> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("command: "))
        .filter(|c| c.starts_with('['))
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    let names: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(
        names,
        ["run", "generate"],
        "onecount's commands in docker-compose.yml"
    );
    for command in &commands {
        let args: Vec<&str> = command
            .iter()
            .map(|a| match a.as_str() {
                "/etc/onecount/onecount.toml" => missing.as_str(),
                a => a,
            })
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_onecount"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(&format!("cannot read {missing}")),
            "{args:?} must fail on its missing config only: {stderr}"
        );
    }
}

fn python_has_yaml() -> bool {
    Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn docker_compose_available() -> bool {
    Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn dockerfile_is_a_multi_stage_build_to_debian_slim() {
    let dockerfile = read("Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(froms[0].starts_with("FROM rust:") && froms[0].ends_with(" AS build"));
    assert!(
        froms[1].contains("-slim"),
        "runtime must be debian slim: {}",
        froms[1]
    );
    for package in ["build-essential", "pkg-config", "zlib1g-dev"] {
        assert!(
            dockerfile.contains(package),
            "the build stage must install {package}"
        );
    }
    assert!(dockerfile.contains("cargo build --release --locked --bin onecount"));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["onecount"]"#));
    // The build context keeps what cargo needs and drops the large or irrelevant folders.
    let ignore = read(".dockerignore");
    for excluded in ["target", ".git", "tools/dashboard/.venv"] {
        assert!(
            ignore.lines().any(|l| l == excluded),
            ".dockerignore must exclude {excluded}"
        );
    }
    for needed in ["src", "benches", "Cargo.toml", "Cargo.lock"] {
        assert!(
            !ignore.lines().any(|l| l == needed),
            ".dockerignore must keep {needed}"
        );
        assert!(Path::new(&root().join(needed)).exists());
    }
}
