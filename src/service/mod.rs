//! `onecount run`: the Kafka service. Two stages in every instance, joined by an internal log:
//!
//! - [`ingest`] consumes the three input topics in the application's consumer group and forwards
//!   each record, as it came, with its origin, to the internal log `<group_id>-log`;
//! - [`state`] consumes the log in the group `<group_id>-state`, runs the engine on it,
//!   checkpoints to the compacted changelog `<group_id>-changelog`, and writes the outputs.
//!
//! Owns: topic creation, the two stage threads, the HTTP endpoint, signals and the shutdown
//! deadline. Must not: apply a rule. The design, its guarantees and its limits are in
//! docs/SERVICE.md.

pub mod align;
pub mod checkpoint;
pub mod health;
pub mod ingest;
pub mod merge;
pub mod outputs;
pub mod route;
pub mod state;
pub mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::http::HttpServer;
use crate::kafka::admin::{ensure_topics, AdminError, TopicSpec};
use crate::kafka::client::ClientError;
use crate::metrics::Metrics;

use health::Health;

/// Names the service derives from `kafka.group_id`.
#[derive(Debug, Clone)]
pub struct ServiceTopics {
    pub log: String,
    pub changelog: String,
    pub state_group: String,
}

impl ServiceTopics {
    pub fn new(config: &Config) -> ServiceTopics {
        let g = &config.kafka.group_id;
        ServiceTopics {
            log: format!("{g}-log"),
            changelog: format!("{g}-changelog"),
            state_group: format!("{g}-state"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The service cannot go on (a config the broker refuses, an undeliverable output, data
    /// from a newer release): it stops and exits non-zero.
    #[error("{0}")]
    Fatal(String),
    /// A state task lost its partition or its changelog producer: it is dropped and restored
    /// again from its checkpoint.
    #[error("state task lost: {0}")]
    TaskLost(String),
    #[error("shutdown deadline passed before everything was flushed and committed")]
    DeadlinePassed,
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("creating topics: {0}")]
    Topics(#[from] AdminError),
    #[error("starting the HTTP endpoint on {listen}: {source}")]
    Http {
        listen: String,
        source: std::io::Error,
    },
}

/// A stop request and the deadline by which everything must be flushed and committed.
#[derive(Debug, Default)]
pub struct Stop {
    requested: AtomicBool,
    deadline: Mutex<Option<Instant>>,
}

impl Stop {
    pub fn request(&self, within: Duration) {
        let mut d = self.deadline.lock().unwrap_or_else(|p| p.into_inner());
        d.get_or_insert(Instant::now() + within);
        self.requested.store(true, Ordering::Relaxed);
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// `Err` once a stop was requested and its deadline has passed: loops that wait on the
    /// broker give up then, instead of holding the process past its grace period.
    pub fn check_deadline(&self) -> Result<(), ServiceError> {
        let d = self.deadline.lock().unwrap_or_else(|p| p.into_inner());
        match *d {
            Some(deadline) if Instant::now() >= deadline => Err(ServiceError::DeadlinePassed),
            _ => Ok(()),
        }
    }
}

/// Runs the service until SIGTERM or SIGINT, then stops within `service.shutdown_timeout`.
pub fn run(config: &Config) -> Result<(), ServiceError> {
    let topics = ServiceTopics::new(config);
    ensure_service_topics(config, &topics)?;
    let configured: Vec<String> = config
        .orders
        .shops
        .values()
        .cloned()
        .chain(config.orders.default_pixel.clone())
        .collect();
    let metrics = Metrics::new(crate::metrics::DEFAULT_MAX_PIXELS, &configured);
    let health = Health::new(metrics.ready.clone(), metrics.broker_up.clone());
    let listen = config.http.listen.to_string();
    let _http = HttpServer::start(&listen, metrics.registry().clone(), health.clone()).map_err(
        |source| ServiceError::Http {
            listen: listen.clone(),
            source,
        },
    )?;
    tracing::info!(%listen, group = %config.kafka.group_id, log = %topics.log, "onecount run started");

    let stop = Arc::new(Stop::default());
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let flag = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal, flag.clone())
            .map_err(|e| ServiceError::Fatal(format!("installing a signal handler: {e}")))?;
        let stop = stop.clone();
        let timeout = config.service.shutdown_timeout;
        std::thread::Builder::new()
            .name("onecount-signal".into())
            .spawn(move || loop {
                if flag.load(Ordering::Relaxed) {
                    tracing::info!("stop requested; finishing, flushing and committing");
                    stop.request(timeout);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            })
            .map_err(|e| ServiceError::Fatal(e.to_string()))?;
    }

    let input =
        ingest::InputConsumer::subscribe(config, health.clone(), metrics.consumer_lag.clone())?;
    let ingest_health = health.clone();
    let state = state::StateStage::new(config, &topics, metrics, health)?;
    let topics = &topics;
    // Scoped, so the ingest thread can borrow the config. It owns the input consumer, which
    // ingest borrows, and closes it as soon as ingest ends (before the state stage's last
    // checkpoint): the group then hands the partitions on at once, as when ingest owned it.
    // Kept open until both stages had ended, the hand-over also waited for that checkpoint:
    // on live traffic (hours of event time a minute in the tests) a longer hand-over lets a
    // late copy meet an action still pending (docs/SERVICE.md, "Known limits"), and one run
    // of the rebalance test missed a conversion that way.
    let results = std::thread::scope(|scope| {
        // `move`: the closure owns `input`, dropped (closed) when the stage's body returns.
        let ingest = spawn_stage(scope, "onecount-ingest", &stop, move |s| {
            ingest::Ingest::new(&input, config, topics, ingest_health)?.run(s)
        })?;
        let state = spawn_stage(scope, "onecount-state", &stop, move |s| state.run(s))?;
        Ok::<_, ServiceError>([ingest.join(), state.join()])
    })?;
    for r in results {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ServiceError::Fatal("a stage panicked".into())),
        }
    }
    tracing::info!("onecount run stopped cleanly");
    Ok(())
}

type StageResult = Result<(), ServiceError>;

/// Runs a stage on its own thread. One stage ending stops the other: the service runs whole or
/// not at all. A stage that cannot start stops the one already running (the scope waits for
/// it).
fn spawn_stage<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    stop: &'scope Stop,
    stage: impl FnOnce(&Stop) -> StageResult + Send + 'scope,
) -> Result<std::thread::ScopedJoinHandle<'scope, StageResult>, ServiceError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn_scoped(scope, move || {
            let result = stage(stop);
            if let Err(e) = &result {
                tracing::error!(error = %e, "stage failed; stopping");
            }
            stop.request(Duration::from_secs(10));
            result
        })
        .map_err(|e| {
            stop.request(Duration::from_secs(10));
            ServiceError::Fatal(e.to_string())
        })
}

