//! The metrics a replay exports agree with its accounting, over the real HTTP endpoint.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use onecount::config::Config;
use onecount::engine::stats::Outcome;
use onecount::generate::{generate_to_dir, GenerateOptions};
use onecount::http::HttpServer;
use onecount::metrics::Metrics;
use onecount::model::Input;
use onecount::replay::{replay, ReplayInputs};

fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// Sum of a family's samples whose labels contain every `filter` pair.
fn sum(exposition: &str, family: &str, filter: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (name_labels, ""),
            };
            (name == family
                && filter
                    .iter()
                    .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

#[test]
fn replay_metrics_match_its_stats_and_serve_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    generate_to_dir(
        &GenerateOptions {
            actions: 20_000,
            seed: 9,
            ..GenerateOptions::default()
        },
        &input,
    )
    .unwrap();
    let mut metrics = Metrics::new(100, &[]);
    let ready = Arc::new(AtomicBool::new(false));
    let server =
        HttpServer::start("127.0.0.1:0", metrics.registry().clone(), ready.clone()).unwrap();
    assert!(
        get(server.addr(), "/readyz").0.contains("503"),
        "not ready before it runs"
    );
    ready.store(true, std::sync::atomic::Ordering::Relaxed);

    let stats = replay(
        &Config::default(),
        &ReplayInputs::in_dir(&input),
        &dir.path().join("out"),
        Some(&mut metrics),
    )
    .unwrap();

    let (status, body) = get(server.addr(), "/metrics");
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        sum(&body, "onecount_input_records_total", &[]),
        stats.input_records.total as f64
    );
    assert_eq!(
        sum(
            &body,
            "onecount_input_records_total",
            &[("input", "orders")]
        ),
        stats.input_records.orders as f64
    );
    assert_eq!(
        sum(
            &body,
            "onecount_input_records_total",
            &[("outcome", "duplicate")]
        ),
        stats.duplicates as f64
    );
    assert_eq!(
        sum(&body, "onecount_conversions_total", &[]),
        stats.conversions as f64
    );
    assert_eq!(
        sum(&body, "onecount_conversions_total", &[("sources", "both")]),
        stats.merged as f64
    );
    assert_eq!(
        sum(&body, "onecount_duplicates_total", &[]),
        stats.duplicates as f64
    );
    assert_eq!(
        sum(&body, "onecount_consent_dropped_total", &[]),
        stats.consent_dropped as f64
    );
    assert_eq!(
        sum(&body, "onecount_dead_letters_total", &[]),
        stats.dead_letters as f64
    );
    let dead = |input: Input| stats.outcomes.get(input, Outcome::DeadLetter).unwrap_or(0);
    assert_eq!(
        sum(&body, "onecount_events_received_total", &[]),
        (stats.input_records.browser + stats.input_records.server
            - dead(Input::Browser)
            - dead(Input::Server)) as f64,
        "every parsed browser or server copy is received once"
    );
    for (kind, n) in &stats.discrepancies {
        assert_eq!(
            sum(&body, "onecount_discrepancies_total", &[("kind", kind)]),
            *n as f64,
            "{kind}"
        );
    }
    let tracked: f64 = stats.tracked_revenue.values().map(|m| m.to_f64()).sum();
    assert!((sum(&body, "onecount_tracked_revenue", &[]) - tracked).abs() < 1e-3);
    assert!(
        sum(&body, "onecount_revenue_drift_ratio", &[]) != 0.0,
        "windows set the drift"
    );
    assert!(sum(&body, "onecount_state_keys", &[("kind", "closed_keys")]) > 0.0);
    assert!(body.contains("onecount_build_info{version=\""));
    // No label carries an event id or an order id.
    assert!(!body.contains("evt_") && !body.contains("order_id="));

    assert_eq!(get(server.addr(), "/healthz").0, "HTTP/1.1 200 OK");
    assert!(get(server.addr(), "/readyz").0.contains("200"));
    assert!(get(server.addr(), "/nope").0.contains("404"));
}

#[test]
fn pixel_labels_are_capped_and_validated() {
    let mut labels = onecount::metrics::PixelLabels::new(2, &["CONFIGURED".to_string()]);
    assert_eq!(labels.label("CONFIGURED").0, "CONFIGURED");
    assert_eq!(labels.label("P1"), ("P1".to_string(), true));
    assert_eq!(labels.label("P1"), ("P1".to_string(), false));
    assert_eq!(
        labels.label("P2").0,
        "other",
        "cap of 2 reached (configured one counts)"
    );
    assert_eq!(labels.label("bad code with spaces").0, "other");
    assert_eq!(labels.label(&"x".repeat(65)).0, "other");
    assert_eq!(labels.label("unattributed").0, "unattributed");
    assert_eq!(onecount::metrics::currency_label("USD"), "USD");
    assert_eq!(onecount::metrics::currency_label("XYZ"), "other");
}
