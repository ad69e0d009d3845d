//! The `onecount` command line. `anyhow` lives here only: modules return typed errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};

use onecount::config::Config;
use onecount::generate::{
    generate_to_dir, GenerateOptions, DEFAULT_SPAN_HOURS, DEFAULT_START_TIME,
};
use onecount::replay::{replay, ReplayInputs};
use onecount::report;

/// mimalloc: the engine allocates and frees a few small strings per event; glibc's malloc spent
/// a fifth of the run in its free lists (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "onecount",
    version,
    about = "Exactly one conversion per user action: dedups TikTok Pixel and Events API copies and reconciles revenue with orders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate traffic and replay it in one process, print a report, and check it against the
    /// generator's ground truth (exits 1 on any difference).
    Demo {
        /// User actions to generate.
        #[arg(long, default_value_t = 100_000)]
        actions: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Keep the generated inputs and the outputs here (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write browser.jsonl, server.jsonl, orders.jsonl and truth.json (the exact expected counts).
    Generate {
        /// User actions (funnel steps); retries, reloads, orders and noise come on top.
        #[arg(long)]
        actions: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        /// Unix seconds of the first session.
        #[arg(long, default_value_t = DEFAULT_START_TIME)]
        start_time: i64,
        /// Sessions start over this many hours.
        #[arg(long, default_value_t = DEFAULT_SPAN_HOURS)]
        span_hours: u32,
    },
    /// Replay browser, server and order files through the engine into output files.
    Replay {
        /// Browser (Pixel) events, one JSON object per line; `-` for standard input.
        #[arg(long)]
        browser: PathBuf,
        /// Server (Events API) bodies, one JSON object per line; `-` for standard input.
        #[arg(long)]
        server: PathBuf,
        /// Order rows or Debezium change events, one per line; `-` for standard input.
        #[arg(long)]
        orders: PathBuf,
        /// Directory for conversions.jsonl, discrepancies.jsonl, dead_letters.jsonl,
        /// revenue_windows.jsonl and stats.json.
        #[arg(long)]
        out: PathBuf,
        /// The onecount.toml to read engine settings and order field names from.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file; exits non-zero naming the bad field.
    CheckConfig { file: PathBuf },
}

fn demo(actions: u64, seed: u64, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let temp;
    let dir = match dir {
        Some(d) => d,
        None => {
            temp = tempdir()?;
            temp.0.clone()
        }
    };
    let inputs_dir = dir.join("input");
    let out_dir = dir.join("output");
    println!(
        "generating {actions} actions (seed {seed}) into {}",
        inputs_dir.display()
    );
    let truth = generate_to_dir(
        &GenerateOptions {
            actions,
            seed,
            ..GenerateOptions::default()
        },
        &inputs_dir,
    )
    .with_context(|| format!("writing to {}", inputs_dir.display()))?;
    let inputs = ReplayInputs {
        browser: inputs_dir.join("browser.jsonl"),
        server: inputs_dir.join("server.jsonl"),
        orders: inputs_dir.join("orders.jsonl"),
    };
    let started = Instant::now();
    let stats = replay(&Config::default(), &inputs, &out_dir).context("replay failed")?;
    let seconds = started.elapsed().as_secs_f64();
    println!("replayed into {}\n", out_dir.display());
    print!("{}", report::summary(&stats, seconds));
    let differences = report::differences(&truth, &stats);
    if differences.is_empty() {
        println!("\nground truth: every count matches truth.json");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "\nground truth: {} counts differ from truth.json:",
            differences.len()
        );
        for d in &differences {
            println!("  {d}");
        }
        Ok(ExitCode::from(1))
    }
}

/// A temporary directory removed on drop (the demo's default home).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> anyhow::Result<TempDir> {
    let dir = std::env::temp_dir().join(format!("onecount-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(TempDir(dir))
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("onecount: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { actions, seed, dir } => demo(actions, seed, dir),
        Command::Generate {
            actions,
            seed,
            out,
            start_time,
            span_hours,
        } => {
            let started = Instant::now();
            let truth = generate_to_dir(
                &GenerateOptions {
                    actions,
                    seed,
                    start_time,
                    span_hours,
                },
                &out,
            )
            .with_context(|| format!("writing to {}", out.display()))?;
            println!(
                "generated {} input records ({} browser, {} server events, {} order changes) in {:.2}s into {}",
                truth.input_records.total,
                truth.input_records.browser,
                truth.input_records.server,
                truth.input_records.orders,
                started.elapsed().as_secs_f64(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            browser,
            server,
            orders,
            out,
            config,
        } => {
            let config = load_config(config.as_ref())?;
            let started = Instant::now();
            let inputs = ReplayInputs {
                browser,
                server,
                orders,
            };
            let stats = replay(&config, &inputs, &out).context("replay failed")?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "replayed {} input records in {:.2}s ({:.0}/s): {} conversions, {} merged, {} duplicates, {} consent dropped, {} dead letters, {} late",
                stats.input_records.total,
                secs,
                stats.input_records.total as f64 / secs.max(1e-9),
                stats.conversions,
                stats.merged,
                stats.duplicates,
                stats.consent_dropped,
                stats.dead_letters,
                stats.late
            );
            println!("outputs in {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