fn ensure_service_topics(config: &Config, topics: &ServiceTopics) -> Result<(), ServiceError> {
    let t = &config.topics;
    // Missing inputs too: subscribed from the start, all three are assigned in the first
    // rebalance, so none starts behind the others.
    let mut specs: Vec<TopicSpec> = crate::kafka::admin::input_specs(t);
    specs.extend(t.outputs().map(|(_, name)| TopicSpec::new(name, t)));
    // One log and changelog partition per state task: the state is split by pixel over them.
    let state_partitions = config.service.state_partitions as usize;
    let mut log = TopicSpec::repartition(&topics.log, t);
    log.partitions = state_partitions as i32;
    let mut changelog = TopicSpec::changelog(&topics.changelog, t);
    changelog.partitions = state_partitions as i32;
    specs.push(log);
    specs.push(changelog);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServiceError::Fatal(e.to_string()))?;
    let status = runtime.block_on(ensure_topics(
        &config.kafka,
        &specs,
        crate::kafka::admin::DEFAULT_TIMEOUT,
    ))?;
    for s in status {
        tracing::info!(topic = %s.name, partitions = s.partitions, created = s.created, "topic ready");
        let internal = s.name == topics.log || s.name == topics.changelog;
        if internal && s.partitions != state_partitions {
            // A pixel's state lives in the partition its code hashes to: with another count,
            // pixels would land where their state is not.
            return Err(ServiceError::Fatal(format!(
                "{} has {} partitions but service.state_partitions is {state_partitions}: the \
                 state split cannot change for a running group (start a new kafka.group_id to \
                 change it)",
                s.name, s.partitions
            )));
        }
    }
    Ok(())
}
