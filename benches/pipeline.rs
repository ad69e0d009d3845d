//! Where replay time goes: parse only, parse + engine, and parse + engine + JSON output, over
//! the same generated files (`ONECOUNT_BENCH_DIR`, default target/bench-data/1m, made by
//! scripts/bench.sh). Run: `cargo bench --bench pipeline`.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::time::Instant;

use onecount::config::Config;
use onecount::engine::{Engine, Outputs};
use onecount::model::Input;
use onecount::parse::{Parsed, Parser};
use onecount::replay::run;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let dir = PathBuf::from(
        std::env::var("ONECOUNT_BENCH_DIR")
            .unwrap_or_else(|_| "target/bench-data/1000000-1".into()),
    );
    if std::env::args().any(|a| a == "--test") || !dir.join("browser.jsonl").exists() {
        println!(
            "pipeline bench: no data in {} (scripts/bench.sh makes it); skipped",
            dir.display()
        );
        return;
    }
    let config = Config::default();
    let files = ["browser.jsonl", "server.jsonl", "orders.jsonl"];
    let lines: Vec<Vec<Vec<u8>>> = files
        .iter()
        .map(|f| {
            std::fs::read(dir.join(f))
                .unwrap()
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        })
        .collect();
    let parser = Parser::new(&config.engine, &config.orders);

    let started = Instant::now();
    let mut parsed = Vec::new();
    let mut records = 0u64;
    for (input, lines) in Input::ALL.iter().zip(&lines) {
        for (i, line) in lines.iter().enumerate() {
            parser.parse(*input, 0, i as i64 + 1, Some(line), &mut parsed);
            records += parsed.len() as u64;
            parsed.clear();
        }
    }
    report("parse only", records, started);

    let started = Instant::now();
    let mut all: Vec<Parsed> = Vec::new();
    for (input, lines) in Input::ALL.iter().zip(&lines) {
        for (i, line) in lines.iter().enumerate() {
            parser.parse(*input, 0, i as i64 + 1, Some(line), &mut all);
        }
    }
    let parse_secs = started.elapsed().as_secs_f64();
    // Engine alone, on pre-parsed records in time order per input (not aligned: a lower bound).
    all.sort_by_key(|p| match p {
        Parsed::Record(onecount::model::Record::Event(e)) => e.event_time,
        Parsed::Record(onecount::model::Record::Order(o)) => o.changed_at,
        _ => i64::MIN,
    });
    let n = all.len() as u64;
    let started = Instant::now();
    let mut engine = Engine::new(&config.engine, &config.orders);
    let mut out = Outputs::default();
    for p in all {
        engine.process(p, &mut out);
        if out.conversions.len() > 4096 {
            out.clear();
        }
    }
    engine.flush(&mut out);
    report("engine only (pre-parsed, time-sorted)", n, started);
    println!("  (parsing them took {parse_secs:.2}s)");

    let readers =
        files.map(|f| BufReader::with_capacity(1 << 16, File::open(dir.join(f)).unwrap()));
    let started = Instant::now();
    let stats = run(&config, readers, |out, _| {
        out.clear();
        Ok(())
    })
    .unwrap();
    report(
        "read + parse + engine, outputs discarded",
        stats.input_records.total,
        started,
    );

    let readers =
        files.map(|f| BufReader::with_capacity(1 << 16, File::open(dir.join(f)).unwrap()));
    let mut sink = std::io::sink();
    let mut buf = Vec::new();
    let started = Instant::now();
    let stats = run(&config, readers, |out, _| {
        // As replay writes them (src/jsonl.rs), into a sink.
        buf.clear();
        for c in &out.conversions {
            onecount::jsonl::append_line(&mut buf, c).unwrap();
        }
        for d in &out.discrepancies {
            onecount::jsonl::append_line(&mut buf, d).unwrap();
        }
        sink.write_all(&buf).unwrap();
        out.clear();
        Ok(())
    })
    .unwrap();
    report(
        "read + parse + engine + JSON serialization",
        stats.input_records.total,
        started,
    );
}

fn report(what: &str, records: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what:<45} {records:>9} records {secs:>6.2}s {:>8.0}k records/s",
        records as f64 / secs / 1e3
    );
}
