//! A replay output directory as a stream of [`OutputRecord`]s, and its `stats.json`.
//!
//! Owns: opening the five files a replay writes and parsing them line by line, one record in
//! memory at a time. Must not: judge a record; a line that does not parse stops the audit with
//! an error naming the file and line (an audit over half a file would grade the wrong numbers).

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
    /// A line that is not a record of its file. The parser's message is left out for dead
    /// letters: they hold original input bytes, which may carry PII in clear.
    #[error("{} line {line} is not a valid {what} record{}", path.display(), detail(.message))]
    Parse {
        path: PathBuf,
        line: u64,
        what: &'static str,
        message: Option<String>,
    },
    #[error("{} line {line}: format_version {version} is not {FORMAT_VERSION}, the version this build reads", path.display())]
    Version {
        path: PathBuf,
        line: u64,
        version: u64,
    },
    #[error("cannot write the report to {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
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
        path,
        line: e.line() as u64,
        what: "stats.json",
        message: Some(e.to_string()),
    })
}

/// The four record files of a directory, read one after the other.
pub struct DirRecords {
    files: Vec<(Kind, PathBuf, Lines<BufReader<File>>)>,
    line: u64,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Conversion,
    Discrepancy,
    DeadLetter,
    RevenueWindow,
}

impl Kind {
    fn what(self) -> &'static str {
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
            return Err(AuditError::Version {
                path: path.to_path_buf(),
                line: self.line,
                version,
            });
        }
        parsed.map_err(|e| AuditError::Parse {
            path: path.to_path_buf(),
            line: self.line,
            what: kind.what(),
            message: match kind {
                Kind::DeadLetter => None,
                _ => Some(e.to_string()),
            },
        })
    }
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
