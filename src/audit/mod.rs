//! `audit`: the QA checklist a tracking engineer runs before scaling spend, over onecount's own
//! outputs.
//!
//! Owns: folding output records (conversions, discrepancies, dead letters, revenue windows) into
//! a [`Tally`], grading it against named thresholds into a [`Report`] of PASS/WARN/FAIL checks
//! ([`checks`]), and rendering that report as text, JSON or one self-contained HTML page.
//! Must not: apply or re-derive an engine rule beyond what the outputs state, or read files
//! anywhere but [`source`] and [`kafka`]: the checks take an iterator of [`OutputRecord`]s, so
//! the same code audits a replay directory and a time range of the output topics.
//!
//! Layout: `source` (a replay output directory as records, and `stats.json`; parsing one record
//! of each kind), `kafka` (a time range of the output topics as records), `tally` (the
//! one-pass fold), `checks` (thresholds and grading), `report` (the report, its JSON and text
//! forms), `html` (the HTML page and its SVG charts).

pub mod checks;
mod html;
pub mod kafka;
pub mod report;
pub mod source;
pub mod tally;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::config::EngineConfig;
use crate::engine::stats::Stats;
use crate::model::{Conversion, DeadLetter, Discrepancy, RevenueWindow};

pub use report::{Check, Report, Status};
pub use source::AuditError;
pub use tally::Tally;

/// One record of onecount's outputs, whichever file or topic it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputRecord {
    Conversion(Conversion),
    Discrepancy(Discrepancy),
    DeadLetter(DeadLetter),
    RevenueWindow(RevenueWindow),
}

/// The engine settings the checks need to read the outputs the way the engine wrote them.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditOptions {
    /// Dedup key lifetime: two conversions of one key closer than this are one action emitted
    /// twice (`engine.ttl`, 48 h by default, as TikTok).
    pub ttl: Duration,
    /// Event names that are purchases (`engine.purchase_events`).
    pub purchase_events: Vec<String>,
}

impl AuditOptions {
    pub fn from_engine(engine: &EngineConfig) -> AuditOptions {
        AuditOptions {
            ttl: engine.ttl,
            purchase_events: engine.purchase_events.clone(),
        }
    }
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions::from_engine(&EngineConfig::default())
    }
}

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For a terminal or a CI log.
    Text,
    /// Machine-readable, stable keys (see [`Report`]).
    Json,
    /// One self-contained page with charts: inline CSS and SVG, no script, no URL.
    Html,
}

impl Format {
    pub const NAMES: [&'static str; 3] = ["text", "json", "html"];
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            other => Err(format!("unknown format {other:?}: text, json or html")),
        }
    }
}

/// Folds `records` and grades them: the audit of any stream of outputs. `stats` is the run's
/// accounting when there is one (a replay writes `stats.json`); without it the checks that need
/// input counts say so.
pub fn audit<I>(source: &str, records: I, stats: Option<&Stats>, options: &AuditOptions) -> Report
where
    I: IntoIterator<Item = OutputRecord>,
{
    let mut tally = Tally::new(options);
    for r in records {
        tally.observe(&r);
    }
    checks::evaluate(source, &tally, stats)
}

/// Audits a replay output directory: every output file and `stats.json` must be there and parse
/// (else [`AuditError`], which names the file and line).
pub fn audit_dir(dir: &Path, options: &AuditOptions) -> Result<Report, AuditError> {
    let stats = source::read_stats(dir)?;
    let mut tally = Tally::new(options);
    for record in source::DirRecords::open(dir)? {
        tally.observe(&record?);
    }
    Ok(checks::evaluate(
        &dir.display().to_string(),
        &tally,
        Some(&stats),
    ))
}

/// The report in `format`.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Text => report.to_text(),
        Format::Json => report.to_json(),
        Format::Html => html::render(report),
    }
}

/// Writes the report to `out`, or to standard output.
pub fn write(report: &Report, format: Format, out: Option<&Path>) -> Result<(), AuditError> {
    let text = render(report, format);
    match out {
        Some(path) => std::fs::write(path, text).map_err(|error| AuditError::Write {
            path: PathBuf::from(path),
            error,
        }),
        None => {
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|error| AuditError::Write {
                    path: PathBuf::from("-"),
                    error,
                })
        }
    }
}
