//! What the service knows about its own health: broker reachability, readiness, consumer lag.
//!
//! Owns: [`Observed`], the librdkafka client context every service client uses (it turns
//! statistics callbacks into `onecount_broker_up` and `onecount_consumer_lag_records`, and logs
//! client errors without their config), and [`Health`], the readiness `/readyz` answers. Must
//! not: decide anything about records.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::{IntGauge, IntGaugeVec};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;

use crate::http::Readiness;

/// Readiness: the broker is reachable and every state partition this instance owns is restored.
#[derive(Debug)]
pub struct Health {
    broker_up: AtomicBool,
    state_ready: AtomicBool,
    ready_gauge: IntGauge,
    broker_gauge: IntGauge,
}

impl Health {
    pub fn new(ready_gauge: IntGauge, broker_gauge: IntGauge) -> Arc<Health> {
        Arc::new(Health {
            broker_up: AtomicBool::new(false),
            state_ready: AtomicBool::new(false),
            ready_gauge,
            broker_gauge,
        })
    }

    pub fn set_broker_up(&self, up: bool) {
        let was = self.broker_up.swap(up, Ordering::Relaxed);
        if was != up {
            if up {
                tracing::info!("broker reachable");
            } else {
                tracing::warn!("broker unreachable; retrying");
            }
        }
        self.broker_gauge.set(i64::from(up));
        self.publish();
    }

    pub fn broker_up(&self) -> bool {
        self.broker_up.load(Ordering::Relaxed)
    }

    /// The state stage has restored what it owns (or owns nothing) and is processing.
    pub fn set_state_ready(&self, ready: bool) {
        self.state_ready.store(ready, Ordering::Relaxed);
        self.publish();
    }

    fn publish(&self) {
        self.ready_gauge
            .set(i64::from(self.not_ready_reason().is_none()));
    }
}

impl Readiness for Health {
    fn not_ready_reason(&self) -> Option<String> {
        if !self.broker_up.load(Ordering::Relaxed) {
            return Some("broker unreachable".into());
        }
        if !self.state_ready.load(Ordering::Relaxed) {
            return Some("state partitions not assigned or not restored yet".into());
        }
        None
    }
}

/// The client context of every service client. With `lag`, statistics also export the
/// consumer lag of the topics this client consumes.
pub struct Observed {
    pub health: Arc<Health>,
    pub lag: Option<IntGaugeVec>,
    /// Set once the consumer's group assignment is known (after its first rebalance).
    pub rebalanced: Option<Arc<AtomicBool>>,
    /// Runs before partitions are revoked, inside the rebalance: the state stage waits there
    /// for its outputs in flight, so the next owner reads back everything this one wrote.
    pub before_revoke: Option<Box<dyn Fn() + Send + Sync>>,
}

impl ClientContext for Observed {
    fn stats(&self, statistics: Statistics) {
        // A learned broker (node id >= 0) in state UP: the cluster answers. Bootstrap entries
        // (node id -1) do not count, they only lead to the real ones.
        let up = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        self.health.set_broker_up(up);
        if let Some(lag) = &self.lag {
            let mut per_topic: BTreeMap<&str, i64> = BTreeMap::new();
            for (name, topic) in &statistics.topics {
                let sum = topic
                    .partitions
                    .iter()
                    // -1 is "unknown" and the internal partition -1 is not a real one.
                    .filter(|(p, part)| **p >= 0 && part.consumer_lag >= 0)
                    .map(|(_, part)| part.consumer_lag)
                    .sum::<i64>();
                per_topic.insert(name, sum);
            }
            for (topic, sum) in per_topic {
                lag.with_label_values(&[topic]).set(sum);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.set_broker_up(false);
        }
        // librdkafka's reason names brokers and errors, never config values.
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for Observed {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Revoke(_), Some(hook)) = (rebalance, &self.before_revoke) {
            hook();
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
        if let Some(flag) = &self.rebalanced {
            flag.store(true, Ordering::Relaxed);
        }
    }
}
