//! The ingest stage: forwards input records, as they came, into the internal log.
//!
//! Owns: consuming the three input topics in the application's consumer group, forwarding each
//! record with its origin (input, partition, offset), idle markers for channels that go quiet
//! for `engine.idle_timeout`, and committing input offsets only for records the log has
//! acknowledged. Must not: parse or decide anything. A crash here forwards some records again;
//! the state stage recognises them by origin.
//!
//! Why a log in between: the state stage must see one fixed order of records, so that after a
//! crash it processes them again exactly as before (deterministic outputs are what lets it
//! suppress the ones already written). Three topics with many partitions, read by a consumer
//! group, have no such order; the log gives them one, and it is where every record of a join key
//! meets (all of them, today: one state partition; see docs/SERVICE.md).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::kafka::client::{consumer_config, create_with_context, producer_config};
use crate::model::Input;

use super::align::{Aligner, Flow, InputPartition};
use super::health::{Health, Observed};
use super::wire::{forwarded_headers, idle_headers, Channel};
use super::{ServiceError, ServiceTopics, Stop, LOG_PARTITION};

/// How long one wait blocks before the loop looks at its timers again.
const POLL_WAIT: Duration = Duration::from_millis(50);
/// How often quiet channels are looked for.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// How often the aligner follows the consumer's assignment.
const ASSIGNMENT_CHECK: Duration = Duration::from_millis(100);
/// Records read from the consumer per loop turn.
const BATCH: usize = 1000;
/// Records buffered per input partition before its reading pauses.
const PARTITION_BUFFER: usize = 2000;
/// How long a partition behind its end with nothing buffered may hold the others back.
const MAX_ALIGN_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Forwarding {
    in_flight: AtomicUsize,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Forwarding {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka producer error");
    }
}

impl ProducerContext for Forwarding {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

struct ChannelClock {
    last_record: Instant,
    idle_sent: bool,
}

pub struct Ingest {
    consumer: BaseConsumer<Observed>,
    fwd: Forwarder,
    commit_interval: Duration,
    paused: bool,
    aligner: Aligner,
    align_blocked_since: Option<Instant>,
}

/// The part of ingest that writes the log (apart from the consumer, whose messages borrow it).
struct Forwarder {
    producer: BaseProducer<Forwarding>,
    log: String,
    inputs: HashMap<String, Input>,
    /// Next offset to commit per input partition, for records forwarded since the last commit.
    pending: BTreeMap<(String, i32), i64>,
    channels: HashMap<Channel, ChannelClock>,
    idle_timeout: Duration,
    max_in_flight: usize,
}

impl Ingest {
    pub fn new(
        config: &Config,
        topics: &ServiceTopics,
        health: Arc<Health>,
        lag: prometheus::IntGaugeVec,
    ) -> Result<Ingest, ServiceError> {
        let mut cfg = consumer_config(&config.kafka);
        cfg.set("statistics.interval.ms", "1000");
        let consumer: BaseConsumer<Observed> = create_with_context(
            &cfg,
            Observed {
                health,
                lag: Some(lag),
                rebalanced: None,
            },
        )?;
        let t = &config.topics;
        let inputs: HashMap<String, Input> = [
            (t.browser.clone(), Input::Browser),
            (t.server.clone(), Input::Server),
            (t.orders.clone(), Input::Orders),
        ]
        .into_iter()
        .collect();
        let names: Vec<&str> = inputs.keys().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| ServiceError::Fatal(format!("subscribing to the inputs: {e}")))?;
        let mut pcfg = producer_config(&config.kafka);
        if config.kafka.properties.get("message.timeout.ms").is_none() {
            // Retried until delivered: a broker outage is waited out, not turned into loss.
            pcfg.set("message.timeout.ms", "0");
        }
        Ok(Ingest {
            consumer,
            fwd: Forwarder {
                producer: create_with_context(&pcfg, Forwarding::default())?,
                log: topics.log.clone(),
                inputs,
                pending: BTreeMap::new(),
                channels: HashMap::new(),
                idle_timeout: config.engine.idle_timeout,
                max_in_flight: config.service.max_in_flight,
            },
            commit_interval: config.service.commit_interval,
            paused: false,
            aligner: Aligner::new(PARTITION_BUFFER),
            align_blocked_since: None,
        })
    }

