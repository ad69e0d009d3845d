//! Delivery bookkeeping every onecount producer keeps: records in flight, acknowledged, failed.
//!
//! Owns: [`DeliveryTally`], updated from librdkafka's delivery callback (which runs inside
//! `poll`/`flush` on the producing thread, but a `ProducerContext` must be `Sync`: atomics, and
//! a mutex for the first error only, taken at most once per failed record). Must not: decide
//! what a failure means; the caller does (a publish stops, the service stops a stage).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, DeliveryResult, ProducerContext};

/// How long a caller waiting for delivery reports (for a bound in flight, a full queue, a
/// flush) polls its producer in one go. Short, because rdkafka 0.39's `BaseProducer::poll`
/// returns only once its whole timeout has passed, however soon the reports come: with 50 ms
/// polls, each checkpoint's wait for the outputs' acknowledgements took 50 ms (6 ms in 1 ms
/// steps, in the service bench), and every wait at an in-flight bound as long.
pub const REPORT_POLL: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
pub struct DeliveryTally {
    in_flight: AtomicUsize,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl DeliveryTally {
    /// A record was handed to the producer.
    pub fn sent(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Serves `producer`'s delivery reports in [`REPORT_POLL`] steps until nothing this tally
    /// counts is in flight or `wait` has passed; whether nothing is. What every flush here uses
    /// instead of rdkafka 0.39's `flush`, which polls in 100 ms steps that each last their whole
    /// 100 ms: ingest's commit, waiting for the log's acknowledgements, took 100 ms every time
    /// (its thread forwarding nothing meanwhile), where the acknowledgements take a few.
    pub fn wait_until_acknowledged<C: ProducerContext>(
        &self,
        producer: &BaseProducer<C>,
        wait: Duration,
    ) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.in_flight() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            producer.poll(REPORT_POLL);
        }
    }

    /// Records sent and not yet acknowledged or failed.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Counts one delivery report.
    pub fn record(&self, result: &DeliveryResult<'_>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, msg)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| format!("{} [{}]: {e}", msg.topic(), msg.partition()));
            }
        }
    }

    /// `Some((records failed, the first failure))` once any record failed.
    pub fn failure(&self) -> Option<(u64, String)> {
        let failed = self.failed.load(Ordering::Relaxed);
        (failed > 0).then(|| {
            let first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            (failed, first.clone().unwrap_or_default())
        })
    }
}

/// A producer that needs nothing but the tally uses it as its context.
impl ClientContext for DeliveryTally {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka producer error");
    }
}

impl ProducerContext for DeliveryTally {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        self.record(result);
    }
}
