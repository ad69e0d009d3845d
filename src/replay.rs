//! The file runtime: replays three JSONL inputs through the engine into JSONL outputs.
//!
//! Owns: reading lines (bounded: a line longer than `max_record_bytes` is dead-lettered without
//! being held in memory), the event-time alignment of the three inputs, and writing the output
//! files and `stats.json`. Must not: apply a rule; everything it decides is which input to read
//! next, and that depends only on the data.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::mem::take;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};

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

/// Appends `out`'s records to `buf` as JSON lines, conversions, discrepancies, dead letters,
/// then revenue windows: the bytes replay writes, in one buffer (for a measure or a comparison
/// that needs no files).
pub fn append_outputs(buf: &mut Vec<u8>, out: &Outputs) -> Result<(), serde_json::Error> {
    out.conversions
        .iter()
        .try_for_each(|r| jsonl::append_line(buf, r))?;
    out.discrepancies
        .iter()
        .try_for_each(|r| jsonl::append_line(buf, r))?;
    out.dead_letters
        .iter()
        .try_for_each(|r| jsonl::append_line(buf, r))?;
    out.revenue_windows
        .iter()
        .try_for_each(|r| jsonl::append_line(buf, r))
}

fn open_input(input: Input, path: &Path) -> Result<Box<dyn BufRead + Send>, ReplayError> {
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
///
/// With more than one core, each input is read and parsed on a thread of its own, a few
/// batches of lines ahead of the engine ([`parse_ahead`]): parsing is most of a replay's work
/// and needs nothing from the engine. The engine still takes the lines one at a time in the
/// order above, so the outputs are those of one thread. On one core the lines are parsed as
/// the engine takes them: threads taking turns there only cost cache.
pub fn run<R>(
    config: &Config,
    readers: [R; 3],
    sink: impl FnMut(&mut Outputs, &Engine) -> Result<(), ReplayError>,
) -> Result<Stats, ReplayError>
where
    R: BufRead + Send,
{
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    run_lines(config, readers, cores > 1, sink)
}

/// [`run`], with its inputs parsed `ahead` on threads of their own or as the engine takes them.
fn run_lines<R>(
    config: &Config,
    readers: [R; 3],
    ahead: bool,
    mut sink: impl FnMut(&mut Outputs, &Engine) -> Result<(), ReplayError>,
) -> Result<Stats, ReplayError>
where
    R: BufRead + Send,
{
    std::thread::scope(|scope| {
        let mut sources = Vec::with_capacity(Input::ALL.len());
        for (input, reader) in Input::ALL.into_iter().zip(readers) {
            let lines = LineParser::new(config, input, reader);
            if !ahead {
                sources.push(Some(Source::Inline(Box::new(lines), Vec::new())));
                continue;
            }
            let (batches, received) = mpsc::sync_channel(AHEAD_BATCHES);
            std::thread::Builder::new()
                .name(format!("parse-{}", input.as_str()))
                .spawn_scoped(scope, move || parse_ahead(lines, batches))
                .map_err(|source| ReplayError::Read {
                    input: input.as_str(),
                    source,
                })?;
            sources.push(Some(Source::Ahead(Ahead::new(input, received))));
        }
        // The receivers go when this returns, early or not: a parsing thread then stops at its
        // next send, and the scope can end. (After an error, a thread waiting on a pipe that
        // stays open, as standard input may, keeps the return waiting until it gets a batch.)
        apply(config, &mut sources, &mut sink)
    })
}

/// Lines a parsing thread hands over at a time, and batches it may have waiting: its input is
/// parsed at most about a thousand lines ahead (bounded memory, whatever the file's size).
/// Smaller batches were slower on two cores and on one (BENCHMARKS.md, session 16).
const AHEAD_LINES: usize = 256;
const AHEAD_BATCHES: usize = 2;

/// One input's lines, read and parsed one at a time.
struct LineParser<'c, R> {
    config: &'c Config,
    input: Input,
    parser: Parser,
    lines: LineReader<R>,
    buf: Vec<u8>,
}

impl<'c, R: BufRead> LineParser<'c, R> {
    fn new(config: &'c Config, input: Input, reader: R) -> Self {
        LineParser {
            config,
            input,
            parser: Parser::new(&config.engine, &config.orders),
            lines: LineReader::new(reader, config.engine.max_record_bytes),
            buf: Vec::new(),
        }
    }