    pub fn run(mut self, stop: &Stop) -> Result<(), ServiceError> {
        let mut last_commit = Instant::now();
        let mut last_idle_check = Instant::now();
        let mut last_assignment_check = Instant::now() - IDLE_CHECK;
        while !stop.requested() {
            self.apply_backpressure();
            if last_assignment_check.elapsed() >= ASSIGNMENT_CHECK {
                self.follow_assignment();
                last_assignment_check = Instant::now();
            }
            let mut wait = if self.aligner.buffered() > 0 {
                Duration::ZERO
            } else {
                POLL_WAIT
            };
            for _ in 0..BATCH {
                match self.consumer.poll(wait) {
                    None => break,
                    Some(Ok(m)) => {
                        if let Some(flow) = self.aligner.push(m.detach()) {
                            self.flow(flow);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "input consumer error");
                        break;
                    }
                }
                wait = Duration::ZERO;
            }
            self.forward_aligned()?;
            self.fwd.producer.poll(Duration::ZERO);
            self.fwd.check_failures()?;
            if last_idle_check.elapsed() >= IDLE_CHECK {
                self.mark_idle_channels()?;
                last_idle_check = Instant::now();
            }
            if last_commit.elapsed() >= self.commit_interval {
                self.commit(Duration::from_secs(5));
                last_commit = Instant::now();
            }
        }
        // Shutdown: everything forwarded is acknowledged, then committed.
        while self
            .fwd
            .producer
            .context()
            .in_flight
            .load(Ordering::Relaxed)
            > 0
        {
            self.fwd.producer.poll(POLL_WAIT);
            self.fwd.check_failures()?;
            stop.check_deadline()?;
        }
        self.commit(Duration::from_secs(5));
        tracing::info!("ingest stopped; offsets committed");
        Ok(())
    }

    /// Keeps the aligner's buffers to the assigned partitions.
    fn follow_assignment(&mut self) {
        if let Ok(tpl) = self.consumer.assignment() {
            let assigned: Vec<InputPartition> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            self.aligner.set_assignment(&assigned);
        }
    }

    /// Forwards buffered records in timestamp order while no partition that is behind its end
    /// has nothing buffered; a partition that stays empty for `MAX_ALIGN_WAIT` (its broker is
    /// slow) stops holding the others.
    fn forward_aligned(&mut self) -> Result<(), ServiceError> {
        loop {
            let waiting = self.behind_and_empty();
            let waiting = match (waiting, self.align_blocked_since) {
                (false, _) => {
                    self.align_blocked_since = None;
                    false
                }
                (true, None) => {
                    self.align_blocked_since = Some(Instant::now());
                    true
                }
                (true, Some(since)) => since.elapsed() < MAX_ALIGN_WAIT,
            };
            let Some((m, flow)) = self.aligner.next(waiting) else {
                return Ok(());
            };
            self.fwd.forward(&m)?;
            if let Some(flow) = flow {
                self.flow(flow);
            }
        }
    }

