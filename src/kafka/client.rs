//! Client configs built from `[kafka]`: onecount's defaults first, the user's
//! `[kafka.properties]` over them, `kafka.brokers` and `kafka.group_id` last.
//!
//! Owns: the defaults every onecount producer and consumer starts from, and the check that the
//! user's properties are ones librdkafka accepts ([`check_properties`], used by `check-config`).
//! Must not: connect by itself (callers create clients through [`create`] /
//! [`create_with_context`] with the context they need), or let a secret value reach an error or
//! a log line: `rdkafka`'s `KafkaError::ClientConfig` prints the value and its `ClientConfig`
//! `Debug` hides only a fixed list of keys, so errors leave here rewritten with secrets redacted
//! and a `ClientConfig` is never printed.

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfig, FromClientConfigAndContext};
use rdkafka::error::KafkaError;

use crate::config::{is_secret_property, KafkaConfig, REDACTED};

/// Producer settings onecount relies on, each overridable in `[kafka.properties]`:
///
/// - `enable.idempotence`, `acks=all`: a retried produce is written once and in order per
///   partition, and nothing counts as delivered before every in-sync replica has it;
/// - `max.in.flight.requests.per.connection=5`: the most idempotence keeps ordered;
/// - `linger.ms=5`: small batches, low latency (a pair that arrives together is out in ms);
/// - `compression.type=lz4`: built into the vendored librdkafka (`zstd` would need the crate's
///   `zstd` feature);
/// - `queue.buffering.max.messages` / `.kbytes`: librdkafka's local queue is bounded (100k
///   records, 64 MiB); a full queue is `QueueFull`, which callers treat as backpressure.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("max.in.flight.requests.per.connection", "5"),
    ("linger.ms", "5"),
    ("compression.type", "lz4"),
    ("queue.buffering.max.messages", "100000"),
    ("queue.buffering.max.kbytes", "65536"),
];

/// Consumer settings onecount relies on:
///
/// - offsets are committed only by the application, after what a record produced is
///   acknowledged (`enable.auto.commit=false`, `enable.auto.offset.store=false`), and a new
///   group starts at the beginning of its inputs;
/// - `fetch.queue.backoff.ms=20`: once librdkafka's prefetch queue is full it fetches again only
///   after this backoff, 1 s by default. A stage that drains the queue faster than that waits
///   for the next fetch (the ingest aligner waited for the partition behind; the state stage's
///   log consumer ran at the queue's size per second: 12k records/s with an 8 MiB queue);
/// - `queued.max.messages.kbytes=16384`: the prefetch queue holds records decompressed, and
///   with the short backoff a quarter of librdkafka's 64 MiB keeps the stages as fast (peak
///   memory on a backlog: BENCHMARKS.md, session 14).
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("fetch.queue.backoff.ms", "20"),
    ("queued.max.messages.kbytes", "16384"),
];

/// Unacknowledged produces a publisher keeps in flight before it waits for acknowledgements:
/// the application-level bound on top of librdkafka's queue.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;

/// A client could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// librdkafka refused a property: fatal, the config must change.
    #[error(transparent)]
    Property(#[from] PropertyError),
    /// librdkafka could not create the client (e.g. out of resources): fatal.
    #[error("cannot create a Kafka client: {0}")]
    Creation(String),
}

impl From<KafkaError> for ClientError {
    fn from(e: KafkaError) -> Self {
        match e {
            e @ KafkaError::ClientConfig(..) => ClientError::Property(redact(e)),
            other => ClientError::Creation(other.to_string()),
        }
    }
}

/// Creates a client (producer, consumer, admin) with the default context.
pub fn create<T: FromClientConfig>(cfg: &ClientConfig) -> Result<T, ClientError> {
    Ok(cfg.create()?)
}

/// Creates a client with `context` (delivery callbacks, rebalance hooks, stats).
pub fn create_with_context<C, T>(cfg: &ClientConfig, context: C) -> Result<T, ClientError>
where
    C: ClientContext,
    T: FromClientConfigAndContext<C>,
{
    Ok(cfg.create_with_context(context)?)
}

/// A `[kafka]` setting librdkafka refused.
#[derive(Debug, thiserror::Error)]
#[error("kafka.properties.\"{property}\": {message}")]
pub struct PropertyError {
    /// The property at fault (a name from `[kafka.properties]` or one onecount sets).
    pub property: String,
    /// librdkafka's reason, with a secret value redacted.
    pub message: String,
}

/// `bootstrap.servers` and the user's properties: what every client shares.
pub fn base_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    apply(&mut cfg, &[], kafka);
    cfg
}

/// A producer config: [`PRODUCER_DEFAULTS`], then the user's properties.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    apply(&mut cfg, PRODUCER_DEFAULTS, kafka);
    cfg
}

/// A consumer config in the group `kafka.group_id`: [`CONSUMER_DEFAULTS`], then the user's
/// properties.
pub fn consumer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    apply(&mut cfg, CONSUMER_DEFAULTS, kafka);
    cfg.set("group.id", &kafka.group_id);
    cfg
}

/// An admin client config (topic creation).
pub fn admin_config(kafka: &KafkaConfig) -> ClientConfig {
    base_config(kafka)
}

