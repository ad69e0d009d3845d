//! The state stage: one engine per partition of the internal log, checkpointed to Kafka.
//!
//! Owns: the state task's life (restore on assignment, process, checkpoint, drop on revocation)
//! and the checkpoint protocol:
//!
//! 1. wait until every output produced so far is acknowledged (the output frontier moves);
//! 2. in one Kafka transaction on the changelog: the engine's changed entries, the checkpoint
//!    record (epoch, log offset, applied input offsets, where each channel stands in the merge,
//!    output frontier) and the log consumer's offset (`send_offsets_to_transaction`). The
//!    transaction commit is the commit point.
//!
//! Records reach the engine through the merge (`merge`), which may hold some back while it
//! waits for a channel behind them in event time: the checkpoint's log offset is that of the
//! first item still queued, and after a restart the items read again that were applied before
//! are recognised by their channel's last applied log offset.
//!
//! On assignment the task reads its changelog partition (read_committed: an interrupted
//! checkpoint is invisible), rebuilds the engine, reads back what it wrote to the output topics
//! after the checkpoint's frontier, and resumes the log at the checkpoint's offset. Processing is
//! deterministic, so what it produces again is byte-identical to what is already there and is
//! suppressed: every reader, read_uncommitted included, sees each output once.
//!
//! Must not: apply a rule (the engine does), or read the clock for anything but when to
//! checkpoint and timeouts.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::Config;
use crate::engine::changelog::ChangelogEntry;
use crate::engine::stats::Stats;
use crate::engine::{Engine, Observation, Outputs};
use crate::kafka::client::{consumer_config, create, create_with_context, producer_config};
use crate::kafka::delivery::REPORT_POLL;
use crate::metrics::Metrics;
use crate::model::Input;
use crate::parse::{Parsed, Parser};

use super::checkpoint::{Checkpoint, CHECKPOINT_KEY};
use super::health::{Health, Observed};
use super::merge::{Item, Merge, Next};
use super::outputs::{OutputPartition, OutputWriter};
use super::route::Router;
use super::wire::{self, Channel, LogRecord, TASK_HEADER};
use super::{ServiceError, ServiceTopics, Stop};

/// How long one broker round trip of the checkpoint may take before it is retried.
const ROUND_TRIP: Duration = Duration::from_secs(30);
/// How long a revocation waits for this instance's outputs in flight.
const REVOKE_FLUSH: Duration = Duration::from_secs(30);
/// Messages applied before their outputs are written and metrics brought up to date.
const BATCH: usize = 512;
/// How often the assignment is looked at without a rebalance in between (a safety net: a
/// rebalance sets a flag).
const ASSIGNMENT_CHECK: Duration = Duration::from_secs(1);
/// How often a long wait of the merge for a channel is logged.
const MERGE_WAIT_LOG: Duration = Duration::from_secs(30);

/// One partition of the internal log and everything it owns: the whole engine for its pixels.
struct StateTask {
    partition: i32,
    engine: Engine,
    parser: Parser,
    /// Which of a record's events are this task's (the others it only observes).
    router: Router,
    owners: Vec<i32>,
    /// Highest input offset applied per channel: a record forwarded again is skipped.
    applied: BTreeMap<Channel, i64>,
    /// The channels of the log in event-time order (see `merge`).
    merge: Merge,
    /// Items the merge may queue while it waits for a channel (`service.merge_queue_limit`);
    /// past it the wait is given up (outcomes may then differ from `replay`'s, as with a
    /// stream read out of order).
    merge_queue_limit: usize,
    /// Per channel, the log offset of its last applied item and whether it then held.
    merged: BTreeMap<Channel, (i64, bool)>,
    /// Since when, and last logged when, the merge waits for a channel.
    merge_wait: Option<(Channel, Instant, Instant)>,
    frontier: BTreeMap<OutputPartition, i64>,
    epoch: u64,
    /// The next log offset to read; everything before it is in the state or queued in the
    /// merge.
    log_next: i64,
    /// Log offset at the last checkpoint: nothing new since means nothing to write.
    checkpointed_at: i64,
    last_checkpoint: Instant,
    changelog: BaseProducer,
    out: Outputs,
    parsed: Vec<Parsed>,
}

