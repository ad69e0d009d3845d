//! The `onecount` command line. `anyhow` lives here only: modules return typed errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use onecount::audit;
use onecount::config::Config;
use onecount::generate::{
    generate_to_dir, GenerateOptions, DEFAULT_SPAN_HOURS, DEFAULT_START_TIME,
};
use onecount::http::HttpServer;
use onecount::kafka;
use onecount::kafka::publish::{generate_to_kafka, PublishOptions};
use onecount::metrics::Metrics;
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
        #[command(flatten)]
        serve: ServeMetrics,
    },
    /// Write browser.jsonl, server.jsonl, orders.jsonl and truth.json (the exact expected counts),
    /// or with --kafka publish the same traffic to the configured input topics.
    Generate {
        /// User actions (funnel steps); retries, reloads, orders and noise come on top.
        #[arg(long)]
        actions: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Directory for the files.
        #[arg(long, required_unless_present = "kafka", conflicts_with = "kafka")]
        out: Option<PathBuf>,
        /// Unix seconds of the first session.
        #[arg(long, default_value_t = DEFAULT_START_TIME)]
        start_time: i64,
        /// Sessions start over this many hours.
        #[arg(long, default_value_t = DEFAULT_SPAN_HOURS)]
        span_hours: u32,
        /// Every order row names its shop (us-store, eu-store, jp-store; map them to their
        /// pixels in `orders.shops`), as a service split over several state partitions needs.
        #[arg(long)]
        every_order_names_its_shop: bool,
        /// Publish to Kafka at these bootstrap brokers (over kafka.brokers) instead of writing
        /// files: browser events keyed by event_id, server bodies unkeyed, order changes keyed by
        /// order id (tombstones as null values). Missing input topics are created.
        #[arg(long, value_name = "BROKERS")]
        kafka: Option<String>,
        /// With --kafka: the onecount.toml naming the topics and Kafka properties (ONECOUNT_*
        /// environment variables apply over it).
        #[arg(long, requires = "kafka")]
        config: Option<PathBuf>,
        /// With --kafka: write truth.json here.
        #[arg(long, requires = "kafka")]
        truth: Option<PathBuf>,
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
        #[command(flatten)]
        serve: ServeMetrics,
    },
    /// Run the Kafka service: consume the three input topics in the consumer group
    /// kafka.group_id, write conversions, discrepancies, dead letters and revenue windows to
    /// their topics, serve /metrics, /healthz and /readyz on http.listen. Stops on SIGTERM or
    /// SIGINT (exit 0 once flushed and committed). Settings: the file, then ONECOUNT_* variables.
    Run {
        /// The onecount.toml (optional: defaults and ONECOUNT_* variables suffice).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file with the ONECOUNT_* environment variables over it, and the Kafka
    /// properties against librdkafka; exits non-zero naming the bad field. Prints the effective
    /// settings, secrets redacted.
    CheckConfig { file: PathBuf },
    /// Audit a replay output directory, or with --kafka what the service wrote to the output
    /// topics: the QA checklist before scaling spend (one conversion per action, value/currency
    /// and parameter parity, consent, order ids, revenue vs orders, dead letters), each check
    /// PASS, WARN or FAIL with its numbers. Exits 1 when a check fails, 2 when the input cannot
    /// be read.
    Audit {
        /// The replay output directory (conversions.jsonl, discrepancies.jsonl,
        /// dead_letters.jsonl, revenue_windows.jsonl, stats.json).
        #[arg(long, required_unless_present = "kafka", conflicts_with = "kafka")]
        dir: Option<PathBuf>,
        /// Read the four output topics of --config ([topics], [kafka]; ONECOUNT_* variables
        /// apply over it) up to their ends as of now, without joining the consumer group.
        /// There is no stats.json in Kafka: the checks that need input counts say so.
        #[arg(long, requires = "config")]
        kafka: bool,
        /// With --kafka: the first records, by Kafka timestamp (RFC 3339 or Unix seconds;
        /// default: the beginning of the topics).
        #[arg(long, requires = "kafka", value_parser = audit::kafka::Timestamp::parse)]
        from: Option<audit::kafka::Timestamp>,
        /// With --kafka: the end, exclusive (RFC 3339 or Unix seconds; default: the ends of the
        /// topics when the audit starts).
        #[arg(long, requires = "kafka", value_parser = audit::kafka::Timestamp::parse)]
        to: Option<audit::kafka::Timestamp>,
        /// text (default), json (machine-readable, stable keys) or html (one self-contained
        /// page with charts).
        #[arg(long, default_value = "text", value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(audit::Format::NAMES),
            |s| s.parse::<audit::Format>().expect("one of the possible values"),
        ))]
        format: audit::Format,
        /// Write the report here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The onecount.toml the run used: its engine.ttl and engine.purchase_events (and
        /// with --kafka its topics and Kafka settings).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Serving `/metrics` while a file run goes on (and after, for a scrape to catch the end).
