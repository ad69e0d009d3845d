//! The engine: pure, synchronous, event time only.
//!
//! Owns: the order in which rules apply to one record, the timers (merge releases, order
//! deadlines, revenue windows) and what a released action becomes. Feed it parsed records with
//! [`Engine::process`]; it appends outputs to an [`Outputs`] and keeps the accounting. Must not:
//! do I/O, read a clock, or depend on anything but its inputs and their order, so that a replay
//! at any speed, and a restart, give the same outputs.

pub mod changelog;
pub mod dedup;
pub mod keys;
pub mod reconcile;
pub mod revenue;
pub mod stats;
pub mod watermark;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hashbrown::HashSet;

use crate::config::{ConsentDefault, EngineConfig, OrdersConfig};
use crate::currency::is_iso4217;
use crate::model::{
    Conversion, DeadLetter, Discrepancy, DiscrepancyKind, Event, Input, MatchKey, MergedConversion,
    Money, Record, RevenueWindow, Source, SourcesSeen, ValueSource,
};
use crate::parse::Parsed;

use changelog::{ChangelogEntry, ChangelogError, Meta, StateRecord};
use dedup::{flags, Action, Dedup, DedupRules};
use keys::{Fingerprint, KeyState, KeyTable};
use reconcile::{PurchaseRef, ReconcileRules, Reconciler};
use revenue::RevenueWindows;
use stats::{DuplicateReason, OrderOutcome, Stats};
use watermark::{Channel, Watermarks};

/// What the engine produced; the runtime drains it after each call.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outputs {
    pub conversions: Vec<MergedConversion>,
    pub discrepancies: Vec<Discrepancy>,
    pub dead_letters: Vec<DeadLetter>,
    pub revenue_windows: Vec<RevenueWindow>,
}

impl Outputs {
    pub fn is_empty(&self) -> bool {
        self.conversions.is_empty()
            && self.discrepancies.is_empty()
            && self.dead_letters.is_empty()
            && self.revenue_windows.is_empty()
    }

    pub fn clear(&mut self) {
        self.conversions.clear();
        self.discrepancies.clear();
        self.dead_letters.clear();
        self.revenue_windows.clear();
    }
}

/// The event time a record carries, as the watermark sees it (see
/// [`Engine::observe_elsewhere`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// An event's `event_time`: moves nothing when the event is late.
    Event(i64),
    /// An order change's `changed_at`: always observed.
    Order(i64),
}

impl Observation {
    /// What `parsed` does to the watermark, if anything.
    pub fn of(parsed: &Parsed) -> Option<Observation> {
        match parsed {
            Parsed::Record(Record::Event(e)) => Some(Observation::Event(e.event_time)),
            Parsed::Record(Record::Order(o)) => Some(Observation::Order(o.changed_at)),
            Parsed::Record(Record::Tombstone(_)) | Parsed::DeadLetter(_) => None,
        }
    }

    pub fn time(self) -> i64 {
        match self {
            Observation::Event(t) | Observation::Order(t) => t,
        }
    }
}

/// How much state the engine holds, for metrics and the memory benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateSize {
    pub reordering: usize,
    pub pending_actions: usize,
    pub closed_keys: usize,
    pub closed_key_bytes: usize,
    pub order_keys: usize,
    pub orders: usize,
    pub revenue_windows: usize,
}

impl std::ops::Add for StateSize {
    type Output = StateSize;

    /// The state of two engines that split it.
    fn add(self, o: StateSize) -> StateSize {
        StateSize {
            reordering: self.reordering + o.reordering,
            pending_actions: self.pending_actions + o.pending_actions,
            closed_keys: self.closed_keys + o.closed_keys,
            closed_key_bytes: self.closed_key_bytes + o.closed_key_bytes,
            order_keys: self.order_keys + o.order_keys,
            orders: self.orders + o.orders,
            revenue_windows: self.revenue_windows + o.revenue_windows,
        }
    }
}

