//! Logs: `tracing` events to standard error, human-readable or JSON (`[log]`).
//!
//! Owns: installing the subscriber once per process. What is logged is the callers' concern,
//! under one rule: never an input value (user data, PII) and never a secret; log ids of our own
//! (partitions, offsets, epochs, counts) and error kinds.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `ONECOUNT_LOG_LEVEL` (applied to the config like every
/// `ONECOUNT_*` setting) chooses the filter.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(true);
    // A second init (tests running several services in one process) keeps the first.
    let _ = match log.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
