//! Arrival order: puts planned records into their files in the order they arrive, with bounded
//! memory, and tallies each record's accounting bucket as it is written.
//!
//! Owns: one reorder min-heap per file keyed by (arrival, sequence); the batcher that groups
//! server copies of one pixel that arrive close together into one body; and **deferred**
//! records, the few deliberately late copies whose outcome needs the engine's watermark to be
//! past a point when they are read. Must not: decide outcomes (the plan tags every record with
//! its bucket) or look at record contents beyond event times.
//!
//! Why deferral makes the truth exact: replay reads the file whose highest event time seen so
//! far is lowest, so when a record of file F is read the engine's watermark is exactly
//! (highest event time among F's earlier records) - allowed_lateness. A deferred record waits
//! until a record of its own file with event time above its threshold has been placed, and is
//! placed after it, so its condition holds whatever the rest of the traffic looks like. If its
//! arrival would then be too late (it would count as late instead), or the input ends first, it
//! is not sent at all, and its bucket is never counted.
//!
//! Nor is a deferred record that would arrive within [`QUIET_TAIL_MS`] of the end of the
//! traffic's span. Near the end the inputs run dry one after another; what a record read then
//! meets depends on how a reader treats an input with nothing more to give: `replay` lets a
//! finished file go at once, a stream waits `idle_timeout` of wall-clock time before it lets an
//! input partition go. Both are right, and no truth could say which copy a stream sees first,
//! so the plan keeps its watermark-dependent records where every input is still flowing.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io;

use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::model::Source;

use super::traffic::ServerShape;
use super::truth::{Bucket, Truth};
use super::wire::{self, EventCopy, OrderChange, SchemaCache};
use super::{Line, TrafficSink};

/// Server copies joining one batch arrive within this of the batch's first.
pub(crate) const BATCH_WINDOW_MS: i64 = 25_000;
/// Lines are written once the plan has moved this far past their arrival: nothing planned
/// later can arrive earlier (orders are created at most 90 s before their purchase).
const RELEASE_MARGIN_MS: i64 = 10 * 60_000;
/// Deferred records are not sent in this last stretch of the span (see the module doc): it is
/// longer than the gaps between records of the sparsest input partition of a small run.
pub(crate) const QUIET_TAIL_MS: i64 = 2 * 3_600_000;
/// Prompt copies arrive this close after their event time (exclusive).
const PROMPT_MS: i64 = super::scenario::JITTER_MS;

/// The three input files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum File {
    Browser = 0,
    Server = 1,
    Orders = 2,
}

impl File {
    pub(crate) const ALL: [File; 3] = [File::Browser, File::Server, File::Orders];

    pub(crate) fn of(source: Source) -> File {
        match source {
            Source::Browser => File::Browser,
            Source::Server => File::Server,
        }
    }
}

struct Item {
    arrival: i64,
    seq: u64,
    line: Line,
    tags: Vec<Bucket>,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        (self.arrival, self.seq) == (other.arrival, other.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.arrival, self.seq).cmp(&(other.arrival, other.seq))
    }
}

/// When a deferred record may be placed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Defer {
    /// A record of the same file with event time strictly above this must come first.
    pub after_event_time: i64,
    /// It arrives no earlier than this.
    pub min_arrival: i64,
    /// If it would arrive later than this, it is not sent.
    pub max_arrival: i64,
}

struct Deferred {
    defer: Defer,
    seq: u64,
    event_time: i64,
    line: Line,
    tags: Vec<Bucket>,
}

impl PartialEq for Deferred {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}
impl Eq for Deferred {}
impl PartialOrd for Deferred {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Deferred {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.defer.after_event_time, self.seq).cmp(&(other.defer.after_event_time, other.seq))
    }
}

struct Batch {
    pixel: usize,
    shape: ServerShape,
    target: usize,
    first_planned: i64,
    arrival: i64,
    copies: Vec<EventCopy>,
    tags: Vec<Bucket>,
}

/// Places records in arrival order and writes them to a sink.
pub(crate) struct Scheduler {
    heaps: [BinaryHeap<Reverse<Item>>; 3],
    deferred: [BinaryHeap<Reverse<Deferred>>; 3],
    /// Per event file: the placed record with the highest event time, (event time, arrival).
    highest: [Option<(i64, i64)>; 3],
    batches: Vec<Batch>,
    seq: u64,
    /// Every line arriving before this has been written.
    written_before: i64,
    schemas: SchemaCache,
    pub(crate) truth: Truth,
    /// Batch sizes.
    rng: ChaCha8Rng,
    /// Arrival of each written line, for tests.
    pub(crate) arrivals: Option<Vec<(File, i64)>>,
    /// No deferred record arrives after this (the start of the span's quiet tail).
    deferred_until: i64,
}

