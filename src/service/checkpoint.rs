//! The checkpoint record: what a state task's changelog holds beside the engine's own entries.
//!
//! Owns: its key and JSON format. A checkpoint names the epoch, the internal-log offset the
//! state reflects, the last input offset applied per channel (to recognise records forwarded
//! again), per channel the log offset of the last item the merge applied and whether the
//! channel then held the others (see `merge`), and the output frontier: per output partition, the offset after this task's last
//! acknowledged output. It is written in the same Kafka transaction as the engine's changes and
//! the log consumer's offset, so the three move together. Must not: do I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Input;

use super::outputs::OutputPartition;
use super::wire::Channel;

/// The changelog key of the checkpoint. Engine keys start with a lower-case letter.
pub const CHECKPOINT_KEY: &[u8] = b"#checkpoint";

/// The version this release writes; it reads every version up to it. Version 2 added
/// `merged`: a version 1 checkpoint's log offset is right after its last applied record, so
/// nothing before it is read again, and its channels start without holding.
pub const CHECKPOINT_VERSION: u32 = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format_version: u32,
    pub epoch: u64,
    /// The next internal-log offset to process.
    pub log_offset: i64,
    /// Per channel (input, partition), the highest input offset applied.
    pub applied: Vec<(Input, i32, i64)>,
    /// Per output partition, the offset after this task's last acknowledged output.
    pub frontier: Vec<(String, i32, i64)>,
    /// Per channel, where the merge stands: the log resumes at the first item still queued, so
    /// items after it of other channels are read again and recognised by this.
    #[serde(default)]
    pub merged: Vec<MergedChannel>,
}

/// A channel's place in the merge as of everything applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedChannel {
    pub input: Input,
    pub partition: i32,
    /// Log offset of the channel's last applied item: a later one read again is new.
    pub last_log_offset: i64,
    /// The last applied item was a record or an assignment: the channel holds the others.
    pub holds: bool,
}

impl MergedChannel {
    pub fn channel(&self) -> Channel {
        Channel {
            input: self.input,
            partition: self.partition,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("checkpoint format version {0} is newer than this release reads ({CHECKPOINT_VERSION}): upgrade onecount")]
    TooNew(u32),
}

impl Checkpoint {
    pub fn new(
        epoch: u64,
        log_offset: i64,
        applied: &BTreeMap<Channel, i64>,
        merged: &BTreeMap<Channel, (i64, bool)>,
        frontier: &BTreeMap<OutputPartition, i64>,
    ) -> Checkpoint {
        Checkpoint {
            format_version: CHECKPOINT_VERSION,
            epoch,
            log_offset,
            applied: applied
                .iter()
                .map(|(c, o)| (c.input, c.partition, *o))
                .collect(),
            frontier: frontier
                .iter()
                .map(|((t, p), o)| (t.clone(), *p, *o))
                .collect(),
            merged: merged
                .iter()
                .map(|(c, (last_log_offset, holds))| MergedChannel {
                    input: c.input,
                    partition: c.partition,
                    last_log_offset: *last_log_offset,
                    holds: *holds,
                })
                .collect(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("checkpoints serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let c: Checkpoint = serde_json::from_slice(bytes)?;
        if c.format_version > CHECKPOINT_VERSION {
            return Err(CheckpointError::TooNew(c.format_version));
        }
        Ok(c)
    }

    pub fn applied(&self) -> BTreeMap<Channel, i64> {
        self.applied
            .iter()
            .map(|(input, partition, o)| {
                (
                    Channel {
                        input: *input,
                        partition: *partition,
                    },
                    *o,
                )
            })
            .collect()
    }

    pub fn merged(&self) -> BTreeMap<Channel, (i64, bool)> {
        self.merged
            .iter()
            .map(|m| (m.channel(), (m.last_log_offset, m.holds)))
            .collect()
    }

    pub fn frontier(&self) -> BTreeMap<OutputPartition, i64> {
        self.frontier
            .iter()
            .map(|(t, p, o)| ((t.clone(), *p), *o))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_a_newer_version() {
        let applied = BTreeMap::from([(
            Channel {
                input: Input::Orders,
                partition: 2,
            },
            41,
        )]);
        let merged = BTreeMap::from([(
            Channel {
                input: Input::Browser,
                partition: 0,
            },
            (95, true),
        )]);
        let frontier = BTreeMap::from([(("conv".to_string(), 1), 7)]);
        let c = Checkpoint::new(3, 100, &applied, &merged, &frontier);
        let back = Checkpoint::decode(&c.encode()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.applied(), applied);
        assert_eq!(back.merged(), merged);
        assert_eq!(back.frontier(), frontier);
        let newer = String::from_utf8(c.encode())
            .unwrap()
            .replace("\"format_version\":2", "\"format_version\":9");
        assert!(matches!(
            Checkpoint::decode(newer.as_bytes()),
            Err(CheckpointError::TooNew(9))
        ));
    }

    #[test]
    fn reads_a_version_1_checkpoint() {
        let v1 = r#"{"format_version":1,"epoch":4,"log_offset":250,
            "applied":[["server",0,17]],"frontier":[["conv",0,9]]}"#;
        let c = Checkpoint::decode(v1.as_bytes()).unwrap();
        assert_eq!(c.log_offset, 250);
        assert_eq!(c.applied().len(), 1);
        assert!(c.merged().is_empty());
    }
}
