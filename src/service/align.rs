//! Event-time alignment of the input partitions ingest reads, before they are forwarded.
//!
//! Owns: a bounded buffer per input partition and the choice of the next record, by the rule
//! `replay` uses for its three files: the next record comes from the partition whose highest
//! event time forwarded so far is lowest (ties: topic, partition), and if that partition has
//! nothing buffered but is expected to deliver (it is behind its end, or live), nothing leaves
//! until it does. All partitions thus advance together in event time, as if read side by side.
//! Without it a consumer hands out whole fetches of one partition at a time, and the internal
//! log would hold hours of browser events before the server events of the same minutes:
//! copies would miss their merge and late copies would not be late.
//!
//! Must not: read the clock or talk to Kafka; the caller says which empty partitions are
//! expected to deliver and gives each record's event time (records without one, such as
//! tombstones, follow their partition's position) and what it wants back with the record
//! (ingest: where it goes, learned when it was parsed). The records are the consumer's own
//! messages (`M`), held as they came: ingest keeps them borrowed, not copied.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rdkafka::message::Message;

/// An input partition: (topic, partition).
pub type InputPartition = (String, i32);

/// The entry of `topic`/`partition` in `map`, made (with `V`'s default) when it is missing. Found
/// by a look at each key (an instance has a few partitions), not by a key built for the
/// lookup: its callers run for every record, and a `String` key costs an allocation.
pub fn entry_of<'m, V: Default>(
    map: &'m mut BTreeMap<InputPartition, V>,
    topic: &str,
    partition: i32,
) -> (&'m InputPartition, &'m mut V) {
    let is_it = |(t, p): &InputPartition| *p == partition && t == topic;
    if !map.keys().any(is_it) {
        map.insert((topic.to_string(), partition), V::default());
    }
    map.iter_mut()
        .find(|(k, _)| is_it(k))
        .expect("inserted when missing")
}

#[derive(Debug)]
struct PartitionBuffer<M, T> {
    records: VecDeque<(M, Option<i64>, T)>,
    /// Highest event time forwarded from the partition; `None` before its first.
    highest: Option<i64>,
    /// The offset after the last record buffered since the partition was assigned: the
    /// consumer's position in it, known here without asking librdkafka (a round trip to its
    /// main thread, which ingest made thousands of times a second).
    position: Option<i64>,
}

impl<M, T> Default for PartitionBuffer<M, T> {
    fn default() -> Self {
        PartitionBuffer {
            records: VecDeque::new(),
            highest: None,
            position: None,
        }
    }
}

/// Aligns buffered records (`M`), each with a `T` the caller gets back with it.
#[derive(Debug)]
pub struct Aligner<M, T> {
    partitions: BTreeMap<InputPartition, PartitionBuffer<M, T>>,
    /// Records a partition may hold before its reading pauses.
    cap: usize,
    buffered: usize,
    paused: BTreeSet<InputPartition>,
}

/// What the caller should do with a partition's reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    Pause(InputPartition),
    Resume(InputPartition),
}

/// What [`Aligner::next`] gives.
#[derive(Debug)]
pub enum Next<M, T> {
    /// Forward this record (with what it was pushed with); with a flow change for its
    /// partition.
    Record(M, T, Option<Flow>),
    /// The partition that must go next has nothing buffered but is expected to deliver.
    Wait(InputPartition),
    /// Nothing buffered.
    Empty,
}

impl<M: Message, T> Aligner<M, T> {
    pub fn new(cap: usize) -> Aligner<M, T> {
        Aligner {
            partitions: BTreeMap::new(),
            cap: cap.max(2),
            buffered: 0,
            paused: BTreeSet::new(),
        }
    }

    /// Keeps the assigned partitions (a new one starts empty) and drops the others: a revoked
    /// partition's records are read again by its next owner.
    pub fn set_assignment(&mut self, assigned: &[InputPartition]) {
        self.partitions.retain(|p, _| assigned.contains(p));
        self.paused.retain(|p| assigned.contains(p));
        for p in assigned {
            self.partitions.entry(p.clone()).or_default();
        }
        self.buffered = self.partitions.values().map(|b| b.records.len()).sum();
    }

