//! `onecount generate --kafka` against the real broker (`ONECOUNT_TEST_KAFKA`, set by
//! scripts/test.sh): the topics hold exactly what the generator writes to files for the same
//! seed, keyed as specified; `check-config` names a bad field and applies the environment;
//! topics are created with the configured partitions.

mod support_kafka;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use onecount::config::{Config, TopicsConfig};
use onecount::generate::{generate, generate_to_dir, GenerateOptions, Line, Truth, VecSink};
use onecount::kafka::publish::{generate_to_kafka, PublishOptions};
use support_kafka::{bootstrap, consume_all, create_topic, partition_count, random_name, Record};

fn topics_named(prefix: &str, partitions: u32) -> TopicsConfig {
    TopicsConfig {
        browser: random_name(&format!("{prefix}-browser")),
        server: random_name(&format!("{prefix}-server")),
        orders: random_name(&format!("{prefix}-orders")),
        partitions,
        ..TopicsConfig::default()
    }
}

/// The lines of a generated file (`null` is a tombstone).
fn file_lines(dir: &Path, name: &str) -> Vec<Option<String>> {
    std::fs::read_to_string(dir.join(name))
        .unwrap()
        .lines()
        .map(|l| (l != "null").then(|| l.to_string()))
        .collect()
}

/// `got` (one topic, read back whole) holds exactly `want` (the generator's lines for it): the
/// same (key, value) records as many times each, every key on one partition, and each
/// partition in the generator's order.
fn assert_topic_holds(topic: &str, got: &[Record], want: &[Line]) {
    assert_eq!(got.len(), want.len(), "{topic}: record count");
    let mut counts: BTreeMap<(Option<&str>, Option<&str>), i64> = BTreeMap::new();
    for l in want {
        *counts
            .entry((l.key.as_deref(), l.value.as_deref()))
            .or_default() += 1;
    }
    for r in got {
        *counts
            .entry((r.key.as_deref(), r.value.as_deref()))
            .or_default() -= 1;
    }
    let short = |s: Option<&str>| s.map(|s| s.chars().take(100).collect::<String>());
    let off: Vec<_> = counts
        .iter()
        .filter(|(_, n)| **n != 0)
        .take(3)
        .map(|((k, v), n)| (short(*k), short(*v), n))
        .collect();
    assert!(
        off.is_empty(),
        "{topic}: records differ (key, value, want - got), e.g. {off:?}"
    );

    let mut key_partition: BTreeMap<&str, i32> = BTreeMap::new();
    for r in got {
        if let Some(k) = r.key.as_deref() {
            let p = *key_partition.entry(k).or_insert(r.partition);
            assert_eq!(p, r.partition, "{topic}: key {k} on two partitions");
        }
    }
    // Each partition, in offset order, is a subsequence of the generator's order.
    let mut by_partition: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
    for r in got {
        by_partition.entry(r.partition).or_default().push(r);
    }
    for (p, records) in by_partition {
        let mut want_iter = want.iter();
        for (i, r) in records.iter().enumerate() {
            let found = want_iter.any(|l| l.key == r.key && l.value == r.value);
            assert!(
                found,
                "{topic} [{p}]: record {i} (offset {}) is out of the generator's order",
                r.offset
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_kafka_publishes_exactly_the_generated_lines_with_their_keys() {
    let gen = GenerateOptions {
        actions: 2_000,
        seed: 7,
        ..GenerateOptions::default()
    };
    let mut config = Config::default();
    config.kafka.brokers = bootstrap();
    config.topics = topics_named("gen", 3);
    // A tiny librdkafka queue under a larger in-flight cap: QueueFull must happen and be
    // absorbed as backpressure.
    config
        .kafka
        .properties
        .insert("queue.buffering.max.messages", "200");
    let opts = PublishOptions {
        max_in_flight: 1_000,
        ..PublishOptions::default()
    };

    let (truth, report, status) = generate_to_kafka(&config, &gen, opts).await.unwrap();

    for s in &status {
        assert!(s.created, "{s:?}");
        assert_eq!(s.partitions, 3, "{s:?}");
    }
    assert!(report.queue_full_waits > 0, "{report:?}");

    // The same seed, in memory (with keys) and to files (as replay reads them).
    let mut lines = VecSink::default();
    let truth_again = generate(&gen, &mut lines).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let truth_files = generate_to_dir(&gen, dir.path()).unwrap();
    assert_eq!(truth, truth_again);
    assert_eq!(truth, truth_files);
    let on_disk: Truth =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("truth.json")).unwrap())
            .unwrap();
    assert_eq!(truth, on_disk);

    let t = &config.topics;
    for (topic, want, file) in [
        (&t.browser, &lines.browser, "browser.jsonl"),
        (&t.server, &lines.server, "server.jsonl"),
        (&t.orders, &lines.orders, "orders.jsonl"),
    ] {
        let values: Vec<Option<String>> = want.iter().map(|l| l.value.clone()).collect();
        assert!(
            values == file_lines(dir.path(), file),
            "{file} differs from VecSink"
        );
        let got = consume_all(topic);
        assert_topic_holds(topic, &got, want);
    }

    // Keys as specified: browser by event_id, server bodies unkeyed, orders by order id.
    let r = &report.records;
    assert_eq!(r.browser, lines.browser.len() as u64);
    assert_eq!(r.server, lines.server.len() as u64);
    assert_eq!(r.orders, lines.orders.len() as u64);
    assert_eq!(truth.input_records.browser, r.browser);
    assert_eq!(truth.input_records.orders, r.orders);
    assert!(
        truth.input_records.server > r.server,
        "server bodies batch events: {} events in {} bodies",
        truth.input_records.server,
        r.server
    );
    for l in &lines.browser {
        if let (Some(key), Some(value)) = (&l.key, &l.value) {
            assert!(
                value.contains(&format!("\"event_id\":\"{key}\""))
                    || value.contains(&format!("\"event_id\":{key}")),
                "browser key {key} is not the event_id of {value}"
            );
        }
    }
    assert!(lines.browser.iter().filter(|l| l.key.is_some()).count() > lines.browser.len() / 2);
    assert!(lines.server.iter().all(|l| l.key.is_none()));
    let tombstones = lines.orders.iter().filter(|l| l.value.is_none()).count() as u64;
    assert!(tombstones > 0, "the generator writes tombstones");
    assert_eq!(r.tombstones, tombstones);
    assert!(lines
        .orders
        .iter()
        .filter(|l| l.value.is_none())
        .all(|l| l.key.is_some()));
}

#[tokio::test]
async fn a_topic_created_with_three_partitions_has_three() {
    let name = random_name("three");
    let status = create_topic(&name, 3).await;
    assert!(status.created);
    assert_eq!(status.partitions, 3);
    assert_eq!(partition_count(&name), 3);
    // Existing: left as it is, reported with its real partition count.
    let again = create_topic(&name, 5).await;
    assert!(!again.created);
    assert_eq!(again.partitions, 3);
    assert!(consume_all(&name).is_empty());
}

fn onecount(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onecount"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("ONECOUNT_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_config_names_the_bad_field_and_the_environment_applies_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("onecount.toml");
    let file_arg = file.to_str().unwrap();

    // A bad value in the file: non-zero, naming the field.
    std::fs::write(&file, "[topics]\npartitions = 0\n").unwrap();
    let out = onecount(&["check-config", file_arg], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("topics.partitions"),
        "{}",
        text(&out.stderr)
    );

    // A librdkafka property it does not know: named.
    std::fs::write(&file, "[kafka.properties]\n\"linger.msec\" = 5\n").unwrap();
    let out = onecount(&["check-config", file_arg], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("linger.msec"),
        "{}",
        text(&out.stderr)
    );

    // A good file, a bad value from the environment: named with its variable.
    std::fs::write(
        &file,
        "[kafka.properties]\n\"sasl.username\" = \"svc\"\n\"sasl.password\" = \"hunter2\"\n",
    )
    .unwrap();
    let out = onecount(
        &["check-config", file_arg],
        &[("ONECOUNT_ENGINE_TTL", "48")],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("engine.ttl") && err.contains("ONECOUNT_ENGINE_TTL"),
        "{err}"
    );

    // Overrides apply and show; the secret does not.
    let out = onecount(
        &["check-config", file_arg],
        &[
            ("ONECOUNT_TOPICS_BROWSER", "from.env"),
            ("ONECOUNT_KAFKA_PROPERTY_SASL_MECHANISM", "SCRAM-SHA-256"),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", text(&out.stderr));
    assert!(stdout.contains("browser = \"from.env\""), "{stdout}");
    assert!(
        stdout.contains("\"sasl.mechanism\" = \"SCRAM-SHA-256\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("topics.browser"),
        "lists what the environment set: {stdout}"
    );
    assert!(!stdout.contains("hunter2") && !text(&out.stderr).contains("hunter2"));

    // generate --kafka with the topic names from the environment and the brokers from the flag.
    std::fs::write(
        &file,
        "[kafka]\nbrokers = \"127.0.0.1:1\"\n[topics]\npartitions = 2\n",
    )
    .unwrap();
    let topics = topics_named("cli", 2);
    let truth_file = dir.path().join("truth.json");
    let out = onecount(
        &[
            "generate",
            "--kafka",
            &bootstrap(),
            "--config",
            file_arg,
            "--actions",
            "300",
            "--seed",
            "11",
            "--truth",
            truth_file.to_str().unwrap(),
        ],
        &[
            ("ONECOUNT_TOPICS_BROWSER", &topics.browser),
            ("ONECOUNT_TOPICS_SERVER", &topics.server),
            ("ONECOUNT_TOPICS_ORDERS", &topics.orders),
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    let files = dir.path().join("files");
    let out = onecount(
        &[
            "generate",
            "--actions",
            "300",
            "--seed",
            "11",
            "--out",
            files.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&truth_file).unwrap(),
        std::fs::read_to_string(files.join("truth.json")).unwrap()
    );
    for (topic, file) in [
        (&topics.browser, "browser.jsonl"),
        (&topics.server, "server.jsonl"),
        (&topics.orders, "orders.jsonl"),
    ] {
        assert_eq!(partition_count(topic), 2, "{topic}");
        let mut got: Vec<Option<String>> =
            consume_all(topic).into_iter().map(|r| r.value).collect();
        let mut want = file_lines(&files, file);
        assert_eq!(got.len(), want.len(), "{topic} vs {file}: record count");
        got.sort();
        want.sort();
        let first_difference = got.iter().zip(&want).position(|(g, w)| g != w);
        assert_eq!(first_difference, None, "{topic} vs {file}: records differ");
    }
}
