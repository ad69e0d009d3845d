//! The Kafka service against the broker: throughput next to a plain consume of the same topics
//! and a plain copy and produce of their records (what one Kafka hop costs here), processing
//! latency, and how long a state task takes to restore N live dedup keys.
//!
//! Needs a broker at `ONECOUNT_TEST_KAFKA` (scripts/bench.sh service starts one). Run:
//! `scripts/bench.sh service`. A benchmark: it prints figures and checks only that the service
//! reached the generator's truth, never a time.
//!   ONECOUNT_BENCH_SERVICE_ACTIONS  generated actions (default 200000)
//!   ONECOUNT_BENCH_PARTITIONS       partitions of each input topic (default 3)
//!   ONECOUNT_BENCH_STATE_PARTITIONS `service.state_partitions` (default 1; more splits the
//!                                   state by pixel, with every generated order naming its shop)
//!   ONECOUNT_BENCH_RESTORE_KEYS     live keys per restore run (default "1000000,10000000")
//!   ONECOUNT_BENCH_PARTS            "throughput", "restore" or both (default "throughput,restore")
//!   ONECOUNT_BENCH_SERVICE_TOML     TOML lines added to the service's config after its own, e.g.
//!                                   `[kafka.properties]` with a librdkafka property to try (the
//!                                   service is started without the bench's ONECOUNT_* variables).
//!                                   Lines before any table header land in `[log]` (the last table
//!                                   with one state partition); `[log]` itself would be
//!                                   a duplicate table.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use onecount::config::{Config, TopicsConfig};
use onecount::engine::{Engine, Outputs};
use onecount::generate::{GenerateOptions, Truth};
use onecount::kafka::admin::{ensure_topics, TopicSpec, DEFAULT_TIMEOUT};
use onecount::kafka::client::{create_with_context, producer_config};
use onecount::kafka::delivery::{DeliveryTally, REPORT_POLL};
use onecount::kafka::publish::{generate_to_kafka, PublishOptions};
use onecount::model::{
    Event, EventFields, Input, Page, Position, Properties, Record, Source, User,
};
use onecount::parse::Parsed;
use onecount::service::state::restore_from_changelog;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long any one phase may take before the bench gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(900);

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary with no
    // argument at all (it used to run the whole 10M-key restore inside the test suite). The
    // restore re-runs this binary as `restore-child`.
    let args: Vec<String> = std::env::args().collect();
    let child = args.get(1).map(String::as_str) == Some("restore-child");
    if !child && !args.iter().any(|a| a == "--bench") {
        println!("service bench: run it with scripts/bench.sh service; skipped");
        return;
    }
    let Ok(brokers) = std::env::var("ONECOUNT_TEST_KAFKA") else {
        println!("service bench: ONECOUNT_TEST_KAFKA is not set (scripts/bench.sh service starts a broker); skipped");
        return;
    };
    if child {
        let number = |i: usize| args[i].parse().expect("a number");
        restore_child(&brokers, &args[2], number(3), number(4));
        return;
    }
    let parts = env_or("ONECOUNT_BENCH_PARTS", "throughput,restore".to_string());
    if parts.contains("throughput") {
        throughput(&brokers);
    }
    if parts.contains("restore") {
        let keys = env_or(
            "ONECOUNT_BENCH_RESTORE_KEYS",
            "1000000,10000000".to_string(),
        );
        for n in keys
            .split(',')
            .map(|k| k.trim().parse().expect("a key count"))
        {
            restore(&brokers, n);
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn random_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

fn client(brokers: &str, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    c
}

// ---------------------------------------------------------------------------------------------
// 1 and 2: throughput against a plain consume, then latency.

fn throughput(brokers: &str) {
    let actions: u64 = env_or("ONECOUNT_BENCH_SERVICE_ACTIONS", 200_000);
    let partitions: u32 = env_or("ONECOUNT_BENCH_PARTITIONS", 3);
    let state_partitions: u32 = env_or("ONECOUNT_BENCH_STATE_PARTITIONS", 1);
    let name = |what: &str| random_name(&format!("bench-{what}"));
    let mut config = Config::default();
    config.kafka.brokers = brokers.to_string();
    config.kafka.group_id = name("group");
    config.topics = TopicsConfig {
        browser: name("browser"),
        server: name("server"),
        orders: name("orders"),
        conversions: name("conversions"),
        discrepancies: name("discrepancies"),
        dead_letters: name("dead-letters"),
        revenue_windows: name("revenue-windows"),
        partitions,
        ..TopicsConfig::default()
    };

    println!(
        "== pre-filling the inputs: {actions} actions, {partitions} partitions each (load {})",
        load()
    );
    let gen = GenerateOptions {
        actions,
        every_order_names_its_shop: state_partitions > 1,
        ..GenerateOptions::default()
    };
    let (truth, report, _) = block_on(generate_to_kafka(&config, &gen, PublishOptions::default()))
        .expect("publishing the generated traffic");
    let records = report.records.total();
    println!(
        "published {records} Kafka records ({} input records counting each event of a server body) in {:.1} s",
        truth.input_records.total, report.seconds
    );

    let plain = plain_consume(brokers, &config.topics, records);
    let copy = plain_copy(&config, records);

    let rate = |secs: f64| records as f64 / secs;
    println!("== throughput, {records} Kafka records (load {})", load());
    println!(
        "(a) plain consume, fresh group:        {:>8.0} records/s from subscribe ({:.2} s), {:>8.0}/s from the first record ({:.2} s); {:.1} MB/s",
        rate(plain.from_start),
        plain.from_start,
        rate(plain.from_first),
        plain.from_first,
        plain.bytes as f64 / plain.from_first / 1e6
    );
    println!(
        "(c) plain copy, one hop:               {:>8.0} records/s from the first record to the last acknowledgement ({:.2} s): each record consumed and produced once, unchanged, with onecount's producer settings",
        rate(copy.copy),
        copy.copy
    );
    println!(
        "    plain produce of the same records:  {:>8.0} records/s from memory, first send to last acknowledgement ({:.2} s)",
        rate(copy.produce),
        copy.produce
    );
    println!(
        "    plain produce, throughput only:     {:>8.0} records/s (no idempotence, acks=1, linger 50 ms, 100k records a batch; {:.2} s)",
        rate(copy.produce_tuned),
        copy.produce_tuned
    );
    println!(
        "    the most a design that writes each input record to Kafka once can reach here: the faster plain produce is {:.0}% of (a) from the first record",
        100.0 * plain.from_first / copy.produce.min(copy.produce_tuned)
    );
    let run = service_run(&config, state_partitions, &truth);
    println!(
        "(b) onecount run, processed:           {:>8.0} records/s from process start ({:.2} s), {:>8.0}/s from first assignment ({:.2} s)",
        rate(run.processed),
        run.processed,
        rate(run.processed - run.assigned),
        run.processed - run.assigned
    );
    println!(
        "    applied, first to last input record: {:>8.0} records/s ({:.2} s; first applied {:.2} s after process start)",
        rate(run.all_applied - run.first_applied),
        run.all_applied - run.first_applied,
        run.first_applied
    );
    println!(
        "    applied, first to 99% of the records: {:>8.0} records/s ({:.2} s)",
        0.99 * records as f64 / (run.most_applied - run.first_applied),
        run.most_applied - run.first_applied
    );
    println!(
        "    processed and checkpointed:        {:>8.0} records/s from process start ({:.2} s), {:>8.0}/s from first assignment ({:.2} s)",
        rate(run.committed),
        run.committed,
        rate(run.committed - run.assigned),
        run.committed - run.assigned
    );
    println!(
        "    ratio to (a), processed, from first assignment vs from the first record: {:.0}%; from process start vs from subscribe: {:.0}%",
        100.0 * plain.from_first / (run.processed - run.assigned),
        100.0 * plain.from_start / run.processed
    );
    println!(
        "    ratio to (a), steady: applied, first to 99%, vs from the first record: {:.0}%",
        100.0 * 0.99 * plain.from_first / (run.most_applied - run.first_applied)
    );
    println!(
        "    ratio to (a), checkpointed, same pairs: {:.0}%, {:.0}%",
        100.0 * plain.from_first / (run.committed - run.assigned),
        100.0 * plain.from_start / run.committed
    );
    println!(
        "    CPU of the service process: {:.2} s user, {:.2} s system",
        run.cpu.0, run.cpu.1
    );

    println!(
        "== latency: onecount_processing_latency_seconds, {} observations",
        run.latency_count
    );
    for q in [0.5, 0.99] {
        println!(
            "p{:<2} {:.3} s (linear within its bucket, as histogram_quantile)",
            (q * 100.0) as u32,
            quantile(&run.latency_buckets, q)
        );
    }
}

struct Plain {
    from_start: f64,
    from_first: f64,
    bytes: u64,
}

/// A BaseConsumer in a fresh group reading the three inputs to the end: the broker's limit.
fn plain_consume(brokers: &str, topics: &TopicsConfig, records: u64) -> Plain {
    let consumer: BaseConsumer = client(brokers, &random_name("bench-plain"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a consumer");
    let started = Instant::now();
    consumer
        .subscribe(&[&topics.browser, &topics.server, &topics.orders])
        .expect("subscribe");
    let (mut n, mut bytes, mut first) = (0u64, 0u64, None);
    while n < records {
        assert!(
            started.elapsed() < PHASE_TIMEOUT,
            "plain consume: {n} of {records} records"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("reading the inputs");
            first.get_or_insert_with(Instant::now);
            n += 1;
            bytes += (m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len)) as u64;
        }
    }
    let from_start = started.elapsed().as_secs_f64();
    Plain {
        from_start,
        from_first: first.expect("records").elapsed().as_secs_f64(),
        bytes,
    }
}

/// The cheapest pipelines through Kafka, with onecount's producer settings (idempotent,
/// `acks=all`, lz4): the three inputs consumed (fresh group) and every record produced once,
/// unchanged, to a new topic, until all are acknowledged (`copy`: seconds from the first record
/// read to the last acknowledgement); then the same records produced again from memory to
/// another topic (`produce`: seconds from the first send to the last acknowledgement), and once
/// more with a producer tuned for throughput alone (`produce_tuned`).
/// onecount's records take at least two hops (inputs to the repartition log, the log to the
/// outputs and changelog), so these bound what any design the issue allows can do here: one
/// that writes each input record to Kafka once is no faster than the faster plain produce.
struct OneHop {
    copy: f64,
    produce: f64,
    produce_tuned: f64,
}

/// Producer properties for write throughput alone, safety aside (no idempotence, the leader's
/// acknowledgement only, large batches): the broker's write limit, not a setting onecount could
/// run with (its exactness needs idempotent, fully acknowledged produces).
const THROUGHPUT_ONLY: &[(&str, &str)] = &[
    ("enable.idempotence", "false"),
    ("acks", "1"),
    ("linger.ms", "50"),
    ("batch.num.messages", "100000"),
    ("batch.size", "4000000"),
];

fn plain_copy(config: &Config, records: u64) -> OneHop {
    let topics = &config.topics;
    let consumer: BaseConsumer = client(&config.kafka.brokers, &random_name("bench-copy"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a consumer");
    consumer
        .subscribe(&[&topics.browser, &topics.server, &topics.orders])
        .expect("subscribe");
    let producer = CopyProducer::new(config, &[]);
    let started = Instant::now();
    let mut kept = Vec::with_capacity(usize::try_from(records).expect("a count"));
    let mut first = None;
    while (kept.len() as u64) < records {
        assert!(
            started.elapsed() < PHASE_TIMEOUT,
            "plain copy: {} of {records} records",
            kept.len()
        );
        producer.producer.poll(Duration::ZERO);
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.expect("reading the inputs");
        first.get_or_insert_with(Instant::now);
        producer.send(m.key(), m.payload());
        kept.push((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)));
    }
    producer.wait_for_acknowledgements();
    let copy = first.expect("records").elapsed().as_secs_f64();

    let produce_all = |properties: &[(&str, &str)]| {
        let producer = CopyProducer::new(config, properties);
        let started = Instant::now();
        for (key, payload) in &kept {
            producer.send(key.as_deref(), payload.as_deref());
        }
        producer.wait_for_acknowledgements();
        started.elapsed().as_secs_f64()
    };
    OneHop {
        copy,
        produce: produce_all(&[]),
        produce_tuned: produce_all(THROUGHPUT_ONLY),
    }
}

/// A producer to a new topic of its own, for [`plain_copy`], counting acknowledgements and
/// failures as onecount's own producers do.
struct CopyProducer {
    producer: BaseProducer<DeliveryTally>,
    topic: String,
}

impl CopyProducer {
    /// `properties` over onecount's producer config.
    fn new(config: &Config, properties: &[(&str, &str)]) -> CopyProducer {
        let topic = random_name("bench-copy");
        let spec = TopicSpec::new(&topic, &config.topics);
        block_on(ensure_topics(&config.kafka, &[spec], DEFAULT_TIMEOUT)).expect("a copy topic");
        let mut producer_config = producer_config(&config.kafka);
        for (key, value) in properties {
            producer_config.set(*key, *value);
        }
        let producer =
            create_with_context(&producer_config, DeliveryTally::default()).expect("a producer");
        CopyProducer { producer, topic }
    }

    fn send(&self, key: Option<&[u8]>, payload: Option<&[u8]>) {
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        send_waiting(&self.producer, record, "plain copy");
        self.producer.context().sent();
    }

    fn wait_for_acknowledgements(&self) {
        let tally = self.producer.context();
        assert!(
            tally.wait_until_acknowledged(&self.producer, PHASE_TIMEOUT),
            "plain copy: {} records unacknowledged",
            tally.in_flight()
        );
        assert_eq!(
            tally.failure(),
            None,
            "plain copy: a record was not written"
        );
    }
}

/// Sends `record`, serving delivery reports while librdkafka's queue is full.
fn send_waiting<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8]>,
    what: &str,
) {
    while let Err((e, back)) = producer.send(record) {
        assert!(
            matches!(
                e,
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
            ),
            "{what}: {e}"
        );
        producer.poll(REPORT_POLL);
        record = back;
    }
}

struct Run {
    /// Seconds from process start.
    assigned: f64,
    /// The state stage's first input record applied, and its last (scraped every 50 ms).
    first_applied: f64,
    most_applied: f64,
    all_applied: f64,
    processed: f64,
    committed: f64,
    /// User and system CPU seconds of the process.
    cpu: (f64, f64),
    latency_count: f64,
    latency_buckets: Vec<(f64, f64)>,
}

/// Runs `onecount run` from an empty group until the truth is processed and checkpointed.
fn service_run(config: &Config, state_partitions: u32, truth: &Truth) -> Run {
    let dir = tempfile::tempdir().expect("a temp dir");
    let http = free_local_addr();
    let t = &config.topics;
    let orders_tables = if state_partitions > 1 {
        onecount::generate::orders_toml()
    } else {
        String::new()
    };
    let toml = format!(
        r#"[kafka]
brokers = "{brokers}"
group_id = "{group}"
[topics]
browser = "{browser}"
server = "{server}"
orders = "{orders}"
conversions = "{conversions}"
discrepancies = "{discrepancies}"
dead_letters = "{dead_letters}"
revenue_windows = "{revenue_windows}"
partitions = {partitions}
[engine]
idle_timeout = "2s"
[service]
commit_interval = "1s"
state_partitions = {state_partitions}
[http]
listen = "{http}"
[log]
format = "json"
{orders_tables}
{extra}"#,
        extra = std::env::var("ONECOUNT_BENCH_SERVICE_TOML").unwrap_or_default(),
        brokers = config.kafka.brokers,
        group = config.kafka.group_id,
        browser = t.browser,
        server = t.server,
        orders = t.orders,
        conversions = t.conversions,
        discrepancies = t.discrepancies,
        dead_letters = t.dead_letters,
        revenue_windows = t.revenue_windows,
        partitions = t.partitions,
    );
    let config_path = dir.path().join("service.toml");
    std::fs::write(&config_path, toml).expect("writing the config");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onecount"));
    cmd.arg("run")
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("ONECOUNT_") {
            cmd.env_remove(k);
        }
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawning onecount run");
    let pid = child.id();

    // The log goes to a file; the first "partitions assigned" line is noted as it passes.
    let assigned: Arc<Mutex<Option<Instant>>> = Arc::default();
    let log_path = dir.path().join("service.log");
    let stderr = child.stderr.take().expect("piped stderr");
    let (seen, path) = (assigned.clone(), log_path.clone());
    std::thread::spawn(move || {
        let mut log = std::fs::File::create(path).expect("the log file");
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("partitions assigned") {
                seen.lock().unwrap().get_or_insert_with(Instant::now);
            }
            let _ = writeln!(log, "{line}");
        }
    });
    let fail = |what: &str| -> ! {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "{what}; service log tail (newest first):\n{}",
            tail.join("\n")
        )
    };

    // Processed: every input record accounted for and every conversion emitted. Should the
    // conversions stop short of the truth, processed is when they last moved (and it is said).
    let want_inputs = truth.input_records.total as f64;
    let want_conversions = truth.conversions as f64;
    let (mut last, mut last_change) = ((0.0, 0.0), started);
    // When the state stage applied its first input record, and its last: the steady rate, with
    // neither the start (group joins, restore) nor the `idle_timeout` wait for the tail in it.
    // And when 99% were: the last records wait for the quiet partitions to be declared caught
    // up or idle (hundreds of ms to `idle_timeout`), a fixed cost at the end of a burst.
    let (mut first_applied, mut most_applied, mut all_applied) = (None, None, None);
    let mut outcomes = Vec::new();
    loop {
        let progress = format!(
            "{} of {want_inputs} inputs, {} of {want_conversions} conversions",
            last.0, last.1
        );
        if started.elapsed() > PHASE_TIMEOUT {
            fail(&format!("the service did not finish in time: {progress}"));
        }
        if let Ok(Some(status)) = child.try_wait() {
            fail(&format!("the service exited ({status}) at {progress}"));
        }
        if let Some(m) = scrape(http) {
            let now = (
                sum(&m, "onecount_input_records_total"),
                sum(&m, "onecount_conversions_total"),
            );
            if now.0 > 0.0 {
                first_applied.get_or_insert_with(Instant::now);
            }
            if now.0 >= 0.99 * want_inputs {
                most_applied.get_or_insert_with(Instant::now);
            }
            if now.0 == want_inputs {
                all_applied.get_or_insert_with(Instant::now);
            }
            if now != last {
                (last, last_change) = (now, Instant::now());
                outcomes = m;
            }
            let settled = last_change.elapsed() > Duration::from_secs(6);
            if last.0 == want_inputs && (last.1 == want_conversions || settled) {
                if last.1 != want_conversions {
                    println!(
                        "    WARNING: the service differs from the truth: {progress}; by outcome:"
                    );
                    for (_, labels, v) in outcomes
                        .iter()
                        .filter(|s| s.0 == "onecount_input_records_total")
                    {
                        println!("      {labels} {v}");
                    }
                }
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let processed = last_change.duration_since(started).as_secs_f64();
    let since_start = |t: Option<Instant>| t.expect("seen").duration_since(started).as_secs_f64();
    let (first_applied, most_applied, all_applied) = (
        since_start(first_applied),
        since_start(most_applied),
        since_start(all_applied),
    );

    // Checkpointed: the state group's committed offset on the log reaches the log's end as of now.
    let group = &config.kafka.group_id;
    let log_topic = format!("{group}-log");
    let watcher: BaseConsumer = client(&config.kafka.brokers, &format!("{group}-state"))
        .create()
        .expect("a consumer");
    let (_, end) = watcher
        .fetch_watermarks(&log_topic, 0, Duration::from_secs(10))
        .expect("the log's end");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&log_topic, 0);
    loop {
        if started.elapsed() > PHASE_TIMEOUT {
            fail("the service did not checkpoint in time");
        }
        let committed = watcher
            .committed_offsets(tpl.clone(), Duration::from_secs(10))
            .ok()
            .and_then(|c| c.find_partition(&log_topic, 0).map(|p| p.offset()));
        if matches!(committed, Some(Offset::Offset(o)) if o >= end) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let committed = started.elapsed().as_secs_f64();

    let metrics = scrape(http).unwrap_or_else(|| fail("no final scrape"));
    let cpu = cpu_seconds(pid);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let status = child.wait().expect("waiting for the service");
    if !status.success() {
        fail(&format!("the service stopped with {status}"));
    }
    let assigned = assigned
        .lock()
        .unwrap()
        .map_or(0.0, |t| t.duration_since(started).as_secs_f64());
    Run {
        assigned,
        first_applied,
        most_applied,
        all_applied,
        processed,
        committed,
        cpu,
        latency_count: sum(&metrics, "onecount_processing_latency_seconds_count"),
        latency_buckets: buckets(&metrics, "onecount_processing_latency_seconds_bucket"),
    }
}

fn free_local_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("its address")
}

/// `/metrics` as (name, labels, value) samples, or `None` if it does not answer.
fn scrape(addr: SocketAddr) -> Option<Vec<(String, String, f64)>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let samples = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            // Our label values hold no spaces, so the value is the last field.
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let labels = labels.trim_end_matches('}');
            Some((name.to_string(), labels.to_string(), value.parse().ok()?))
        })
        .collect();
    Some(samples)
}

