//! Writing outputs to their topics: keyed, bounded in flight, and never twice after a restore.
//!
//! Owns: the output producer, its delivery accounting (what is acknowledged up to which offset
//! per partition: the frontier a checkpoint records), and the suppression set a restored task
//! fills with what it already wrote after its last checkpoint. Must not: decide what to emit;
//! the engine does, deterministically, which is what makes suppression by content exact.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::Histogram;

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use crate::config::Config;
use crate::engine::Outputs;
use crate::jsonl;
use crate::kafka::client::{create_with_context, producer_config, ClientError};
use crate::kafka::delivery::{DeliveryTally, REPORT_POLL};

use super::wire::output_headers;
use super::{ServiceError, Stop};

/// The four output topics, in the order of `TopicsConfig::outputs`: conversions,
/// discrepancies, dead letters, revenue windows.
pub type OutputTopics = [String; 4];

/// An output partition: (topic, partition).
pub type OutputPartition = (String, i32);

/// The identity of an output record: its topic, key and bytes. Deterministic processing makes a
/// record produced again after a restore byte-identical to the first time.
fn fingerprint(topic: &str, key: &[u8], value: &[u8]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [topic.as_bytes(), key, value] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.digest128()
}

/// Delivery reports of the output producer.
pub struct Deliveries {
    /// `onecount_processing_latency_seconds`: from the poll of the batch a record came from to
    /// its acknowledgement.
    latency: Histogram,
    /// What delivery opaques (micros since `epoch`) count from.
    epoch: Instant,
    tally: DeliveryTally,
    /// Highest acknowledged offset per output partition, by topic: a delivery report finds
    /// its topic's entry by the topic name it carries, without building a key for it.
    acked: Mutex<HashMap<String, HashMap<i32, i64>>>,
}

impl ClientContext for Deliveries {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka producer error");
    }
}

impl ProducerContext for Deliveries {
    /// Micros since `epoch` when the record's batch was polled.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, polled_at: usize) {
        self.tally.record(result);
        if let Ok(m) = result {
            let now = self.epoch.elapsed().as_micros() as usize;
            self.latency
                .observe(now.saturating_sub(polled_at) as f64 / 1e6);
            let mut acked = self.acked.lock().unwrap_or_else(|p| p.into_inner());
            let partitions = match acked.get_mut(m.topic()) {
                Some(partitions) => partitions,
                None => acked.entry(m.topic().to_string()).or_default(),
            };
            let e = partitions.entry(m.partition()).or_insert(m.offset());
            *e = (*e).max(m.offset());
        }
    }
}

/// The output producer of one state task.
pub struct OutputWriter {
    /// Shared with the state consumer's rebalance hook, which flushes it before a revocation.
    producer: Arc<BaseProducer<Deliveries>>,
    topics: OutputTopics,
    max_in_flight: usize,
    /// Per task (state partition), the records it wrote after its last checkpoint, before a
    /// crash: not written again.
    suppress: HashMap<i32, HashMap<u128, u32>>,
    pub suppressed: u64,
    pub written: u64,
    buf: Vec<u8>,
}

impl OutputWriter {
    pub fn new(config: &Config, latency: Histogram) -> Result<OutputWriter, ClientError> {
        let mut cfg = producer_config(&config.kafka);
        // Retried until delivered: the state stage cannot skip an output, and a broker outage
        // is waited out (readiness reports it), not turned into loss.
        if config.kafka.properties.get("message.timeout.ms").is_none() {
            cfg.set("message.timeout.ms", "0");
        }
        // The Java client's partitioner, so keys land where other producers would put them.
        if config.kafka.properties.get("partitioner").is_none() {
            cfg.set("partitioner", "murmur2_random");
        }
        Ok(OutputWriter {
            producer: Arc::new(create_with_context(
                &cfg,
                Deliveries {
                    latency,
                    epoch: Instant::now(),
                    tally: DeliveryTally::default(),
                    acked: Mutex::new(HashMap::new()),
                },
            )?),
            topics: config.topics.outputs().map(|(_, name)| name.to_string()),
            max_in_flight: config.service.max_in_flight,
            suppress: HashMap::new(),
            suppressed: 0,
            written: 0,
            buf: Vec::new(),
        })
    }

    /// Forgets the outputs expected from an earlier restore of `task` (a task restored again
    /// starts over).
    pub fn clear_suppressions(&mut self, task: i32) {
        self.suppress.remove(&task);
    }

    /// A handle that waits for every output in flight (up to `wait`), for the rebalance hook.
    pub fn flusher(&self, wait: Duration) -> Box<dyn Fn() + Send + Sync> {
        let producer = self.producer.clone();
        Box::new(move || {
            let tally = &producer.context().tally;
            if !tally.wait_until_acknowledged(&producer, wait) {
                let pending = tally.in_flight();
                tracing::warn!(pending, "outputs still in flight at a revocation");
            }
        })
    }

