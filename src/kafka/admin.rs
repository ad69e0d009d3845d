//! Creating the topics onecount needs when they are missing, and waiting until they can be used.
//!
//! Owns: [`TopicSpec`] (name, partitions, replication and topic configs, from `[topics]`) and
//! [`ensure_topics`]. An existing topic is never altered: its partition count is reported as it
//! is and the caller decides whether that is acceptable. Must not: delete topics, or pick
//! partition counts of its own (they come from `[topics]` or the caller).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{KafkaConfig, TopicsConfig};

use super::client::{admin_config, create, ClientError};

/// How long topic creation may take, including until the new topics show in metadata.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A topic to create if missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// -1: the broker's `default.replication.factor`.
    pub replication_factor: i32,
    /// Topic configs (`cleanup.policy`, `retention.ms`...).
    pub configs: Vec<(String, String)>,
}

impl TopicSpec {
    /// A plain topic (inputs, outputs) with `[topics]` partitions and replication.
    pub fn new(name: &str, topics: &TopicsConfig) -> TopicSpec {
        TopicSpec {
            name: name.to_string(),
            partitions: i32::try_from(topics.partitions).unwrap_or(i32::MAX),
            replication_factor: topics.replication_factor.map_or(-1, i32::from),
            configs: Vec::new(),
        }
    }

    /// An internal repartition topic: deleted after `topics.retention`.
    pub fn repartition(name: &str, topics: &TopicsConfig) -> TopicSpec {
        let mut spec = TopicSpec::new(name, topics);
        spec.configs = vec![
            ("cleanup.policy".into(), "delete".into()),
            (
                "retention.ms".into(),
                topics.retention.as_millis().to_string(),
            ),
        ];
        spec
    }

    /// A changelog topic: compacted, so the latest record of every live key stays.
    pub fn changelog(name: &str, topics: &TopicsConfig) -> TopicSpec {
        let mut spec = TopicSpec::new(name, topics);
        spec.configs = vec![("cleanup.policy".into(), "compact".into())];
        spec
    }

    /// `partitions` partitions, the broker's default replication (tests, tools).
    pub fn with_partitions(name: &str, partitions: i32) -> TopicSpec {
        TopicSpec {
            name: name.to_string(),
            partitions,
            replication_factor: -1,
            configs: Vec::new(),
        }
    }
}

/// The three input topics, as `generate --kafka` creates them.
pub fn input_specs(topics: &TopicsConfig) -> Vec<TopicSpec> {
    topics
        .inputs()
        .iter()
        .map(|(_, name)| TopicSpec::new(name, topics))
        .collect()
}

/// What [`ensure_topics`] found or did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStatus {
    pub name: String,
    /// Created now (else it existed, and was left as it is).
    pub created: bool,
    /// Partitions the topic has now (not necessarily the spec's, for an existing topic).
    pub partitions: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The admin client could not be created: fatal, fix the config.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The request as a whole failed (no broker reachable, timeout): retryable.
    #[error("creating topics: {0} (is kafka.brokers reachable?)")]
    Request(String),
    /// The broker refused to create a topic: fatal until the config or the cluster changes.
    #[error("cannot create topic {topic:?}: {code}{hint}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
        /// What to change, when the code says.
        hint: &'static str,
    },
    /// The topic exists but does not show in metadata with a leader for every partition in
    /// time: retryable.
    #[error("topic {topic:?} is not ready after {waited:?}: {reason}")]
    NotReady {
        topic: String,
        waited: Duration,
        reason: String,
    },
}

impl AdminError {
    /// Whether trying again later may succeed (the broker may come back); else fatal.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AdminError::Request(_) | AdminError::NotReady { .. })
    }
}

fn hint(code: RDKafkaErrorCode) -> &'static str {
    match code {
        RDKafkaErrorCode::InvalidReplicationFactor => {
            " (topics.replication_factor is more than the cluster's brokers, or leave it out for the broker's default)"
        }
        RDKafkaErrorCode::InvalidPartitions => " (check topics.partitions)",
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => {
            " (onecount's principal may not create topics: create them beforehand, or grant CREATE)"
        }
        RDKafkaErrorCode::PolicyViolation => " (the cluster's create-topic policy refused it)",
        RDKafkaErrorCode::InvalidConfig => " (a topic config was refused: check topics.retention)",
        _ => "",
    }
}