fn sum(samples: &[(String, String, f64)], name: &str) -> f64 {
    samples.iter().filter(|s| s.0 == name).map(|s| s.2).sum()
}

/// A histogram's cumulative buckets as (upper bound, count), summed over other labels.
fn buckets(samples: &[(String, String, f64)], name: &str) -> Vec<(f64, f64)> {
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (_, labels, v) in samples.iter().filter(|s| s.0 == name) {
        let le = labels
            .split(',')
            .find_map(|l| l.strip_prefix("le=\""))
            .map(|l| l.trim_end_matches(['"', '}']))
            .expect("a bucket bound");
        let le: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += v;
    }
    let mut b: Vec<(f64, f64)> = by_le.into_values().collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    b
}

/// The q-quantile of cumulative buckets, linear within the bucket it falls in (Prometheus's
/// `histogram_quantile`); the last finite bound if it falls in +Inf.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            return lower.0 + (le - lower.0) * (rank - lower.1) / (count - lower.1).max(1.0);
        }
        lower = (le, count);
    }
    f64::NAN
}

/// User and system CPU seconds of a running process (/proc/PID/stat, clock ticks of 10 ms).
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |s| s.1);
    let fields: Vec<f64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 of stat are utime and stime; after the name they are the 12th and 13th.
    (
        fields.get(11).copied().unwrap_or(0.0) / 100.0,
        fields.get(12).copied().unwrap_or(0.0) / 100.0,
    )
}