impl StateTask {
    /// Applies queued items in merge order until the merge waits or runs empty.
    fn drain_merge(&mut self, metrics: &Metrics) {
        loop {
            let next = {
                let engine = &self.engine;
                self.merge
                    .next(|c| engine.channel_highest(c.input, c.partition))
            };
            match next {
                Next::Item(offset, channel, item) => {
                    self.apply_item(metrics, offset, channel, item);
                }
                Next::Wait(channel) if self.merge.queued() >= self.merge_queue_limit => {
                    tracing::warn!(
                        input = channel.input.as_str(),
                        partition = channel.partition,
                        queued = self.merge.queued(),
                        "gave up waiting for an input partition in the internal log; the \
                         others go ahead of it"
                    );
                    metrics
                        .merge_waits_given_up
                        .with_label_values(&[channel.input.as_str()])
                        .inc();
                    self.merge.release(channel);
                }
                Next::Wait(channel) => {
                    self.log_merge_wait(channel);
                    return;
                }
                Next::Empty => return,
            }
        }
    }

    /// Applies an item the merge gave (or let pass): the merge no longer waits.
    fn apply_item(&mut self, metrics: &Metrics, offset: i64, channel: Channel, item: Item<'_>) {
        self.merge_wait = None;
        let holds = item.holds();
        match item {
            Item::Record { origin, .. } | Item::Observed { origin, .. }
                if self.applied.get(&channel).is_some_and(|&a| a >= origin) =>
            {
                if matches!(item, Item::Record { .. }) {
                    metrics.replayed_records.inc();
                }
            }
            Item::Record { origin, payload } => {
                self.parser.parse(
                    channel.input,
                    channel.partition,
                    origin,
                    payload.as_deref(),
                    &mut self.parsed,
                );
                self.router.owners(&self.parsed, origin, &mut self.owners);
                for (p, &owner) in self.parsed.drain(..).zip(&self.owners) {
                    if owner == self.partition {
                        self.engine.process(p, &mut self.out);
                    } else if let Some(o) = Observation::of(&p) {
                        // An Events API body may hold events of other partitions' pixels.
                        self.engine.observe_elsewhere(channel, o, &mut self.out);
                    }
                }
                self.applied.insert(channel, origin);
            }
            Item::Observed {
                origin,
                observations,
            } => {
                for o in wire::observations(&observations) {
                    self.engine.observe_elsewhere(channel, o, &mut self.out);
                }
                self.applied.insert(channel, origin);
            }
            Item::Assigned => self
                .engine
                .register_channel(channel.input, channel.partition),
            Item::Idle => {
                self.engine
                    .mark_idle_channel(channel.input, channel.partition, &mut self.out)
            }
            Item::CaughtUp => {}
        }
        self.merged.insert(channel, (offset, holds));
    }

    /// Takes an item through the merge: applied at once when it goes next, else queued.
    fn pass(&mut self, metrics: &Metrics, offset: i64, channel: Channel, item: Item<'_>) {
        let engine = &self.engine;
        let passed = self.merge.pass(offset, channel, item, |c| {
            engine.channel_highest(c.input, c.partition)
        });
        if let Some(item) = passed {
            self.apply_item(metrics, offset, channel, item);
        }
    }

    fn log_merge_wait(&mut self, channel: Channel) {
        let now = Instant::now();
        match &mut self.merge_wait {
            Some((c, since, logged)) if *c == channel => {
                if now.duration_since(*logged) >= MERGE_WAIT_LOG {
                    *logged = now;
                    tracing::warn!(
                        input = channel.input.as_str(),
                        partition = channel.partition,
                        waited_s = now.duration_since(*since).as_secs(),
                        queued = self.merge.queued(),
                        "waiting for an input partition's records in the internal log (the \
                         others wait with it to keep event-time order)"
                    );
                }
            }
            _ => self.merge_wait = Some((channel, now, now)),
        }
    }

    /// Where the log resumes after a restart from the next checkpoint: at the first item still
    /// queued, else after everything read.
    fn resume_offset(&self) -> i64 {
        self.merge.first_queued_offset().unwrap_or(self.log_next)
    }
}

