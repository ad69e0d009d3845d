//! onecount: exactly one conversion per user action.
//!
//! A pure, deterministic core (`parse`, `engine`) wrapped by thin runtimes (`replay` over files).
//! `kafka` holds the Kafka pieces: client configs, topic creation, publishing; `service` is
//! `onecount run`, the consumer-group service built on them.
//! `generate` makes traffic with its own ground truth. See `docs/RULES.md` for the rules.
pub mod audit;
pub mod config;
pub mod currency;
pub mod engine;
pub mod generate;
pub mod http;
pub mod jsonl;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod parse;
pub mod pii;
pub mod replay;
pub mod report;
mod scan;
pub mod service;
