//! `onecount audit --kafka` against the real broker (`ONECOUNT_TEST_KAFKA`, set by
//! scripts/test.sh): a replay's output files produced to the four output topics audit exactly
//! as the directory does in every check that does not need stats.json; `--from`/`--to` select
//! records by their Kafka timestamps; the command exits 0/1 as the directory audit does, and 2
//! naming topic, partition and offset for a record that does not parse.

mod support_kafka;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onecount::audit::checks::{self, CHECK_IDS};
use onecount::audit::kafka::{audit_kafka, TimeRange, Timestamp};
use onecount::audit::{self, source, AuditOptions, OutputRecord, Report};
use onecount::config::Config;
use onecount::generate::{generate_to_dir, GenerateOptions};
use onecount::kafka::client::producer_config;
use onecount::replay::{replay, ReplayInputs};
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::Value;
use support_kafka::{create_topic, kafka_config, random_name};

/// The metrics that come from stats.json (`null` without it), by check.
const STATS_METRICS: [(&str, &str); 5] = [
    (checks::DEDUP_RATES, "dedup_rate"),
    (checks::DEDUP_RATES, "duplicates"),
    (checks::CONSENT, "consent_dropped_copies"),
    (checks::DEAD_LETTERS, "input_records"),
    (checks::DEAD_LETTERS, "share"),
];

/// Checks whose status may depend on stats.json: `outputs_complete` is about it, and the dedup
/// rate and dead-letter share are graded only with it.
const STATS_GRADED: [&str; 3] = [
    checks::OUTPUTS_COMPLETE,
    checks::DEDUP_RATES,
    checks::DEAD_LETTERS,
];

/// The output files, in `[topics]` order (conversions, discrepancies, dead letters, windows).
const FILES: [&str; 4] = [
    source::CONVERSIONS,
    source::DISCREPANCIES,
    source::DEAD_LETTERS,
    source::REVENUE_WINDOWS,
];

/// Generates `actions` actions and replays them into `dir/output`.
fn generated_run(dir: &Path, actions: u64, seed: u64) -> PathBuf {
    let input = dir.join("input");
    let out = dir.join("output");
    generate_to_dir(
        &GenerateOptions {
            actions,
            seed,
            ..GenerateOptions::default()
        },
        &input,
    )
    .expect("generate");
    replay(
        &Config::default(),
        &ReplayInputs::in_dir(&input),
        &out,
        None,
    )
    .expect("replay");
    out
}

/// A config naming four new output topics of `partitions` partitions on the test broker.
fn output_topics(prefix: &str, partitions: i32) -> Config {
    let mut config = Config {
        kafka: kafka_config(),
        ..Config::default()
    };
    let t = &mut config.topics;
    t.conversions = random_name(&format!("{prefix}-conversions"));
    t.discrepancies = random_name(&format!("{prefix}-discrepancies"));
    t.dead_letters = random_name(&format!("{prefix}-dead-letters"));
    t.revenue_windows = random_name(&format!("{prefix}-revenue-windows"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (_, name) in config.topics.outputs() {
        runtime.block_on(create_topic(name, partitions));
    }
    config
}

fn topic(config: &Config, i: usize) -> &str {
    config.topics.outputs()[i].1
}

/// One record to produce: its key and value.
type Line = (Option<String>, String);

/// The lines of an output file, keyed by the record's `key` field where it has one (as the
/// service keys them; dead letters have none).
fn file_lines(dir: &Path, name: &str) -> Vec<Line> {
    std::fs::read_to_string(dir.join(name))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["key"].as_str().map(str::to_string), l.to_string())
        })
        .collect()
}

