//! The file runtime: replays three JSONL inputs through the engine into JSONL outputs.
//!
//! Owns: reading lines (bounded: a line longer than `max_record_bytes` is dead-lettered without
//! being held in memory), the event-time alignment of the three inputs, and writing the output
//! files and `stats.json`. Must not: apply a rule; everything it decides is which input to read
//! next, and that depends only on the data.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::engine::stats::Stats;
use crate::engine::{Engine, Outputs, StateSize};
use crate::jsonl;
use crate::metrics::Metrics;
use crate::model::{DeadLetter, DeadLetterReason, Input, Position, FORMAT_VERSION};
use crate::parse::{Parsed, Parser};

/// Where `replay` reads from: a path, or `-` for standard input.
#[derive(Debug, Clone)]
pub struct ReplayInputs {
    pub browser: PathBuf,
    pub server: PathBuf,
    pub orders: PathBuf,
}

impl ReplayInputs {
    /// The three files `generate --out DIR` writes: `browser.jsonl`, `server.jsonl`,
    /// `orders.jsonl`.
    pub fn in_dir(dir: &Path) -> ReplayInputs {
        ReplayInputs {
            browser: dir.join("browser.jsonl"),
            server: dir.join("server.jsonl"),
            orders: dir.join("orders.jsonl"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot open {input} input {path}: {source}")]
    Open {
        input: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("only one input can be read from standard input ('-')")]
    StdinTwice,
    #[error("reading {input} input: {source}")]
    Read {
        input: &'static str,
        source: io::Error,
    },
    #[error("writing {path}: {source}")]
    Write { path: String, source: io::Error },
}

/// A line reader that never holds more than `limit` bytes of one line.
pub struct LineReader<R> {
    inner: R,
    limit: usize,
    line_no: i64,
    /// Bytes of the line last returned from the reader's own buffer: consumed at the next call,
    /// so that line could be lent out without a copy.
    lent: usize,
}

/// One line: its 1-based number and bytes, or the fact that it was too long.
pub enum Line<'a> {
    Text(i64, &'a [u8]),
    TooLong(i64, Vec<u8>),
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, limit: usize) -> Self {
        LineReader {
            inner,
            limit,
            line_no: 0,
            lent: 0,
        }
    }

    /// Reads the next line (without its `\n` or `\r\n`). `None` at end of input. A line that
    /// lies whole in the reader's buffer is lent from there; one across its end is gathered in
    /// `buf`.
    pub fn next_line<'a>(&'a mut self, buf: &'a mut Vec<u8>) -> io::Result<Option<Line<'a>>> {
        self.inner.consume(std::mem::take(&mut self.lent));
        let whole = {
            let chunk = self.inner.fill_buf()?;
            memchr(chunk).filter(|&end| end <= self.limit)
        };
        if let Some(end) = whole {
            // The buffer is still filled: this returns it again without reading.
            let chunk = self.inner.fill_buf()?;
            self.lent = end + 1;
            self.line_no += 1;
            let line = &chunk[..end];
            return Ok(Some(Line::Text(
                self.line_no,
                line.strip_suffix(b"\r").unwrap_or(line),
            )));
        }
        self.gather_line(buf)
    }

    fn gather_line<'a>(&mut self, buf: &'a mut Vec<u8>) -> io::Result<Option<Line<'a>>> {
        buf.clear();
        let mut too_long = false;
        let mut saw_any = false;
        loop {
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            saw_any = true;
            let (part, done) = match memchr(chunk) {
                Some(i) => (&chunk[..i], Some(i + 1)),
                None => (chunk, None),
            };
            if !too_long {
                if buf.len() + part.len() > self.limit {
                    too_long = true;
                    // Keep a prefix, enough to recognise the record in the dead letter.
                    let room = self.limit.min(4096).saturating_sub(buf.len());
                    buf.extend_from_slice(&part[..room.min(part.len())]);
                } else {
                    buf.extend_from_slice(part);
                }
            }
            let consumed = done.unwrap_or(chunk.len());
            self.inner.consume(consumed);
            if done.is_some() {
                break;
            }
        }
        if !saw_any {
            return Ok(None);
        }
        self.line_no += 1;
        if too_long {
            return Ok(Some(Line::TooLong(self.line_no, std::mem::take(buf))));
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Ok(Some(Line::Text(self.line_no, buf)))
    }
}

fn memchr(haystack: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', haystack)
}

/// Writes the four output files, one JSON record per line.
pub struct OutputFiles {
    dir: PathBuf,
    /// Lines serialized before they go to a file, reused.
    buf: Vec<u8>,
    conversions: BufWriter<File>,
    discrepancies: BufWriter<File>,
    dead_letters: BufWriter<File>,
    revenue_windows: BufWriter<File>,
}

impl OutputFiles {
    pub fn create(dir: &Path) -> Result<OutputFiles, ReplayError> {
        let open = |name: &str| {
            let path = dir.join(name);
            File::create(&path)
                .map(|f| BufWriter::with_capacity(1 << 16, f))
                .map_err(|source| ReplayError::Write {
                    path: path.display().to_string(),
                    source,
                })
        };
        std::fs::create_dir_all(dir).map_err(|source| ReplayError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(OutputFiles {
            dir: dir.to_path_buf(),
            buf: Vec::new(),
            conversions: open("conversions.jsonl")?,
            discrepancies: open("discrepancies.jsonl")?,
            dead_letters: open("dead_letters.jsonl")?,
            revenue_windows: open("revenue_windows.jsonl")?,
        })
    }

    /// Writes and clears `out`.
    pub fn write(&mut self, out: &mut Outputs) -> Result<(), ReplayError> {
        let (dir, buf) = (&self.dir, &mut self.buf);
        write_all(
            &mut self.conversions,
            buf,
            &out.conversions,
            dir,
            "conversions.jsonl",
        )?;
        write_all(
            &mut self.discrepancies,
            buf,
            &out.discrepancies,
            dir,
            "discrepancies.jsonl",
        )?;
        write_all(
            &mut self.dead_letters,
            buf,
            &out.dead_letters,
            dir,
            "dead_letters.jsonl",
        )?;
        write_all(
            &mut self.revenue_windows,
            buf,
            &out.revenue_windows,
            dir,
            "revenue_windows.jsonl",
        )?;
        out.clear();
        Ok(())
    }

    pub fn finish(mut self, stats: &Stats) -> Result<(), ReplayError> {
        let path = self.dir.join("stats.json");
        let err = |source| ReplayError::Write {
            path: path.display().to_string(),
            source,
        };
        for w in [
            &mut self.conversions,
            &mut self.discrepancies,
            &mut self.dead_letters,
            &mut self.revenue_windows,
        ] {
            w.flush().map_err(err)?;
        }
        let mut text = serde_json::to_vec_pretty(stats).map_err(|e| err(e.into()))?;
        text.push(b'\n');
        std::fs::write(&path, text).map_err(err)
    }
}

/// Writes `records` as JSON lines (the bytes of `serde_json::to_writer`, see `jsonl`), through
/// `buf` in runs of about a megabyte.
fn write_all<T: Serialize>(
    w: &mut BufWriter<File>,
    buf: &mut Vec<u8>,
    records: &[T],
    dir: &Path,
    name: &str,
) -> Result<(), ReplayError> {
    const RUN_BYTES: usize = 1 << 20;
    let err = |source| ReplayError::Write {
        path: dir.join(name).display().to_string(),
        source,
    };
    buf.clear();
    for r in records {
        if let Err(e) = jsonl::append_line(buf, r) {
            // What serde_json wrote of the failing record goes out first, as it did before.
            w.write_all(buf).map_err(err)?;
            return Err(err(e.into()));
        }
        if buf.len() >= RUN_BYTES {
            w.write_all(buf).map_err(err)?;
            buf.clear();
        }
    }
    w.write_all(buf).map_err(err)
}

fn open_input(input: Input, path: &Path) -> Result<Box<dyn BufRead>, ReplayError> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::with_capacity(1 << 16, io::stdin())));
    }
    let file = File::open(path).map_err(|source| ReplayError::Open {
        input: input.as_str(),
        path: path.display().to_string(),
        source,
    })?;
    Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
}

