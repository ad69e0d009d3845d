//! The ingest stage: forwards input records, as they came, into the internal log.
//!
//! Owns: consuming the three input topics in the application's consumer group, forwarding each
//! record with its origin (input, partition, offset), idle markers for channels that go quiet
//! for `engine.idle_timeout`, and committing input offsets only for records the log has
//! acknowledged. With the state split over several log partitions (`route`), it forwards a
//! record to the partitions of its pixels and sends the others its event times (progress
//! records), each partition in forward order. Must not: decide anything the engine decides. A crash here
//! forwards some records again; the state stage recognises them by origin.
//!
//! Why a log in between: the state stage must see one fixed order of records, so that after a
//! crash it processes them again exactly as before (deterministic outputs are what lets it
//! suppress the ones already written). Three topics with many partitions, read by a consumer
//! group, have no such order; the log gives them one, and it is where every record of a join key
//! meets (all of them, today: one state partition; see docs/SERVICE.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::engine::Observation;
use crate::kafka::client::{
    cached_high_watermark, consumer_config, create_with_context, producer_config,
};
use crate::kafka::delivery::{DeliveryTally, REPORT_POLL};
use crate::model::Input;
use crate::parse::{Parsed, Parser};

use super::align::{entry_of, Aligner, Flow, InputPartition, Next};
use super::health::{Health, Observed};
use super::route::{RecordRoute, Router};
use super::wire::{
    append_progress, forwarded_headers, marker_headers, progress_headers, Channel, LogRecord,
};
use super::{ServiceError, ServiceTopics, Stop};

/// How long one wait blocks before the loop looks at its timers again.
const POLL_WAIT: Duration = Duration::from_millis(50);
/// How often quiet channels are looked for.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// How often the aligner follows the consumer's assignment.
const ASSIGNMENT_CHECK: Duration = Duration::from_millis(100);
/// Records read from the consumer per loop turn.
const BATCH: usize = 1000;
/// Records buffered per input partition before its reading pauses. Large: librdkafka drops a
/// paused partition's prefetched records and fetches them again on resume, so pausing is the
/// last resort against one partition running far ahead, not the everyday flow control
/// (librdkafka's own queue bounds, `queued.max.messages.kbytes`, are).
const PARTITION_BUFFER: usize = 50_000;
/// How long a poll may block while the aligner waits for a partition's next fetch.
const BLOCKED_POLL_WAIT: Duration = Duration::from_millis(5);
/// How long a live partition (or one whose end is not known yet) with nothing buffered may hold
/// the others back in one stretch. A partition known to be behind its end holds them for as
/// long as its fetch takes, as Kafka Streams' tasks wait for data already on the broker
/// (KIP-695): forwarding past it would reorder event time, and the counts with it.
const MAX_ALIGN_WAIT: Duration = Duration::from_secs(5);
/// How often a long wait for a partition behind its end is logged.
const BEHIND_WAIT_LOG: Duration = Duration::from_secs(30);
/// A caught-up partition that delivered a record this recently is live: the others wait for its
/// next fetch rather than overtake it.
const ACTIVE_WINDOW: Duration = Duration::from_millis(500);
/// Bytes of progress a state partition may have pending before they are sent (they are sent at
/// the end of every forwarding pass anyway).
const MAX_PENDING_PROGRESS: usize = 64 * 1024;

struct ChannelClock {
    last_record: Instant,
    idle_sent: bool,
    /// A caught-up or idle marker has followed its last record: the state task knows not to
    /// wait for it.
    caught_up_sent: bool,
}

impl ChannelClock {
    fn new(now: Instant) -> ChannelClock {
        ChannelClock {
            last_record: now,
            idle_sent: false,
            caught_up_sent: false,
        }
    }
}

/// The input consumer, subscribed to the three inputs. [`Ingest`] borrows it, so the records it
/// holds while aligning them are the consumer's own messages: a copy of each (payload, key,
/// topic name and headers) was 3-5% of the service's CPU (perf, session 15).
pub struct InputConsumer {
    consumer: BaseConsumer<Observed>,
    inputs: HashMap<String, Input>,
    rebalanced: Arc<AtomicBool>,
    revoked: Arc<AtomicBool>,
}

