//! Time alignment of the input partitions ingest reads, before they are forwarded.
//!
//! Owns: a bounded buffer per input partition and the choice of the next record: the head with
//! the lowest record timestamp, but only while every assigned partition that still has records
//! to fetch has one buffered (Kafka Streams' timestamp synchronisation). Without it a consumer
//! hands out whole fetches of one partition at a time, and the internal log would hold hours of
//! browser events before the server events of the same minutes: watermarks would run ahead and
//! on-time copies would wait in the reorder buffer or miss their merge. Must not: read the clock
//! or talk to Kafka; the caller says which partitions are still behind their end.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rdkafka::message::{Message, OwnedMessage};

/// An input partition: (topic, partition).
pub type InputPartition = (String, i32);

#[derive(Debug, Default)]
pub struct Aligner {
    buffers: BTreeMap<InputPartition, VecDeque<OwnedMessage>>,
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

fn timestamp(m: &OwnedMessage) -> i64 {
    m.timestamp().to_millis().unwrap_or(i64::MIN)
}

impl Aligner {
    pub fn new(cap: usize) -> Aligner {
        Aligner {
            buffers: BTreeMap::new(),
            cap: cap.max(1),
            buffered: 0,
            paused: BTreeSet::new(),
        }
    }

    /// Keeps the buffers of `assigned` partitions (an empty one for each new partition) and drops
    /// the others: a revoked partition's records are read again by its next owner.
    pub fn set_assignment(&mut self, assigned: &[InputPartition]) {
        self.buffers.retain(|p, _| assigned.contains(p));
        self.paused.retain(|p| assigned.contains(p));
        for p in assigned {
            self.buffers.entry(p.clone()).or_default();
        }
        self.buffered = self.buffers.values().map(VecDeque::len).sum();
    }

    /// Buffers a record; `Some(Pause)` when its partition reached the cap.
    pub fn push(&mut self, m: OwnedMessage) -> Option<Flow> {
        let key = (m.topic().to_string(), m.partition());
        let buffer = self.buffers.entry(key.clone()).or_default();
        buffer.push_back(m);
        self.buffered += 1;
        (buffer.len() >= self.cap && self.paused.insert(key.clone())).then_some(Flow::Pause(key))
    }

    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// The partitions with nothing buffered: the caller decides which of them are still behind.
    pub fn empty_partitions(&self) -> impl Iterator<Item = &InputPartition> {
        self.buffers
            .iter()
            .filter(|(_, b)| b.is_empty())
            .map(|(p, _)| p)
    }

    /// The next record in timestamp order (ties: topic, partition), unless `waiting` is true: a
    /// partition with records still to fetch has none buffered. `Some(Resume)` comes with it when
    /// its partition drained to half the cap.
    pub fn next(&mut self, waiting: bool) -> Option<(OwnedMessage, Option<Flow>)> {
        if waiting {
            return None;
        }
        let key = self
            .buffers
            .iter()
            .filter_map(|(p, b)| b.front().map(|m| (timestamp(m), p)))
            .min()?
            .1
            .clone();
        let buffer = self.buffers.get_mut(&key).expect("chosen from the buffers");
        let m = buffer.pop_front().expect("non-empty");
        self.buffered -= 1;
        let flow =
            (buffer.len() <= self.cap / 2 && self.paused.remove(&key)).then_some(Flow::Resume(key));
        Some((m, flow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Timestamp;

    fn msg(topic: &str, partition: i32, offset: i64, ts: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            topic.into(),
            Timestamp::CreateTime(ts),
            partition,
            offset,
            None,
        )
    }

    fn order(a: &mut Aligner) -> Vec<(String, i32, i64)> {
        std::iter::from_fn(|| a.next(false))
            .map(|(m, _)| (m.topic().to_string(), m.partition(), m.offset()))
            .collect()
    }

    #[test]
    fn records_leave_in_timestamp_order_across_partitions() {
        let mut a = Aligner::new(10);
        a.set_assignment(&[("b".into(), 0), ("s".into(), 0)]);
        for (o, ts) in [(0, 10), (1, 20), (2, 30)] {
            a.push(msg("b", 0, o, ts));
        }
        for (o, ts) in [(0, 15), (1, 25)] {
            a.push(msg("s", 0, o, ts));
        }
        assert_eq!(
            order(&mut a),
            vec![
                ("b".into(), 0, 0),
                ("s".into(), 0, 0),
                ("b".into(), 0, 1),
                ("s".into(), 0, 1),
                ("b".into(), 0, 2),
            ]
        );
        assert_eq!(a.buffered(), 0);
    }

    #[test]
    fn nothing_leaves_while_a_partition_behind_has_nothing_buffered() {
        let mut a = Aligner::new(10);
        a.set_assignment(&[("b".into(), 0), ("s".into(), 0)]);
        a.push(msg("b", 0, 0, 10));
        assert_eq!(
            a.empty_partitions().cloned().collect::<Vec<_>>(),
            vec![("s".to_string(), 0)]
        );
        assert!(a.next(true).is_none());
        assert_eq!(a.buffered(), 1);
        assert!(a.next(false).is_some());
    }

    #[test]
    fn a_full_partition_pauses_and_resumes_at_half() {
        let mut a = Aligner::new(4);
        a.set_assignment(&[("b".into(), 0)]);
        let flows: Vec<_> = (0..4).filter_map(|o| a.push(msg("b", 0, o, o))).collect();
        assert_eq!(flows, vec![Flow::Pause(("b".into(), 0))]);
        let resumes: Vec<_> = std::iter::from_fn(|| a.next(false))
            .filter_map(|(_, f)| f)
            .collect();
        assert_eq!(resumes, vec![Flow::Resume(("b".into(), 0))]);
    }

    #[test]
    fn revoked_partitions_lose_their_buffers() {
        let mut a = Aligner::new(4);
        a.set_assignment(&[("b".into(), 0), ("b".into(), 1)]);
        a.push(msg("b", 1, 0, 1));
        a.set_assignment(&[("b".into(), 0)]);
        assert_eq!(a.buffered(), 0);
        assert!(a.next(false).is_none());
    }
}