pub struct Engine {
    ttl_ms: i64,
    lateness_ms: i64,
    value_tolerance: Money,
    purchase_events: HashSet<String>,
    watermarks: Watermarks,
    dedup: Dedup,
    /// (pixel, order_id) of converted purchases: one conversion per order within the TTL.
    order_keys: KeyTable,
    reconciler: Reconciler,
    revenue: RevenueWindows,
    stats: Stats,
    /// Watermark at which closed state is next swept (every quarter TTL: bulk expiry, not a
    /// sweep per record).
    next_expiry: i64,
    released: Vec<Action>,
    /// Copies ahead of the watermark, waiting to be applied in event-time order. Sorting them is
    /// what makes the outcome independent of arrival order: the watermark decides only when a
    /// copy is applied, never in what order relative to the others.
    reorder: BinaryHeap<Reverse<Buffered>>,
    /// Sequence number for the next buffered copy; copies numbered below `written_below` are in
    /// the changelog already.
    next_seq: u64,
    written_below: u64,
    /// Buffered copies the changelog holds that have since been applied: tombstones to write.
    applied_written: Vec<crate::model::Position>,
    /// Order keys changed since the last changelog flush.
    order_keys_dirty: changelog::DirtySet<Fingerprint>,
    /// Whether a runtime keeps a changelog of this engine (see [`Engine::with_changelog`]).
    changelog: bool,
}

/// A copy in the reorder buffer, ordered by (event time, source, position): the "first copy"
/// order of the rules. 32 bytes: a pop moves entries down a dozen heap levels, and the full
/// key inline (56 bytes) made pops a few percent of a replay (perf, 1M actions).
#[derive(Debug)]
struct Buffered {
    /// The sort key, inline: comparing through the box missed the cache on every heap step.
    time: i64,
    /// (source, position) packed so that it orders as they do ([`Buffered::tie_of`]), or
    /// [`Buffered::UNPACKED`] when a field does not fit: then ties compare through the box.
    tie: u64,
    seq: u64,
    event: Box<Event>,
}

impl Buffered {
    const UNPACKED: u64 = u64::MAX;

    fn new(event: Box<Event>, seq: u64) -> Buffered {
        Buffered {
            time: event.event_time,
            tie: Buffered::tie_of(event.source, &event.position),
            seq,
            event,
        }
    }

    /// Source (1 bit), partition (11), offset (42), index in a batch (10), high to low: every
    /// file line and every Kafka position short of partition 2048 or offset 2^42, in the order
    /// of `(source, position)` (the input is the source's, so it adds no order of its own).
    fn tie_of(source: Source, p: &crate::model::Position) -> u64 {
        let fits = p.input == source.input()
            && (0..1 << 11).contains(&p.partition)
            && (0..1 << 42).contains(&p.offset)
            && p.index < 1 << 10;
        if !fits {
            return Buffered::UNPACKED;
        }
        let source_bit = match source {
            Source::Browser => 0,
            Source::Server => 1,
        };
        source_bit << 63 | (p.partition as u64) << 52 | (p.offset as u64) << 10 | u64::from(p.index)
    }
}

