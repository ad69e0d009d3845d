//! The `onecount` command line. `anyhow` lives here only: modules return typed errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};

use onecount::config::Config;
use onecount::replay::{replay, ReplayInputs};

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