// ---------------------------------------------------------------------------------------------
// 3: restore time for N live dedup keys.

fn restore(brokers: &str, n: u64) {
    println!("== restore of {n} live dedup keys (load {})", load());
    let mut config = Config::default();
    config.kafka.brokers = brokers.to_string();
    config.kafka.group_id = random_name("bench-restore");

    // The changelog the service would write after N browser-only actions with distinct
    // event_ids, spread over 40 h of event time so none expires within the 48 h TTL.
    let started = Instant::now();
    let mut engine = Engine::new(&config.engine, &config.orders).with_changelog();
    let mut out = Outputs::default();
    let t0: i64 = 1_767_225_600_000;
    let span_ms: i64 = 40 * 3_600_000;
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
    drop(out);
    assert_eq!(
        engine.state_size().closed_keys as u64,
        n,
        "every key is live"
    );
    let entries = engine.take_changes();
    drop(engine);
    println!(
        "built {} changelog entries in {:.1} s",
        entries.len(),
        started.elapsed().as_secs_f64()
    );

    let topic = random_name("bench-changelog");
    let mut spec = TopicSpec::with_partitions(&topic, 1);
    spec.configs = vec![("cleanup.policy".into(), "compact".into())];
    block_on(ensure_topics(&config.kafka, &[spec], DEFAULT_TIMEOUT)).expect("the changelog topic");
    let started = Instant::now();
    let producer: BaseProducer = client(brokers, &config.kafka.group_id)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("a producer");
    let bytes: usize = entries
        .iter()
        .map(|e| e.key.len() + e.value.as_ref().map_or(0, Vec::len))
        .sum();
    for e in &entries {
        let mut record = BaseRecord::<[u8], [u8]>::to(&topic).key(&e.key[..]);
        if let Some(v) = &e.value {
            record = record.payload(&v[..]);
        }
        send_waiting(&producer, record, "producing the changelog");
    }
    producer
        .flush(Duration::from_secs(600))
        .expect("the changelog acknowledged");
    let records = entries.len() as u64;
    drop(entries);
    println!(
        "produced {records} records ({:.0} MB of keys and values) in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    // Timed in a fresh process of this bench, so its peak resident memory is the restore's.
    let child = Command::new(std::env::current_exe().expect("this bench"))
        .args([
            "restore-child",
            &topic,
            &n.to_string(),
            &records.to_string(),
        ])
        .status()
        .expect("running the restore");
    assert!(child.success(), "the restore failed: {child}");
}

/// The timed restore of `topic` (`n` live keys in `records` records), in a process of its own.
fn restore_child(brokers: &str, topic: &str, n: u64, records: u64) {
    let mut config = Config::default();
    config.kafka.brokers = brokers.to_string();
    config.kafka.group_id = random_name("bench-restore");
    let before = status_kb("VmRSS");
    let started = Instant::now();
    let (engine, _, read) =
        restore_from_changelog(&config, topic, 0).expect("restoring the changelog");
    let secs = started.elapsed().as_secs_f64();
    let (peak, after) = (status_kb("VmHWM"), status_kb("VmRSS"));
    assert_eq!(read, records, "the whole changelog was read");
    let keys = engine.state_size().closed_keys as u64;
    assert_eq!(keys, n, "every key restored");
    println!(
        "restore: {secs:.2} s, {:.0} records/s, {:.2} s per million keys (load {})",
        read as f64 / secs,
        secs / (n as f64 / 1e6),
        load()
    );
    println!(
        "resident memory of the restoring process: {:.0} MiB at start, peak {:.0} MiB (+{:.0} MiB), {:.0} MiB after with the engine live ({:.1} B per key)",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 * 1024.0 / n as f64
    );
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
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