#[derive(clap::Args)]
struct ServeMetrics {
    /// Serve /metrics, /healthz and /readyz on this address while running (e.g. 127.0.0.1:9464).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Keep serving this long after the run ends (e.g. "30s"), so a scraper sees the totals.
    #[arg(long, value_parser = humantime::parse_duration, requires = "metrics_listen")]
    linger: Option<Duration>,
}

/// The metrics of one file run, and the endpoint serving them.
struct Served {
    metrics: Metrics,
    server: HttpServer,
    linger: Option<Duration>,
}

impl ServeMetrics {
    fn start(&self, config: &Config) -> anyhow::Result<Option<Served>> {
        let Some(listen) = &self.metrics_listen else {
            return Ok(None);
        };
        let configured: Vec<String> = config
            .orders
            .shops
            .values()
            .chain(config.orders.default_pixel.iter())
            .cloned()
            .collect();
        let metrics = Metrics::new(onecount::metrics::DEFAULT_MAX_PIXELS, &configured);
        let ready = Arc::new(AtomicBool::new(true));
        metrics.ready.set(1);
        let server = HttpServer::start(listen, metrics.registry().clone(), ready)
            .with_context(|| format!("cannot serve metrics on {listen}"))?;
        eprintln!("serving /metrics on http://{}", server.addr());
        Ok(Some(Served {
            metrics,
            server,
            linger: self.linger,
        }))
    }
}

impl Served {
    fn finish(self) {
        if let Some(linger) = self.linger {
            eprintln!(
                "run finished; serving /metrics on http://{} for {}",
                self.server.addr(),
                humantime::format_duration(linger)
            );
            std::thread::sleep(linger);
        }
        drop(self.server);
    }
}

