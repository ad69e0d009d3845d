//! Publishing generated traffic to the input topics (`onecount generate --kafka`).
//!
//! Owns: [`KafkaSink`], the generator's [`TrafficSink`] over a librdkafka producer, and
//! [`generate_to_kafka`]. Each line goes to its input's topic with the generator's key (browser
//! events keyed by event_id, server bodies unkeyed, order changes keyed by order id, a tombstone
//! as a null value), in the generator's order. Produces are bounded: at most
//! `max_in_flight` unacknowledged, and librdkafka's `QueueFull` is backpressure (serve
//! acknowledgements, retry the same record), never an error. The final flush fails loudly if any
//! record was not acknowledged. Must not: change a line, its key or its order within an input,
//! or report success before every record is acknowledged.

use std::io;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{Config, KafkaConfig, TopicsConfig};
use crate::generate::{generate, GenerateOptions, Line, TrafficSink, Truth};

use super::admin::{self, AdminError, TopicStatus};
use super::client::{create_with_context, producer_config, ClientError, DEFAULT_MAX_IN_FLIGHT};
use super::delivery::{DeliveryTally, REPORT_POLL};

/// How a [`KafkaSink`] bounds and finishes its produces.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Unacknowledged produces allowed before the sink waits for acknowledgements.
    pub max_in_flight: usize,
    /// How long the final flush may take. Past it, unacknowledged records are an error.
    pub flush_timeout: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            flush_timeout: Duration::from_secs(600),
        }
    }
}

/// Records acknowledged per topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Browser events (one record per line).
    pub browser: u64,
    /// Server bodies (a body may carry many events: `truth.input_records.server` counts events).
    pub server: u64,
    /// Order changes, tombstones included.
    pub orders: u64,
    /// Of `orders`, the tombstones (null values).
    pub tombstones: u64,
}

impl Published {
    pub fn total(&self) -> u64 {
        self.browser + self.server + self.orders
    }
}

/// What a finished publish did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishReport {
    pub records: Published,
    /// Times librdkafka's queue was full and the sink waited for acknowledgements.
    pub queue_full_waits: u64,
    /// Times `max_in_flight` was reached and the sink waited for acknowledgements.
    pub in_flight_waits: u64,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer could not be created: fatal, fix the config.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The input topics could not be created or seen.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// librdkafka refused a record outright (e.g. larger than `message.max.bytes`): fatal.
    #[error("producing to {topic}: {message}")]
    Produce { topic: String, message: String },
    /// The broker did not acknowledge some records (first reason shown): nothing may be taken
    /// as published.
    #[error("{failed} records were not delivered; first: {first}")]
    Delivery { failed: u64, first: String },
    /// The final flush ran out of time with records still unacknowledged.
    #[error("{unacknowledged} records still unacknowledged after {waited:?}")]
    Flush {
        unacknowledged: usize,
        waited: Duration,
    },
    /// The generator itself failed.
    #[error("generator: {0}")]
    Generate(io::Error),
}

#[derive(Clone, Copy)]
enum Input {
    Browser,
    Server,
    Orders,
}

/// The generator's sink over a Kafka producer. Call [`KafkaSink::finish`] at the end: dropping
/// the sink without it discards what is still unacknowledged.
pub struct KafkaSink {
    producer: BaseProducer<DeliveryTally>,
    topics: [String; 3],
    opts: PublishOptions,
    sent: Published,
    queue_full_waits: u64,
    in_flight_waits: u64,
    started: Instant,
    /// The typed error behind an `io::Error` handed to the generator.
    failure: Option<PublishError>,
}

impl KafkaSink {
    /// A producer to `topics`' three inputs (which must exist: see [`admin::ensure_topics`]).
    pub fn new(
        kafka: &KafkaConfig,
        topics: &TopicsConfig,
        opts: PublishOptions,
    ) -> Result<KafkaSink, PublishError> {
        let mut cfg = producer_config(kafka);
        if kafka
            .properties
            .get("sticky.partitioning.linger.ms")
            .is_none()
        {
            // Generated traffic is days of event time published in seconds. Sticky
            // partitioning would put each 10 ms of unkeyed server bodies (minutes of event
            // time here, milliseconds in real traffic) on one partition; per-record spreading
            // keeps every partition as dense in event time as live traffic would.
            cfg.set("sticky.partitioning.linger.ms", "0");
        }
        let producer = create_with_context(&cfg, DeliveryTally::default())?;
        Ok(KafkaSink {
            producer,
            topics: [
                topics.browser.clone(),
                topics.server.clone(),
                topics.orders.clone(),
            ],
            opts: PublishOptions {
                max_in_flight: opts.max_in_flight.max(1),
                ..opts
            },
            sent: Published::default(),
            queue_full_waits: 0,
            in_flight_waits: 0,
            started: Instant::now(),
            failure: None,
        })
    }

