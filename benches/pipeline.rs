//! Where replay time goes: parse only, the engine only, then read + parse + engine with and
//! without JSON output (through `replay::run`, which parses ahead on threads when it has more
//! than one core), over the same generated files (`ONECOUNT_BENCH_DIR`, default
//! target/bench-data/1000000-1, made by scripts/bench.sh). Run: `cargo bench --bench pipeline`.
//!
//! It ends with the floor under any replay of these files on this machine: the kernel's read
//! of the inputs, a JSON validation of every line that reads no field, one insert and one later
//! lookup a record in a presized hash table of 128-bit keys (the least a dedup table does), and
//! the kernel's write of as many bytes as the outputs hold; each the best of three runs. Their
//! sum against the time 1M input records/s allows (issue 2's target) says how much is left for
//! everything else.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use onecount::config::Config;
use onecount::engine::{Engine, Outputs};
use onecount::model::Input;
use onecount::parse::{Parsed, Parser};
use onecount::replay::{append_outputs, run};

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

    // `run` parses ahead on threads when it has more than one core (taskset -c 0 to see one).
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let on_cores = if cores > 1 { ", parsed ahead" } else { "" };
    let readers =
        files.map(|f| BufReader::with_capacity(1 << 16, File::open(dir.join(f)).unwrap()));
    let started = Instant::now();
    let stats = run(&config, readers, |out, _| {
        out.clear();
        Ok(())
    })
    .unwrap();
    report(
        &format!("read + parse + engine, outputs discarded{on_cores}"),
        stats.input_records.total,
        started,
    );

    let readers =
        files.map(|f| BufReader::with_capacity(1 << 16, File::open(dir.join(f)).unwrap()));
    let mut sink = std::io::sink();
    let mut buf = Vec::new();
    let started = Instant::now();
    let mut output_bytes = 0u64;
    let stats = run(&config, readers, |out, _| {
        // As replay writes them, into a sink.
        buf.clear();
        append_outputs(&mut buf, out).unwrap();
        output_bytes += buf.len() as u64;
        sink.write_all(&buf).unwrap();
        out.clear();
        Ok(())
    })
    .unwrap();
    let records = stats.input_records.total;
    report(
        &format!("read + parse + engine + JSON serialization{on_cores}"),
        records,
        started,
    );

    floor(&dir, &files, &lines, output_bytes, records);
}

/// Prints the floor stages (see the module's comment) and their sum.
fn floor(dir: &Path, files: &[&str; 3], lines: &[Vec<Vec<u8>>], output_bytes: u64, records: u64) {
    let read = best_of_3(|| {
        // Through a buffer of replay's size, newlines found: nothing else is done to the bytes.
        let mut buf = vec![0u8; 1 << 16];
        let mut newlines = 0usize;
        for f in files {
            let mut file = File::open(dir.join(f)).unwrap();
            loop {
                let n = file.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                newlines += memchr::memchr_iter(b'\n', &buf[..n]).count();
            }
        }
        std::hint::black_box(newlines);
    });
    report_secs("floor: the inputs read, lines found", records, read);

    let validate = best_of_3(|| {
        // serde_json was the fastest validator measured here (BENCHMARKS.md, session 16).
        let invalid = lines
            .iter()
            .flatten()
            .filter(|l| serde_json::from_slice::<serde::de::IgnoredAny>(l).is_err())
            .count();
        std::hint::black_box(invalid);
    });
    report_secs("floor: every line's JSON validated only", records, validate);

    // Keys as a dedup table meets them: a new one per record, found again by the record 5,000
    // later (a second copy a few minutes of event time on); xorshift, so no pattern the table
    // could exploit. Made before the clock starts.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let keys: Vec<u128> = (0..records)
        .map(|_| u128::from(next()) << 64 | u128::from(next()))
        .collect();
    let table = best_of_3(|| {
        let mut table = hashbrown::HashMap::<u128, u32>::with_capacity(keys.len());
        let mut found = 0usize;
        for (i, key) in keys.iter().enumerate() {
            *table.entry(*key).or_insert(0) += 1;
            found += usize::from(i >= 5000 && table.contains_key(&keys[i - 5000]));
        }
        std::hint::black_box(found);
    });
    report_secs("floor: a key put and found in a hash table", records, table);

    let scratch = dir.join("pipeline-bench-write-floor");
    let write = best_of_3(|| {
        let chunk = vec![b'x'; 1 << 20];
        let mut file = File::create(&scratch).unwrap();
        let mut left = output_bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        drop(file);
        std::fs::remove_file(&scratch).unwrap();
    });
    report_secs(
        &format!("floor: {} MB written", output_bytes >> 20),
        records,
        write,
    );

    let sum = read + validate + table + write;
    let budget = records as f64 / 1e6;
    println!(
        "floor, the four together: {sum:.2}s = {:.0}% of the {budget:.2}s that 1M records/s \
         allows, {:.0} ns a record left for everything else",
        sum / budget * 100.0,
        ((budget - sum) / records as f64 * 1e9).max(0.0)
    );
}

/// The shortest of three runs, in seconds: a floor, so the machine's noise is left out.
fn best_of_3(mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn report(what: &str, records: u64, started: Instant) {
    report_secs(what, records, started.elapsed().as_secs_f64());
}

fn report_secs(what: &str, records: u64, secs: f64) {
    println!(
        "{what:<58} {records:>9} records {secs:>6.2}s {:>8.0}k records/s",
        records as f64 / secs / 1e3
    );
}