    /// Buffers a record with its event time and `attached`; `Some(Pause)` when its partition
    /// reached the cap.
    pub fn push(&mut self, m: M, event_time: Option<i64>, attached: T) -> Option<Flow> {
        let (key, buffer) = entry_of(&mut self.partitions, m.topic(), m.partition());
        buffer.position = Some(m.offset() + 1);
        buffer.records.push_back((m, event_time, attached));
        self.buffered += 1;
        (buffer.records.len() >= self.cap && !self.paused.contains(key)).then(|| {
            self.paused.insert(key.clone());
            Flow::Pause(key.clone())
        })
    }

    /// Whether partition `p` has nothing buffered.
    pub fn is_empty(&self, p: &InputPartition) -> bool {
        self.partitions.get(p).is_none_or(|b| b.records.is_empty())
    }

    /// The offset after the last record of partition `p` buffered since it was assigned.
    pub fn position(&self, p: &InputPartition) -> Option<i64> {
        self.partitions.get(p).and_then(|b| b.position)
    }

    /// The partitions a record of `topic`/`partition` goes past when it is forwarded now: those
    /// with nothing buffered whose highest event time is not above its own. One pass over the
    /// buffers, no key built: it runs for every record forwarded.
    pub fn passed_by<'a>(
        &'a self,
        topic: &'a str,
        partition: i32,
    ) -> impl Iterator<Item = &'a InputPartition> + 'a {
        let is_it = move |(t, p): &InputPartition| *p == partition && t == topic;
        let high = self
            .partitions
            .iter()
            .find(|(k, _)| is_it(k))
            .and_then(|(_, b)| b.highest)
            .unwrap_or(i64::MIN);
        self.partitions
            .iter()
            .filter(move |(k, b)| {
                !is_it(k) && b.records.is_empty() && b.highest.unwrap_or(i64::MIN) <= high
            })
            .map(|(k, _)| k)
    }

    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// The next record by the alignment rule. `expected(p, position)`: whether partition `p`,
    /// which has nothing buffered (and whose consumer position is `position`, once a record of
    /// it was buffered), will deliver soon (else it does not hold the others, like a finished
    /// file in `replay`).
    pub fn next(
        &mut self,
        mut expected: impl FnMut(&InputPartition, Option<i64>) -> bool,
    ) -> Next<M, T> {
        if self.buffered == 0 {
            return Next::Empty;
        }
        // Chosen in place: a key cloned for every record forwarded was an allocation each.
        let (chosen, buffer) = self
            .partitions
            .iter_mut()
            .filter(|(p, b)| !b.records.is_empty() || expected(p, b.position))
            .min_by_key(|(p, b)| (b.highest.unwrap_or(i64::MIN), *p))
            .expect("a partition has records buffered");
        let Some((m, time, attached)) = buffer.records.pop_front() else {
            return Next::Wait(chosen.clone());
        };
        self.buffered -= 1;
        if let Some(t) = time {
            buffer.highest = Some(buffer.highest.map_or(t, |h| h.max(t)));
        }
        let flow = (buffer.records.len() <= self.cap / 2 && self.paused.remove(chosen))
            .then(|| Flow::Resume(chosen.clone()));
        Next::Record(m, attached, flow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn msg(topic: &str, partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            topic.into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    fn drain(a: &mut Aligner<OwnedMessage, ()>) -> Vec<(String, i32, i64)> {
        std::iter::from_fn(|| match a.next(|_, _| false) {
            Next::Record(m, (), _) => Some((m.topic().to_string(), m.partition(), m.offset())),
            _ => None,
        })
        .collect()
    }

    #[test]
    fn the_partition_that_is_furthest_behind_in_event_time_goes_next() {
        let mut a = Aligner::<OwnedMessage, ()>::new(10);
        a.set_assignment(&[("b".into(), 0), ("s".into(), 0)]);
        for (o, t) in [(0, 10), (1, 20), (2, 30)] {
            a.push(msg("b", 0, o), Some(t), ());
        }
        for (o, t) in [(0, 15), (1, 25)] {
            a.push(msg("s", 0, o), Some(t), ());
        }
        assert_eq!(
            drain(&mut a),
            vec![
                ("b".into(), 0, 0), // both at nothing yet: b first by name
                ("s".into(), 0, 0), // b is at 10
                ("b".into(), 0, 1), // s at 15 > b at 10
                ("s".into(), 0, 1), // b at 20 > s at 15
                ("b".into(), 0, 2), // s at 25 > b at 20
            ]
        );
    }

    #[test]
    fn a_late_record_leaves_when_its_partition_is_furthest_behind_not_earlier() {
        // b's second record is an hour late: like replay, it is read when b is the slowest
        // partition, by which time s has caught up with b's 100.
        let mut a = Aligner::<OwnedMessage, ()>::new(10);
        a.set_assignment(&[("b".into(), 0), ("s".into(), 0)]);
        a.push(msg("b", 0, 0), Some(100), ());
        a.push(msg("b", 0, 1), Some(-3600), ());
        for (o, t) in [(0, 50), (1, 90), (2, 120)] {
            a.push(msg("s", 0, o), Some(t), ());
        }
        assert_eq!(
            drain(&mut a),
            vec![
                ("b".into(), 0, 0),
                ("s".into(), 0, 0),
                ("s".into(), 0, 1),
                ("s".into(), 0, 2),
                ("b".into(), 0, 1),
            ]
        );
    }

    #[test]
    fn an_expected_partition_with_nothing_buffered_holds_the_others() {
        let mut a = Aligner::<OwnedMessage, ()>::new(10);
        a.set_assignment(&[("b".into(), 0), ("s".into(), 0)]);
        a.push(msg("b", 0, 0), Some(10), ());
        assert!(matches!(a.next(|_, _| false), Next::Record(..)));
        a.push(msg("b", 0, 1), Some(20), ());
        let s = ("s".to_string(), 0);
        assert!(matches!(a.next(|p, _| *p == s), Next::Wait(p) if p == s));
        assert_eq!(a.buffered(), 1);
        // Once the caller no longer expects it, the others go on.
        assert!(matches!(a.next(|_, _| false), Next::Record(..)));
        assert!(matches!(a.next(|_, _| true), Next::Empty));
    }

    #[test]
    fn a_full_partition_pauses_and_resumes_at_half() {
        let mut a = Aligner::<OwnedMessage, ()>::new(4);
        a.set_assignment(&[("b".into(), 0)]);
        let flows: Vec<_> = (0..4)
            .filter_map(|o| a.push(msg("b", 0, o), Some(o), ()))
            .collect();
        assert_eq!(flows, vec![Flow::Pause(("b".into(), 0))]);
        let resumes: Vec<_> = std::iter::from_fn(|| match a.next(|_, _| false) {
            Next::Record(_, (), f) => Some(f),
            _ => None,
        })
        .flatten()
        .collect();
        assert_eq!(resumes, vec![Flow::Resume(("b".into(), 0))]);
    }

    #[test]
    fn a_record_passes_the_empty_partitions_not_ahead_of_it() {
        let mut a = Aligner::<OwnedMessage, ()>::new(10);
        let assigned = [
            ("b".to_string(), 0),
            ("s".to_string(), 0),
            ("o".to_string(), 0),
        ];
        a.set_assignment(&assigned);
        a.push(msg("b", 0, 0), Some(100), ());
        a.push(msg("s", 0, 0), Some(300), ());
        a.push(msg("s", 0, 1), Some(400), ());
        // b goes first (lowest); then s, whose highest is 300, passes b (100, empty) and o
        // (nothing yet), but not itself.
        assert!(matches!(a.next(|_, _| false), Next::Record(..)));
        assert!(matches!(a.next(|_, _| false), Next::Record(..)));
        let passed: Vec<_> = a.passed_by("s", 0).cloned().collect();
        assert_eq!(passed, vec![("b".to_string(), 0), ("o".to_string(), 0)]);
        // A partition ahead of the record, or with records buffered, is not passed.
        a.push(msg("o", 0, 0), Some(1_000), ());
        assert!(
            a.passed_by("b", 0).next().is_none(),
            "s has a record, o is buffered"
        );
        assert!(matches!(a.next(|_, _| false), Next::Record(..)));
        assert!(matches!(a.next(|_, _| false), Next::Record(..)));
        let passed: Vec<_> = a.passed_by("b", 0).cloned().collect();
        assert!(
            passed.is_empty(),
            "s (400) and o (1000) are ahead of b (100): {passed:?}"
        );
    }

    #[test]
    fn revoked_partitions_lose_their_buffers() {
        let mut a = Aligner::<OwnedMessage, ()>::new(4);
        a.set_assignment(&[("b".into(), 0), ("b".into(), 1)]);
        a.push(msg("b", 1, 0), Some(1), ());
        a.set_assignment(&[("b".into(), 0)]);
        assert_eq!(a.buffered(), 0);
        assert!(matches!(a.next(|_, _| true), Next::Empty));
    }
}