/// The state stage of one instance: a consumer of the internal log in the state group, and a
/// task for each log partition it is assigned.
pub struct StateStage {
    config: Config,
    topics: ServiceTopics,
    consumer: BaseConsumer<Observed>,
    metrics: Metrics,
    health: Arc<Health>,
    /// Set by the consumer's rebalance callback (inside `poll`), taken by `follow_assignment`.
    rebalanced: Arc<AtomicBool>,
    /// The group has assigned this instance its partitions (none, possibly) at least once.
    rebalanced_once: bool,
    assignment_checked: Instant,
    tasks: BTreeMap<i32, StateTask>,
    /// What the counters have exported per state partition (`Metrics::observe_stats_of`).
    /// Outlives its task: a partition restored again in this process goes back to its
    /// checkpoint, and what it processes again must not be counted twice.
    exported: BTreeMap<i32, Stats>,
    /// An assigned partition has no task (its restore was interrupted): look again soon.
    restore_pending: bool,
    router: Router,
    /// One output producer for every task this instance runs: its records in flight outlive a
    /// dropped task, and are waited for before any restore reads the outputs back.
    outputs: OutputWriter,
}

impl StateStage {
    pub fn new(
        config: &Config,
        topics: &ServiceTopics,
        metrics: Metrics,
        health: Arc<Health>,
    ) -> Result<StateStage, ServiceError> {
        let mut cfg = consumer_config(&config.kafka);
        cfg.set("group.id", &topics.state_group);
        cfg.set("statistics.interval.ms", "1000");
        // A restore of millions of keys happens inside the poll loop: give it time.
        cfg.set("max.poll.interval.ms", "1800000");
        cfg.set("isolation.level", "read_committed");
        let rebalanced = Arc::new(AtomicBool::new(false));
        let outputs = OutputWriter::new(config, metrics.latency.clone())?;
        let consumer: BaseConsumer<Observed> = create_with_context(
            &cfg,
            Observed {
                health: health.clone(),
                lag: Some(metrics.consumer_lag.clone()),
                rebalanced: Some(rebalanced.clone()),
                before_revoke: Some(outputs.flusher(REVOKE_FLUSH)),
            },
        )?;
        consumer
            .subscribe(&[topics.log.as_str()])
            .map_err(|e| ServiceError::Fatal(format!("subscribing to {}: {e}", topics.log)))?;
        Ok(StateStage {
            config: config.clone(),
            topics: topics.clone(),
            consumer,
            metrics,
            health,
            rebalanced,
            rebalanced_once: false,
            assignment_checked: Instant::now(),
            tasks: BTreeMap::new(),
            exported: BTreeMap::new(),
            restore_pending: false,
            router: Router::new(config.service.state_partitions, &config.orders),
            outputs,
        })
    }