    /// Appends what the next line became to `out`; `false` at the end of the input.
    fn parse_next(&mut self, out: &mut Vec<Parsed>) -> Result<bool, ReplayError> {
        let input = self.input;
        let line = self
            .lines
            .next_line(&mut self.buf)
            .map_err(|source| ReplayError::Read {
                input: input.as_str(),
                source,
            })?;
        match line {
            Some(Line::Text(offset, bytes)) => {
                self.parser.parse(input, 0, offset, Some(bytes), out);
            }
            Some(Line::TooLong(offset, prefix)) => {
                out.push(Parsed::DeadLetter(too_long(
                    self.config,
                    input,
                    offset,
                    &prefix,
                )));
            }
            None => return Ok(false),
        }
        Ok(true)
    }
}

/// Consecutive lines of one input, parsed: each line's records, in order.
#[derive(Default)]
struct Batch {
    records: Vec<Parsed>,
    /// How many records each line became (a server body may hold several events).
    per_line: Vec<u32>,
    /// The input ends after these lines.
    last: bool,
}

/// A parsing thread: `lines` into batches for [`apply`], the input's end marked on the last; a
/// read error goes as the last item, after the lines before it. Stops when the input ends or
/// nobody receives any more.
fn parse_ahead<R: BufRead>(
    mut lines: LineParser<'_, R>,
    batches: SyncSender<Result<Batch, ReplayError>>,
) {
    let mut batch = Batch::default();
    loop {
        let before = batch.records.len();
        match lines.parse_next(&mut batch.records) {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => {
                if batches.send(Ok(batch)).is_ok() {
                    let _ = batches.send(Err(error));
                }
                return;
            }
        }
        let count = batch.records.len() - before;
        batch
            .per_line
            .push(u32::try_from(count).expect("a line's records fit in u32"));
        if batch.per_line.len() == AHEAD_LINES && batches.send(Ok(take(&mut batch))).is_err() {
            return;
        }
    }
    batch.last = true;
    let _ = batches.send(Ok(batch));
}

/// The batches of one parsing thread, as [`apply`] takes them: a line at a time.
struct Ahead {
    input: Input,
    batches: Receiver<Result<Batch, ReplayError>>,
    records: std::vec::IntoIter<Parsed>,
    per_line: std::vec::IntoIter<u32>,
    /// The batch taken last was the input's last.
    ended: bool,
}

impl Ahead {
    fn new(input: Input, batches: Receiver<Result<Batch, ReplayError>>) -> Self {
        Ahead {
            input,
            batches,
            records: Vec::new().into_iter(),
            per_line: Vec::new().into_iter(),
            ended: false,
        }
    }
}

/// Where [`apply`] takes an input's parsed lines from.
enum Source<'c, R> {
    /// A parsing thread's batches.
    Ahead(Ahead),
    /// The line parsed when it is taken (one core), through a reused vector.
    Inline(Box<LineParser<'c, R>>, Vec<Parsed>),
}

impl<R: BufRead> Source<'_, R> {
    /// Gives the records of the input's next line to `each`; `false` at the end of the input.
    fn next_line(&mut self, mut each: impl FnMut(Parsed)) -> Result<bool, ReplayError> {
        match self {
            Source::Ahead(ahead) => loop {
                if let Some(count) = ahead.per_line.next() {
                    ahead.records.by_ref().take(count as usize).for_each(each);
                    return Ok(true);
                }
                if ahead.ended {
                    return Ok(false);
                }
                match ahead.batches.recv() {
                    Ok(batch) => {
                        let batch = batch?;
                        ahead.records = batch.records.into_iter();
                        ahead.per_line = batch.per_line.into_iter();
                        ahead.ended = batch.last;
                    }
                    // Gone before the input's end: it panicked (the scope raises the panic
                    // again once the replay returns). Not an end of input: a replay short of
                    // an input's records must not look finished.
                    Err(mpsc::RecvError) => {
                        return Err(ReplayError::Read {
                            input: ahead.input.as_str(),
                            source: io::Error::other("its parsing thread stopped"),
                        })
                    }
                }
            },
            Source::Inline(lines, parsed) => {
                let more = lines.parse_next(parsed)?;
                parsed.drain(..).for_each(&mut each);
                Ok(more)
            }
        }
    }
}

