//! A replay output directory as a stream of [`OutputRecord`]s, and its `stats.json`.
//!
//! Owns: opening the five files a replay writes and parsing them line by line, one record in
//! memory at a time; parsing one record of each output kind ([`parse_record`], which the Kafka
//! source shares), and the audit's error type. Must not: judge a record; a line that does not
//! parse stops the audit with an error naming the file and line (an audit over half a file
//! would grade the wrong numbers).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::engine::stats::Stats;
use crate::model::FORMAT_VERSION;

use super::OutputRecord;

pub const CONVERSIONS: &str = "conversions.jsonl";
pub const DISCREPANCIES: &str = "discrepancies.jsonl";
pub const DEAD_LETTERS: &str = "dead_letters.jsonl";
pub const REVENUE_WINDOWS: &str = "revenue_windows.jsonl";
pub const STATS: &str = "stats.json";

/// Why the audit could not read its input or write its report. Either is fatal to the audit:
/// the CLI prints it and exits 2, apart from a failing check's 1.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    // The io error is named `error`, not `source`: printed once, in the message, not again as
    // its cause (as in `config`).
    #[error("cannot read {}: {error}", path.display())]
    Open { path: PathBuf, error: io::Error },
    #[error("cannot read {} at line {line}: {error}", path.display())]
    Read {
        path: PathBuf,
        line: u64,
        error: io::Error,
    },
    /// A record that is not a record of its file or topic. The parser's message is left out
    /// for dead letters: they hold original input bytes, which may carry PII in clear.
    #[error("{at} is not a valid {what} record{}", detail(.message))]
    Parse {
        at: Location,
        what: &'static str,
        message: Option<String>,
    },
    #[error(
        "{at}: format_version {version} is not {FORMAT_VERSION}, the version this build reads"
    )]
    Version { at: Location, version: u64 },
    /// The output topics could not be read (see [`super::kafka`]).
    #[error(transparent)]
    Kafka(#[from] super::kafka::KafkaAuditError),
    #[error("cannot write the report to {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
}

/// Where a record that failed was read: a file's line, or a topic's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Line {
        path: PathBuf,
        line: u64,
    },
    Offset {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Line { path, line } => write!(f, "{} line {line}", path.display()),
            Location::Offset {
                topic,
                partition,
                offset,
            } => write!(f, "{topic} partition {partition} offset {offset}"),
        }
    }
}

fn detail(message: &Option<String>) -> String {
    match message {
        Some(m) => format!(": {m}"),
        None => String::new(),
    }
}

/// Reads `stats.json` of a replay output directory.
pub fn read_stats(dir: &Path) -> Result<Stats, AuditError> {
    let path = dir.join(STATS);
    let text = std::fs::read(&path).map_err(|error| AuditError::Open {
        path: path.clone(),
        error,
    })?;
    serde_json::from_slice(&text).map_err(|e| AuditError::Parse {
        at: Location::Line {
            path,
            line: e.line() as u64,
        },
        what: "stats.json",
        message: Some(e.to_string()),
    })
}

/// The four record files of a directory, read one after the other.
pub struct DirRecords {
    files: Vec<(Kind, PathBuf, Lines<BufReader<File>>)>,
    line: u64,
}

/// Which output a record is, by the file or topic it was read from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Conversion,
    Discrepancy,
    DeadLetter,
    RevenueWindow,
}

impl Kind {
    pub(super) fn what(self) -> &'static str {
        match self {
            Kind::Conversion => "conversion",
            Kind::Discrepancy => "discrepancy",
            Kind::DeadLetter => "dead letter",
            Kind::RevenueWindow => "revenue window",
        }
    }
}

impl DirRecords {
    /// Opens every file first, so that a missing one fails before any work.
    pub fn open(dir: &Path) -> Result<DirRecords, AuditError> {
        let mut files = Vec::new();
        for (kind, name) in [
            (Kind::Conversion, CONVERSIONS),
            (Kind::Discrepancy, DISCREPANCIES),
            (Kind::DeadLetter, DEAD_LETTERS),
            (Kind::RevenueWindow, REVENUE_WINDOWS),
        ] {
            let path = dir.join(name);
            let file = File::open(&path).map_err(|error| AuditError::Open {
                path: path.clone(),
                error,
            })?;
            files.push((kind, path, BufReader::with_capacity(1 << 16, file).lines()));
        }
        files.reverse();
        Ok(DirRecords { files, line: 0 })
    }

    fn parse(&self, kind: Kind, path: &Path, text: &str) -> Result<OutputRecord, AuditError> {
        parse_record(kind, text, || Location::Line {
            path: path.to_path_buf(),
            line: self.line,
        })
    }
}

/// Parses one record of `kind` (a line of its file, the value of a record of its topic); an
/// error names the record by `at`.
pub(super) fn parse_record(
    kind: Kind,
    text: &str,
    at: impl FnOnce() -> Location,
) -> Result<OutputRecord, AuditError> {
    let parsed = match kind {
        Kind::Conversion => de(text).map(OutputRecord::Conversion),
        Kind::Discrepancy => de(text).map(OutputRecord::Discrepancy),
        Kind::DeadLetter => de(text).map(OutputRecord::DeadLetter),
        Kind::RevenueWindow => de(text).map(OutputRecord::RevenueWindow),
    };
    let version = match &parsed {
        Ok(OutputRecord::Conversion(r)) => Some(u64::from(r.format_version)),
        Ok(OutputRecord::Discrepancy(r)) => Some(u64::from(r.format_version)),
        Ok(OutputRecord::DeadLetter(r)) => Some(u64::from(r.format_version)),
        Ok(OutputRecord::RevenueWindow(r)) => Some(u64::from(r.format_version)),
        // A newer format must be reported as such, not as a field this build does not know.
        Err(_) => serde_json::from_str::<Versioned>(text)
            .ok()
            .and_then(|v| v.format_version),
    };
    if let Some(version) = version.filter(|v| *v != u64::from(FORMAT_VERSION)) {
        return Err(AuditError::Version { at: at(), version });
    }
    parsed.map_err(|e| AuditError::Parse {
        at: at(),
        what: kind.what(),
        message: match kind {
            Kind::DeadLetter => None,
            _ => Some(e.to_string()),
        },
    })
}

fn de<T: DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(text)
}

/// Just the version of a record that did not parse as this build's format.
#[derive(serde::Deserialize)]
struct Versioned {
    format_version: Option<u64>,
}

impl Iterator for DirRecords {
    type Item = Result<OutputRecord, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (kind, _, lines) = self.files.last_mut()?;
            let kind = *kind;
            let next = lines.next();
            let path = &self.files.last()?.1;
            let result = match next {
                None => {
                    self.files.pop();
                    self.line = 0;
                    continue;
                }
                Some(Err(error)) => Err(AuditError::Read {
                    path: path.clone(),
                    line: self.line + 1,
                    error,
                }),
                Some(Ok(text)) => {
                    self.line += 1;
                    if text.trim().is_empty() {
                        continue;
                    }
                    self.parse(kind, path, &text)
                }
            };
            if result.is_err() {
                // Nothing after a bad line is read: the audit stops there.
                self.files.clear();
            }
            return Some(result);
        }
    }
}