    /// Runs until `stop` is requested, then checkpoints and returns.
    pub fn run(mut self, stop: &Stop) -> Result<(), ServiceError> {
        let _stage = tracing::info_span!("state", group = %self.topics.state_group).entered();
        while !stop.requested() {
            self.follow_assignment(stop)?;
            let mut applied = 0;
            let mut wait = Duration::from_millis(100);
            let mut polled_at = Instant::now();
            while applied < BATCH {
                match self.consumer.poll(wait) {
                    None => break,
                    Some(Ok(m)) => {
                        if applied == 0 {
                            polled_at = Instant::now();
                        }
                        Self::apply(self.tasks.get_mut(&m.partition()), &self.metrics, &m)?;
                        applied += 1;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "state consumer error");
                        break;
                    }
                }
                wait = Duration::ZERO;
            }
            let partitions: Vec<i32> = self.tasks.keys().copied().collect();
            for partition in partitions {
                let interval = self.config.service.commit_interval;
                let due = |t: &StateTask| t.last_checkpoint.elapsed() >= interval;
                let mut result = self.write_outputs(partition, polled_at, stop);
                if result.is_ok() && self.tasks.get(&partition).is_some_and(due) {
                    result = self.checkpoint(partition, stop);
                }
                if let Err(e) = result {
                    self.on_task_error(partition, e)?;
                }
            }
            self.observe_tasks();
        }
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for partition in partitions {
            self.write_outputs(partition, Instant::now(), stop)?;
            self.checkpoint(partition, stop)?;
            tracing::info!(partition, "state checkpointed for shutdown");
        }
        Ok(())
    }

    /// A task that lost its partition or its changelog producer is dropped; it is restored
    /// again from the changelog if the partition is still ours. Anything else stops the service.
    fn on_task_error(&mut self, partition: i32, e: ServiceError) -> Result<(), ServiceError> {
        match e {
            ServiceError::TaskLost(why) => {
                tracing::warn!(partition, reason = %why, "state task dropped; it restores from its checkpoint");
                self.tasks.remove(&partition);
                self.restore_pending = true;
                Ok(())
            }
            other => Err(other),
        }
    }

    /// Drops the tasks whose partitions were revoked; restores the ones assigned. Looks at the
    /// assignment after a rebalance, while a task is missing, and every `ASSIGNMENT_CHECK`:
    /// asking for it is a round trip to librdkafka's main thread, a twentieth of this stage's
    /// time when it was asked once per batch.
    fn follow_assignment(&mut self, stop: &Stop) -> Result<(), ServiceError> {
        if self.rebalanced.swap(false, Ordering::Relaxed) {
            self.rebalanced_once = true;
        } else if !self.restore_pending && self.assignment_checked.elapsed() < ASSIGNMENT_CHECK {
            return Ok(());
        }
        self.assignment_checked = Instant::now();
        let assigned: Vec<i32> = match self.consumer.assignment() {
            Ok(tpl) => tpl
                .elements()
                .iter()
                .filter(|e| e.topic() == self.topics.log)
                .map(|e| e.partition())
                .collect(),
            Err(_) => return Ok(()),
        };
        self.tasks.retain(|partition, _| {
            let kept = assigned.contains(partition);
            if !kept {
                tracing::info!(partition, "state partition revoked");
            }
            kept
        });
        self.restore_pending = false;
        let mut restored = false;
        for &partition in &assigned {
            if self.tasks.contains_key(&partition) {
                continue;
            }
            self.health.set_state_ready(false);
            match self.restore(partition, stop) {
                Ok(task) => {
                    self.tasks.insert(partition, task);
                    restored = true;
                }
                Err(ServiceError::TaskLost(why)) => {
                    tracing::warn!(partition, reason = %why, "restore interrupted; retrying");
                    self.restore_pending = true;
                }
                Err(e) => return Err(e),
            }
        }
        if restored {
            // One per round of restores, however many partitions it took: a rebalance that
            // hands an instance four partitions is not a restore loop (OnecountRestoreLoop).
            self.metrics.restores.inc();
        }
        self.observe_tasks();
        self.health
            .set_state_ready(self.rebalanced_once && !self.restore_pending);
        Ok(())
    }

    fn restore(&mut self, partition: i32, stop: &Stop) -> Result<StateTask, ServiceError> {
        let _span = tracing::info_span!("restore", partition).entered();
        let started = Instant::now();
        let changelog = self.changelog_producer(partition, stop)?;
        let reader = self.reader("read_committed")?;
        let (mut engine, checkpoint, records) = read_changelog(
            &self.config,
            &reader,
            &self.topics.changelog,
            partition,
            stop,
        )?;
        // Everything this instance wrote must be in the topics before they are read back.
        self.outputs.flush(stop)?;
        self.outputs.clear_suppressions(partition);
        let first_start = checkpoint.is_none();
        let checkpoint = checkpoint.unwrap_or_default();
        let mut frontier = checkpoint.frontier();
        let output_reader = self.reader("read_uncommitted")?;
        let mut ranges = Vec::new();
        for topic in self.outputs.topics().clone() {
            for p in partitions_of(&output_reader, &topic)? {
                let (low, high) = output_reader
                    .fetch_watermarks(&topic, p, ROUND_TRIP)
                    .map_err(|e| ServiceError::TaskLost(format!("watermarks of {topic}: {e}")))?;
                let from = match frontier.get(&(topic.clone(), p)) {
                    Some(&f) => f.max(low),
                    // First start: nothing after the current end is ours yet.
                    None if first_start => high,
                    // A partition the checkpoint does not know: read it whole.
                    None => low,
                };
                frontier.insert((topic.clone(), p), from);
                if from < high {
                    ranges.push(((topic.clone(), p), from, high));
                }
            }
        }
        let found = read_own_outputs(&output_reader, &ranges, partition, &mut self.outputs, stop)?;
        let exported = self.exported.entry(partition).or_default();
        self.metrics.count_from(exported, engine.stats());
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.restored_records.inc_by(records);
        self.metrics.restore_duration.observe(seconds);
        self.metrics.resume_offset.set(checkpoint.log_offset);
        tracing::info!(
            partition,
            changelog_records = records,
            epoch = checkpoint.epoch,
            resume_offset = checkpoint.log_offset,
            outputs_to_suppress = found,
            seconds,
            "state restored"
        );
        // Every input partition the checkpoint has not seen in the log holds the merge and the
        // watermark from the start, as each file does in `replay`: until its owner's ingest
        // forwards it (or says it is caught up or idle), records of the partitions forwarded
        // first must not overtake it. Learning of a partition only from the log would let
        // every other partition's backlog through while it has no owner yet (a member joining
        // during a rebalance, the group's first assignment), and make its own records late.
        let merged = checkpoint.merged();
        let unseen = input_channels(&reader, &self.config)?
            .into_iter()
            .filter(|c| !merged.contains_key(c))
            .collect::<Vec<_>>();
        for c in &unseen {
            engine.register_channel(c.input, c.partition);
        }
        let mut task = StateTask {
            partition,
            engine,
            parser: Parser::new(&self.config.engine, &self.config.orders),
            router: self.router.clone(),
            owners: Vec::new(),
            applied: checkpoint.applied(),
            merge: Merge::restored(
                merged
                    .iter()
                    .filter(|(_, (_, holds))| *holds)
                    .map(|(c, _)| *c)
                    .chain(unseen),
            ),
            merged,
            merge_queue_limit: self.config.service.merge_queue_limit,
            merge_wait: None,
            frontier,
            epoch: checkpoint.epoch,
            log_next: checkpoint.log_offset,
            checkpointed_at: checkpoint.log_offset,
            last_checkpoint: Instant::now(),
            changelog,
            out: Outputs::default(),
            parsed: Vec::new(),
        };
        // The consumer may be past the checkpoint (records polled by a task that was then
        // dropped, or while no task was there): processing resumes exactly at the checkpoint.
        self.consumer
            .seek(
                &self.topics.log,
                partition,
                Offset::Offset(task.log_next),
                ROUND_TRIP,
            )
            .map_err(|e| {
                ServiceError::TaskLost(format!(
                    "seeking the log to the checkpoint's offset {}: {e}",
                    task.log_next
                ))
            })?;
        if first_start {
            // Record the frontier before the first output: a crash before the next checkpoint
            // must find what it wrote after it.
            self.commit(&mut task, stop)?;
        }
        Ok(task)
    }

    fn changelog_producer(
        &self,
        partition: i32,
        stop: &Stop,
    ) -> Result<BaseProducer, ServiceError> {
        let mut cfg = producer_config(&self.config.kafka);
        cfg.set(
            "transactional.id",
            format!("{}-{partition}", self.topics.state_group),
        );
        let producer: BaseProducer = create(&cfg)?;
        // Fences any earlier owner of this partition and aborts its open checkpoint.
        loop {
            match producer.init_transactions(ROUND_TRIP) {
                Ok(()) => return Ok(producer),
                Err(e) if is_retriable(&e) => {
                    tracing::warn!(error = %e, "changelog producer not ready; retrying");
                    stop.check_deadline()?;
                }
                Err(e) => {
                    return Err(ServiceError::TaskLost(format!(
                        "changelog producer for partition {partition}: {e}"
                    )))
                }
            }
        }
    }

    fn reader(&self, isolation: &str) -> Result<Reader, ServiceError> {
        reader(&self.config, isolation)
    }

    /// Queues one log record in the merge of its task, then applies what the merge lets go.
    fn apply(
        task: Option<&mut StateTask>,
        metrics: &Metrics,
        m: &BorrowedMessage<'_>,
    ) -> Result<(), ServiceError> {
        let Some(task) = task.filter(|t| t.partition == m.partition()) else {
            // Fetched before a revocation was noticed; the next owner reads it again.
            return Ok(());
        };
        let offset = m.offset();
        if offset < task.log_next {
            return Ok(()); // already in the restored state
        }
        task.log_next = offset + 1;
        let (channel, item) = match wire::read(m.headers()) {
            Ok(LogRecord::Forwarded { channel, offset }) => (
                channel,
                Item::Record {
                    origin: offset,
                    payload: m.payload().map(Cow::Borrowed),
                },
            ),
            Ok(LogRecord::Progress) => {
                return Self::apply_progress(task, metrics, offset, m.payload());
            }
            Ok(LogRecord::Assigned(channel)) => (channel, Item::Assigned),
            Ok(LogRecord::CaughtUp(channel)) => (channel, Item::CaughtUp),
            Ok(LogRecord::Idle(channel)) => (channel, Item::Idle),
            Err(e @ wire::WireError::TooNew(_)) => return Err(ServiceError::Fatal(e.to_string())),
            Err(e) => {
                tracing::error!(offset, error = %e, "skipping an internal record that is not onecount's");
                return Ok(());
            }
        };
        // Read again after a restart that resumed at an item queued before it: applied already.
        if task
            .merged
            .get(&channel)
            .is_some_and(|&(last, _)| last >= offset)
        {
            return Ok(());
        }
        task.pass(metrics, offset, channel, item);
        task.drain_merge(metrics);
        Ok(())
    }

    /// Queues each entry of a progress record in the merge as an item of its own (each is one
    /// input record's turn in its channel), then applies what the merge lets go. An entry
    /// applied before a restart is recognised by its origin (the record's log offset is shared
    /// by its entries, some of which may have been applied and some still queued at the
    /// checkpoint).
    fn apply_progress(
        task: &mut StateTask,
        metrics: &Metrics,
        offset: i64,
        value: Option<&[u8]>,
    ) -> Result<(), ServiceError> {
        let entries = match wire::progress_entries(value.unwrap_or_default()) {
            Ok(entries) => entries,
            Err(e) => {
                return Err(ServiceError::Fatal(format!(
                    "internal log partition {} offset {offset}: {e}",
                    task.partition
                )))
            }
        };
        for e in entries {
            let item = Item::Observed {
                origin: e.origin,
                observations: Cow::Borrowed(e.observations),
            };
            task.pass(metrics, offset, e.channel, item);
        }
        task.drain_merge(metrics);
        Ok(())
    }

    /// Writes the outputs task `partition` produced since the last call.
    fn write_outputs(
        &mut self,
        partition: i32,
        polled_at: Instant,
        stop: &Stop,
    ) -> Result<(), ServiceError> {
        let Some(task) = self.tasks.get_mut(&partition) else {
            return Ok(());
        };
        let exported = self.exported.entry(partition).or_default();
        self.metrics.observe_stats_of(exported, task.engine.stats());
        crate::replay::observe_outputs(&mut self.metrics, &task.out);
        let before = self.outputs.suppressed;
        self.outputs
            .write(&mut task.out, task.partition, polled_at, stop)?;
        self.metrics
            .outputs_suppressed
            .inc_by(self.outputs.suppressed - before);
        Ok(())
    }

    /// The gauges over every task of this instance: state and accounting added up, the merges'
    /// queues, the watermarks (the same in every task).
    fn observe_tasks(&self) {
        let Some(first) = self.tasks.values().next() else {
            self.metrics.merge_queued.set(0);
            return;
        };
        let state = self
            .tasks
            .values()
            .map(|t| t.engine.state_size())
            .reduce(|a, b| a + b)
            .expect("a task");
        let accounted = self
            .tasks
            .values()
            .map(|t| t.engine.stats().accounted())
            .sum();
        crate::replay::observe_gauges(&self.metrics, &state, accounted, &first.engine);
        let queued: usize = self.tasks.values().map(|t| t.merge.queued()).sum();
        self.metrics.merge_queued.set(queued as i64);
    }

    /// Checkpoints task `partition` if it read anything since its last checkpoint.
    fn checkpoint(&mut self, partition: i32, stop: &Stop) -> Result<(), ServiceError> {
        let Some(mut task) = self.tasks.remove(&partition) else {
            return Ok(());
        };
        let result = if task.log_next == task.checkpointed_at {
            task.last_checkpoint = Instant::now();
            Ok(())
        } else {
            self.commit(&mut task, stop)
        };
        self.tasks.insert(partition, task);
        result
    }

    /// Writes a checkpoint of `task` (see the module docs for the protocol).
    fn commit(&mut self, task: &mut StateTask, stop: &Stop) -> Result<(), ServiceError> {
        let _span = tracing::debug_span!(
            "checkpoint",
            partition = task.partition,
            epoch = task.epoch + 1
        )
        .entered();
        for (tp, next) in self.outputs.flush(stop)? {
            let f = task.frontier.entry(tp).or_insert(next);
            *f = (*f).max(next);
        }
        let txn = &task.changelog;
        let lost =
            |what: &str, e: KafkaError| ServiceError::TaskLost(format!("checkpoint {what}: {e}"));
        txn.begin_transaction().map_err(|e| lost("begin", e))?;
        let topic = self.topics.changelog.as_str();
        let partition = task.partition;
        // An error loses the task, and with it the engine whose changes were drained.
        let entries = task.engine.drain_changes(|ChangelogEntry { key, value }| {
            send_retrying(txn, topic, partition, &key, value.as_deref(), stop)
        })?;
        let resume = task.resume_offset();
        let checkpoint = Checkpoint::new(
            task.epoch + 1,
            resume,
            &task.applied,
            &task.merged,
            &task.frontier,
        );
        let encoded = checkpoint.encode();
        send_retrying(
            txn,
            topic,
            task.partition,
            CHECKPOINT_KEY,
            Some(&encoded),
            stop,
        )?;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&self.topics.log, task.partition, Offset::Offset(resume))
            .map_err(|e| lost("offsets", e))?;
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| ServiceError::TaskLost("no consumer group metadata".into()))?;
        retry(stop, || {
            txn.send_offsets_to_transaction(&offsets, &group, ROUND_TRIP)
        })
        .map_err(|e| lost("offset commit", e))?;
        retry(stop, || txn.commit_transaction(ROUND_TRIP)).map_err(|e| lost("commit", e))?;
        task.epoch = checkpoint.epoch;
        task.checkpointed_at = task.log_next;
        task.last_checkpoint = Instant::now();
        tracing::debug!(
            partition = task.partition,
            epoch = task.epoch,
            log_offset = resume,
            queued = task.merge.queued(),
            entries,
            "checkpoint committed"
        );
        Ok(())
    }
}