/// The engine's side of [`run`]: takes the parsed lines of the inputs in event-time alignment.
fn apply<R: BufRead>(
    config: &Config,
    sources: &mut [Option<Source<'_, R>>],
    sink: &mut impl FnMut(&mut Outputs, &Engine) -> Result<(), ReplayError>,
) -> Result<Stats, ReplayError> {
    let mut engine = Engine::new(&config.engine, &config.orders);
    let mut out = Outputs::default();
    loop {
        let next = Input::ALL
            .iter()
            .copied()
            .filter(|i| sources[i.index()].is_some())
            .min_by_key(|i| (engine.highest_seen(*i).unwrap_or(i64::MIN), i.index()));
        let Some(input) = next else { break };
        let source = sources[input.index()].as_mut().expect("unfinished");
        if !source.next_line(|p| engine.process(p, &mut out))? {
            sources[input.index()] = None;
            engine.finish_input(input, &mut out);
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

    /// The four outputs of a replay of `inputs` as replay writes them, and its accounting.
    fn replay_bytes(inputs: &[Vec<u8>; 3], ahead: bool) -> (Vec<u8>, Stats) {
        let mut written = Vec::new();
        let readers = [0, 1, 2].map(|i| BufReader::with_capacity(1 << 12, &inputs[i][..]));
        let stats = run_lines(&Config::default(), readers, ahead, |out, _| {
            append_outputs(&mut written, out).unwrap();
            out.clear();
            Ok(())
        })
        .unwrap();
        (written, stats)
    }

    #[test]
    fn parsed_ahead_on_threads_or_as_taken_a_replay_writes_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::generate::GenerateOptions {
            actions: 10_000,
            seed: 7,
            ..Default::default()
        };
        crate::generate::generate_to_dir(&options, dir.path()).unwrap();
        let paths = ReplayInputs::in_dir(dir.path());
        let inputs =
            [&paths.browser, &paths.server, &paths.orders].map(|p| std::fs::read(p).unwrap());
        // Several batches of each input, so batch boundaries fall everywhere in the alignment.
        let lines = |i: usize| inputs[i].iter().filter(|b| **b == b'\n').count();
        assert!((0..3).all(|i| lines(i) > AHEAD_LINES * (AHEAD_BATCHES + 1)));

        let (inline, inline_stats) = replay_bytes(&inputs, false);
        let (ahead, ahead_stats) = replay_bytes(&inputs, true);
        assert!(inline_stats.conversions > 5_000 && inline_stats.dead_letters > 0);
        assert_eq!(ahead_stats, inline_stats);
        assert!(ahead == inline, "the outputs differ");
    }

    /// Gives `ok` bytes of a valid line, then fails.
    struct FailingAfter {
        ok: &'static [u8],
    }

    impl io::Read for FailingAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.ok.is_empty() {
                return Err(io::Error::other("disk gone"));
            }
            let n = buf.len().min(self.ok.len());
            buf[..n].copy_from_slice(&self.ok[..n]);
            self.ok = &self.ok[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_read_error_ends_the_replay_with_its_input_named_whether_parsed_ahead_or_not() {
        for ahead in [false, true] {
            let reader = |ok: &'static [u8]| BufReader::new(FailingAfter { ok });
            let readers = [
                reader(b""),
                reader(b"{\"event\":\"ViewContent\"}\n"),
                reader(b""),
            ];
            // The browser input fails at once, before anything is read of the others.
            let err = run_lines(&Config::default(), readers, ahead, |_, _| Ok(())).unwrap_err();
            assert!(
                matches!(
                    err,
                    ReplayError::Read {
                        input: "browser",
                        ..
                    }
                ),
                "ahead {ahead}: {err}"
            );
        }
    }

    /// Panics on its first read, as a bug in a parsing thread would.
    struct Panicking;

    impl io::Read for Panicking {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            panic!("a parsing thread's bug");
        }
    }

    #[test]
    fn a_parsing_thread_that_dies_ends_the_replay_rather_than_its_input() {
        let server = concat!(
            r#"{"event_source":"web","event_source_id":"C1","event":"ViewContent","#,
            r#""event_id":"e1","event_time":1767225600}"#
        )
        .as_bytes();
        let mut sink_called = false;
        let replay = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let readers: [Box<dyn BufRead + Send>; 3] = [
                Box::new(BufReader::new(Panicking)),
                Box::new(server),
                Box::new(&b""[..]),
            ];
            run_lines(&Config::default(), readers, true, |_, _| {
                sink_called = true;
                Ok(())
            })
        }));
        assert!(replay.is_err(), "the thread's panic is raised again");
        // Taken for the browser input's end, the replay would have run the server's event
        // through and flushed it into the sink.
        assert!(!sink_called);
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
