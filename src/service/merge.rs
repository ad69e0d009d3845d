//! Event-time merge of the channels in one internal-log partition, in the state task.
//!
//! Owns: a queue per channel (input partition) of what the log brought for it, whether an
//! empty channel holds the others, and the choice of what the engine gets next, by the rule
//! `replay` uses for its files and ingest for its partitions: the channel whose highest event
//! time applied so far is lowest goes next (ties: by channel); if it has nothing queued but
//! holds, nothing is applied until it delivers.
//!
//! Why again here when ingest aligns: one ingest aligns only the partitions it owns. With
//! several instances, or after a rebalance, the log interleaves their streams as fast as each
//! runs, and a channel of a slower instance would fall hours of event time behind the others
//! in the log; the watermark waits for it, but a copy that arrives out of order in its own
//! channel would meet a lower watermark than `replay` gives it, and be merged where it should
//! be a duplicate. Merged here, the engine sees the order one reader of all partitions would
//! give.
//!
//! A channel holds while the last thing the log brought for it is a record or its assignment:
//! more is coming. Ingest writes a caught-up marker when it forwards past a channel that has
//! nothing more to give it, and an idle marker when one stays quiet: after either, an empty
//! channel does not hold. Must not: read a clock or talk to Kafka.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};

use super::wire::Channel;

/// What the log brought for a channel, in log order. Borrows the record's bytes from the
/// consumer's message until it has to be queued.
#[derive(Debug)]
pub enum Item<'a> {
    /// A forwarded input record: its offset in its input partition and its bytes (`None` for
    /// a tombstone). Parsed when applied.
    Record {
        origin: i64,
        payload: Option<Cow<'a, [u8]>>,
    },
    /// What one input record that went to another state partition does to event time: its
    /// offset and its observations (`wire::observations`).
    Observed {
        origin: i64,
        observations: Cow<'a, [u8]>,
    },
    Assigned,
    CaughtUp,
    Idle,
}

impl Item<'_> {
    /// Whether an empty channel still holds the others after this item.
    pub fn holds(&self) -> bool {
        matches!(
            self,
            Item::Record { .. } | Item::Observed { .. } | Item::Assigned
        )
    }

    /// The item with its bytes copied, to be queued.
    pub fn into_owned(self) -> Item<'static> {
        match self {
            Item::Record { origin, payload } => Item::Record {
                origin,
                payload: payload.map(|p| Cow::Owned(p.into_owned())),
            },
            Item::Observed {
                origin,
                observations,
            } => Item::Observed {
                origin,
                observations: Cow::Owned(observations.into_owned()),
            },
            Item::Assigned => Item::Assigned,
            Item::CaughtUp => Item::CaughtUp,
            Item::Idle => Item::Idle,
        }
    }
}

#[derive(Debug, Default)]
struct ChannelQueue {
    items: VecDeque<(i64, Item<'static>)>,
    holds: bool,
}

/// What [`Merge::next`] gives.
#[derive(Debug)]
pub enum Next {
    /// Apply this item (log offset, channel, item).
    Item(i64, Channel, Item<'static>),
    /// The channel that must go next has nothing queued but holds.
    Wait(Channel),
    /// Nothing queued.
    Empty,
}

#[derive(Debug, Default)]
pub struct Merge {
    channels: BTreeMap<Channel, ChannelQueue>,
    queued: usize,
}

impl Merge {
    /// A merge that starts where a checkpoint left it: these channels hold (their last item
    /// before the resume offset was a record or an assignment).
    pub fn restored(holding: impl IntoIterator<Item = Channel>) -> Merge {
        let mut merge = Merge::default();
        for c in holding {
            merge.channels.entry(c).or_default().holds = true;
        }
        merge
    }

    pub fn push(&mut self, log_offset: i64, channel: Channel, item: Item<'_>) {
        let queue = self.channels.entry(channel).or_default();
        queue.holds = item.holds();
        queue.items.push_back((log_offset, item.into_owned()));
        self.queued += 1;
    }