impl InputConsumer {
    pub fn subscribe(
        config: &Config,
        health: Arc<Health>,
        lag: prometheus::IntGaugeVec,
    ) -> Result<InputConsumer, ServiceError> {
        let mut cfg = consumer_config(&config.kafka);
        cfg.set("statistics.interval.ms", "1000");
        if config.kafka.properties.get("fetch.wait.max.ms").is_none() {
            // Live partitions are waited for until their next fetch (see `ACTIVE_WINDOW`): keep
            // a fetch from idling longer than that.
            cfg.set("fetch.wait.max.ms", "100");
        }
        let rebalanced = Arc::new(AtomicBool::new(false));
        let revoked = Arc::new(AtomicBool::new(false));
        let on_revoke = revoked.clone();
        let consumer: BaseConsumer<Observed> = create_with_context(
            &cfg,
            Observed {
                health,
                lag: Some(lag),
                rebalanced: Some(rebalanced.clone()),
                before_revoke: Some(Box::new(move || on_revoke.store(true, Ordering::Relaxed))),
            },
        )?;
        let inputs: HashMap<String, Input> = Input::ALL
            .into_iter()
            .map(|i| (config.topics.input(i).to_string(), i))
            .collect();
        let names: Vec<&str> = inputs.keys().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| ServiceError::Fatal(format!("subscribing to the inputs: {e}")))?;
        Ok(InputConsumer {
            consumer,
            inputs,
            rebalanced,
            revoked,
        })
    }
}

pub struct Ingest<'c> {
    consumer: &'c BaseConsumer<Observed>,
    fwd: Forwarder,
    commit_interval: Duration,
    /// Each record with where it goes (`None` while the state has one partition).
    aligner: Aligner<BorrowedMessage<'c>, Option<RecordRoute>>,
    align_blocked_since: Option<Instant>,
    /// The aligner's last answer was to wait for a partition (behind its end, or live).
    align_waits: bool,
    /// Since when, and last logged when, the aligner waits for a partition behind its end.
    behind_wait: Option<(Instant, Instant)>,
    /// Where each assigned partition started and its end as last asked of the broker.
    known: HashMap<InputPartition, Known>,
    /// The broker was unreachable since the partitions' ends were last asked for: the ends
    /// cached from fetches are from before, and a partition with records published meanwhile
    /// would look caught up (and idle) and let the others overtake it until its first fetch.
    ends_stale: bool,
    /// Set by the consumer's rebalance callback; the poll loop takes it before it buffers a
    /// record, so a newly assigned partition is known to the aligner (and its end asked for)
    /// before any record of another one is forwarded past it.
    rebalanced: Arc<AtomicBool>,
    /// Set when partitions were revoked (the eager protocol revokes all of them at each
    /// rebalance). What comes back then is new: librdkafka restarts it at its committed offset,
    /// so its buffered records and tracked position are dropped and its start and end asked
    /// for again.
    revoked: Arc<AtomicBool>,
    health: Arc<Health>,
    /// Reads event times for alignment (the state stage parses the record again for itself).
    parser: Parser,
    parsed: Vec<Parsed>,
    /// The partitions assigned at the last look.
    assigned: BTreeSet<InputPartition>,
}

/// The part of ingest that writes the log (apart from the consumer, whose messages borrow it).
struct Forwarder {
    producer: BaseProducer<DeliveryTally>,
    log: String,
    inputs: HashMap<String, Input>,
    /// Next offset to commit per input partition, for records forwarded since the last commit.
    pending: BTreeMap<(String, i32), i64>,
    channels: HashMap<Channel, ChannelClock>,
    idle_timeout: Duration,
    max_in_flight: usize,
    router: Router,
    /// Per state partition: progress entries not sent yet. Sent before anything else goes to
    /// that partition, so each partition gets what concerns it in the order it was forwarded,
    /// and at the end of every forwarding pass: empty between passes, so a commit or the
    /// shutdown never runs ahead of it.
    progress: BTreeMap<i32, Vec<u8>>,
}