/// Delivery reports: how many records the broker acknowledged and how many failed.
#[derive(Default)]
struct Acks {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Produces `lines` to `topic` with the Kafka timestamp `timestamp_ms` (else the producer's
/// clock), and waits until every one is acknowledged.
fn produce(config: &Config, topic: &str, lines: &[Line], timestamp_ms: Option<i64>) {
    let producer: BaseProducer<Acks> = producer_config(&config.kafka)
        .create_with_context(Acks::default())
        .expect("a producer");
    for (key, value) in lines {
        let mut record = BaseRecord::to(topic).payload(value.as_str());
        if let Some(key) = key {
            record = record.key(key.as_str());
        }
        if let Some(ts) = timestamp_ms {
            record = record.timestamp(ts);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("flushing {topic}: {e}"));
    let acks = producer.context();
    assert_eq!(acks.failed.load(Ordering::Relaxed), 0, "{topic}: failed");
    assert_eq!(
        acks.delivered.load(Ordering::Relaxed),
        lines.len() as u64,
        "{topic}: acknowledged"
    );
}

/// Produces every output file of `dir` to its topic.
fn produce_dir(config: &Config, dir: &Path) {
    for (i, file) in FILES.iter().enumerate() {
        produce(config, topic(config, i), &file_lines(dir, file), None);
    }
}

fn json(report: &Report) -> Value {
    serde_json::from_str(&report.to_json()).unwrap()
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}"))
}

fn dir_records(dir: &Path) -> Vec<OutputRecord> {
    source::DirRecords::open(dir)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn audit_from_kafka_equals_the_directory_audit_in_every_check_not_needing_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = generated_run(tmp.path(), 2_000, 5);
    let config = output_topics("audit-equal", 3);
    produce_dir(&config, &dir);
    let options = AuditOptions::default();

    let from_kafka = audit_kafka(&config, TimeRange::default(), &options).expect("audit");
    let kafka = json(&from_kafka);
    assert!(
        from_kafka.source.starts_with(&format!(
            "kafka:{} {} ",
            config.kafka.brokers, config.topics.conversions
        )),
        "{}",
        from_kafka.source
    );
    assert!(from_kafka.source.ends_with(" [beginning..end]"));

    // The revenue windows include re-emitted versions, so "latest version counts" is exercised.
    let windows = file_lines(&dir, source::REVENUE_WINDOWS);
    let keys: std::collections::BTreeSet<_> = windows.iter().map(|(k, _)| k.clone()).collect();
    assert!(keys.len() < windows.len(), "no re-emitted window to test");
    assert_eq!(from_kafka.records.revenue_windows, windows.len() as u64);
    assert!(from_kafka.records.dead_letters > 0 && from_kafka.records.discrepancies > 0);

    // The same records without stats audit identically, apart from the source label.
    let mut without_stats = json(&audit::audit("dir", dir_records(&dir), None, &options));
    let mut k = kafka.clone();
    k["source"] = Value::Null;
    without_stats["source"] = Value::Null;
    assert_eq!(k, without_stats);

    // Against the directory audit with stats.json: every check's metrics but the ones taken
    // from stats, and every status that stats cannot change, are equal.
    let with_stats = json(&audit::audit_dir(&dir, &options).expect("dir audit"));
    for id in CHECK_IDS {
        if id == checks::OUTPUTS_COMPLETE {
            assert_eq!(check(&kafka, id)["status"], "warn", "without stats.json");
            continue;
        }
        let (a, b) = (check(&kafka, id), check(&with_stats, id));
        if !STATS_GRADED.contains(&id) {
            assert_eq!(a["status"], b["status"], "{id}: status");
        }
        let mut am = a["metrics"].as_object().unwrap().clone();
        let mut bm = b["metrics"].as_object().unwrap().clone();
        for (_, name) in STATS_METRICS.iter().filter(|(c, _)| *c == id) {
            assert_eq!(
                am.remove(*name),
                Some(Value::Null),
                "{id}.{name} from Kafka"
            );
            assert!(bm.remove(*name).is_some(), "{id}.{name} from the directory");
        }
        assert_eq!(am, bm, "{id}: metrics");
    }
    for part in [
        "time_range",
        "records",
        "conversions_by_sources",
        "conversions_by_pixel",
        "discrepancies_by_kind",
        "revenue_by_currency",
        "revenue_by_pixel",
        "drift_by_hour",
    ] {
        assert_eq!(kafka[part], with_stats[part], "{part}");
    }
}

/// Now, to the second, minus `hours`, in Unix milliseconds (inside the broker's default
/// retention, and not in the future it refuses).
fn hours_ago(hours: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now - hours * 3600) * 1000
}

fn counts(report: &Report) -> [u64; 4] {
    let r = &report.records;
    [
        r.conversions,
        r.discrepancies,
        r.dead_letters,
        r.revenue_windows,
    ]
}

#[test]
fn from_and_to_select_the_records_whose_kafka_timestamps_are_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = generated_run(tmp.path(), 1_500, 9);
    let config = output_topics("audit-range", 2);
    // Two batches an hour apart, the first written first (timestamps rise with offsets).
    let first = [30, 5, 3, 4];
    let second = [20, 7, 2, 6];
    let t0 = hours_ago(3);
    let t1 = t0 + 3_600_000;
    for (i, file) in FILES.iter().enumerate() {
        let lines = file_lines(&dir, file);
        assert!(lines.len() >= first[i] + second[i], "{file}: too few lines");
        produce(&config, topic(&config, i), &lines[..first[i]], Some(t0));
        produce(
            &config,
            topic(&config, i),
            &lines[first[i]..first[i] + second[i]],
            Some(t1),
        );
    }
    let audit = |from: Option<i64>, to: Option<i64>| {
        let range = TimeRange {
            from: from.map(Timestamp),
            to: to.map(Timestamp),
        };
        counts(&audit_kafka(&config, range, &AuditOptions::default()).expect("audit"))
    };
    let both = [50, 12, 5, 10];
    let none = [0; 4];
    let half_hour = 1_800_000;
    assert_eq!(audit(None, None), both);
    assert_eq!(audit(Some(t0 + half_hour), None), second.map(|n| n as u64));
    assert_eq!(audit(None, Some(t0 + half_hour)), first.map(|n| n as u64));
    // `from` is inclusive, `to` exclusive.
    assert_eq!(audit(Some(t0), Some(t1)), first.map(|n| n as u64));
    assert_eq!(audit(Some(t1), None), second.map(|n| n as u64));
    assert_eq!(audit(Some(t0), Some(t1 + 1)), both);
    // Nothing that late, nothing that early.
    assert_eq!(audit(Some(t1 + 1), None), none);
    assert_eq!(audit(None, Some(t0)), none);