    /// Takes `item` of `channel` through the merge without queueing it when nothing is queued
    /// and `next` would give it at once (the common case: with one instance the log is in
    /// merge order already); gives it back to be applied now, or `None` if it was queued.
    /// The same as `push` then `next`, without copying the record's bytes.
    pub fn pass<'a>(
        &mut self,
        log_offset: i64,
        channel: Channel,
        item: Item<'a>,
        highest: impl Fn(Channel) -> Option<i64>,
    ) -> Option<Item<'a>> {
        let goes_next = self.queued == 0 && {
            let key = |c: Channel| (highest(c).unwrap_or(i64::MIN), c);
            let own = key(channel);
            // Nothing is queued: the only other candidates are the channels that hold.
            self.channels
                .iter()
                .filter(|(c, q)| q.holds && **c != channel)
                .all(|(c, _)| own < key(*c))
        };
        if goes_next {
            self.channels.entry(channel).or_default().holds = item.holds();
            Some(item)
        } else {
            self.push(log_offset, channel, item);
            None
        }
    }

    pub fn queued(&self) -> usize {
        self.queued
    }

    /// The lowest log offset of anything queued: where a restart must read the log again.
    pub fn first_queued_offset(&self) -> Option<i64> {
        self.channels
            .values()
            .filter_map(|q| q.items.front().map(|(o, _)| *o))
            .min()
    }

    /// Stops `channel` holding until the log brings it something again: the wait for it was
    /// given up.
    pub fn release(&mut self, channel: Channel) {
        if let Some(q) = self.channels.get_mut(&channel) {
            q.holds = false;
        }
    }

    /// The next item by the merge rule; `highest(c)` is the highest event time the engine has
    /// applied from channel `c`.
    pub fn next(&mut self, highest: impl Fn(Channel) -> Option<i64>) -> Next {
        if self.queued == 0 {
            return Next::Empty;
        }
        let chosen = self
            .channels
            .iter()
            .filter(|(_, q)| !q.items.is_empty() || q.holds)
            .map(|(c, _)| *c)
            .min_by_key(|c| (highest(*c).unwrap_or(i64::MIN), *c))
            .expect("a channel has items queued");
        let queue = self.channels.get_mut(&chosen).expect("chosen from them");
        match queue.items.pop_front() {
            Some((offset, item)) => {
                self.queued -= 1;
                Next::Item(offset, chosen, item)
            }
            None => Next::Wait(chosen),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Input;

    fn ch(input: Input, partition: i32) -> Channel {
        Channel::new(input, partition)
    }

    fn record(origin: i64) -> Item<'static> {
        Item::Record {
            origin,
            payload: None,
        }
    }

    /// Applies everything it can, with `times[(channel, origin)]` as each record's event time;
    /// returns (channel, origin) of what was applied and what it waits for.
    fn drain(
        merge: &mut Merge,
        highest: &mut BTreeMap<Channel, i64>,
        times: &BTreeMap<(Channel, i64), i64>,
    ) -> (Vec<(Channel, i64)>, Option<Channel>) {
        let mut applied = Vec::new();
        loop {
            let next = {
                let h = &*highest;
                merge.next(|c| h.get(&c).copied())
            };
            match next {
                Next::Item(_, c, Item::Record { origin, .. } | Item::Observed { origin, .. }) => {
                    let t = times[&(c, origin)];
                    let e = highest.entry(c).or_insert(t);
                    *e = (*e).max(t);
                    applied.push((c, origin));
                }
                Next::Item(..) => {}
                Next::Wait(c) => return (applied, Some(c)),
                Next::Empty => return (applied, None),
            }
        }
    }

    #[test]
    fn a_channel_behind_in_event_time_holds_the_others_until_it_delivers() {
        let (b, s) = (ch(Input::Browser, 0), ch(Input::Server, 0));
        let times: BTreeMap<_, _> = [((b, 0), 100), ((b, 1), 200), ((s, 0), 150), ((s, 1), 300)]
            .into_iter()
            .collect();
        let mut merge = Merge::default();
        let mut highest = BTreeMap::new();
        // One instance's browser partition runs ahead in the log of the other's server one.
        merge.push(0, b, record(0));
        merge.push(1, b, record(1));
        let (applied, waiting) = drain(&mut merge, &mut highest, &times);
        assert_eq!(applied, vec![(b, 0), (b, 1)]);
        assert_eq!(waiting, None);
        // Now the server channel is known and holds: browser cannot run further ahead.
        merge.push(2, s, Item::Assigned);
        merge.push(3, b, record(2));
        let times: BTreeMap<_, _> = times.into_iter().chain([((b, 2), 400)]).collect();
        let (applied, waiting) = drain(&mut merge, &mut highest, &times);
        assert_eq!(applied, vec![]);
        assert_eq!(waiting, Some(s));
        assert_eq!(merge.first_queued_offset(), Some(3));
        merge.push(4, s, record(0));
        merge.push(5, s, record(1));
        merge.push(6, s, Item::CaughtUp);
        let (applied, waiting) = drain(&mut merge, &mut highest, &times);
        assert_eq!(applied, vec![(s, 0), (s, 1), (b, 2)]);
        assert_eq!(waiting, None);
        assert_eq!(merge.queued(), 0);
        assert_eq!(merge.first_queued_offset(), None);
    }

    #[test]
    fn markers_end_the_hold_and_a_released_channel_stops_holding() {
        let (o, s) = (ch(Input::Orders, 0), ch(Input::Server, 1));
        let times: BTreeMap<_, _> = [((s, 7), 500)].into_iter().collect();
        let mut merge = Merge::restored([o]);
        // Where a checkpoint left them: orders behind server in event time.
        let mut highest = BTreeMap::from([(o, 100), (s, 400)]);
        merge.push(10, s, record(7));
        assert_eq!(drain(&mut merge, &mut highest, &times), (vec![], Some(o)));
        merge.release(o);
        assert_eq!(
            drain(&mut merge, &mut highest, &times),
            (vec![(s, 7)], None)
        );
        // Markers are applied in their channel's turn (server sorts before orders); an empty
        // channel holds after an assignment, not after a caught-up or idle marker.
        merge.push(11, o, Item::Idle);
        merge.push(12, s, Item::Assigned);
        assert!(matches!(merge.next(|_| None), Next::Item(12, c, Item::Assigned) if c == s));
        assert!(matches!(merge.next(|_| None), Next::Wait(c) if c == s));
        merge.push(13, s, Item::CaughtUp);
        assert!(matches!(merge.next(|_| None), Next::Item(13, c, Item::CaughtUp) if c == s));
        assert!(matches!(merge.next(|_| None), Next::Item(11, c, Item::Idle) if c == o));
        assert!(matches!(merge.next(|_| None), Next::Empty));
        merge.push(14, o, record(8));
        assert!(matches!(merge.next(|_| None), Next::Item(14, ..)));
        assert!(
            matches!(merge.next(|_| None), Next::Empty),
            "nothing queued"
        );
    }

    /// What the log brings in one step of the property below: a channel (0-2) and an item
    /// (0: record with the given event time, 1: assigned, 2: caught up, 3: idle, 4: another
    /// state partition's record, observed).
    fn item_of(kind: u8, origin: i64) -> Item<'static> {
        match kind {
            0 => record(origin),
            1 => Item::Assigned,
            2 => Item::CaughtUp,
            3 => Item::Idle,
            _ => Item::Observed {
                origin,
                observations: Cow::Borrowed(&[]),
            },
        }
    }

