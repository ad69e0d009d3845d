//! The output topics, over a time range, as a stream of [`OutputRecord`]s.
//!
//! Owns: reading what `onecount run` wrote to the four output topics (`[topics]`) with the
//! `[kafka]` settings, from the offsets of `--from` to the end offsets as of the start of the
//! audit (or the offsets of `--to`), and the time arguments' syntax. Must not: join a consumer
//! group or commit (partitions are assigned, offsets never stored), wait for data written after
//! the audit started, or judge a record: a value that does not parse stops the audit with an
//! error naming its topic, partition and offset, as the directory source names file and line.
//!
//! The range is one of offsets: per partition, from the first record whose Kafka timestamp is
//! at or after `from` (`ListOffsets` by time) up to, not including, the first one at or after
//! `to`. That is exactly the records timestamped inside the range when timestamps rise with
//! offsets, as they do for the service's producer (create time, one process per partition).
//! Records are read uncommitted: an open transaction does not hold the end back, and the
//! service's outputs are not transactional.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::Config;
use crate::kafka::client::{consumer_config, create, ClientError};

use super::source::{parse_record, Kind, Location};
use super::{AuditError, AuditOptions, OutputRecord, Report};

/// How long one metadata or offsets request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long reading may go without a record or a position change before the audit gives up
/// (a partition whose leader is gone).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// One poll's wait. Positions are looked at after a poll that brought nothing: short, so a
/// partition ending in a transaction marker is seen read promptly.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// Why the output topics could not be read. All fatal to the audit (exit 2): an audit over
/// part of the range would grade the wrong numbers.
#[derive(Debug, thiserror::Error)]
pub enum KafkaAuditError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("--from {from} is not before --to {to}")]
    EmptyRange { from: String, to: String },
    #[error("topic {topic}: {message}")]
    Metadata { topic: String, message: String },
    #[error("topic {topic} partition {partition}: cannot list offsets: {message}")]
    Offsets {
        topic: String,
        partition: i32,
        message: String,
    },
    #[error("reading the output topics: {0}")]
    Read(String),
    #[error("{topic} partition {partition}: no progress for {}s at offset {at}, end {end}", STALL_TIMEOUT.as_secs())]
    Stalled {
        topic: String,
        partition: i32,
        at: i64,
        end: i64,
    },
}

/// A time bound of `--from` / `--to`: Unix milliseconds, as Kafka timestamps are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// RFC 3339 (`2026-01-05T10:00:00Z`) or Unix seconds (`1767607200`).
    pub fn parse(s: &str) -> Result<Timestamp, String> {
        let s = s.trim();
        if let Ok(secs) = s.parse::<i64>() {
            return secs
                .checked_mul(1000)
                .map(Timestamp)
                .ok_or_else(|| format!("{s}: out of range"));
        }
        OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
            .map_err(|e| format!("{s:?} is neither RFC 3339 nor Unix seconds: {e}"))
    }

    fn rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| format!("{}ms", self.0))
    }
}

/// What to read: records with Kafka timestamps in `[from, to)`; open ends are the beginning of
/// the topics and their ends as of the start of the audit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

impl TimeRange {
    /// `[from..to]` for the report's source label.
    fn label(&self) -> String {
        format!(
            "[{}..{}]",
            self.from.map_or("beginning".into(), Timestamp::rfc3339),
            self.to.map_or("end".into(), Timestamp::rfc3339)
        )
    }
}