fn apply(cfg: &mut ClientConfig, defaults: &[(&str, &str)], kafka: &KafkaConfig) {
    for (k, v) in defaults {
        cfg.set(*k, *v);
    }
    for (k, v) in kafka.properties.iter() {
        cfg.set(k, v);
    }
    cfg.set("bootstrap.servers", &kafka.brokers);
}

/// Checks, without connecting, that librdkafka accepts every property of a producer and a
/// consumer config built from `kafka`: a misspelt name, a bad value, or a feature this build
/// lacks (e.g. `security.protocol = "SASL_SSL"` without SSL support) is an error naming the
/// property.
pub fn check_properties(kafka: &KafkaConfig) -> Result<(), PropertyError> {
    for cfg in [producer_config(kafka), consumer_config(kafka)] {
        cfg.create_native_config().map_err(redact)?;
    }
    Ok(())
}

/// A `KafkaError` from building a native config, with the value redacted if it is a secret.
fn redact(e: KafkaError) -> PropertyError {
    match e {
        KafkaError::ClientConfig(_, message, property, value) => {
            let message = if is_secret_property(&property) && !value.is_empty() {
                message.replace(&value, REDACTED)
            } else {
                message
            };
            PropertyError { property, message }
        }
        other => PropertyError {
            property: "?".into(),
            message: other.to_string(),
        },
    }
}

/// The high watermark of `topic`/`partition` as of the last fetch response the consumer got,
/// without a broker round trip, or `None` before the first. (`rdkafka` does not wrap
/// librdkafka's `rd_kafka_get_watermark_offsets`.)
pub fn cached_high_watermark<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    use rdkafka::consumer::Consumer;
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer is valid while `consumer` lives (borrowed for the call),
    // `topic` is a NUL-terminated string that outlives the call, and `low`/`high` are valid
    // out-pointers. The function only reads librdkafka's cached watermarks under its own lock.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(props: &[(&str, &str)]) -> KafkaConfig {
        let mut k = KafkaConfig {
            brokers: "b1:9092,b2:9092".into(),
            group_id: "g".into(),
            ..KafkaConfig::default()
        };
        for (name, value) in props {
            k.properties.insert(*name, *value);
        }
        k
    }

    #[test]
    fn producer_starts_from_onecounts_defaults_and_the_user_overrides_them() {
        let cfg = producer_config(&kafka(&[("linger.ms", "50"), ("client.id", "me")]));
        assert_eq!(cfg.get("enable.idempotence"), Some("true"));
        assert_eq!(cfg.get("acks"), Some("all"));
        assert_eq!(cfg.get("compression.type"), Some("lz4"));
        assert_eq!(cfg.get("linger.ms"), Some("50"));
        assert_eq!(cfg.get("client.id"), Some("me"));
        assert_eq!(cfg.get("bootstrap.servers"), Some("b1:9092,b2:9092"));
        assert_eq!(cfg.get("group.id"), None);
    }

    #[test]
    fn consumer_commits_only_what_the_application_stores() {
        let cfg = consumer_config(&kafka(&[]));
        assert_eq!(cfg.get("group.id"), Some("g"));
        assert_eq!(cfg.get("enable.auto.commit"), Some("false"));
        assert_eq!(cfg.get("enable.auto.offset.store"), Some("false"));
    }

    #[test]
    fn consumer_prefetch_is_small_and_refilled_soon_unless_the_user_says_otherwise() {
        let cfg = consumer_config(&kafka(&[]));
        assert_eq!(cfg.get("fetch.queue.backoff.ms"), Some("20"));
        assert_eq!(cfg.get("queued.max.messages.kbytes"), Some("16384"));
        let cfg = consumer_config(&kafka(&[("queued.max.messages.kbytes", "65536")]));
        assert_eq!(cfg.get("queued.max.messages.kbytes"), Some("65536"));
    }

    #[test]
    fn the_vendored_build_accepts_every_default() {
        check_properties(&kafka(&[])).unwrap();
        check_properties(&kafka(&[
            ("sasl.mechanism", "PLAIN"),
            ("session.timeout.ms", "6000"),
        ]))
        .unwrap();
    }

    #[test]
    fn the_build_has_tls_and_scram_for_production_clusters() {
        check_properties(&kafka(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "onecount"),
            ("sasl.password", "secret"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ]))
        .expect("rdkafka is built with ssl-vendored");
        check_properties(&kafka(&[("compression.type", "snappy")])).unwrap();
    }

    #[test]
    fn a_misspelt_property_is_named() {
        let err = check_properties(&kafka(&[("linger.msec", "5")])).unwrap_err();
        assert_eq!(err.property, "linger.msec");
        assert!(err
            .to_string()
            .starts_with("kafka.properties.\"linger.msec\": "));
    }

    #[test]
    fn a_bad_value_is_named_and_a_secret_value_is_not_printed() {
        let err = check_properties(&kafka(&[("acks", "most")])).unwrap_err();
        assert_eq!(err.property, "acks");
        let secret = ClientError::from(KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"hunter2\" for configuration property \"sasl.password\"".into(),
            "sasl.password".into(),
            "hunter2".into(),
        ));
        assert!(!secret.to_string().contains("hunter2"), "{secret}");
        assert!(secret.to_string().contains(REDACTED), "{secret}");
    }
}