impl<'c> Ingest<'c> {
    pub fn new(
        input: &'c InputConsumer,
        config: &Config,
        topics: &ServiceTopics,
        health: Arc<Health>,
    ) -> Result<Ingest<'c>, ServiceError> {
        let mut pcfg = producer_config(&config.kafka);
        if config.kafka.properties.get("message.timeout.ms").is_none() {
            // Retried until delivered: a broker outage is waited out, not turned into loss.
            pcfg.set("message.timeout.ms", "0");
        }
        Ok(Ingest {
            consumer: &input.consumer,
            fwd: Forwarder {
                producer: create_with_context(&pcfg, DeliveryTally::default())?,
                log: topics.log.clone(),
                inputs: input.inputs.clone(),
                pending: BTreeMap::new(),
                channels: HashMap::new(),
                idle_timeout: config.engine.idle_timeout,
                max_in_flight: config.service.max_in_flight,
                router: Router::new(config.service.state_partitions, &config.orders),
                progress: BTreeMap::new(),
            },
            commit_interval: config.service.commit_interval,
            aligner: Aligner::new(PARTITION_BUFFER),
            align_blocked_since: None,
            align_waits: false,
            behind_wait: None,
            known: HashMap::new(),
            ends_stale: false,
            rebalanced: input.rebalanced.clone(),
            revoked: input.revoked.clone(),
            health,
            parser: Parser::new(&config.engine, &config.orders),
            parsed: Vec::new(),
            assigned: BTreeSet::new(),
        })
    }

    pub fn run(mut self, stop: &Stop) -> Result<(), ServiceError> {
        let _stage = tracing::info_span!("ingest").entered();
        let mut last_commit = Instant::now();
        let mut last_idle_check = Instant::now();
        let mut last_assignment_check = Instant::now() - IDLE_CHECK;
        while !stop.requested() {
            // Backpressure: while the log has `max_in_flight` records unacknowledged (the broker
            // is slow or away), nothing is forwarded; reading goes on into the aligner, whose
            // bounded buffers pause a partition that runs full. Pausing every partition here
            // instead would make librdkafka drop their prefetched records and fetch them again
            // on resume: a fourfold loss of throughput, measured.
            let log_full = self.fwd.producer.context().in_flight() >= self.fwd.max_in_flight;
            if !self.health.broker_up() {
                self.ends_stale = true;
                // Nothing can be fetched: a wait for a live partition does not run out while
                // the broker is away (it would let the partitions fetched first after the
                // outage flood ahead with their whole backlog).
                self.align_blocked_since = None;
            } else if self.ends_stale {
                // Back after an outage. Silence while the broker was away was not idleness:
                // every channel gets a fresh `idle_timeout` to deliver its backlog.
                let now = Instant::now();
                for clock in self.fwd.channels.values_mut() {
                    clock.last_record = now;
                }
                let assigned: Vec<InputPartition> = self.assigned.iter().cloned().collect();
                self.ends_stale = !self.ask_ends(&assigned);
            }
            if last_assignment_check.elapsed() >= ASSIGNMENT_CHECK {
                self.follow_assignment()?;
                last_assignment_check = Instant::now();
            }
            // Nothing buffered, or the aligner waits for a partition's next fetch: block in poll
            // (briefly) rather than spin.
            let mut wait = if self.aligner.buffered() == 0 {
                POLL_WAIT
            } else if log_full || self.align_waits {
                // Waiting for a fetch: block until it comes rather than spin (a spinning
                // ingest asked the aligner a million times a run, taking a core from the rest).
                BLOCKED_POLL_WAIT
            } else {
                Duration::ZERO
            };
            // Borrowed for the consumer's whole life, not this turn's: the aligner keeps them.
            let consumer: &'c BaseConsumer<Observed> = self.consumer;
            for _ in 0..BATCH {
                match consumer.poll(wait) {
                    None => break,
                    Some(Ok(m)) => {
                        if self.rebalanced.swap(false, Ordering::Relaxed) {
                            self.follow_assignment()?;
                        }
                        let (time, route) = self.read(&m);
                        if let Some(flow) = self.aligner.push(m, time, route) {
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
            if !log_full {
                self.forward_aligned()?;
            }
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
        // Shutdown: the partitions are let go (not while the broker is away: the markers would
        // only wait for it until the deadline, and a stop then is like a crash, see
        // docs/SERVICE.md), everything forwarded is acknowledged, then committed.
        if self.health.broker_up() {
            self.let_go_of_assigned()?;
        }
        while self.fwd.producer.context().in_flight() > 0 {
            self.fwd.producer.poll(REPORT_POLL);
            self.fwd.check_failures()?;
            stop.check_deadline()?;
        }
        self.commit(Duration::from_secs(5));
        tracing::info!("ingest stopped; offsets committed");
        Ok(())
    }

    /// Announces every assigned partition as let go: the state stage then waits for it again
    /// until its next owner forwards it. After its last caught-up marker (the merge goes past
    /// it) or idle marker (nothing waits for it), the instances still forwarding their own
    /// partitions until they notice the rebalance would run ahead of the records published to
    /// it meanwhile, which would then come late, behind actions `replay` has them meet. (The
    /// next owner announces it too, but only once the group has settled: seconds later.)
    /// Called on revocation and when the instance stops: a consumer that leaves the group is
    /// revoked only as it closes, after the last chance to write.
    fn let_go_of_assigned(&mut self) -> Result<(), ServiceError> {
        for key in &self.assigned {
            if let Some(channel) = self.fwd.channel(&key.0, key.1) {
                self.fwd.marker(LogRecord::Assigned(channel))?;
            }
        }
        Ok(())
    }

    /// Keeps the aligner's buffers to the assigned partitions, and announces each newly
    /// assigned one in the log: the state stage then waits for its records (or its idle marker)
    /// before letting the watermark pass them.
    fn follow_assignment(&mut self) -> Result<(), ServiceError> {
        if self.revoked.swap(false, Ordering::Relaxed) {
            self.let_go_of_assigned()?;
            // Whatever is assigned now is new, even a partition given back at once.
            self.assigned.clear();
            self.known.clear();
            self.aligner.set_assignment(&[]);
        }
        let Ok(tpl) = self.consumer.assignment() else {
            return Ok(());
        };
        let assigned: Vec<InputPartition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let mut new = TopicPartitionList::new();
        let mut new_partitions = Vec::new();
        for (topic, partition) in &assigned {
            if self.assigned.contains(&(topic.clone(), *partition)) {
                continue;
            }
            new.add_partition(topic, *partition);
            new_partitions.push((topic.clone(), *partition));
            if let Some(channel) = self.fwd.channel(topic, *partition) {
                self.fwd.marker(LogRecord::Assigned(channel))?;
                // The state task holds the channel after this marker: its caught-up and idle
                // markers are due again, whatever was sent before a revocation.
                self.fwd
                    .channels
                    .insert(channel, ChannelClock::new(Instant::now()));
            }
        }
        // Where each new partition starts: until a record of it is consumed, the consumer
        // reports no position, and a partition read to its end before a restart would look
        // behind forever.
        if new.count() > 0 {
            match self
                .consumer
                .committed_offsets(new, Duration::from_secs(10))
            {
                Ok(committed) => {
                    for e in committed.elements() {
                        let start = match e.offset() {
                            Offset::Offset(o) => o,
                            _ => 0,
                        };
                        self.known
                            .entry((e.topic().to_string(), e.partition()))
                            .or_default()
                            .start = start;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading committed input offsets"),
            }
            self.ask_ends(&new_partitions);
        }
        self.known.retain(|p, _| assigned.contains(p));
        self.aligner.set_assignment(&assigned);
        self.assigned = assigned.into_iter().collect();
        Ok(())
    }

    /// Asks the broker for the high watermark of each of `partitions` (one round trip each),
    /// so a partition with records waiting is known to be behind before its first fetch.
    /// Whether every answer came.
    fn ask_ends(&mut self, partitions: &[InputPartition]) -> bool {
        let mut all = true;
        for (topic, partition) in partitions {
            match self
                .consumer
                .fetch_watermarks(topic, *partition, Duration::from_secs(1))
            {
                Ok((_, high)) => {
                    self.known
                        .entry((topic.clone(), *partition))
                        .or_default()
                        .end = Some(high);
                }
                // Its fetches will tell: meanwhile it is waited for as one whose end is unknown.
                Err(e) => {
                    all = false;
                    tracing::debug!(error = %e, topic, partition, "asking for a partition's end");
                }
            }
        }
        all
    }

    /// Forwards buffered records by the alignment rule (see `align`). The partition that must
    /// go next holds the rest until it delivers if it is behind its end; if it is only live
    /// (or its end is not known yet), for `MAX_ALIGN_WAIT` at most.
    fn forward_aligned(&mut self) -> Result<(), ServiceError> {
        let result = self.forward_aligned_records();
        // Every state partition learns this pass's progress now, not at the next record of
        // the channel that goes to it (which may be long in coming).
        self.fwd.send_progress()?;
        result
    }

    fn forward_aligned_records(&mut self) -> Result<(), ServiceError> {
        // Positions and cached high watermarks do not move while buffered records are
        // forwarded (nothing is polled meanwhile): each empty partition is judged once per call.
        let mut judged: HashMap<InputPartition, Hold> = HashMap::new();
        loop {
            let waited_out = self
                .align_blocked_since
                .is_some_and(|since| since.elapsed() >= MAX_ALIGN_WAIT);
            let next = {
                let (consumer, known, fwd) = (self.consumer, &self.known, &self.fwd);
                let stale = self.ends_stale;
                // Once a bounded wait has expired, only partitions behind their end hold the
                // rest (the wait is not started over for every record).
                self.aligner.next(|p, position| {
                    // Looked up before a key is cloned: asked for every record forwarded.
                    let h = match judged.get(p) {
                        Some(h) => *h,
                        None => {
                            let h = hold(consumer, position, known, stale, fwd, p);
                            judged.insert(p.clone(), h);
                            h
                        }
                    };
                    h == Hold::Behind || (h == Hold::Live && !waited_out)
                })
            };
            match next {
                Next::Record(m, route, flow) => {
                    self.align_waits = false;
                    if !waited_out {
                        self.align_blocked_since = None;
                    }
                    self.behind_wait = None;
                    self.mark_caught_up_before(&m)?;
                    self.fwd.forward(&m, route)?;
                    if let Some(flow) = flow {
                        self.flow(flow);
                    }
                }
                Next::Wait(p) => {
                    self.align_waits = true;
                    if judged.get(&p) == Some(&Hold::Behind) {
                        self.log_behind_wait(&p);
                    } else {
                        self.align_blocked_since.get_or_insert_with(Instant::now);
                    }
                    return Ok(());
                }
                Next::Empty => {
                    self.align_waits = false;
                    return Ok(());
                }
            }
        }
    }

    /// Before a record of one partition goes past the others: a caught-up marker for each
    /// partition of this instance that has nothing buffered and is not ahead of it, so the
    /// state task, which merges the channels of every instance by the same rule, does not
    /// wait for what this instance decided not to wait for (see `merge`).
    fn mark_caught_up_before(&mut self, m: &impl Message) -> Result<(), ServiceError> {
        let now = Instant::now();
        for q in self.aligner.passed_by(m.topic(), m.partition()) {
            let Some((channel, clock)) = self.fwd.clock(q, now) else {
                continue;
            };
            if !clock.caught_up_sent {
                clock.caught_up_sent = true;
                self.fwd.marker(LogRecord::CaughtUp(channel))?;
            }
        }
        Ok(())
    }

    fn log_behind_wait(&mut self, (topic, partition): &InputPartition) {
        let now = Instant::now();
        let (since, logged) = self.behind_wait.get_or_insert((now, now));
        if now.duration_since(*logged) >= BEHIND_WAIT_LOG {
            *logged = now;
            tracing::warn!(
                topic,
                partition,
                waited_s = now.duration_since(*since).as_secs(),
                "waiting for an input partition behind its end to deliver (the others wait \
                 with it to keep event-time order)"
            );
        }
    }

    /// The event time the aligner orders a record by: the highest of the events or order
    /// change it holds (`None` for what has none, a tombstone or a record that does not parse);
    /// and, with the state split, where the record goes.
    fn read(&mut self, m: &impl Message) -> (Option<i64>, Option<RecordRoute>) {
        let Some(channel) = self.fwd.channel(m.topic(), m.partition()) else {
            return (None, None);
        };
        self.parser.parse(
            channel.input,
            channel.partition,
            m.offset(),
            m.payload(),
            &mut self.parsed,
        );
        let route = (self.fwd.router.partitions() > 1)
            .then(|| self.fwd.router.route(&self.parsed, m.offset()));
        let time = self
            .parsed
            .drain(..)
            .filter_map(|p| Observation::of(&p).map(Observation::time))
            .max();
        (time, route)
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

    /// Sends an idle marker for every assigned channel without a record for `idle_timeout`
    /// (once, until its next record), and a caught-up marker for one that is merely quiet (no
    /// record for `ACTIVE_WINDOW`, nothing left to fetch): the state task then stops waiting
    /// for it even when this instance has no other partition to forward past it.
    fn mark_idle_channels(&mut self) -> Result<(), ServiceError> {
        let now = Instant::now();
        // Silence while the broker is away (or until the ends are known again after it) is not
        // idleness: nothing could be fetched.
        if self.ends_stale || !self.health.broker_up() {
            return Ok(());
        }
        let idle_timeout = self.fwd.idle_timeout;
        let mut markers = Vec::new();
        for key in &self.assigned {
            let Some((channel, clock)) = self.fwd.clock(key, now) else {
                continue;
            };
            let quiet_for = now.duration_since(clock.last_record);
            if (clock.idle_sent || quiet_for < ACTIVE_WINDOW)
                || (clock.caught_up_sent && quiet_for < idle_timeout)
                || !self.aligner.is_empty(key)
                || lag_known(self.consumer, self.aligner.position(key), &self.known, key)
                    != Some(false)
            {
                continue;
            }
            clock.caught_up_sent = true;
            if quiet_for >= idle_timeout {
                clock.idle_sent = true;
                tracing::debug!(
                    input = channel.input.as_str(),
                    partition = channel.partition,
                    "channel idle"
                );
                markers.push(LogRecord::Idle(channel));
            } else {
                markers.push(LogRecord::CaughtUp(channel));
            }
        }
        for marker in markers {
            self.fwd.marker(marker)?;
        }
        Ok(())
    }

    /// Commits the input offsets of forwarded records once the log has acknowledged all of
    /// them. Not acknowledged in time (broker away): tried again at the next interval.
    fn commit(&mut self, wait: Duration) {
        if self.fwd.pending.is_empty() {
            return;
        }
        // An offset is committed only behind the progress its records owe other partitions:
        // every forwarding pass ends by sending it.
        debug_assert!(self.fwd.progress.is_empty());
        let producer = &self.fwd.producer;
        if !producer.context().wait_until_acknowledged(producer, wait) {
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
    /// The channel of an input partition (`None` for a topic that is not an input).
    fn channel(&self, topic: &str, partition: i32) -> Option<Channel> {
        let input = *self.inputs.get(topic)?;
        Some(Channel { input, partition })
    }

    /// The channel of an assigned input partition and its clock (started at `now` if new).
    fn clock(
        &mut self,
        (topic, partition): &InputPartition,
        now: Instant,
    ) -> Option<(Channel, &mut ChannelClock)> {
        let channel = self.channel(topic, *partition)?;
        let clock = self
            .channels
            .entry(channel)
            .or_insert_with(|| ChannelClock::new(now));
        Some((channel, clock))
    }

    /// Sends a marker about a channel to every state partition (after the progress pending for
    /// it, which was forwarded before).
    fn marker(&mut self, marker: LogRecord) -> Result<(), ServiceError> {
        for partition in 0..self.router.partitions() as i32 {
            self.send_partition_progress(partition)?;
            self.send(
                BaseRecord::to(&self.log)
                    .partition(partition)
                    .headers(marker_headers(marker.clone())),
            )?;
        }
        Ok(())
    }

    /// Forwards a record to the state partitions that own some of it (`route`; partition 0
    /// when there is only one, `None`), and queues its observations for the others.
    fn forward(
        &mut self,
        m: &impl Message,
        route: Option<RecordRoute>,
    ) -> Result<(), ServiceError> {
        let Some(channel) = self.channel(m.topic(), m.partition()) else {
            return Ok(());
        };
        match route {
            None => self.send_record(0, channel, m)?,
            Some(route) => {
                for partition in 0..self.router.partitions() as i32 {
                    if route.owners.contains(&partition) {
                        self.send_partition_progress(partition)?;
                        self.send_record(partition, channel, m)?;
                    } else if !route.observations.is_empty() {
                        let pending = self.progress.entry(partition).or_default();
                        append_progress(pending, channel, m.offset(), &route.observations);
                        if pending.len() >= MAX_PENDING_PROGRESS {
                            self.send_partition_progress(partition)?;
                        }
                    }
                }
            }
        }
        *entry_of(&mut self.pending, m.topic(), m.partition()).1 = m.offset() + 1;
        self.channels
            .insert(channel, ChannelClock::new(Instant::now()));
        Ok(())
    }

    /// Sends input record `m` of `channel` to state partition `partition`, as it came.
    fn send_record(
        &self,
        partition: i32,
        channel: Channel,
        m: &impl Message,
    ) -> Result<(), ServiceError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.log)
            .partition(partition)
            .headers(forwarded_headers(channel, m.offset()));
        if let Some(p) = m.payload() {
            record = record.payload(p);
        }
        self.send(record)
    }

    /// Sends the progress pending for state partition `partition`.
    fn send_partition_progress(&mut self, partition: i32) -> Result<(), ServiceError> {
        match self.progress.remove(&partition) {
            Some(value) => self.send_progress_value(partition, &value),
            None => Ok(()),
        }
    }

    fn send_progress_value(&self, partition: i32, value: &[u8]) -> Result<(), ServiceError> {
        self.send(
            BaseRecord::to(&self.log)
                .partition(partition)
                .headers(progress_headers())
                .payload(value),
        )
    }

    /// Sends all pending progress.
    fn send_progress(&mut self) -> Result<(), ServiceError> {
        for (partition, value) in std::mem::take(&mut self.progress) {
            self.send_progress_value(partition, &value)?;
        }
        Ok(())
    }

    fn send(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), ServiceError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(REPORT_POLL);
                }
                Err((e, _)) => {
                    return Err(ServiceError::Fatal(format!(
                        "forwarding to the internal log: {e}"
                    )))
                }
            }
        }
        self.producer.context().sent();
        Ok(())
    }

    fn check_failures(&self) -> Result<(), ServiceError> {
        match self.producer.context().failure() {
            None => Ok(()),
            Some((failed, first)) => Err(ServiceError::Fatal(format!(
                "{failed} records could not be forwarded to the internal log; first: {first}"
            ))),
        }
    }
}

/// Whether an input partition with nothing buffered holds the others back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// It is behind its high watermark: records are on the broker, its fetch is on the way.
    Behind,
    /// Its end is not known yet, or it delivered a record within `ACTIVE_WINDOW` (live
    /// traffic: its next fetch is probably on the way).
    Live,
    /// Caught up and quiet: like a finished file in `replay`, it does not hold the others.
    No,
}

fn hold(
    consumer: &BaseConsumer<Observed>,
    position: Option<i64>,
    known: &HashMap<InputPartition, Known>,
    ends_stale: bool,
    fwd: &Forwarder,
    p: &InputPartition,
) -> Hold {
    match lag_known(consumer, position, known, p) {
        Some(true) => return Hold::Behind,
        None => return Hold::Live,
        // Caught up by an end from before an outage: not known to be caught up.
        Some(false) if ends_stale => return Hold::Live,
        Some(false) => {}
    }
    let recently_active = fwd
        .channel(&p.0, p.1)
        .and_then(|c| fwd.channels.get(&c))
        .is_some_and(|clock| clock.last_record.elapsed() < ACTIVE_WINDOW);
    if recently_active {
        Hold::Live
    } else {
        Hold::No
    }
}

/// What ingest learned of an input partition from the broker itself.
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    /// The committed offset it started from (0 without one).
    start: i64,
    /// Its high watermark when last asked (on assignment and after an outage).
    end: Option<i64>,
}

/// Whether the consumer's position in input partition `p` is below its high watermark (the
/// higher of the one cached from the last fetch and the one last asked for): records are
/// still to be fetched (`None` while neither is known).
fn lag_known(
    consumer: &BaseConsumer<Observed>,
    position: Option<i64>,
    known: &HashMap<InputPartition, Known>,
    p: &InputPartition,
) -> Option<bool> {
    let (topic, partition) = p;
    let known = known.get(p).copied().unwrap_or_default();
    let high = cached_high_watermark(consumer, topic, *partition).max(known.end)?;
    // Nothing consumed since it was assigned: where it started (its committed offset, or the
    // beginning).
    Some(position.unwrap_or(known.start) < high)
}