/// Replays the three inputs through a fresh engine into `out_dir`; returns the accounting.
/// With `metrics`, brings them up to date as outputs are written.
pub fn replay(
    config: &Config,
    inputs: &ReplayInputs,
    out_dir: &Path,
    mut metrics: Option<&mut Metrics>,
) -> Result<Stats, ReplayError> {
    let stdin_count = [&inputs.browser, &inputs.server, &inputs.orders]
        .iter()
        .filter(|p| p.as_path() == Path::new("-"))
        .count();
    if stdin_count > 1 {
        return Err(ReplayError::StdinTwice);
    }
    let readers = [
        open_input(Input::Browser, &inputs.browser)?,
        open_input(Input::Server, &inputs.server)?,
        open_input(Input::Orders, &inputs.orders)?,
    ];
    let mut files = OutputFiles::create(out_dir)?;
    let stats = run(config, readers, |out, engine| {
        if let Some(m) = metrics.as_deref_mut() {
            observe(m, out, engine);
        }
        files.write(out)
    })?;
    files.finish(&stats)?;
    Ok(stats)
}

/// Brings `metrics` up to the engine's accounting and state, and the outputs about to be
/// written.
pub fn observe(metrics: &mut Metrics, out: &Outputs, engine: &Engine) {
    metrics.observe_stats(engine.stats());
    observe_outputs(metrics, out);
    observe_gauges(
        metrics,
        &engine.state_size(),
        engine.stats().accounted(),
        engine,
    );
}