    /// Whether an assigned partition with nothing buffered still has records to fetch (its
    /// position is below its high watermark, or either is not known yet).
    fn behind_and_empty(&self) -> bool {
        let empty: Vec<&InputPartition> = self.aligner.empty_partitions().collect();
        if empty.is_empty() {
            return false;
        }
        let Ok(positions) = self.consumer.position() else {
            return true;
        };
        empty.into_iter().any(|(topic, partition)| {
            let Some(high) = cached_high_watermark(&self.consumer, topic, *partition) else {
                return true;
            };
            let position =
                positions
                    .find_partition(topic, *partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
            match position {
                Some(p) => p < high,
                // Nothing consumed yet: behind unless the partition is empty.
                None => high > 0,
            }
        })
    }

    fn flow(&self, flow: Flow) {
        let (pause, (topic, partition)) = match flow {
            Flow::Pause(p) => (true, p),
            Flow::Resume(p) => (false, p),
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, partition);
        let done = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, topic, partition, pause, "pausing or resuming a partition");
        }
    }

    /// Pauses reading while the log has too many unacknowledged records (the broker is slow or
    /// away), and resumes below half of the bound.
    fn apply_backpressure(&mut self) {
        let in_flight = self
            .fwd
            .producer
            .context()
            .in_flight
            .load(Ordering::Relaxed);
        let change = if !self.paused && in_flight >= self.fwd.max_in_flight {
            Some(true)
        } else if self.paused && in_flight < self.fwd.max_in_flight / 2 {
            Some(false)
        } else {
            None
        };
        let Some(pause) = change else { return };
        let Ok(assigned) = self.consumer.assignment() else {
            return;
        };
        let done = if pause {
            self.consumer.pause(&assigned)
        } else {
            self.consumer.resume(&assigned)
        };
        if done.is_ok() {
            self.paused = pause;
            tracing::debug!(paused = pause, in_flight, "ingest backpressure");
        }
        if pause {
            self.fwd.producer.poll(POLL_WAIT);
        }
    }

    /// Sends an idle marker for every assigned channel without a record for `idle_timeout`
    /// (once, until its next record).
    fn mark_idle_channels(&mut self) -> Result<(), ServiceError> {
        let Ok(assigned) = self.consumer.assignment() else {
            return Ok(());
        };
        let now = Instant::now();
        let mut quiet = Vec::new();
        for e in assigned.elements() {
            let Some(&input) = self.fwd.inputs.get(e.topic()) else {
                continue;
            };
            let channel = Channel {
                input,
                partition: e.partition(),
            };
            let clock = self.fwd.channels.entry(channel).or_insert(ChannelClock {
                last_record: now,
                idle_sent: false,
            });
            if !clock.idle_sent && now.duration_since(clock.last_record) >= self.fwd.idle_timeout {
                clock.idle_sent = true;
                quiet.push(channel);
            }
        }
        for channel in quiet {
            tracing::debug!(
                input = channel.input.as_str(),
                partition = channel.partition,
                "channel idle"
            );
            let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.fwd.log)
                .partition(LOG_PARTITION)
                .headers(idle_headers(channel));
            self.fwd.send(record)?;
        }
        Ok(())
    }

    /// Commits the input offsets of forwarded records once the log has acknowledged all of
    /// them. Not acknowledged in time (broker away): tried again at the next interval.
    fn commit(&mut self, wait: Duration) {
        if self.fwd.pending.is_empty() {
            return;
        }
        if self.fwd.producer.flush(wait).is_err()
            || self
                .fwd
                .producer
                .context()
                .in_flight
                .load(Ordering::Relaxed)
                > 0
        {
            return;
        }
        let assigned: Vec<(String, i32)> = match self.consumer.assignment() {
            Ok(tpl) => tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect(),
            Err(_) => return,
        };
        let mut tpl = TopicPartitionList::new();
        // A partition revoked since: its new owner commits it (committing here could only
        // move its offset back, which is safe but pointless).
        for ((topic, partition), next) in &self.fwd.pending {
            if assigned.iter().any(|(t, p)| t == topic && p == partition) {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(error = %e, "input offset commit failed; retried at the next interval");
                return;
            }
        }
        self.fwd.pending.clear();
    }
}

impl Forwarder {
    fn forward(&mut self, m: &impl Message) -> Result<(), ServiceError> {
        let Some(&input) = self.inputs.get(m.topic()) else {
            return Ok(());
        };
        let channel = Channel {
            input,
            partition: m.partition(),
        };
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.log)
            .partition(LOG_PARTITION)
            .headers(forwarded_headers(channel, m.offset()));
        if let Some(p) = m.payload() {
            record = record.payload(p);
        }
        self.send(record)?;
        self.pending
            .insert((m.topic().to_string(), m.partition()), m.offset() + 1);
        self.channels.insert(
            channel,
            ChannelClock {
                last_record: Instant::now(),
                idle_sent: false,
            },
        );
        Ok(())
    }

    fn send(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), ServiceError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(POLL_WAIT);
                }
                Err((e, _)) => {
                    return Err(ServiceError::Fatal(format!(
                        "forwarding to the internal log: {e}"
                    )))
                }
            }
        }
        self.producer
            .context()
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn check_failures(&self) -> Result<(), ServiceError> {
        let d = self.producer.context();
        if d.failed.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let first = d
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        Err(ServiceError::Fatal(format!(
            "a record could not be forwarded to the internal log: {first}"
        )))
    }
}

/// The high watermark the consumer last learned from a fetch, without a broker round trip
/// (librdkafka's `rd_kafka_get_watermark_offsets`, which the `rdkafka` crate does not wrap).
/// `None` until a fetch has reported one.
fn cached_high_watermark(
    consumer: &BaseConsumer<Observed>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the call only reads
    // librdkafka's cached offsets into the two integers, and `topic` is a valid C string.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}