fn is_retriable(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_retriable(),
        _ => false,
    }
}

/// Retries a transactional call while librdkafka says it may (a timeout while the broker is
/// away), until the stop deadline.
fn retry(stop: &Stop, mut call: impl FnMut() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
    loop {
        match call() {
            Err(e) if is_retriable(&e) => {
                if stop.check_deadline().is_err() {
                    return Err(e);
                }
                tracing::warn!(error = %e, "checkpoint step retried");
            }
            other => return other,
        }
    }
}

fn send_retrying(
    producer: &BaseProducer,
    topic: &str,
    partition: i32,
    key: &[u8],
    value: Option<&[u8]>,
    stop: &Stop,
) -> Result<(), ServiceError> {
    let mut record: BaseRecord<'_, [u8], [u8]> =
        BaseRecord::to(topic).key(key).partition(partition);
    if let Some(v) = value {
        record = record.payload(v);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(REPORT_POLL);
                stop.check_deadline()?;
            }
            Err((e, _)) => return Err(ServiceError::TaskLost(format!("changelog write: {e}"))),
        }
    }
}

fn partitions_of(reader: &Reader, topic: &str) -> Result<Vec<i32>, ServiceError> {
    let md = reader
        .fetch_metadata(Some(topic), ROUND_TRIP)
        .map_err(|e| ServiceError::TaskLost(format!("metadata of {topic}: {e}")))?;
    Ok(md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Every partition of the three inputs, as a channel.
fn input_channels(reader: &Reader, config: &Config) -> Result<Vec<Channel>, ServiceError> {
    let mut channels = Vec::new();
    for input in Input::ALL {
        for p in partitions_of(reader, config.topics.input(input))? {
            channels.push(Channel::new(input, p));
        }
    }
    Ok(channels)
}

/// A consumer outside any group that reads partitions to their end.
type Reader = BaseConsumer<ToEnd>;

/// The reader's context: reaching the end of a partition is what it is for, not an error
/// (librdkafka also reports each end as a client error, which the default context logs).
struct ToEnd;

impl ClientContext for ToEnd {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            tracing::warn!(error = %error, reason, "librdkafka reader error");
        }
    }
}