    // The command line takes RFC 3339 and Unix seconds.
    let toml = write_config(tmp.path(), &config);
    let from = time::OffsetDateTime::from_unix_timestamp(t0 / 1000 + 1800)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let to = (t1 / 1000 + 1).to_string();
    let run = onecount(&[
        "audit", "--kafka", "--config", &toml, "--from", &from, "--to", &to, "--format", "json",
    ]);
    assert_ne!(run.status.code(), Some(2), "{}", text(&run.stderr));
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["records"]["conversions"], 20);
    assert_eq!(report["records"]["revenue_windows"], 6);
    assert!(
        report["source"].as_str().unwrap().ends_with(&format!(
            "[{from}..{}]",
            time::OffsetDateTime::from_unix_timestamp(t1 / 1000 + 1)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        )),
        "{}",
        report["source"]
    );
}

fn write_config(dir: &Path, config: &Config) -> String {
    let t = &config.topics;
    let path = dir.join(format!("{}.toml", random_name("onecount")));
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\n\n[topics]\nconversions = \"{}\"\ndiscrepancies = \"{}\"\ndead_letters = \"{}\"\nrevenue_windows = \"{}\"\n",
            config.kafka.brokers,
            config.kafka.group_id,
            t.conversions,
            t.discrepancies,
            t.dead_letters,
            t.revenue_windows
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Runs the binary without any ONECOUNT_* variable of the test's environment.
fn onecount(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onecount"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("ONECOUNT_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run onecount")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn audit_kafka_exits_like_the_directory_audit_and_2_naming_a_bad_records_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = generated_run(tmp.path(), 1_000, 3);
    let dir_arg = dir.display().to_string();

    // A whole run: whatever the directory audit exits with (its failures here come from the
    // generated faults, none from stats), the Kafka audit does too.
    let config = output_topics("audit-cli", 2);
    produce_dir(&config, &dir);
    let toml = write_config(tmp.path(), &config);
    let by_dir = onecount(&["audit", "--dir", &dir_arg]);
    let by_kafka = onecount(&["audit", "--kafka", "--config", &toml]);
    assert_eq!(by_dir.status.code(), Some(1), "{}", text(&by_dir.stdout));
    assert_eq!(
        by_kafka.status.code(),
        by_dir.status.code(),
        "{}{}",
        text(&by_kafka.stdout),
        text(&by_kafka.stderr)
    );
    let out = tmp.path().join("report.html");
    let to_file = onecount(&[
        "audit",
        "--kafka",
        "--config",
        &toml,
        "--format",
        "html",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(to_file.status.code(), Some(1));
    assert!(text(&to_file.stdout).contains("report written to"));
    assert!(std::fs::read_to_string(&out).unwrap().contains("<svg"));

    // Conversions alone grade no FAIL: exit 0, as the same records audited in-process.
    let conversions_only = output_topics("audit-cli-pass", 1);
    produce(
        &conversions_only,
        topic(&conversions_only, 0),
        &file_lines(&dir, source::CONVERSIONS),
        None,
    );
    let records: Vec<OutputRecord> = dir_records(&dir)
        .into_iter()
        .filter(|r| matches!(r, OutputRecord::Conversion(_)))
        .collect();
    let in_process = audit::audit("conversions", records, None, &AuditOptions::default());
    assert!(!in_process.failed(), "{}", in_process.to_text());
    let toml = write_config(tmp.path(), &conversions_only);
    let run = onecount(&["audit", "--kafka", "--config", &toml]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stdout));

    // A record that does not parse stops the audit, named by topic, partition and offset.
    let topic_name = topic(&conversions_only, 0).to_string();
    produce(
        &conversions_only,
        &topic_name,
        &[(None, "{\"not\": \"a conversion\"}".into())],
        None,
    );
    let bad_offset = file_lines(&dir, source::CONVERSIONS).len();
    let run = onecount(&["audit", "--kafka", "--config", &toml]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains(&format!(
            "{topic_name} partition 0 offset {bad_offset} is not a valid conversion record"
        )),
        "{stderr}"
    );

    // An empty range is refused before any read.
    let run = onecount(&[
        "audit", "--kafka", "--config", &toml, "--from", "2000", "--to", "1000",
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains("is not before --to"),
        "{}",
        text(&run.stderr)
    );

    // A topic that does not exist is named.
    let mut missing = conversions_only.clone();
    missing.topics.discrepancies = random_name("audit-missing");
    let toml = write_config(tmp.path(), &missing);
    let run = onecount(&["audit", "--kafka", "--config", &toml]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains(&missing.topics.discrepancies),
        "{}",
        text(&run.stderr)
    );
}

#[test]
fn a_partition_ending_in_a_transaction_marker_is_read_to_its_end_without_waiting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = generated_run(tmp.path(), 300, 13);
    let config = output_topics("audit-txn", 1);
    let lines = file_lines(&dir, source::CONVERSIONS);
    // The last offset of the partition is the commit marker, which no consumer is handed.
    let producer: BaseProducer<Acks> = producer_config(&config.kafka)
        .set("transactional.id", random_name("onecount-test-txn"))
        .create_with_context(Acks::default())
        .expect("a transactional producer");
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout).expect("init");
    producer.begin_transaction().expect("begin");
    for (key, value) in &lines {
        let record = BaseRecord::to(topic(&config, 0))
            .key(key.as_deref().unwrap())
            .payload(value.as_str());
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.commit_transaction(timeout).expect("commit");
    assert_eq!(
        producer.context().delivered.load(Ordering::Relaxed),
        lines.len() as u64
    );

    let started = std::time::Instant::now();
    let report =
        audit_kafka(&config, TimeRange::default(), &AuditOptions::default()).expect("audit");
    assert_eq!(report.records.conversions, lines.len() as u64);
    assert!(
        started.elapsed() < onecount::audit::kafka::STALL_TIMEOUT / 2,
        "took {:?}",
        started.elapsed()
    );
}