impl PartialEq for Buffered {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Buffered {}

impl PartialOrd for Buffered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Buffered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.time.cmp(&other.time).then_with(|| {
            if self.tie != Buffered::UNPACKED && other.tie != Buffered::UNPACKED {
                self.tie.cmp(&other.tie)
            } else {
                let (a, b) = (&self.event, &other.event);
                (a.source, &a.position).cmp(&(b.source, &b.position))
            }
        })
    }
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Engine {
    pub fn new(engine: &EngineConfig, orders: &OrdersConfig) -> Engine {
        let ttl_ms = millis(engine.ttl);
        let value_tolerance =
            Money((engine.value_tolerance * Money::MICROS_PER_UNIT as f64).round() as i64);
        Engine {
            ttl_ms,
            lateness_ms: millis(engine.allowed_lateness),
            value_tolerance,
            purchase_events: engine.purchase_events.iter().cloned().collect(),
            watermarks: Watermarks::new(millis(engine.allowed_lateness)),
            dedup: Dedup::new(DedupRules {
                ttl_s: ttl_ms / 1000,
                merge_window_ms: millis(engine.merge_window),
                default_denied: engine.default_consent == ConsentDefault::Denied,
                pair_on_ttp: engine.pair_on_ttp,
            }),
            order_keys: KeyTable::default(),
            reconciler: Reconciler::new(ReconcileRules {
                ttl_ms,
                order_wait_ms: millis(engine.order_wait),
                value_tolerance,
                default_pixel: orders.default_pixel.clone(),
                non_revenue_statuses: orders.non_revenue_statuses.clone(),
            }),
            revenue: RevenueWindows::new(millis(engine.order_wait)),
            stats: Stats::default(),
            next_expiry: i64::MIN,
            released: Vec::new(),
            reorder: BinaryHeap::new(),
            next_seq: 0,
            written_below: 0,
            applied_written: Vec::new(),
            order_keys_dirty: changelog::DirtySet::default(),
            changelog: false,
        }
    }

    /// Tracks state changes for [`Engine::take_changes`]. Without it nothing is tracked, so a
    /// replay pays nothing for the changelog it does not keep.
    pub fn with_changelog(mut self) -> Engine {
        self.changelog = true;
        self.dedup.track_changes();
        self.reconciler.track_changes();
        self.revenue.track_changes();
        self.order_keys_dirty.enable();
        self
    }

    /// Applies one parsed input record, then releases whatever the watermark now allows.
    pub fn process(&mut self, parsed: Parsed, out: &mut Outputs) {
        match parsed {
            Parsed::DeadLetter(d) => {
                self.stats.input(d.input);
                self.stats.dead_letter(d.input, d.reason);
                out.dead_letters.push(d);
            }
            Parsed::Record(Record::Tombstone(_)) => {
                self.stats.input(Input::Orders);
                self.stats.order(OrderOutcome::Tombstone);
            }
            Parsed::Record(Record::Order(change)) => {
                self.stats.input(Input::Orders);
                let outcome = self.reconciler.on_order(
                    &change,
                    self.watermarks.current(),
                    &mut self.revenue,
                    &mut self.stats,
                    out,
                );
                self.stats.order(outcome);
                self.watermarks
                    .observe(Channel::of(&change.position), change.changed_at);
                self.fire_timers(out);
            }
            Parsed::Record(Record::Event(event)) => {
                let input = event.source.input();
                self.stats.input(input);
                self.stats.received(event.pixel(), event.source);
                let time = event.event_time;
                let channel = Channel::of(&event.position);
                if self.is_late(time) {
                    self.stats.late(input);
                    return;
                }
                match self.watermarks.current() {
                    // Behind the watermark: too late to sort, applied as it comes.
                    Some(wm) if time < wm => self.apply_event(event, out),
                    _ => self.buffer(event),
                }
                self.watermarks.observe(channel, time);
                self.fire_timers(out);
            }
        }
    }

    /// An event this old is late: it is counted and dropped, and moves nothing.
    fn is_late(&self, event_time: i64) -> bool {
        self.watermarks
            .current()
            .is_some_and(|wm| event_time < wm - self.ttl_ms)
    }

    /// Applies what a record another engine processes does to this one's event time: when the
    /// state is split by pixel over several engines, each sees the records of its own pixels
    /// through [`Engine::process`] and every other record through this, in the same order, so
    /// its watermark (and with it every timer, late judgement and expiry) moves exactly as a
    /// single engine's would at the same point. The same rules as `process`: a late event
    /// moves nothing; a dead letter or tombstone has no observation at all.
    pub fn observe_elsewhere(
        &mut self,
        channel: Channel,
        observation: Observation,
        out: &mut Outputs,
    ) {
        let time = match observation {
            Observation::Event(time) if self.is_late(time) => return,
            Observation::Event(time) | Observation::Order(time) => time,
        };
        self.watermarks.observe(channel, time);
        self.fire_timers(out);
    }

    fn buffer(&mut self, event: Box<Event>) {
        self.reorder
            .push(Reverse(Buffered::new(event, self.next_seq)));
        self.next_seq += 1;
    }

    fn apply_event(&mut self, event: Box<Event>, out: &mut Outputs) {
        self.dedup
            .offer(event, &mut self.stats, out, &mut self.released);
        self.finish_released(out);
    }

    /// The input has no more data (end of file): it stops holding the watermark back.
    pub fn finish_input(&mut self, input: Input, out: &mut Outputs) {
        self.watermarks.finish(input);
        self.fire_timers(out);
    }

    /// Declares every channel of the input idle: they stop holding the watermark back until
    /// their next record.
    pub fn mark_idle(&mut self, input: Input, out: &mut Outputs) {
        self.watermarks.set_idle_input(input);
        self.fire_timers(out);
    }

    /// The runtime saw no data on one partition of an input for its idle timeout: that channel
    /// stops holding the watermark back until its next record. When no channel holds it any
    /// more (every one idle or finished), nothing is coming: everything pending is released as
    /// by [`Engine::flush`], so the tail comes out. A copy arriving after that is late or a
    /// duplicate by the usual rules; closed keys are kept for their TTL as always (a flush
    /// releases timers, it does not move the watermark or expire state).
    pub fn mark_idle_channel(&mut self, input: Input, partition: i32, out: &mut Outputs) {
        self.watermarks.set_idle(Channel::new(input, partition));
        self.fire_timers(out);
        if self.watermarks.all_idle_or_finished() {
            self.flush(out);
        }
    }

    /// The runtime will deliver records from this partition of `input` (it was assigned): until
    /// its first record or until it is declared idle, it holds the watermark, so the partitions
    /// that deliver first cannot overtake it.
    pub fn register_channel(&mut self, input: Input, partition: i32) {
        self.watermarks.register(Channel::new(input, partition));
    }

    /// End of all input: releases every pending merge, deadline and window.
    pub fn flush(&mut self, out: &mut Outputs) {
        self.fire_until(i64::MAX, out);
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// An input's own watermark (the highest event time on any of its channels minus the
    /// allowed lateness).
    pub fn input_watermark(&self, input: Input) -> Option<i64> {
        self.watermarks
            .highest_seen(input)
            .map(|t| t - self.lateness_ms)
    }

    /// Highest event time seen on any channel of an input, for aligning inputs that are read
    /// together.
    pub fn highest_seen(&self, input: Input) -> Option<i64> {
        self.watermarks.highest_seen(input)
    }

    /// Highest event time seen on one partition of an input, for merging partitions that are
    /// read together (the service's state task).
    pub fn channel_highest(&self, input: Input, partition: i32) -> Option<i64> {
        self.watermarks
            .channel_highest(Channel::new(input, partition))
    }

    pub fn watermark(&self) -> Option<i64> {
        self.watermarks.current()
    }

    pub fn state_size(&self) -> StateSize {
        StateSize {
            reordering: self.reorder.len(),
            pending_actions: self.dedup.pending_len(),
            closed_keys: self.dedup.closed_len(),
            closed_key_bytes: self.dedup.closed_bytes() + self.order_keys.allocated_bytes(),
            order_keys: self.order_keys.len(),
            orders: self.reconciler.len(),
            revenue_windows: self.revenue.len(),
        }
    }

    /// The state changed since the last call, as changelog entries: written to a compacted
    /// topic at each checkpoint, they let [`Engine::restore`] rebuild this engine exactly.
    pub fn take_changes(&mut self) -> Vec<ChangelogEntry> {
        let mut entries = Vec::new();
        let Ok(_) = self.drain_changes(|entry| {
            entries.push(entry);
            Ok::<(), std::convert::Infallible>(())
        });
        entries
    }

    /// Hands each change of [`Engine::take_changes`] to `write` as it is encoded, and returns
    /// how many there were. A checkpoint carries every key touched in its interval (tens of
    /// thousands at full speed): collected first, they grew a buffer of megabytes whose fresh
    /// pages the kernel zeroed at every checkpoint. The first error stops the drain; the
    /// changes not written are lost with it, so the caller must then drop this engine and
    /// restore it from the changelog.
    pub fn drain_changes<E>(
        &mut self,
        mut write: impl FnMut(ChangelogEntry) -> Result<(), E>,
    ) -> Result<usize, E> {
        assert!(self.changelog, "drain_changes needs Engine::with_changelog");
        let mut written = 0;
        let mut put = |record: StateRecord| {
            written += 1;
            write(changelog::encode(&record))
        };
        for Reverse(b) in self.reorder.iter() {
            if b.seq >= self.written_below {
                put(StateRecord::Buffered(
                    b.event.position.clone(),
                    Some((*b.event).clone()),
                ))?;
            }
        }
        for position in self.applied_written.drain(..) {
            put(StateRecord::Buffered(position, None))?;
        }
        self.written_below = self.next_seq;
        for (fp, record) in self.dedup.take_changes() {
            put(StateRecord::DedupKey(fp, record))?;
        }
        for fp in self.order_keys_dirty.drain_sorted() {
            put(StateRecord::OrderKey(fp, self.order_keys.get(fp)))?;
        }
        for (id, entry) in self.reconciler.take_changes() {
            put(StateRecord::Order(id, entry))?;
        }
        for (key, window) in self.revenue.take_changes() {
            put(StateRecord::Window(key, window))?;
        }
        put(StateRecord::Meta(Some(Meta {
            channels: self.watermarks.channels().to_vec(),
            finished_inputs: self.watermarks.finished_inputs(),
            watermark: self.watermarks.current(),
            next_expiry: self.next_expiry,
            stats: self.stats.clone(),
        })))?;
        Ok(written)
    }

    /// Rebuilds an engine from changelog entries in the order they were written (later entries
    /// for a key replace earlier ones; a tombstone removes the key).
    pub fn restore(
        engine: &EngineConfig,
        orders: &OrdersConfig,
        entries: impl IntoIterator<Item = ChangelogEntry>,
    ) -> Result<Engine, ChangelogError> {
        let mut restored = Engine::new(engine, orders).with_changelog();
        let mut buffered = std::collections::BTreeMap::new();
        for entry in entries {
            match changelog::decode(&entry)? {
                StateRecord::Meta(Some(meta)) => {
                    restored.watermarks.restore(
                        meta.channels,
                        &meta.finished_inputs,
                        meta.watermark,
                    );
                    restored.next_expiry = meta.next_expiry;
                    restored.stats = meta.stats;
                }
                StateRecord::Meta(None) => {}
                StateRecord::Buffered(position, event) => match event {
                    Some(e) => {
                        buffered.insert(position, e);
                    }
                    None => {
                        buffered.remove(&position);
                    }
                },
                StateRecord::DedupKey(fp, record) => restored.dedup.restore(fp, record),
                StateRecord::OrderKey(fp, state) => match state {
                    Some(s) => restored.order_keys.put(fp, s),
                    None => restored.order_keys.remove(fp),
                },
                StateRecord::Order(id, entry) => restored.reconciler.restore(id, entry),
                StateRecord::Window(key, window) => restored.revenue.restore(key, window),
            }
        }
        for event in buffered.into_values() {
            restored.buffer(Box::new(event));
        }
        // Everything restored is in the changelog already.
        restored.written_below = restored.next_seq;
        Ok(restored)
    }

    fn fire_timers(&mut self, out: &mut Outputs) {
        if let Some(wm) = self.watermarks.current() {
            self.fire_until(wm, out);
            if wm >= self.next_expiry {
                self.dedup.expire(wm);
                let dirty = &mut self.order_keys_dirty;
                self.order_keys.expire_before(
                    u32::try_from((wm - 2 * self.ttl_ms).div_euclid(1000).max(0)).unwrap_or(0),
                    |fp| dirty.mark(fp),
                );
                self.reconciler.expire(wm);
                self.revenue.expire_before(wm - 2 * self.ttl_ms);
                self.next_expiry = wm + self.ttl_ms / 4;
            }
        }
    }

    /// Applies buffered copies and fires timers due before `watermark`, earliest first; at equal
    /// times: copies (a copy at the end of a merge window still joins it), merge releases, order
    /// deadlines, revenue windows (a release can add a deadline, a deadline can change a window).
    fn fire_until(&mut self, watermark: i64, out: &mut Outputs) {
        loop {
            // The earliest of the four, the lower kind on a tie: what the `min` of an array of
            // the four gave, without building and flattening the array on every turn.
            let mut next = self.reorder.peek().map(|Reverse(b)| (b.time, 0));
            for (due, kind) in [
                (self.dedup.next_due(), 1),
                (self.reconciler.next_due(), 2),
                (self.revenue.next_due(), 3),
            ] {
                if let Some(due) = due {
                    if next.is_none_or(|(earliest, _)| due < earliest) {
                        next = Some((due, kind));
                    }
                }
            }
            match next {
                Some((due, kind)) if due < watermark || watermark == i64::MAX => match kind {
                    0 => {
                        let Reverse(b) = self.reorder.pop().expect("peeked");
                        self.prefetch_next_copies();
                        if self.changelog && b.seq < self.written_below {
                            self.applied_written.push(b.event.position.clone());
                        }
                        self.apply_event(b.event, out);
                    }
                    1 => {
                        if let Some(action) = self.dedup.release_next() {
                            self.released.push(action);
                            self.finish_released(out);
                        }
                    }
                    2 => self
                        .reconciler
                        .fire_next(&mut self.revenue, &mut self.stats, out),
                    _ => self.revenue.fire_next(&mut self.stats, out),
                },
                _ => return,
            }
        }
    }

    /// Loads the copies applied next, two deep: the next one's text, and the one after it.
    /// They were parsed minutes of event time ago and are read cold otherwise. The next copy
    /// itself was usually loaded one pop ago as "the one after"; it is loaded again in case a
    /// copy buffered since then came first. The one after the next is the smaller child of
    /// the heap's root (the larger `Reverse`; `None` sorts below any): the heap's slice order
    /// is its layout, which a hint may rely on (it changes no result if it is ever wrong).
    fn prefetch_next_copies(&self) {
        if let Some(Reverse(next)) = self.reorder.peek() {
            next.event.prefetch();
            next.event.prefetch_text();
        }
        let heap = self.reorder.as_slice();
        if let Some(Reverse(after)) = heap.get(1).max(heap.get(2)) {
            after.event.prefetch();
        }
    }

    fn finish_released(&mut self, out: &mut Outputs) {
        let mut released = std::mem::take(&mut self.released);
        for action in released.drain(..) {
            self.finish_action(action, out);
        }
        // Keep the allocation for the next release.
        self.released = released;
    }

    /// The dedup side of a released action: merge its copies into a conversion and check it.
    /// A purchase with an order id goes on to the order side ([`Engine::finish_purchase`]),
    /// which owns order dedup and reconciliation; in the Kafka service that hand-off crosses a
    /// topic keyed by order id. Consumes the action: the conversion takes its copies' fields.
    fn finish_action(&mut self, action: Action, out: &mut Outputs) {
        let (first, other) = action.ordered();
        // Everything that needs both copies is read before the merge consumes them.
        let parity = other.map(|other| parity(first, other, self.value_tolerance));
        let first_source = first.source;
        let event_time = first.event_time;
        let anchor = action.anchor;
        let missing_event_id = action.missing_event_id;
        self.dedup.close(&action, flags::EMITTED);
        let conversion = merge(action);
        let view = conversion.view();
        let is_purchase = self.purchase_events.contains(view.event);
        let order_id = view.properties.order_id.map(str::to_owned);

        let mut findings = Vec::new();
        if missing_event_id {
            let mut d = conversion_discrepancy(DiscrepancyKind::MissingEventId, &view, "");
            d.source = Some(first_source);
            findings.push(d);
        }
        if let Some(currency) = view.properties.currency {
            if !is_iso4217(currency) {
                let mut d = conversion_discrepancy(DiscrepancyKind::InvalidCurrency, &view, "");
                d.currency = Some(currency.to_owned());
                findings.push(d);
            }
        }
        if let Some(parity) = parity {
            if let Some(mismatch) = parity.mismatch {
                let mut d = conversion_discrepancy(mismatch.kind, &view, "");
                d.browser_value = mismatch.browser_value;
                d.server_value = mismatch.server_value;
                d.browser_currency = mismatch.browser_currency;
                d.server_currency = mismatch.server_currency;
                findings.push(d);
            }
            for (key, present_on) in parity.one_sided_keys {
                let mut d =
                    conversion_discrepancy(DiscrepancyKind::MatchKeyParity, &view, key.as_str());
                d.match_key = Some(key);
                d.present_on = Some(present_on);
                findings.push(d);
            }
        }
        let missing_order_id = (is_purchase && order_id.is_none())
            .then(|| conversion_discrepancy(DiscrepancyKind::MissingOrderId, &view, ""));
        let candidate = Candidate {
            conversion: view,
            anchor,
            event_time,
            is_purchase,
            findings,
        };
        let emitted = match (is_purchase, order_id) {
            (true, Some(order_id)) => self.finish_purchase(order_id, candidate, out),
            _ => {
                self.emit(candidate, out);
                if let Some(d) = missing_order_id {
                    push_discrepancy(d, &mut self.stats, out);
                }
                true
            }
        };
        if emitted {
            out.conversions.push(conversion);
        }
    }

    /// The order side of a released purchase: one conversion per (pixel, order id) within the
    /// TTL; the first is emitted and joins its order, any later one is a duplicate order.
    /// Whether the conversion is emitted.
    fn finish_purchase(
        &mut self,
        order_id: String,
        candidate: Candidate<'_>,
        out: &mut Outputs,
    ) -> bool {
        let conversion = &candidate.conversion;
        let fp = Fingerprint::of(&[conversion.event_source_id, &order_id]);
        let anchor_s = candidate.anchor.div_euclid(1000);
        let claimed = self
            .order_keys
            .get(fp)
            .is_some_and(|s| (anchor_s - i64::from(s.anchor_s)).abs() < self.ttl_ms / 1000);
        if claimed {
            let pixel = conversion.event_source_id;
            for source in candidate.sources() {
                self.stats
                    .duplicates(pixel, source, DuplicateReason::DuplicateOrder, 1);
            }
            let d =
                conversion_discrepancy(DiscrepancyKind::DuplicateOrderConversion, conversion, "");
            push_discrepancy(d, &mut self.stats, out);
            return false;
        }
        self.order_keys.put(
            fp,
            KeyState {
                anchor_s: u32::try_from(anchor_s.max(0)).unwrap_or(u32::MAX),
                flags: 0,
            },
        );
        self.order_keys_dirty.mark(fp);
        let purchase = PurchaseRef {
            order_id,
            pixel: conversion.event_source_id.to_owned(),
            event: conversion.event.to_owned(),
            event_id: conversion.event_id.map(str::to_owned),
            value: conversion.properties.value,
            currency: conversion.properties.currency.map(str::to_owned),
            event_time: candidate.event_time,
        };
        self.emit(candidate, out);
        self.reconciler
            .on_purchase(purchase, &mut self.revenue, &mut self.stats, out);
        true
    }

    /// Counts a conversion that is emitted and emits its findings; a purchase also counts as
    /// tracked revenue. (The caller puts the conversion itself in the outputs.)
    fn emit(&mut self, candidate: Candidate<'_>, out: &mut Outputs) {
        let Candidate {
            conversion: view,
            event_time,
            is_purchase,
            findings,
            ..
        } = candidate;
        self.stats.conversion(&view);
        for d in findings {
            push_discrepancy(d, &mut self.stats, out);
        }
        if is_purchase {
            let currency = view.properties.currency.unwrap_or("unknown");
            self.revenue.track(
                view.event_source_id,
                currency,
                event_time,
                view.properties.value.unwrap_or_default(),
                &mut self.stats,
                out,
            );
        }
    }
}

/// A released action, merged and checked, before it is emitted: the findings are emitted with
/// it, or not at all when the order side drops it as a duplicate order.
struct Candidate<'c> {
    /// The merged conversion, read once for all the checks and counts.
    conversion: Conversion<&'c str>,
    /// Event time (ms) the action's TTL counts from.
    anchor: i64,
    /// Event time (ms) of the first copy.
    event_time: i64,
    /// Its event is one of `engine.purchase_events`.
    is_purchase: bool,
    findings: Vec<Discrepancy>,
}