    /// Remembers an output `task` wrote after its last checkpoint: its next identical one is
    /// skipped.
    pub fn expect_already_written(&mut self, task: i32, topic: &str, key: &[u8], value: &[u8]) {
        *self
            .suppress
            .entry(task)
            .or_default()
            .entry(fingerprint(topic, key, value))
            .or_default() += 1;
    }

    /// Produces and clears `out`. Blocks (polling for acknowledgements) while the in-flight
    /// bound is reached: that is the backpressure that pauses reading.
    /// `task`: the state partition that produced `out` (a header on every output); `polled_at`:
    /// when its batch was polled (processing latency).
    pub fn write(
        &mut self,
        out: &mut Outputs,
        task: i32,
        polled_at: Instant,
        stop: &Stop,
    ) -> Result<(), ServiceError> {
        let opaque = polled_at
            .saturating_duration_since(self.producer.context().epoch)
            .as_micros() as usize;
        let [conversions, discrepancies, dead_letters, windows] = &self.topics.clone();
        for c in &out.conversions {
            self.send(conversions, c.key().as_bytes(), c, task, opaque, stop)?;
        }
        for d in &out.discrepancies {
            self.send(discrepancies, d.key.as_bytes(), d, task, opaque, stop)?;
        }
        for d in &out.dead_letters {
            let p = &d.position;
            let key = format!(
                "{}:{}:{}:{}",
                p.input.as_str(),
                p.partition,
                p.offset,
                p.index
            );
            self.send(dead_letters, key.as_bytes(), d, task, opaque, stop)?;
        }
        for w in &out.revenue_windows {
            self.send(windows, w.key.as_bytes(), w, task, opaque, stop)?;
        }
        out.clear();
        self.producer.poll(Duration::ZERO);
        self.check_failures()
    }

    fn send<T: Serialize>(
        &mut self,
        topic: &str,
        key: &[u8],
        record: &T,
        task: i32,
        opaque: usize,
        stop: &Stop,
    ) -> Result<(), ServiceError> {
        self.buf.clear();
        jsonl::append_line(&mut self.buf, record)
            .map_err(|e| ServiceError::Fatal(e.to_string()))?;
        self.buf.pop(); // the newline: a Kafka record is one value
        if let Some(expected) = self.suppress.get_mut(&task) {
            let fp = fingerprint(topic, key, &self.buf);
            if let Some(n) = expected.get_mut(&fp) {
                *n -= 1;
                if *n == 0 {
                    expected.remove(&fp);
                }
                self.suppressed += 1;
                return Ok(());
            }
        }
        while self.producer.context().tally.in_flight() >= self.max_in_flight {
            self.producer.poll(REPORT_POLL);
            self.check_failures()?;
            stop.check_deadline()?;
        }
        let mut record = BaseRecord::with_opaque_to(topic, opaque)
            .key(key)
            .payload(self.buf.as_slice())
            .headers(output_headers(task));
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(REPORT_POLL);
                    self.check_failures()?;
                    stop.check_deadline()?;
                }
                Err((e, _)) => {
                    return Err(ServiceError::Fatal(format!("producing to {topic}: {e}")))
                }
            }
        }
        self.producer.context().tally.sent();
        self.written += 1;
        Ok(())
    }

    fn check_failures(&self) -> Result<(), ServiceError> {
        match self.producer.context().tally.failure() {
            None => Ok(()),
            Some((failed, first)) => Err(ServiceError::Fatal(format!(
                "{failed} outputs could not be delivered; first: {first}"
            ))),
        }
    }

    /// Waits until every output produced is acknowledged; returns the next offset after this
    /// task's last acknowledged record in each output partition it wrote to.
    pub fn flush(&mut self, stop: &Stop) -> Result<BTreeMap<OutputPartition, i64>, ServiceError> {
        while self.producer.context().tally.in_flight() > 0 {
            self.producer.poll(REPORT_POLL);
            self.check_failures()?;
            stop.check_deadline()?;
        }
        self.check_failures()?;
        let acked = self
            .producer
            .context()
            .acked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Ok(acked
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(|(&p, &o)| ((topic.clone(), p), o + 1))
            })
            .collect())
    }

    pub fn topics(&self) -> &OutputTopics {
        &self.topics
    }
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn fingerprints_separate_topic_key_and_value() {
        let a = fingerprint("t", b"k", b"v");
        assert_eq!(a, fingerprint("t", b"k", b"v"));
        assert_ne!(a, fingerprint("t", b"kv", b""));
        assert_ne!(a, fingerprint("u", b"k", b"v"));
        assert_ne!(a, fingerprint("t", b"k", b"w"));
    }
}