/// Creates each topic of `specs` that does not exist, then waits until every one of them shows
/// in metadata with a leader for each partition (so producing to it right after cannot fail on
/// an unknown topic). Returns one status per spec, in order.
pub async fn ensure_topics(
    kafka: &KafkaConfig,
    specs: &[TopicSpec],
    timeout: Duration,
) -> Result<Vec<TopicStatus>, AdminError> {
    let started = Instant::now();
    let admin: Arc<AdminClient<DefaultClientContext>> = Arc::new(create(&admin_config(kafka))?);
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            s.configs.iter().fold(
                NewTopic::new(
                    &s.name,
                    s.partitions,
                    TopicReplication::Fixed(s.replication_factor),
                ),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results = admin
        .create_topics(&new_topics, &opts)
        .await
        .map_err(|e| AdminError::Request(e.to_string()))?;
    let mut created = Vec::with_capacity(specs.len());
    for spec in specs {
        let result = results.iter().find(|r| match r {
            Ok(name) | Err((name, _)) => *name == spec.name,
        });
        match result {
            Some(Ok(_)) => created.push(true),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => created.push(false),
            Some(Err((topic, code))) => {
                return Err(AdminError::Create {
                    topic: topic.clone(),
                    code: *code,
                    hint: hint(*code),
                })
            }
            None => {
                return Err(AdminError::Request(format!(
                    "the broker's answer does not mention topic {:?}",
                    spec.name
                )))
            }
        }
    }
    // Metadata is a blocking call: off the async threads.
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let remaining = timeout.saturating_sub(started.elapsed());
    let partitions = tokio::task::spawn_blocking(move || wait_ready(&admin, &names, remaining))
        .await
        .expect("the metadata wait does not panic")?;
    Ok(specs
        .iter()
        .zip(created)
        .zip(partitions)
        .map(|((spec, created), partitions)| TopicStatus {
            name: spec.name.clone(),
            created,
            partitions,
        })
        .collect())
}

/// Polls metadata until each topic exists with a leader for every partition; returns their
/// partition counts.
fn wait_ready(
    admin: &AdminClient<DefaultClientContext>,
    names: &[String],
    timeout: Duration,
) -> Result<Vec<usize>, AdminError> {
    let started = Instant::now();
    let mut counts = Vec::with_capacity(names.len());
    for name in names {
        loop {
            let reason = match admin
                .inner()
                .fetch_metadata(Some(name), Duration::from_secs(5))
            {
                Ok(md) => match md.topics().iter().find(|t| t.name() == name) {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        if t.partitions().iter().all(|p| p.leader() >= 0) {
                            counts.push(t.partitions().len());
                            break;
                        }
                        "a partition has no leader yet".to_string()
                    }
                    Some(t) => match t.error() {
                        Some(e) => format!("metadata says {:?}", RDKafkaErrorCode::from(e)),
                        None => "no partitions yet".to_string(),
                    },
                    None => "not in metadata yet".to_string(),
                },
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= timeout {
                return Err(AdminError::NotReady {
                    topic: name.clone(),
                    waited: started.elapsed(),
                    reason,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_take_partitions_replication_and_retention_from_the_config() {
        let mut topics = TopicsConfig::default();
        let spec = TopicSpec::new("t", &topics);
        assert_eq!((spec.partitions, spec.replication_factor), (6, -1));
        topics.partitions = 3;
        topics.replication_factor = Some(3);
        topics.retention = Duration::from_secs(3600);
        let spec = TopicSpec::repartition("r", &topics);
        assert_eq!((spec.partitions, spec.replication_factor), (3, 3));
        assert!(spec
            .configs
            .contains(&("retention.ms".to_string(), "3600000".to_string())));
        let spec = TopicSpec::changelog("c", &topics);
        assert_eq!(
            spec.configs,
            [("cleanup.policy".to_string(), "compact".to_string())]
        );
        let inputs: Vec<String> = input_specs(&TopicsConfig::default())
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(inputs, ["tiktok.pixel", "tiktok.events_api", "orders"]);
    }
}