impl ConsumerContext for ToEnd {}

/// A consumer outside any group, for reading partitions to their end.
fn reader(config: &Config, isolation: &str) -> Result<Reader, ServiceError> {
    let mut cfg: ClientConfig = consumer_config(&config.kafka);
    // Partitions are assigned, never subscribed, and nothing is committed; librdkafka still
    // wants a group id to assign them.
    cfg.set("group.id", format!("{}-reader", config.kafka.group_id));
    cfg.set("enable.partition.eof", "true");
    cfg.set("isolation.level", isolation);
    // Reading to the end: the last empty fetch (the end of the partition) need not linger.
    cfg.set("fetch.wait.max.ms", "10");
    Ok(create_with_context(&cfg, ToEnd)?)
}

/// The restore a state task performs, on its own: reads changelog `topic` partition
/// `partition` whole (read_committed) into an engine. Returns the engine, the checkpoint and how
/// many changelog records were read. For benchmarks and tools; the service calls the same code.
pub fn restore_from_changelog(
    config: &Config,
    topic: &str,
    partition: i32,
) -> Result<(Engine, Option<Checkpoint>, u64), ServiceError> {
    let reader = reader(config, "read_committed")?;
    read_changelog(config, &reader, topic, partition, &Stop::default())
}

/// Reads changelog partition `partition` whole into a restored engine.
fn read_changelog(
    config: &Config,
    reader: &Reader,
    topic: &str,
    partition: i32,
    stop: &Stop,
) -> Result<(Engine, Option<Checkpoint>, u64), ServiceError> {
    let (low, high) = reader
        .fetch_watermarks(topic, partition, ROUND_TRIP)
        .map_err(|e| ServiceError::TaskLost(format!("watermarks of {topic}: {e}")))?;
    let mut checkpoint = None;
    let mut records = 0u64;
    let mut failure = None;
    let engine = if low == high {
        Engine::restore(&config.engine, &config.orders, std::iter::empty())
    } else {
        assign(reader, topic, partition, Offset::Beginning)?;
        let entries = std::iter::from_fn(|| loop {
            if failure.is_some() {
                return None;
            }
            match reader.poll(Duration::from_millis(200)) {
                None => {
                    if let Err(e) = stop.check_deadline() {
                        failure = Some(e);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => return None,
                Some(Err(e)) => tracing::warn!(error = %e, "reading the changelog"),
                Some(Ok(m)) => {
                    records += 1;
                    let key = m.key().unwrap_or_default();
                    if key == CHECKPOINT_KEY {
                        match m.payload().map(Checkpoint::decode) {
                            Some(Ok(c)) => checkpoint = Some(c),
                            Some(Err(e)) => failure = Some(ServiceError::Fatal(e.to_string())),
                            None => {}
                        }
                        continue;
                    }
                    return Some(ChangelogEntry {
                        key: key.to_vec(),
                        value: m.payload().map(<[u8]>::to_vec),
                    });
                }
            }
        });
        Engine::restore(&config.engine, &config.orders, entries)
    };
    if let Some(e) = failure {
        return Err(e);
    }
    let engine = engine
        .map_err(|e| ServiceError::Fatal(format!("changelog of partition {partition}: {e}")))?;
    Ok((engine, checkpoint, records))
}

fn assign(reader: &Reader, topic: &str, partition: i32, from: Offset) -> Result<(), ServiceError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, from)
        .map_err(|e| ServiceError::Fatal(e.to_string()))?;
    reader
        .assign(&tpl)
        .map_err(|e| ServiceError::TaskLost(format!("assigning {topic}/{partition}: {e}")))
}