impl Scheduler {
    /// A scheduler for traffic that ends at `span_end` (event time, ms).
    pub(crate) fn new(seed: u64, span_end: i64) -> Scheduler {
        Scheduler {
            heaps: Default::default(),
            deferred: Default::default(),
            highest: [None; 3],
            batches: Vec::new(),
            seq: 0,
            written_before: i64::MIN,
            schemas: SchemaCache::default(),
            truth: Truth::new(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x00ba_7c4e_5000_0000),
            arrivals: None,
            deferred_until: span_end - QUIET_TAIL_MS,
        }
    }

    /// Where the span's quiet tail starts: no record whose outcome depends on the watermark
    /// is placed after it.
    pub(crate) fn quiet_tail_from(&self) -> i64 {
        self.deferred_until
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Places a rendered line. `event_time` is the highest event time of the valid events it
    /// holds (`None` for lines that carry no event time the engine reads).
    fn place(
        &mut self,
        file: File,
        arrival: i64,
        line: Line,
        tags: Vec<Bucket>,
        event_time: Option<i64>,
    ) {
        debug_assert!(
            arrival >= self.written_before,
            "placed behind a written line"
        );
        let seq = self.next_seq();
        self.heaps[file as usize].push(Reverse(Item {
            arrival,
            seq,
            line,
            tags,
        }));
        if let Some(e) = event_time {
            self.note_event_time(file, e, arrival);
        }
    }

    /// Records that a line with event time `e` arriving at `arrival` was placed in `file`, and
    /// places every deferred record it unblocks (right after it).
    fn note_event_time(&mut self, file: File, e: i64, arrival: i64) {
        let mut work = vec![(e, arrival)];
        while let Some((e, arrival)) = work.pop() {
            let f = file as usize;
            if self.highest[f].is_none_or(|(he, _)| e > he) {
                self.highest[f] = Some((e, arrival));
            }
            while self.deferred[f]
                .peek()
                .is_some_and(|Reverse(d)| d.defer.after_event_time < e)
            {
                let Reverse(d) = self.deferred[f].pop().expect("peeked");
                let at = d.defer.min_arrival.max(arrival + 1);
                if at <= d.defer.max_arrival.min(self.deferred_until) {
                    debug_assert!(at >= self.written_before, "placed behind a written line");
                    let seq = self.next_seq();
                    self.heaps[f].push(Reverse(Item {
                        arrival: at,
                        seq,
                        line: d.line,
                        tags: d.tags,
                    }));
                    work.push((d.event_time, at));
                }
            }
        }
    }

    /// Places a prompt event copy arriving at `planned` (server copies of a batching shape go
    /// through the batcher and arrive with their body).
    pub(crate) fn push_event(&mut self, copy: EventCopy, planned: i64, tag: Bucket) {
        debug_assert!(
            (0..PROMPT_MS).contains(&(planned - copy.time)),
            "a prompt copy arrives within the jitter"
        );
        match copy.source {
            Source::Browser => {
                let line = Line {
                    key: copy.key(),
                    value: Some(copy.render_browser()),
                };
                let valid = copy.defect.is_none().then_some(copy.time);
                self.place(File::Browser, planned, line, vec![tag], valid);
            }
            Source::Server if copy.shape.is_batch() && copy.defect.is_none() => {
                self.batch(copy, planned, tag)
            }
            Source::Server => {
                let line = Line {
                    key: None,
                    value: Some(copy.render_server_single()),
                };
                let valid = copy.defect.is_none().then_some(copy.time);
                self.place(File::Server, planned, line, vec![tag], valid);
            }
        }
    }

    /// Places a deliberately late copy once `defer` allows (see the module doc). Server copies
    /// go alone, never in a batch.
    pub(crate) fn defer_event(&mut self, copy: EventCopy, tag: Bucket, defer: Defer) {
        let file = File::of(copy.source);
        let line = match copy.source {
            Source::Browser => Line {
                key: copy.key(),
                value: Some(copy.render_browser()),
            },
            Source::Server => Line {
                key: None,
                value: Some(copy.render_server_single()),
            },
        };
        let f = file as usize;
        if let Some((he, ha)) = self.highest[f] {
            if he > defer.after_event_time {
                let at = defer.min_arrival.max(ha + 1);
                if at <= defer.max_arrival.min(self.deferred_until) {
                    self.place(file, at, line, vec![tag], Some(copy.time));
                }
                return;
            }
        }
        let seq = self.next_seq();
        self.deferred[f].push(Reverse(Deferred {
            defer,
            seq,
            event_time: copy.time,
            line,
            tags: vec![tag],
        }));
    }

    /// Places an order change (tagged applied, redelivered or historical).
    pub(crate) fn push_order(&mut self, change: &OrderChange, arrival: i64, tag: Bucket) {
        let key = (change.defect.is_none()).then(|| change.order_id.to_string());
        let line = Line {
            key,
            value: Some(change.render(&mut self.schemas)),
        };
        self.place(File::Orders, arrival, line, vec![tag], None);
    }

    /// Places the tombstone Debezium writes after a delete.
    pub(crate) fn push_tombstone(&mut self, order_id: u64, arrival: i64) {
        let line = Line {
            key: Some(order_id.to_string()),
            value: None,
        };
        self.place(
            File::Orders,
            arrival,
            line,
            vec![Bucket::OrderTombstone],
            None,
        );
    }

    /// Places a line that is one dead letter.
    pub(crate) fn push_dead(&mut self, file: File, arrival: i64, text: String) {
        let line = Line {
            key: None,
            value: Some(text),
        };
        self.place(file, arrival, line, vec![Bucket::DeadLetter], None);
    }

    fn batch(&mut self, copy: EventCopy, planned: i64, tag: Bucket) {
        let (pixel, shape) = (copy.pixel, copy.shape);
        if let Some(at) = self
            .batches
            .iter()
            .position(|b| b.pixel == pixel && b.shape == shape)
        {
            let b = &self.batches[at];
            if b.copies.len() < b.target && planned <= b.first_planned + BATCH_WINDOW_MS {
                let b = &mut self.batches[at];
                b.arrival = b.arrival.max(planned);
                b.copies.push(copy);
                b.tags.push(tag);
                return;
            }
            let full = self.batches.swap_remove(at);
            self.close(full);
        }
        let target = self.rng.gen_range(1..=5);
        self.batches.push(Batch {
            pixel,
            shape,
            target,
            first_planned: planned,
            arrival: planned,
            copies: vec![copy],
            tags: vec![tag],
        });
    }

    fn close(&mut self, mut b: Batch) {
        debug_assert!(
            b.copies
                .iter()
                .filter(|c| c.defect.is_none())
                .all(|c| (0..PROMPT_MS).contains(&(b.arrival - c.time))),
            "every copy of a batch arrives within the jitter"
        );
        let highest = b
            .copies
            .iter()
            .filter(|c| c.defect.is_none())
            .map(|c| c.time)
            .max();
        let line = Line {
            key: None,
            value: Some(wire::render_server_batch(b.shape, b.pixel, &b.copies)),
        };
        b.copies.clear();
        self.place(File::Server, b.arrival, line, b.tags, highest);
    }

    /// Adds a defective event (one dead letter) to the open batch of its pixel and shape; if
    /// none is open it is not sent at all.
    pub(crate) fn spoil_batch(&mut self, bad: EventCopy) {
        if let Some(b) = self
            .batches
            .iter_mut()
            .find(|b| b.pixel == bad.pixel && b.shape == bad.shape)
        {
            b.copies.insert(b.copies.len() / 2, bad);
            b.tags.insert(b.tags.len() / 2, Bucket::DeadLetter);
        }
    }

    /// The plan has reached event time `now`: nothing planned from here on arrives before
    /// `now - 90 s`. Closes batches no later copy can join and writes every line that nothing
    /// can precede any more.
    pub(crate) fn advance(&mut self, now: i64, sink: &mut dyn TrafficSink) -> io::Result<()> {
        let mut i = 0;
        while i < self.batches.len() {
            // Later copies have event time >= now - 1 s, so they plan to arrive after that.
            if self.batches[i].first_planned + BATCH_WINDOW_MS < now - 1_000 {
                let b = self.batches.swap_remove(i);
                self.close(b);
            } else {
                i += 1;
            }
        }
        self.release(now - RELEASE_MARGIN_MS, sink)
    }

    /// End of the plan: closes every batch, drops deferred records still blocked (they are
    /// never sent, never counted), writes everything.
    pub(crate) fn finish(&mut self, sink: &mut dyn TrafficSink) -> io::Result<()> {
        let mut batches = std::mem::take(&mut self.batches);
        batches.sort_by_key(|b| (b.arrival, b.pixel));
        for b in batches {
            self.close(b);
        }
        for d in &mut self.deferred {
            d.clear();
        }
        self.release(i64::MAX, sink)
    }

    /// Writes, across the three files in arrival order, every line arriving before `cut`.
    fn release(&mut self, cut: i64, sink: &mut dyn TrafficSink) -> io::Result<()> {
        self.written_before = self.written_before.max(cut);
        loop {
            let mut next: Option<(i64, u64, usize)> = None;
            for (f, heap) in self.heaps.iter().enumerate() {
                if let Some(Reverse(item)) = heap.peek() {
                    if item.arrival < cut
                        && next.is_none_or(|(a, s, _)| (item.arrival, item.seq) < (a, s))
                    {
                        next = Some((item.arrival, item.seq, f));
                    }
                }
            }
            let Some((_, _, f)) = next else {
                return Ok(());
            };
            let Reverse(item) = self.heaps[f].pop().expect("peeked");
            let records = item.tags.len() as u64;
            for tag in &item.tags {
                self.truth.count(*tag);
            }
            let inputs = &mut self.truth.input_records;
            match File::ALL[f] {
                File::Browser => inputs.browser += records,
                File::Server => inputs.server += records,
                File::Orders => inputs.orders += records,
            }
            inputs.total += records;
            if let Some(log) = &mut self.arrivals {
                log.push((File::ALL[f], item.arrival));
            }
            match File::ALL[f] {
                File::Browser => sink.browser(item.line)?,
                File::Server => sink.server(item.line)?,
                File::Orders => sink.orders(item.line)?,
            }
        }
    }
}
