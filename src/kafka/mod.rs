//! `kafka`: onecount's thin Kafka runtime pieces, over librdkafka (the `rdkafka` crate).
//!
//! Owns: turning `[kafka]` into client configs with onecount's defaults ([`client`]), creating
//! missing topics ([`admin`]), and publishing generated traffic to the input topics
//! ([`publish`]). Must not: decide anything about dedup or reconciliation (that is the pure
//! engine's), read the clock for anything but timeouts, or print a secret property (build
//! configs from [`crate::config::KafkaConfig`]; never `Debug`-print an `rdkafka::ClientConfig`,
//! whose `Debug` shows every value).

pub mod admin;
pub mod client;
pub mod delivery;
pub mod publish;