    proptest::proptest! {
        /// `pass` (apply at once what would go next, else queue) is `push` then `next`.
        #[test]
        fn passing_an_item_through_is_pushing_it_and_taking_the_next(
            steps in proptest::collection::vec((0..3i32, 0..5u8, 0..50i64), 0..60)
        ) {
            let channels = [ch(Input::Browser, 0), ch(Input::Server, 0), ch(Input::Orders, 0)];
            let mut times = BTreeMap::new();
            let (mut pushed, mut passed) = (Merge::default(), Merge::default());
            let (mut h_pushed, mut h_passed) = (BTreeMap::new(), BTreeMap::new());
            let (mut log_pushed, mut log_passed) = (Vec::new(), Vec::new());
            for (offset, (c, kind, time)) in steps.into_iter().enumerate() {
                let (offset, channel) = (offset as i64, channels[c as usize]);
                // Each record's origin is its log offset: unique, with its own event time.
                times.insert((channel, offset), time);

                pushed.push(offset, channel, item_of(kind, offset));
                log_pushed.push(drain(&mut pushed, &mut h_pushed, &times));

                let h = &h_passed;
                let mut applied = Vec::new();
                let given = passed.pass(offset, channel, item_of(kind, offset), |c| h.get(&c).copied());
                if let Some(Item::Record { origin, .. } | Item::Observed { origin, .. }) = given {
                    let t = times[&(channel, origin)];
                    let e = h_passed.entry(channel).or_insert(t);
                    *e = (*e).max(t);
                    applied.push((channel, origin));
                }
                let (more, waiting) = drain(&mut passed, &mut h_passed, &times);
                applied.extend(more);
                log_passed.push((applied, waiting));
                proptest::prop_assert_eq!(pushed.queued(), passed.queued());
                proptest::prop_assert_eq!(pushed.first_queued_offset(), passed.first_queued_offset());
            }
            proptest::prop_assert_eq!(log_pushed, log_passed);
        }
    }
}