impl Candidate<'_> {
    /// The sources of the copies the action holds, one entry per copy.
    fn sources(&self) -> Vec<Source> {
        match self.conversion.sources {
            SourcesSeen::Both => vec![Source::Browser, Source::Server],
            SourcesSeen::Browser => vec![Source::Browser],
            SourcesSeen::Server => vec![Source::Server],
        }
    }
}

/// What browser/server parity found for one merged action.
struct Parity {
    mismatch: Option<ParityMismatch>,
    /// Match keys present on one copy only, and the side that has them.
    one_sided_keys: Vec<(MatchKey, Source)>,
}

struct ParityMismatch {
    kind: DiscrepancyKind,
    browser_value: Option<Money>,
    server_value: Option<Money>,
    browser_currency: Option<String>,
    server_currency: Option<String>,
}

/// Browser/server parity: a currency difference, else a value difference beyond the
/// tolerance; match keys present on one side only.
fn parity(a: &Event, b: &Event, tolerance: Money) -> Parity {
    let (browser, server) = if a.source == Source::Browser {
        (a, b)
    } else {
        (b, a)
    };
    let (b_currency, s_currency) = (browser.currency(), server.currency());
    let (b_value, s_value) = (browser.value(), server.value());
    let kind = match (b_currency, s_currency) {
        (Some(bc), Some(sc)) if bc != sc => Some(DiscrepancyKind::CurrencyParity),
        _ => match (b_value, s_value) {
            (Some(bv), Some(sv)) if bv.abs_diff(sv) > tolerance => {
                Some(DiscrepancyKind::ValueParity)
            }
            _ => None,
        },
    };
    let mismatch = kind.map(|kind| ParityMismatch {
        kind,
        browser_value: b_value,
        server_value: s_value,
        browser_currency: b_currency.map(str::to_owned),
        server_currency: s_currency.map(str::to_owned),
    });
    let one_sided_keys = MatchKey::PARITY
        .into_iter()
        .filter_map(|key| match (browser.user_key(key), server.user_key(key)) {
            (Some(_), None) => Some((key, Source::Browser)),
            (None, Some(_)) => Some((key, Source::Server)),
            _ => None,
        })
        .collect();
    Parity {
        mismatch,
        one_sided_keys,
    }
}

