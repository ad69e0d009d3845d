//! Broker test harness: the test broker's address, unique names, topic creation, and reading a
//! topic back whole.
//!
//! Owns: what every `tests/kafka_*.rs` needs to talk to the real broker that `scripts/test.sh`
//! starts. Broker tests never skip: without `ONECOUNT_TEST_KAFKA` they panic, saying how to
//! start one. Must not: depend on the broker's clock, on `ListOffsets(latest)` alone (tansu 0.6
//! answers it wrongly: see [`consume_all`]), or on records arriving in any order across
//! partitions: a topic is read partition by partition up to its high watermark.
#![allow(dead_code)] // each test file uses its own part of the harness

pub mod proxy;
pub mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use onecount::config::KafkaConfig;
use onecount::kafka::admin::{ensure_topics, TopicSpec, TopicStatus};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The variable `scripts/test.sh` sets to the broker's `host:port`.
pub const BROKER_VAR: &str = "ONECOUNT_TEST_KAFKA";

/// How long reading a topic back may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The test broker's bootstrap address. Panics when it is not set: broker tests never skip.
pub fn bootstrap() -> String {
    match std::env::var(BROKER_VAR) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => panic!(
            "{BROKER_VAR} is not set: broker tests need a running Kafka and never skip. Run \
             scripts/test.sh (it starts one), or start one yourself: \
             export {BROKER_VAR}=$(scripts/kafka-broker.sh start)"
        ),
    }
}

/// A `[kafka]` table for the test broker, with a unique group id.
pub fn kafka_config() -> KafkaConfig {
    KafkaConfig {
        brokers: bootstrap(),
        group_id: random_name("onecount-test-group"),
        ..KafkaConfig::default()
    }
}

/// `prefix` plus a suffix unique across processes and calls: topic and group names of one test
/// never meet another's, even on a broker that outlives the run.
pub fn random_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}

/// Creates `name` with `partitions` partitions (the broker's default replication) if missing,
/// and waits until it can be used.
pub async fn create_topic(name: &str, partitions: i32) -> TopicStatus {
    let spec = TopicSpec::with_partitions(name, partitions);
    let mut status = ensure_topics(&kafka_config(), &[spec], Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("creating topic {name}: {e}"));
    status.remove(0)
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<String>,
    /// `None`: a null value (a tombstone).
    pub value: Option<String>,
    pub partition: i32,
    pub offset: i64,
}

/// The partition count of `topic`, from metadata.
pub fn partition_count(topic: &str) -> usize {
    let consumer = plain_consumer();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .unwrap_or_else(|| panic!("{topic} not in metadata"));
    assert!(t.error().is_none(), "{topic}: {:?}", t.error());
    t.partitions().len()
}

/// A consumer outside any group (`assign`, no commits).
fn plain_consumer() -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", random_name("onecount-test-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // Everything written, aborted transactions included: a reader that sees a record once
        // too often is what the exactly-once tests must catch, whatever the writer did.
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("a consumer")
}

/// Every record of `topic`, partition by partition in offset order: each partition is read from
/// its low watermark up to its high watermark, taken as the larger of what `ListOffsets` says
/// before reading (`fetch_watermarks`) and what the broker's Fetch responses say while reading.
/// Both, because tansu 0.6 answers `ListOffsets(latest)` with 1 for any non-empty partition,
/// while its Fetch responses carry the true high watermark.
pub fn consume_all(topic: &str) -> Vec<Record> {
    let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8(b.to_vec()).expect("utf-8 record"));
    let mut records = consume_all_as(topic, |msg| Record {
        key: text(msg.key()),
        value: text(msg.payload()),
        partition: msg.partition(),
        offset: msg.offset(),
    });
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// [`consume_all`], each record taken as `read` makes it, in the order read (each partition in
/// offset order).
pub fn consume_all_as<T>(topic: &str, read: impl Fn(&BorrowedMessage<'_>) -> T) -> Vec<T> {
    let consumer = plain_consumer();
    let partitions = partition_count(topic) as i32;
    let mut listed_end: BTreeMap<i32, i64> = BTreeMap::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("watermarks of {topic} [{p}]: {e}"));
        listed_end.insert(p, high);
        next.insert(p, low);
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .expect("a partition offset");
    }
    consumer.assign(&tpl).expect("assign");
    let mut records = Vec::new();
    let mut pending: BTreeSet<i32> = (0..partitions).collect();
    let deadline = Instant::now() + READ_TIMEOUT;
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "reading {topic}: partitions {pending:?} not read to their high watermark within \
             {READ_TIMEOUT:?} (read up to {next:?}; ListOffsets said {listed_end:?})"
        );
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            let msg = msg.unwrap_or_else(|e| panic!("reading {topic}: {e}"));
            if pending.contains(&msg.partition()) {
                records.push(read(&msg));
                next.insert(msg.partition(), msg.offset() + 1);
            }
        }
        // A transaction marker takes an offset but is never delivered: the consumer's position
        // moves past it, so it counts as read.
        let positions = consumer.position().expect("positions");
        for e in positions.elements_for_topic(topic) {
            if let Offset::Offset(at) = e.offset() {
                let n = next.entry(e.partition()).or_default();
                *n = (*n).max(at);
            }
        }
        pending.retain(|p| {
            match onecount::kafka::client::cached_high_watermark(&consumer, topic, *p) {
                Some(fetched) => next[p] < fetched.max(listed_end[p]),
                None => true, // no Fetch response yet
            }
        });
    }
    records
}
