//! What one live dedup key costs, measured as resident memory growth, not `size_of` arithmetic.
//!
//! Feeds N browser-only actions with distinct event_ids through the engine (spread over 40 hours
//! of event time, inside the 48 h TTL, so every key stays live), flushes, and divides the growth
//! of the process's resident set by the number of live keys. Also prints the engine's own
//! throughput on pre-built events (no parsing). Run: `cargo bench --bench state_memory`
//! (`ONECOUNT_BENCH_KEYS` sets N, default 5,000,000).

use std::time::Instant;

use onecount::config::{EngineConfig, OrdersConfig};
use onecount::engine::{Engine, Outputs};
use onecount::model::{
    Event, EventFields, Input, Page, Position, Properties, Record, Source, User,
};
use onecount::parse::Parsed;

extern "C" {
    /// glibc: hands freed heap memory back to the kernel, so resident memory reflects live data
    /// and not the allocator's free lists (the reorder buffer and pending merges come and go).
    fn malloc_trim(pad: usize) -> i32;
}

fn rss_bytes() -> u64 {
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        malloc_trim(0);
    }
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn event(i: u64, t: i64) -> Event {
    Event::pack(&EventFields {
        source: Source::Browser,
        pixel: "C4PIXEL0000000000001".into(),
        event: "ViewContent".into(),
        event_id: Some(format!("evt-{i:016x}")),
        event_time: t,
        user: User::default(),
        properties: Properties::default(),
        page: Page::default(),
        consent: None,
        position: Position {
            input: Input::Browser,
            partition: 0,
            offset: i as i64,
            index: 0,
        },
    })
}

fn main() {
    // `cargo test --all-targets` runs benches as tests: keep that run tiny.
    let quick = std::env::args().any(|a| a == "--test")
        || std::env::args().count() == 1 && cfg!(debug_assertions);
    let n: u64 = std::env::var("ONECOUNT_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 10_000 } else { 5_000_000 });
    let config = EngineConfig::default();
    let mut engine = Engine::new(&config, &OrdersConfig::default());
    let mut out = Outputs::default();
    let t0: i64 = 1_767_225_600_000;
    let span_ms: i64 = 40 * 3_600_000;

    let before = rss_bytes();
    let started = Instant::now();
    for i in 0..n {
        let t = t0 + (i as i128 * span_ms as i128 / n as i128) as i64;
        engine.process(
            Parsed::Record(Record::Event(Box::new(event(i, t)))),
            &mut out,
        );
        if out.conversions.len() >= 4096 {
            out.clear();
        }
    }
    engine.flush(&mut out);
    let secs = started.elapsed().as_secs_f64();
    out = Outputs::default();
    drop(out);
    let after = rss_bytes();
    let size = engine.state_size();
    assert_eq!(size.closed_keys as u64, n, "every key is still live");
    let per_key = (after.saturating_sub(before)) as f64 / n as f64;
    println!("live dedup keys:            {n}");
    println!(
        "resident growth:            {:.1} MiB",
        (after - before) as f64 / 1048576.0
    );
    println!("bytes per live key (RSS):   {per_key:.1}");
    println!(
        "bytes per live key (table): {:.1}",
        size.closed_key_bytes as f64 / n as f64
    );
    println!(
        "engine throughput (no parse, browser-only, events built in the loop): {:.2} M events/s",
        n as f64 / secs / 1e6
    );
}