/// Audits the output topics over `range`. There is no `stats.json` in Kafka: the checks that
/// need input counts say so.
pub fn audit_kafka(
    config: &Config,
    range: TimeRange,
    options: &AuditOptions,
) -> Result<Report, AuditError> {
    let t = &config.topics;
    let source = format!(
        "kafka:{} {} {} {} {} {}",
        config.kafka.brokers,
        t.conversions,
        t.discrepancies,
        t.dead_letters,
        t.revenue_windows,
        range.label()
    );
    let records = KafkaRecords::open(config, range)?;
    // The first error ends the stream; the report is then dropped for it.
    let mut error = None;
    let report = super::audit(
        &source,
        records.map_while(|r| r.map_err(|e| error = Some(e)).ok()),
        None,
        options,
    );
    match error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// One assigned partition: where reading is and where it stops.
#[derive(Debug)]
struct Part {
    /// Index into [`KafkaRecords::topics`].
    topic: usize,
    partition: i32,
    /// The next offset to read.
    next: i64,
    /// Exclusive.
    end: i64,
}

/// The records of the four output topics in the range, each partition in offset order
/// (no order across partitions: the tally does not need one).
pub struct KafkaRecords {
    consumer: BaseConsumer,
    topics: Vec<(Kind, String)>,
    parts: HashMap<(usize, i32), Part>,
    /// Partitions not yet read to their end.
    pending: usize,
    last_progress: Instant,
    done: bool,
}

impl KafkaRecords {
    /// Looks up every partition's range and assigns those with records to read.
    pub fn open(config: &Config, range: TimeRange) -> Result<KafkaRecords, KafkaAuditError> {
        if let (Some(from), Some(to)) = (range.from, range.to) {
            if from >= to {
                return Err(KafkaAuditError::EmptyRange {
                    from: from.rfc3339(),
                    to: to.rfc3339(),
                });
            }
        }
        // Over the user's properties: an audit never commits, whatever the service's settings.
        let mut cfg = consumer_config(&config.kafka);
        cfg.set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_uncommitted")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = create(&cfg)?;
        let t = &config.topics;
        let topics = vec![
            (Kind::Conversion, t.conversions.clone()),
            (Kind::Discrepancy, t.discrepancies.clone()),
            (Kind::DeadLetter, t.dead_letters.clone()),
            (Kind::RevenueWindow, t.revenue_windows.clone()),
        ];
        let mut parts = HashMap::new();
        for (i, (_, topic)) in topics.iter().enumerate() {
            for partition in 0..partition_count(&consumer, topic)? {
                let offsets_error = |e: rdkafka::error::KafkaError| KafkaAuditError::Offsets {
                    topic: topic.clone(),
                    partition,
                    message: e.to_string(),
                };
                let (low, high) = consumer
                    .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
                    .map_err(offsets_error)?;
                let start = match range.from {
                    Some(from) => offset_for_time(&consumer, topic, partition, from)?
                        .map_or(high, |o| o.clamp(low, high)),
                    None => low,
                };
                let end = match range.to {
                    Some(to) => offset_for_time(&consumer, topic, partition, to)?
                        .map_or(high, |o| o.clamp(low, high)),
                    None => high,
                };
                parts.insert(
                    (i, partition),
                    Part {
                        topic: i,
                        partition,
                        next: start,
                        end,
                    },
                );
            }
        }
        let mut tpl = TopicPartitionList::new();
        for p in parts.values().filter(|p| p.next < p.end) {
            tpl.add_partition_offset(&topics[p.topic].1, p.partition, Offset::Offset(p.next))
                .map_err(|e| KafkaAuditError::Read(e.to_string()))?;
        }
        let pending = tpl.count();
        consumer
            .assign(&tpl)
            .map_err(|e| KafkaAuditError::Read(format!("cannot assign partitions: {e}")))?;
        Ok(KafkaRecords {
            consumer,
            topics,
            parts,
            pending,
            last_progress: Instant::now(),
            done: false,
        })
    }

    /// Marks a partition read to its end and stops fetching it (the topic may be growing).
    fn finish(&mut self, key: (usize, i32)) {
        let Some(p) = self.parts.get(&key) else {
            return;
        };
        if p.next < p.end {
            return;
        }
        self.pending -= 1;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topics[p.topic].1, p.partition);
        // Only saves fetching what is past the end: records there are skipped anyway.
        let _ = self.consumer.pause(&tpl);
        self.parts.remove(&key);
    }

    /// Moves partitions on by the consumer's positions: a transaction marker takes an offset
    /// but is never delivered, so a partition that ends with one is read once its position has
    /// passed it.
    fn advance_by_positions(&mut self) -> Result<(), KafkaAuditError> {
        let positions = self
            .consumer
            .position()
            .map_err(|e| KafkaAuditError::Read(e.to_string()))?;
        let mut finished = Vec::new();
        for e in positions.elements() {
            let Offset::Offset(at) = e.offset() else {
                continue;
            };
            let Some(i) = self.topics.iter().position(|(_, t)| t == e.topic()) else {
                continue;
            };
            if let Some(p) = self.parts.get_mut(&(i, e.partition())) {
                if at > p.next {
                    p.next = at;
                    self.last_progress = Instant::now();
                    finished.push((i, e.partition()));
                }
            }
        }
        for key in finished {
            self.finish(key);
        }
        Ok(())
    }

    fn stalled(&self) -> KafkaAuditError {
        let p = self
            .parts
            .values()
            .find(|p| p.next < p.end)
            .expect("a pending partition");
        KafkaAuditError::Stalled {
            topic: self.topics[p.topic].1.clone(),
            partition: p.partition,
            at: p.next,
            end: p.end,
        }
    }

    fn next_record(&mut self) -> Option<Result<OutputRecord, AuditError>> {
        while self.pending > 0 {
            let m = match self.consumer.poll(POLL_WAIT) {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Some(Err(KafkaAuditError::Read(e.to_string()).into())),
                None => {
                    if let Err(e) = self.advance_by_positions() {
                        return Some(Err(e.into()));
                    }
                    if self.pending > 0 && self.last_progress.elapsed() > STALL_TIMEOUT {
                        return Some(Err(self.stalled().into()));
                    }
                    continue;
                }
            };
            let Some(i) = self.topics.iter().position(|(_, t)| t == m.topic()) else {
                continue;
            };
            let key = (i, m.partition());
            let Some(p) = self.parts.get_mut(&key) else {
                continue; // a partition already read to its end
            };
            if m.offset() < p.next || m.offset() >= p.end {
                continue; // past the end: written after the audit started, or after --to
            }
            p.next = m.offset() + 1;
            self.last_progress = Instant::now();
            let kind = self.topics[i].0;
            // A null value (a tombstone a compacted topic may hold) is no record.
            let record = m.payload().map(|value| {
                let at = || Location::Offset {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                };
                match std::str::from_utf8(value) {
                    Ok(text) => parse_record(kind, text, at),
                    Err(e) => Err(AuditError::Parse {
                        at: at(),
                        what: kind.what(),
                        message: Some(e.to_string()),
                    }),
                }
            });
            drop(m);
            self.finish(key);
            if record.is_some() {
                return record;
            }
        }
        None
    }
}