fn demo(
    actions: u64,
    seed: u64,
    dir: Option<PathBuf>,
    serve: ServeMetrics,
) -> anyhow::Result<ExitCode> {
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
    let inputs = ReplayInputs::in_dir(&inputs_dir);
    let started = Instant::now();
    let mut served = serve.start(&Config::default())?;
    let stats = replay(
        &Config::default(),
        &inputs,
        &out_dir,
        served.as_mut().map(|s| &mut s.metrics),
    )
    .context("replay failed")?;
    let seconds = started.elapsed().as_secs_f64();
    println!("replayed into {}\n", out_dir.display());
    print!("{}", report::summary(&stats, seconds));
    let differences = report::differences(&truth, &stats);
    let code = if differences.is_empty() {
        println!("\nground truth: every count matches truth.json");
        ExitCode::SUCCESS
    } else {
        println!(
            "\nground truth: {} counts differ from truth.json:",
            differences.len()
        );
        for d in &differences {
            println!("  {d}");
        }
        ExitCode::from(1)
    };
    if let Some(served) = served {
        served.finish();
    }
    Ok(code)
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

fn generate_files(opts: &GenerateOptions, out: &Path) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let truth =
        generate_to_dir(opts, out).with_context(|| format!("writing to {}", out.display()))?;
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

/// `generate --kafka`: the config (file and environment), the brokers from the flag over it.
fn generate_kafka(
    opts: &GenerateOptions,
    brokers: &str,
    config: Option<&Path>,
    truth_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let mut config = Config::load_with_env(config)?;
    config.kafka.brokers = brokers.to_string();
    config.validate()?;
    kafka::client::check_properties(&config.kafka)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (truth, report, topics) = runtime
        .block_on(generate_to_kafka(&config, opts, PublishOptions::default()))
        .with_context(|| format!("publishing to {brokers}"))?;
    for t in &topics {
        let what = if t.created { "created" } else { "existing" };
        println!("topic {} ({what}, {} partitions)", t.name, t.partitions);
    }
    let r = &report.records;
    println!(
        "published {} records in {:.2}s: {} browser events to {}, {} server bodies ({} events) to {}, {} order changes ({} tombstones) to {}",
        r.total(),
        report.seconds,
        r.browser,
        config.topics.browser,
        r.server,
        truth.input_records.server,
        config.topics.server,
        r.orders,
        r.tombstones,
        config.topics.orders,
    );
    println!(
        "truth: {} input records; expect {} conversions ({} browser only, {} server only, {} both), {} merged, {} duplicates, {} consent dropped, {} dead letters, {} late, {} orders applied",
        truth.input_records.total,
        truth.conversions,
        truth.sources.browser,
        truth.sources.server,
        truth.sources.both,
        truth.merged,
        truth.duplicates,
        truth.consent_dropped,
        truth.dead_letters,
        truth.late,
        truth.orders_applied,
    );
    if let Some(path) = truth_file {
        std::fs::write(path, truth.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("truth written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `check-config`: the file with the environment over it, validated, and its Kafka properties
/// checked by librdkafka; prints the effective settings with secrets redacted.
fn check_config(file: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load_with_env(Some(file))?;
    kafka::client::check_properties(&config.kafka)?;
    println!("{}: ok", file.display());
    let overrides = Config::env_overrides(std::env::vars());
    if !overrides.is_empty() {
        let list: Vec<&str> = overrides.iter().map(String::as_str).collect();
        println!("# from the environment: {}", list.join(", "));
    }
    print!("{config}");
    Ok(ExitCode::SUCCESS)
}

fn run_service(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load_with_env(path)?;
    kafka::client::check_properties(&config.kafka)?;
    onecount::logging::init(&config.log);
    onecount::service::run(&config)?;
    Ok(ExitCode::SUCCESS)
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
        Command::Demo {
            actions,
            seed,
            dir,
            serve,
        } => demo(actions, seed, dir, serve),
        Command::Generate {
            actions,
            seed,
            out,
            start_time,
            span_hours,
            every_order_names_its_shop,
            kafka,
            config,
            truth,
        } => {
            let opts = GenerateOptions {
                actions,
                seed,
                start_time,
                span_hours,
                every_order_names_its_shop,
            };
            match (out, kafka) {
                (_, Some(brokers)) => {
                    generate_kafka(&opts, &brokers, config.as_deref(), truth.as_deref())
                }
                (Some(out), None) => generate_files(&opts, &out),
                (None, None) => unreachable!("clap requires --out or --kafka"),
            }
        }
        Command::Replay {
            browser,
            server,
            orders,
            out,
            config,
            serve,
        } => {
            let config = load_config(config.as_ref())?;
            let mut served = serve.start(&config)?;
            let started = Instant::now();
            let inputs = ReplayInputs {
                browser,
                server,
                orders,
            };
            let stats = replay(
                &config,
                &inputs,
                &out,
                served.as_mut().map(|s| &mut s.metrics),
            )
            .context("replay failed")?;
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
            if let Some(served) = served {
                served.finish();
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => check_config(&file),
        Command::Run { config } => run_service(config.as_deref()),
        Command::Audit {
            dir,
            kafka,
            from,
            to,
            format,
            out,
            config,
        } => {
            let report = match dir {
                Some(dir) => {
                    let config = load_config(config.as_ref())?;
                    audit::audit_dir(&dir, &audit::AuditOptions::from_engine(&config.engine))?
                }
                None => {
                    debug_assert!(kafka, "clap requires --dir or --kafka");
                    let config = Config::load_with_env(config.as_deref())?;
                    kafka::client::check_properties(&config.kafka)?;
                    let options = audit::AuditOptions::from_engine(&config.engine);
                    let range = audit::kafka::TimeRange { from, to };
                    audit::kafka::audit_kafka(&config, range, &options)?
                }
            };
            audit::write(&report, format, out.as_deref())?;
            if let Some(out) = &out {
                println!(
                    "{}; report written to {}",
                    report.result_line(),
                    out.display()
                );
            }
            Ok(ExitCode::from(u8::from(report.failed())))
        }
    }
}