/// Reads every output partition range [from, to) at once and registers the records task `task`
/// wrote for suppression. Returns how many it found.
fn read_own_outputs(
    reader: &Reader,
    ranges: &[(OutputPartition, i64, i64)],
    task: i32,
    outputs: &mut OutputWriter,
    stop: &Stop,
) -> Result<u64, ServiceError> {
    if ranges.is_empty() {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    let mut ends: BTreeMap<OutputPartition, i64> = BTreeMap::new();
    for ((topic, p), from, to) in ranges {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*from))
            .map_err(|e| ServiceError::Fatal(e.to_string()))?;
        ends.insert((topic.clone(), *p), *to);
    }
    reader
        .assign(&tpl)
        .map_err(|e| ServiceError::TaskLost(format!("assigning the output partitions: {e}")))?;
    let task_text = task.to_string();
    let mut found = 0;
    while !ends.is_empty() {
        match reader.poll(Duration::from_millis(200)) {
            None => stop.check_deadline()?,
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "reading back outputs"),
            Some(Ok(m)) => {
                let key = (m.topic().to_string(), m.partition());
                let Some(&end) = ends.get(&key) else { continue };
                if m.offset() >= end {
                    ends.remove(&key);
                    continue;
                }
                if wire::header(m.headers(), TASK_HEADER) == Some(task_text.as_str()) {
                    outputs.expect_already_written(
                        task,
                        &key.0,
                        m.key().unwrap_or_default(),
                        m.payload().unwrap_or_default(),
                    );
                    found += 1;
                }
                if m.offset() + 1 >= end {
                    ends.remove(&key);
                }
            }
        }
    }
    Ok(found)
}
