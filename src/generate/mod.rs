//! `generate`: deterministic, realistic traffic for the three inputs, with the exact outcome a
//! correct engine must report (`truth.json`), derived from the generator's own plan.
//!
//! Owns: the API the CLI and the Kafka producer call ([`generate`], [`generate_to_dir`],
//! [`TrafficSink`]) and the engine settings the truth assumes (the `EngineConfig` defaults,
//! restated as constants and checked by a test). Must not: import or reimplement the engine.
//! A truth computed by the engine proves nothing; here every count follows from which scenario
//! each action was given (`scenario`), and the records are placed so that no scenario's outcome
//! depends on how it interleaves with the rest (`schedule`).
//!
//! Layout: `traffic` (pixels, catalog, users, sessions walking the funnel in event time),
//! `scenario` (the plan and its expected outcome), `wire` (the input formats), `schedule`
//! (arrival order, batching, deferred late copies), `truth` (the counts).

mod scenario;
mod schedule;
mod traffic;
mod truth;
mod wire;

#[cfg(test)]
mod tests;

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::model::Money;

pub use scenario::Shares;
pub use truth::{InputRecords, SourceCounts, Truth};

use scenario::Planner;
use schedule::{File, Scheduler};
use traffic::SessionClock;

/// The engine settings the truth is computed for: `EngineConfig::default()` (a test checks
/// they agree). Replaying with other settings gives other counts.
pub const TTL_MS: i64 = 48 * 3_600_000;
pub const MERGE_WINDOW_MS: i64 = 5 * 60_000;
pub const ALLOWED_LATENESS_MS: i64 = 10 * 60_000;
pub const ORDER_WAIT_MS: i64 = 3_600_000;
/// `value_tolerance` (0.01 of the major unit).
pub const VALUE_TOLERANCE: Money = Money(10_000);

/// 2026-01-01T00:00:00Z.
pub const DEFAULT_START_TIME: i64 = 1_767_225_600;
pub const DEFAULT_SPAN_HOURS: u32 = 96;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateOptions {
    /// User actions (funnel steps). Each yields zero or more records: retries, reloads,
    /// orders, malformed lines and the start-of-stream snapshot come on top.
    pub actions: u64,
    /// Same seed, same bytes.
    pub seed: u64,
    /// Unix seconds of the first session.
    pub start_time: i64,
    /// Sessions start over this many hours.
    pub span_hours: u32,
    /// Every order row names its shop (by default 40% leave it out, and are matched to their
    /// purchase by order id alone). A service whose state is split over several partitions
    /// needs it: an order reaches the partition of its shop's pixel (`orders.shops`, see
    /// [`shops`]).
    pub every_order_names_its_shop: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            actions: 10_000,
            seed: 1,
            start_time: DEFAULT_START_TIME,
            span_hours: DEFAULT_SPAN_HOURS,
            every_order_names_its_shop: false,
        }
    }
}

/// The generated shops and their pixels, as `orders.shops` maps them.
pub fn shops() -> impl Iterator<Item = (&'static str, &'static str)> {
    traffic::PIXELS.iter().map(|p| (p.shop, p.code))
}

/// The `[orders]` tables a service split by pixel needs for generated traffic (with
/// [`GenerateOptions::every_order_names_its_shop`]): every shop mapped, and a default pixel.
pub fn orders_toml() -> String {
    let mut toml = format!(
        "[orders]\ndefault_pixel = \"{}\"\n[orders.shops]\n",
        traffic::PIXELS[0].code
    );
    for (shop, pixel) in shops() {
        toml.push_str(&format!("\"{shop}\" = \"{pixel}\"\n"));
    }
    toml
}

/// One record of an input: a Kafka key and value, or a file line (the key is not written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub key: Option<String>,
    /// `None` is a tombstone (a null value; `null` in a file).
    pub value: Option<String>,
}

/// Where generated records go, each input in its arrival order.
pub trait TrafficSink {
    fn browser(&mut self, line: Line) -> io::Result<()>;
    fn server(&mut self, line: Line) -> io::Result<()>;
    fn orders(&mut self, line: Line) -> io::Result<()>;
}