    fn deliveries(&self) -> &DeliveryTally {
        self.producer.context()
    }

    /// A failed delivery stops the publish at once: nothing after it could be trusted.
    fn check_failures(&self) -> Result<(), PublishError> {
        match self.deliveries().failure() {
            None => Ok(()),
            Some((failed, first)) => Err(PublishError::Delivery { failed, first }),
        }
    }

    fn produce(&mut self, input: Input, line: Line) -> Result<(), PublishError> {
        self.check_failures()?;
        // The application's bound: wait for acknowledgements before adding more.
        while self.deliveries().in_flight() >= self.opts.max_in_flight {
            self.in_flight_waits += 1;
            self.producer.poll(REPORT_POLL);
            self.check_failures()?;
        }
        let topic = &self.topics[input as usize];
        let mut record: BaseRecord<'_, str, str, ()> = BaseRecord::to(topic);
        if let Some(key) = line.key.as_deref() {
            record = record.key(key);
        }
        if let Some(value) = line.value.as_deref() {
            record = record.payload(value);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                // librdkafka's own bound: backpressure, not an error.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    self.queue_full_waits += 1;
                    record = back;
                    self.producer.poll(REPORT_POLL);
                    self.check_failures()?;
                }
                Err((e, _)) => {
                    return Err(PublishError::Produce {
                        topic: topic.clone(),
                        message: e.to_string(),
                    })
                }
            }
        }
        self.deliveries().sent();
        match input {
            Input::Browser => self.sent.browser += 1,
            Input::Server => self.sent.server += 1,
            Input::Orders => {
                self.sent.orders += 1;
                self.sent.tombstones += u64::from(line.value.is_none());
            }
        }
        // Serve acknowledgements that are ready, without waiting.
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn sink(&mut self, input: Input, line: Line) -> io::Result<()> {
        self.produce(input, line).map_err(|e| {
            let io = io::Error::other(e.to_string());
            self.failure = Some(e);
            io
        })
    }

    /// Flushes, then checks that every record sent was acknowledged.
    pub fn finish(self) -> Result<PublishReport, PublishError> {
        self.deliveries()
            .wait_until_acknowledged(&self.producer, self.opts.flush_timeout);
        self.check_failures()?;
        let d = self.deliveries();
        let unacknowledged = d.in_flight();
        if unacknowledged > 0 {
            return Err(PublishError::Flush {
                unacknowledged,
                waited: self.opts.flush_timeout,
            });
        }
        let delivered = d.delivered();
        assert_eq!(
            delivered,
            self.sent.total(),
            "every record sent is acknowledged once"
        );
        Ok(PublishReport {
            records: self.sent.clone(),
            queue_full_waits: self.queue_full_waits,
            in_flight_waits: self.in_flight_waits,
            seconds: self.started.elapsed().as_secs_f64(),
        })
    }
}

impl TrafficSink for KafkaSink {
    fn browser(&mut self, line: Line) -> io::Result<()> {
        self.sink(Input::Browser, line)
    }
    fn server(&mut self, line: Line) -> io::Result<()> {
        self.sink(Input::Server, line)
    }
    fn orders(&mut self, line: Line) -> io::Result<()> {
        self.sink(Input::Orders, line)
    }
}

/// Generates `gen`'s traffic into the input topics, which must exist. Blocking.
pub fn publish_generated(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    gen: &GenerateOptions,
    opts: PublishOptions,
) -> Result<(Truth, PublishReport), PublishError> {
    let mut sink = KafkaSink::new(kafka, topics, opts)?;
    match generate(gen, &mut sink) {
        Ok(truth) => Ok((truth, sink.finish()?)),
        Err(e) => Err(sink.failure.take().unwrap_or(PublishError::Generate(e))),
    }
}

/// What `onecount generate --kafka` does: creates the input topics of `config` if missing
/// (with `[topics]` partitions and replication), then publishes the generated traffic to them.
/// Returns the truth, what was published, and the topics' status.
pub async fn generate_to_kafka(
    config: &Config,
    gen: &GenerateOptions,
    opts: PublishOptions,
) -> Result<(Truth, PublishReport, Vec<TopicStatus>), PublishError> {
    let specs = admin::input_specs(&config.topics);
    let status = admin::ensure_topics(&config.kafka, &specs, admin::DEFAULT_TIMEOUT).await?;
    let (kafka, topics, gen) = (config.kafka.clone(), config.topics.clone(), gen.clone());
    // The generator and the producer's polling block: a blocking thread, not an async worker.
    let (truth, report) =
        tokio::task::spawn_blocking(move || publish_generated(&kafka, &topics, &gen, opts))
            .await
            .expect("the publisher does not panic")?;
    Ok((truth, report, status))
}