/// The first copy's fields, completed by the other's; value and currency by authority: the
/// server copy's if it has a value, else the browser copy's.
fn merge(action: Action) -> MergedConversion {
    let priced = |e: &Option<Box<Event>>| e.as_deref().is_some_and(|e| e.value().is_some());
    let value_source = if priced(&action.server) {
        ValueSource::Server
    } else if priced(&action.browser) {
        ValueSource::Browser
    } else {
        ValueSource::None
    };
    let (key, first, other) = action.into_parts();
    MergedConversion::new(key, first, other, value_source)
}

pub(crate) fn push_discrepancy(d: Discrepancy, stats: &mut Stats, out: &mut Outputs) {
    stats.discrepancy(&d);
    out.discrepancies.push(d);
}

/// A discrepancy about one copy; `suffix` makes its key unique where one action can raise
/// several of the same kind.
pub(crate) fn discrepancy_about(kind: DiscrepancyKind, event: &Event, suffix: &str) -> Discrepancy {
    let id = event.event_id().unwrap_or("");
    let mut key = format!(
        "{}/{}/{}/{}",
        kind.as_str(),
        event.pixel(),
        event.name(),
        id
    );
    if !suffix.is_empty() {
        key.push('/');
        key.push_str(suffix);
    }
    let mut d = Discrepancy::new(kind, key, event.event_time);
    d.event_source_id = Some(event.pixel().to_owned());
    d.event = Some(event.name().to_owned());
    d.event_id = event.event_id().map(str::to_owned);
    d.order_id = event.order_id().map(str::to_owned);
    d
}