/// Generates the traffic for `opts` into `sink` and returns what a correct replay of it must
/// count. Memory stays bounded whatever `opts.actions` is: actions are planned in increasing
/// event time and lines leave as soon as nothing planned later can arrive before them.
pub fn generate(opts: &GenerateOptions, sink: &mut dyn TrafficSink) -> io::Result<Truth> {
    run(opts, sink, false).map(|(truth, _)| truth)
}

/// Writes `browser.jsonl`, `server.jsonl`, `orders.jsonl` and `truth.json` into `dir`
/// (created if missing).
pub fn generate_to_dir(opts: &GenerateOptions, dir: &Path) -> io::Result<Truth> {
    fs::create_dir_all(dir)?;
    let open = |name: &str| fs::File::create(dir.join(name)).map(BufWriter::new);
    let mut sink = JsonlSink {
        browser: open("browser.jsonl")?,
        server: open("server.jsonl")?,
        orders: open("orders.jsonl")?,
    };
    let truth = generate(opts, &mut sink)?;
    sink.browser.flush()?;
    sink.server.flush()?;
    sink.orders.flush()?;
    fs::write(dir.join("truth.json"), truth.to_json())?;
    Ok(truth)
}

/// Collects generated lines in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VecSink {
    pub browser: Vec<Line>,
    pub server: Vec<Line>,
    pub orders: Vec<Line>,
}

impl TrafficSink for VecSink {
    fn browser(&mut self, line: Line) -> io::Result<()> {
        self.browser.push(line);
        Ok(())
    }
    fn server(&mut self, line: Line) -> io::Result<()> {
        self.server.push(line);
        Ok(())
    }
    fn orders(&mut self, line: Line) -> io::Result<()> {
        self.orders.push(line);
        Ok(())
    }
}

/// One JSON document per line; a tombstone is the line `null`.
struct JsonlSink<W: Write> {
    browser: W,
    server: W,
    orders: W,
}

fn write_line(w: &mut impl Write, line: Line) -> io::Result<()> {
    match line.value {
        Some(value) => w.write_all(value.as_bytes())?,
        None => w.write_all(b"null")?,
    }
    w.write_all(b"\n")
}

impl<W: Write> TrafficSink for JsonlSink<W> {
    fn browser(&mut self, line: Line) -> io::Result<()> {
        write_line(&mut self.browser, line)
    }
    fn server(&mut self, line: Line) -> io::Result<()> {
        write_line(&mut self.server, line)
    }
    fn orders(&mut self, line: Line) -> io::Result<()> {
        write_line(&mut self.orders, line)
    }
}

/// The generator; `record_arrivals` keeps each written line's arrival time (tests).
pub(crate) fn run(
    opts: &GenerateOptions,
    sink: &mut dyn TrafficSink,
    record_arrivals: bool,
) -> io::Result<(Truth, Vec<(File, i64)>)> {
    let start_ms = opts.start_time.saturating_mul(1000);
    let span_ms = i64::from(opts.span_hours) * 3_600_000;
    let mut planner = Planner::new(opts.seed, start_ms, Shares::DEFAULT);
    planner.every_order_names_its_shop = opts.every_order_names_its_shop;
    let mut sched = Scheduler::new(opts.seed, start_ms.saturating_add(span_ms));
    if record_arrivals {
        sched.arrivals = Some(Vec::new());
    }
    let mut clock = SessionClock::new(opts.seed, opts.actions, start_ms, span_ms);
    planner.snapshot(&mut sched, opts.actions);
    while let Some((slot, step, t)) = clock.next_action(&mut planner.rng) {
        sched.advance(t, sink)?;
        planner.plan(&mut sched, clock.session(slot), step, t);
        clock.finish_if_done(slot);
    }
    sched.finish(sink)?;
    let truth = std::mem::take(&mut sched.truth);
    debug_assert!(
        truth.check_conservation().is_ok(),
        "{:?}",
        truth.check_conservation()
    );
    Ok((truth, sched.arrivals.take().unwrap_or_default()))
}