/// The dead letters and revenue windows about to be written.
pub fn observe_outputs(metrics: &mut Metrics, out: &Outputs) {
    for d in &out.dead_letters {
        metrics.observe_dead_letter(d.input, d.reason);
    }
    metrics.observe_windows(&out.revenue_windows);
}

/// The state held and accounted for (by one engine or several), and the watermark lag (of
/// `engine`: engines that split the state have the same watermarks).
pub fn observe_gauges(metrics: &Metrics, state: &StateSize, accounted: u64, engine: &Engine) {
    metrics.observe_state(state);
    metrics.observe_accounted(accounted);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let watermarks: Vec<_> = Input::ALL
        .iter()
        .map(|i| (*i, engine.input_watermark(*i)))
        .collect();
    metrics.observe_watermarks(now_ms, &watermarks);
}

/// Drives the engine over three line sources, aligned by event time: the next line always comes
/// from the unfinished input whose highest event time so far is lowest (ties: browser, server,
/// orders), as if the three had arrived together. `sink` receives outputs as they are produced.
pub fn run<R>(
    config: &Config,
    readers: [R; 3],
    mut sink: impl FnMut(&mut Outputs, &Engine) -> Result<(), ReplayError>,
) -> Result<Stats, ReplayError>
where
    R: BufRead,
{
    let limit = config.engine.max_record_bytes;
    let parser = Parser::new(&config.engine, &config.orders);
    let mut engine = Engine::new(&config.engine, &config.orders);
    let mut readers = readers.map(|r| Some(LineReader::new(r, limit)));
    let mut out = Outputs::default();
    let mut parsed = Vec::new();
    let mut buf = Vec::new();
    loop {
        let next = Input::ALL
            .iter()
            .copied()
            .filter(|i| readers[i.index()].is_some())
            .min_by_key(|i| (engine.highest_seen(*i).unwrap_or(i64::MIN), i.index()));
        let Some(input) = next else { break };
        let reader = readers[input.index()].as_mut().expect("unfinished");
        let line = reader
            .next_line(&mut buf)
            .map_err(|source| ReplayError::Read {
                input: input.as_str(),
                source,
            })?;
        match line {
            None => {
                readers[input.index()] = None;
                engine.finish_input(input, &mut out);
            }
            Some(Line::Text(offset, bytes)) => {
                parser.parse(input, 0, offset, Some(bytes), &mut parsed);
                for p in parsed.drain(..) {
                    engine.process(p, &mut out);
                }
            }
            Some(Line::TooLong(offset, prefix)) => {
                let dead = too_long(config, input, offset, &prefix);
                engine.process(Parsed::DeadLetter(dead), &mut out);
            }
        }
        if out.conversions.len() + out.discrepancies.len() >= 1024 {
            sink(&mut out, &engine)?;
        }
    }
    engine.flush(&mut out);
    sink(&mut out, &engine)?;
    Ok(engine.stats().clone())
}

fn too_long(config: &Config, input: Input, offset: i64, prefix: &[u8]) -> DeadLetter {
    let redacted = config.engine.redact_dead_letters;
    DeadLetter {
        format_version: FORMAT_VERSION,
        input,
        position: Position {
            input,
            partition: 0,
            offset,
            index: 0,
        },
        reason: DeadLetterReason::TooLarge,
        detail: format!(
            "record longer than engine.max_record_bytes ({}); original holds its first bytes only",
            config.engine.max_record_bytes
        ),
        original: (!redacted).then(|| String::from_utf8_lossy(prefix).into_owned()),
        original_base64: None,
        redacted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line's number, and its bytes or (too long) its prefix.
    type ReadLine = (i64, Result<Vec<u8>, Vec<u8>>);

    /// Every line of `text` as the reader gives it, read through a buffer of `capacity` bytes.
    fn lines(text: &[u8], capacity: usize, limit: usize) -> Vec<ReadLine> {
        let mut reader = LineReader::new(BufReader::with_capacity(capacity, text), limit);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(line) = reader.next_line(&mut buf).unwrap() {
            out.push(match line {
                Line::Text(n, bytes) => (n, Ok(bytes.to_vec())),
                Line::TooLong(n, prefix) => (n, Err(prefix)),
            });
        }
        out
    }

    #[test]
    fn lines_are_the_same_whether_lent_from_the_buffer_or_gathered_across_it() {
        let text = b"first\r\n\nsecond line\nlong line beyond the limit\nlast without newline";
        let expected: Vec<ReadLine> = vec![
            (1, Ok(b"first".to_vec())),
            (2, Ok(b"".to_vec())),
            (3, Ok(b"second line".to_vec())),
            (4, Err(b"long line beyond the".to_vec())),
            (5, Ok(b"last without newline".to_vec())),
        ];
        // From a buffer that holds everything (every line lent) down to one byte (every line
        // gathered), and every size between, where lines straddle the buffer's end anywhere.
        for capacity in 1..=text.len() + 1 {
            assert_eq!(
                lines(text, capacity, 20),
                expected,
                "buffer of {capacity} bytes"
            );
        }
    }
}