impl Iterator for KafkaRecords {
    type Item = Result<OutputRecord, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_record();
        if !matches!(next, Some(Ok(_))) {
            // Nothing after an error is read: the audit stops there.
            self.done = true;
        }
        next
    }
}

/// The partition count of `topic`; an error when it does not exist.
fn partition_count(consumer: &BaseConsumer, topic: &str) -> Result<i32, KafkaAuditError> {
    let error = |message: String| KafkaAuditError::Metadata {
        topic: topic.to_string(),
        message,
    };
    let md = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| error(format!("cannot read metadata: {e}")))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| error("not in the cluster's metadata".into()))?;
    if let Some(e) = t.error() {
        return Err(error(format!(
            "{}",
            rdkafka::types::RDKafkaErrorCode::from(e)
        )));
    }
    if t.partitions().is_empty() {
        return Err(error("has no partitions (does it exist?)".into()));
    }
    Ok(t.partitions().len() as i32)
}

/// The first offset of `topic`/`partition` whose timestamp is at or after `at`; `None` when no
/// record is that late.
fn offset_for_time(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    at: Timestamp,
) -> Result<Option<i64>, KafkaAuditError> {
    let error = |message: String| KafkaAuditError::Offsets {
        topic: topic.to_string(),
        partition,
        message,
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(at.0))
        .map_err(|e| error(e.to_string()))?;
    let found = consumer
        .offsets_for_times(tpl, REQUEST_TIMEOUT)
        .map_err(|e| error(e.to_string()))?;
    let e = found
        .find_partition(topic, partition)
        .ok_or_else(|| error("no answer for the partition".into()))?;
    e.error().map_err(|e| error(e.to_string()))?;
    match e.offset() {
        Offset::Offset(o) => Ok(Some(o)),
        Offset::End => Ok(None),
        other => Err(error(format!("unexpected answer {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_rfc3339_or_unix_seconds() {
        assert_eq!(
            Timestamp::parse("2026-01-05T10:00:00Z"),
            Ok(Timestamp(1_767_607_200_000))
        );
        assert_eq!(
            Timestamp::parse("2026-01-05T11:00:00.250+01:00"),
            Ok(Timestamp(1_767_607_200_250))
        );
        assert_eq!(
            Timestamp::parse("1767607200"),
            Ok(Timestamp(1_767_607_200_000))
        );
        assert!(Timestamp::parse("2026-01-05").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
        assert_eq!(
            Timestamp(1_767_607_200_000).rfc3339(),
            "2026-01-05T10:00:00Z"
        );
    }

    #[test]
    fn the_source_label_names_the_range() {
        let r = TimeRange {
            from: Some(Timestamp(1_767_607_200_000)),
            to: None,
        };
        assert_eq!(r.label(), "[2026-01-05T10:00:00Z..end]");
        assert_eq!(TimeRange::default().label(), "[beginning..end]");
    }
}