fn conversion_discrepancy(
    kind: DiscrepancyKind,
    c: &Conversion<&str>,
    suffix: &str,
) -> Discrepancy {
    let mut key = format!("{}/{}", kind.as_str(), c.key);
    if !suffix.is_empty() {
        key.push('/');
        key.push_str(suffix);
    }
    let mut d = Discrepancy::new(kind, key, c.event_time * 1000);
    d.event_source_id = Some(c.event_source_id.to_owned());
    d.event = Some(c.event.to_owned());
    d.event_id = c.event_id.map(str::to_owned);
    d.order_id = c.properties.order_id.map(str::to_owned);
    d.conversion_value = c.properties.value;
    d.conversion_currency = c.properties.currency.map(str::to_owned);
    d
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{Input, Position};

    fn buffered(time: i64, source: Source, position: Position, seq: u64) -> Buffered {
        Buffered::new(Box::new(Event::bare(source, time, position)), seq)
    }

    /// Fields near the packing limits on both sides, so packed and unpacked entries meet.
    fn position() -> impl Strategy<Value = Position> {
        (
            prop_oneof![
                Just(Input::Browser),
                Just(Input::Server),
                Just(Input::Orders)
            ],
            prop_oneof![0..3i32, 2046..2050i32, Just(i32::MAX), Just(-1)],
            prop_oneof![0..4i64, (1i64 << 42) - 2..(1i64 << 42) + 2, Just(i64::MAX)],
            prop_oneof![0..3u32, 1022..1026u32],
        )
            .prop_map(|(input, partition, offset, index)| Position {
                input,
                partition,
                offset,
                index,
            })
    }

    proptest! {
        /// The reorder buffer's order is (event time, source, position) whether an entry's tie
        /// is packed or not, so replay and service apply copies in the rules' order.
        #[test]
        fn buffered_copies_order_as_time_source_position(
            copies in proptest::collection::vec(
                (0..3i64, prop_oneof![Just(Source::Browser), Just(Source::Server)], position()),
                1..40,
            )
        ) {
            let mut entries: Vec<Buffered> = copies
                .iter()
                .enumerate()
                .map(|(seq, (t, s, p))| buffered(*t, *s, p.clone(), seq as u64))
                .collect();
            entries.sort();
            let got: Vec<_> = entries
                .iter()
                .map(|b| (b.time, b.event.source, b.event.position.clone()))
                .collect();
            let mut want: Vec<_> = copies.clone();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}
