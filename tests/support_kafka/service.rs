//! Harness for `onecount run` against the test broker: one [`Setup`] per test (random topics
//! and group, a temp dir with each instance's config and log), [`Service`] processes started
//! from it, their HTTP endpoint and metrics, traffic published all at once or gradually, and
//! the comparison of the output topics with the generator's [`Truth`].
//!
//! Owns: what `tests/kafka_service.rs` needs to drive the service from outside, as an operator
//! would (a config file, signals, HTTP). Must not: reach into the service's code or state; know
//! anything of it beyond the contract (config keys, metrics, output records); or leave a
//! process behind (a [`Service`] still running when dropped is killed).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use onecount::config::{KafkaConfig, TopicsConfig};
use onecount::generate::{
    generate, orders_toml, GenerateOptions, Line, TrafficSink, Truth, VecSink,
};
use onecount::kafka::admin::{ensure_topics, input_specs, DEFAULT_TIMEOUT};
use onecount::kafka::publish::{KafkaSink, PublishOptions, Published};
use onecount::model::{Input, Money};
use serde_json::Value;

use super::{bootstrap, consume_all, random_name, Record};

/// Partitions of every topic a test creates, and of the service's internal topics.
pub const PARTITIONS: u32 = 3;

/// How long the outputs may take to reach the truth once the traffic is published.
pub const COMPLETION_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the outputs must stay at the truth before a test takes them as final: a late
/// duplicate written by a slow instance would show up within it.
const SETTLE: Duration = Duration::from_secs(5);

/// How long a started instance may take to answer `/readyz` with 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The dedup TTL of the default config: one conversion key may appear again after it.
const TTL_SECONDS: i64 = 48 * 3600;

/// One broker test at a time in this process. Each starts up to three service processes and
/// measures wall-clock deadlines; run at once on a small CI machine they would turn those
/// deadlines into noise. A test that panicked still releases the lock (poison is ignored).
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a future to completion on a runtime of its own: the tests are synchronous (they sleep
/// and wait on processes), the admin and publish helpers are async.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// One test's world: the service's topics and group (all random), where instances bootstrap,
/// and a temp dir holding each instance's config and log. On a panic its drop prints the tail
/// of every instance's log and keeps the dir.
pub struct Setup {
    /// What the service's `[kafka] brokers` says (the broker, or a proxy in front of it).
    pub service_brokers: String,
    pub group_id: String,
    pub topics: TopicsConfig,
    /// `service.state_partitions`: with more than 1, the config also maps the generated shops
    /// to their pixels (traffic from [`generated_naming_shops`]).
    pub state_partitions: u32,
    /// `service.merge_queue_limit`, when not the default.
    pub merge_queue_limit: Option<usize>,
    dir: Option<tempfile::TempDir>,
    logs: Mutex<Vec<PathBuf>>,
    instances: AtomicUsize,
}

impl Setup {
    /// Random names; the service bootstraps at the test broker.
    pub fn new(prefix: &str) -> Setup {
        Setup::with_service_brokers(prefix, &bootstrap())
    }

    /// Random names; the service bootstraps at `brokers` (e.g. a proxy's address).
    pub fn with_service_brokers(prefix: &str, brokers: &str) -> Setup {
        let name = |what: &str| random_name(&format!("{prefix}-{what}"));
        Setup {
            service_brokers: brokers.to_string(),
            group_id: name("group"),
            topics: TopicsConfig {
                browser: name("browser"),
                server: name("server"),
                orders: name("orders"),
                conversions: name("conversions"),
                discrepancies: name("discrepancies"),
                dead_letters: name("dead-letters"),
                revenue_windows: name("revenue-windows"),
                partitions: PARTITIONS,
                ..TopicsConfig::default()
            },
            state_partitions: 1,
            merge_queue_limit: None,
            dir: Some(tempfile::tempdir().expect("a temp dir")),
            logs: Mutex::new(Vec::new()),
            instances: AtomicUsize::new(0),
        }
    }

    /// Random names; the state split by pixel over `state_partitions` partitions.
    pub fn split(prefix: &str, state_partitions: u32) -> Setup {
        let mut setup = Setup::new(prefix);
        setup.state_partitions = state_partitions;
        setup
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the temp dir lives").path()
    }

    /// The test's own clients always talk to the broker directly, never through a proxy.
    pub fn test_kafka(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: bootstrap(),
            group_id: random_name("onecount-test-publisher"),
            ..KafkaConfig::default()
        }
    }

    /// The config file of one instance (the contract's keys, nothing else).
    /// With `member`, the instance is a static member of its groups (`group.instance.id`).
    pub fn config_toml(&self, http: SocketAddr, member: Option<&str>) -> String {
        let t = &self.topics;
        let static_member = member
            .map(|id| format!("\"group.instance.id\" = \"{id}\"\n"))
            .unwrap_or_default();
        let merge_queue_limit = self
            .merge_queue_limit
            .map(|n| format!("merge_queue_limit = {n}\n"))
            .unwrap_or_default();
        let orders_tables = if self.state_partitions > 1 {
            orders_toml()
        } else {
            String::new()
        };
        format!(
            r#"[kafka]
brokers = "{brokers}"
group_id = "{group}"
[kafka.properties]
"session.timeout.ms" = "6000"
{static_member}[topics]
browser = "{browser}"
server = "{server}"
orders = "{orders}"
conversions = "{conversions}"
discrepancies = "{discrepancies}"
dead_letters = "{dead_letters}"
revenue_windows = "{revenue_windows}"
partitions = {partitions}
[engine]
idle_timeout = "3s"
[service]
commit_interval = "500ms"
shutdown_timeout = "20s"
state_partitions = {state_partitions}
{merge_queue_limit}[http]
listen = "{http}"
[log]
format = "json"
level = "{level}"
{orders_tables}"#,
            brokers = self.service_brokers,
            group = self.group_id,
            browser = t.browser,
            server = t.server,
            orders = t.orders,
            conversions = t.conversions,
            discrepancies = t.discrepancies,
            dead_letters = t.dead_letters,
            revenue_windows = t.revenue_windows,
            partitions = t.partitions,
            state_partitions = self.state_partitions,
            // For digging into a failure: e.g. ONECOUNT_TEST_SERVICE_LOG=onecount=debug.
            level = std::env::var("ONECOUNT_TEST_SERVICE_LOG").unwrap_or_else(|_| "info".into()),
        )
    }

    /// Creates the three input topics (the service creates its outputs and internal topics).
    pub fn create_inputs(&self) {
        block_on(ensure_topics(
            &self.test_kafka(),
            &input_specs(&self.topics),
            DEFAULT_TIMEOUT,
        ))
        .unwrap_or_else(|e| panic!("creating the input topics: {e}"));
    }

    /// Starts one more instance of the service, on a free HTTP port, logging to a file of its
    /// own. Does not wait for it to be ready.
    pub fn start(&self) -> Service {
        self.start_member(None)
    }

    /// Starts an instance that is the static group member `member` (`group.instance.id`), as an
    /// operator runs a restarted pod: it takes its partitions back at once instead of waiting
    /// for its dead predecessor's session to time out (KIP-345).
    pub fn start_as(&self, member: &str) -> Service {
        self.start_member(Some(member))
    }

    fn start_member(&self, member: Option<&str>) -> Service {
        let n = self.instances.fetch_add(1, Ordering::SeqCst);
        let http = free_local_addr();
        let config = self.dir().join(format!("instance-{n}.toml"));
        let log = self.dir().join(format!("instance-{n}.log"));
        std::fs::write(&config, self.config_toml(http, member)).expect("writing the config");
        let stderr = File::create(&log).expect("creating the log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_onecount"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // Only the file configures it: no ONECOUNT_* override from the test's environment.
        for (k, _) in std::env::vars() {
            if k.starts_with("ONECOUNT_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd.spawn().expect("spawning onecount run");
        self.logs.lock().unwrap().push(log.clone());
        Service {
            name: format!("instance-{n} (pid {})", child.id()),
            child,
            http,
            log,
        }
    }

    /// Every output topic, read whole.
    pub fn read_outputs(&self) -> Outputs {
        let t = &self.topics;
        Outputs {
            conversions: consume_all(&t.conversions),
            discrepancies: consume_all(&t.discrepancies),
            dead_letters: consume_all(&t.dead_letters),
            revenue_windows: consume_all(&t.revenue_windows),
        }
    }

    /// Polls the output topics until they match `truth` exactly and stay so for [`SETTLE`]; on
    /// [`COMPLETION_TIMEOUT`], or as soon as an output overshoots (outputs only grow, so it
    /// cannot recover), panics with the differences. Every instance in `running` must stay
    /// alive throughout.
    /// With the published `lines`, the failure names the actions classified otherwise than a
    /// replay of them does.
    pub fn wait_for_truth(
        &self,
        truth: &Truth,
        traffic: Option<&Traffic>,
        running: &mut [&mut Service],
    ) -> Outputs {
        let deadline = Instant::now() + COMPLETION_TIMEOUT;
        let mut matched_since: Option<(Instant, usize)> = None;
        loop {
            for s in running.iter_mut() {
                s.assert_running();
            }
            let outputs = self.read_outputs();
            let diffs = truth_differences(truth, &outputs);
            let counts = outputs.counts();
            if diffs.is_empty() {
                match matched_since {
                    Some((since, n)) if n == outputs.conversions.len() => {
                        if since.elapsed() >= SETTLE {
                            return outputs;
                        }
                    }
                    _ => matched_since = Some((Instant::now(), outputs.conversions.len())),
                }
            } else {
                matched_since = None;
                if overshoots(truth, &outputs) || Instant::now() >= deadline {
                    let actions = traffic
                        .map(|t| differences_from_replay(t, &outputs))
                        .unwrap_or_default();
                    panic!(
                        "outputs differ from the truth ({counts}; expected {} conversions):\n  {}\n\
                         actions classified otherwise than by a replay of the same traffic:\n  {}",
                        truth.conversions,
                        diffs.join("\n  "),
                        actions.iter().take(20).cloned().collect::<Vec<_>>().join("\n  ")
                    );
                }
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for log in self.logs.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            eprintln!("---- last 40 lines of {} ----", log.display());
            eprintln!("{}", tail(log, 40));
        }
        if let Some(dir) = self.dir.take() {
            eprintln!("configs and logs kept in {}", dir.keep().display());
        }
    }
}

/// A local address nobody listens on right now (the port is released for the service to
/// bind; another process taking it in between is possible but rare).
pub fn free_local_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("its address")
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One `onecount run` process.
pub struct Service {
    name: String,
    child: Child,
    http: SocketAddr,
    log: PathBuf,
}

impl Service {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("waiting on the service")
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Panics, with its log, if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exit_status() {
            panic!(
                "{} exited ({status}); its log ends:\n{}",
                self.name,
                tail(&self.log, 40)
            );
        }
    }

    /// `GET path` on its HTTP endpoint: (status code, body).
    pub fn get(&self, path: &str) -> io::Result<(u16, String)> {
        http_get(self.http, path)
    }

    /// Its metrics now, or `None` if the endpoint does not answer.
    pub fn metrics(&self) -> Option<Metrics> {
        match self.get("/metrics") {
            Ok((200, body)) => Some(parse_metrics(&body)),
            _ => None,
        }
    }

    /// Waits until `/readyz` answers 200. Panics (with the last answer and the log) if the
    /// process exits or [`READY_TIMEOUT`] passes.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            self.assert_running();
            match self.get("/readyz") {
                Ok((200, _)) => return,
                Ok((code, body)) => last = format!("{code} {body}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{} not ready within {READY_TIMEOUT:?} (last /readyz: {last}); its log ends:\n{}",
            self.name,
            tail(&self.log, 40)
        );
    }

    /// SIGTERM, then waits for the exit: the status, or a panic (after a SIGKILL) if it takes
    /// longer than `timeout`.
    pub fn terminate(mut self, timeout: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!(
            "{} still running {timeout:?} after SIGTERM; its log ends:\n{}",
            self.name,
            tail(&self.log, 40)
        );
    }

    /// SIGKILL (a crash: no drain, no commit, nothing flushed) and reaps it.
    pub fn kill9(mut self) {
        // `Child::kill` sends SIGKILL on Unix.
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping the service");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`: (status code, body). The service's
/// endpoint answers with a Content-Length and closes, so reading to the end is the body.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("not HTTP: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((code, body.to_string()))
}

/// A scrape: each family's samples as (labels as written, value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(BTreeMap<String, Vec<(String, f64)>>);

impl Metrics {
    /// The sum of a family's samples over all its labels; 0 when absent (a counter that never
    /// moved may not be exported).
    pub fn sum(&self, family: &str) -> f64 {
        self.0
            .get(family)
            .map_or(0.0, |s| s.iter().map(|(_, v)| v).sum())
    }

    /// Whether the scrape has the family at all.
    /// Each series of `family` with a non-zero value: its labels and value (for messages).
    pub fn nonzero(&self, family: &str) -> Vec<(String, f64)> {
        self.0
            .get(family)
            .map(|series| series.iter().filter(|(_, v)| *v != 0.0).cloned().collect())
            .unwrap_or_default()
    }

    pub fn has(&self, family: &str) -> bool {
        self.0.contains_key(family)
    }
}

/// Parses the Prometheus text format: `name[{labels}] value [timestamp]` lines; comments and
/// blank lines skipped. Label values may hold spaces, braces and escaped quotes.
pub fn parse_metrics(text: &str) -> Metrics {
    let mut families: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(line.len());
        let (name, mut rest) = line.split_at(name_end);
        let mut labels = "";
        if rest.starts_with('{') {
            let close = label_block_end(rest)
                .unwrap_or_else(|| panic!("unterminated labels in metrics line {line:?}"));
            labels = &rest[1..close];
            rest = &rest[close + 1..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no value in metrics line {line:?}"));
        families
            .entry(name.to_string())
            .or_default()
            .push((labels.to_string(), value));
    }
    Metrics(families)
}

/// The index of the `}` closing the label block `s` starts with, outside quoted values.
fn label_block_end(s: &str) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// The generated traffic of `actions` actions, in memory with each line's key, and its truth.
pub fn generated(actions: u64, seed: u64) -> (Truth, Traffic) {
    generated_with(GenerateOptions {
        actions,
        seed,
        ..GenerateOptions::default()
    })
}

/// [`generated`], every order naming its shop, as a state split by pixel needs.
pub fn generated_naming_shops(actions: u64, seed: u64) -> (Truth, Traffic) {
    generated_with(GenerateOptions {
        actions,
        seed,
        every_order_names_its_shop: true,
        ..GenerateOptions::default()
    })
}

fn generated_with(opts: GenerateOptions) -> (Truth, Traffic) {
    let mut traffic = Traffic::default();
    let truth = generate(&opts, &mut traffic).expect("generating traffic");
    (truth, traffic)
}

/// Generated lines in their arrival order across the three inputs: the order the generator
/// writes them, and `onecount generate --kafka` publishes them.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    pub lines: Vec<(Input, Line)>,
}

impl TrafficSink for Traffic {
    fn browser(&mut self, line: Line) -> io::Result<()> {
        self.lines.push((Input::Browser, line));
        Ok(())
    }
    fn server(&mut self, line: Line) -> io::Result<()> {
        self.lines.push((Input::Server, line));
        Ok(())
    }
    fn orders(&mut self, line: Line) -> io::Result<()> {
        self.lines.push((Input::Orders, line));
        Ok(())
    }
}

impl Traffic {
    /// The three input files, each in arrival order.
    pub fn files(&self) -> VecSink {
        let mut files = VecSink::default();
        for (input, line) in &self.lines {
            let file = match input {
                Input::Browser => &mut files.browser,
                Input::Server => &mut files.server,
                Input::Orders => &mut files.orders,
            };
            file.push(line.clone());
        }
        files
    }
}

impl From<VecSink> for Traffic {
    fn from(files: VecSink) -> Traffic {
        let mut traffic = Traffic::default();
        for (input, lines) in [
            (Input::Browser, files.browser),
            (Input::Server, files.server),
            (Input::Orders, files.orders),
        ] {
            traffic.lines.extend(lines.into_iter().map(|l| (input, l)));
        }
        traffic
    }
}

/// Publishes `traffic` to the input topics in `chunks` slices with `pause` after each, from a
/// thread of its own, so traffic still flows while the test starts, kills and stops instances.
/// Slices follow the arrival order across the inputs, so the three advance together in event
/// time, as they would from live producers (slices of each input by its own share would not:
/// the orders input starts with a snapshot of historical rows and ends with refunds hours
/// later, and would lag the events by hours of event time). Join the handle for what was
/// published (it panics if a record was not acknowledged).
pub fn publish_gradually(
    setup: &Setup,
    traffic: Traffic,
    chunks: usize,
    pause: Duration,
) -> JoinHandle<Published> {
    let (kafka, topics) = (setup.test_kafka(), setup.topics.clone());
    std::thread::Builder::new()
        .name("test-publisher".into())
        .spawn(move || {
            let mut sink =
                KafkaSink::new(&kafka, &topics, PublishOptions::default()).expect("a producer");
            let chunks = chunks.max(1);
            let lines = traffic.lines;
            for i in 0..chunks {
                let slice = &lines[lines.len() * i / chunks..lines.len() * (i + 1) / chunks];
                for (input, line) in slice.iter().cloned() {
                    match input {
                        Input::Browser => sink.browser(line),
                        Input::Server => sink.server(line),
                        Input::Orders => sink.orders(line),
                    }
                    .expect("publishing a record");
                }
                std::thread::sleep(pause);
            }
            sink.finish().expect("every record acknowledged").records
        })
        .expect("spawning the publisher")
}

/// Publishes `traffic` at once (blocking until acknowledged).
pub fn publish_all(setup: &Setup, traffic: impl Into<Traffic>) -> Published {
    publish_gradually(setup, traffic.into(), 1, Duration::ZERO)
        .join()
        .expect("the publisher panicked")
}

/// Every output topic's records (or a replay's output files as records).
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub conversions: Vec<Record>,
    pub discrepancies: Vec<Record>,
    pub dead_letters: Vec<Record>,
    pub revenue_windows: Vec<Record>,
}

impl Outputs {
    /// The output files of `onecount replay --out DIR`, as the records the service would write:
    /// keyed by their `key` field (dead letters unkeyed), in file order.
    pub fn from_replay_dir(dir: &Path) -> Outputs {
        let read = |file: &str, keyed: bool| -> Vec<Record> {
            let text = std::fs::read_to_string(dir.join(file))
                .unwrap_or_else(|e| panic!("reading {file}: {e}"));
            text.lines()
                .enumerate()
                .map(|(i, line)| Record {
                    key: keyed.then(|| json(line)["key"].as_str().unwrap_or("").to_string()),
                    value: Some(line.to_string()),
                    partition: 0,
                    offset: i as i64,
                })
                .collect()
        };
        Outputs {
            conversions: read("conversions.jsonl", true),
            discrepancies: read("discrepancies.jsonl", true),
            dead_letters: read("dead_letters.jsonl", false),
            revenue_windows: read("revenue_windows.jsonl", true),
        }
    }

    /// Record counts, for messages.
    pub fn counts(&self) -> String {
        format!(
            "{} conversions, {} discrepancies, {} dead letters, {} revenue window versions",
            self.conversions.len(),
            self.discrepancies.len(),
            self.dead_letters.len(),
            self.revenue_windows.len()
        )
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("output is not JSON ({e}): {text}"))
}

/// The JSON value of a keyed output record, after checking that its Kafka key is its `key`
/// field; a mismatch or a null value is pushed to `diffs`.
fn keyed_value(topic: &str, r: &Record, diffs: &mut Vec<String>) -> Option<Value> {
    let Some(text) = r.value.as_deref() else {
        diffs.push(format!(
            "{topic} [{}]@{}: null value",
            r.partition, r.offset
        ));
        return None;
    };
    let v = json(text);
    let field = v["key"].as_str();
    if r.key.as_deref() != field {
        diffs.push(format!(
            "{topic} [{}]@{}: record key {:?} is not its key field {field:?}",
            r.partition, r.offset, r.key
        ));
    }
    Some(v)
}

/// Pushes at most a few examples of a kind of difference, then how many there were.
fn push_examples(diffs: &mut Vec<String>, what: &str, examples: Vec<String>) {
    if examples.is_empty() {
        return;
    }
    let n = examples.len();
    let shown: Vec<String> = examples.into_iter().take(3).collect();
    diffs.push(format!("{n} {what}, e.g. {}", shown.join("; ")));
}

/// Every way `outputs` differ from what `truth` says a correct run writes: conversions (count,
/// sources, no key twice within the dedup TTL: a key repeats only for an event_id reused after
/// its TTL, which the generator plans), discrepancies (count by kind, no key twice), dead
/// letters (count), and revenue (tracked and backend per currency, summed over the latest
/// version of each revenue window). Each record's Kafka key must be its `key` field. Empty
/// when they match.
pub fn truth_differences(truth: &Truth, outputs: &Outputs) -> Vec<String> {
    let mut diffs = Vec::new();
    let check = |what: &str, expected: u64, got: u64, diffs: &mut Vec<String>| {
        if expected != got {
            diffs.push(format!("{what}: expected {expected}, got {got}"));
        }
    };

    // Conversions.
    let mut times_by_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut sources: BTreeMap<String, u64> = BTreeMap::new();
    for r in &outputs.conversions {
        let Some(v) = keyed_value("conversions", r, &mut diffs) else {
            continue;
        };
        let key = v["key"].as_str().unwrap_or_default().to_string();
        let time = v["event_time"].as_i64().unwrap_or_default();
        times_by_key.entry(key).or_default().push(time);
        *sources
            .entry(v["sources"].as_str().unwrap_or("(none)").to_string())
            .or_default() += 1;
    }
    check(
        "conversions",
        truth.conversions,
        outputs.conversions.len() as u64,
        &mut diffs,
    );
    let mut twice = Vec::new();
    for (key, times) in &mut times_by_key {
        times.sort_unstable();
        for pair in times.windows(2) {
            if pair[1] - pair[0] < TTL_SECONDS {
                twice.push(format!("{key} (event times {} and {})", pair[0], pair[1]));
            }
        }
    }
    push_examples(
        &mut diffs,
        "conversion keys written twice within the TTL",
        twice,
    );
    let s = &truth.sources;
    for (name, expected) in [
        ("browser", s.browser),
        ("server", s.server),
        ("both", s.both),
    ] {
        let got = sources.remove(name).unwrap_or(0);
        check(&format!("sources.{name}"), expected, got, &mut diffs);
    }
    for (name, got) in sources {
        check(&format!("sources.{name}"), 0, got, &mut diffs);
    }

    // Discrepancies.
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut discrepancy_keys = BTreeSet::new();
    let mut repeated = Vec::new();
    for r in &outputs.discrepancies {
        let Some(v) = keyed_value("discrepancies", r, &mut diffs) else {
            continue;
        };
        *by_kind
            .entry(v["kind"].as_str().unwrap_or("(none)").to_string())
            .or_default() += 1;
        let key = v["key"].as_str().unwrap_or_default().to_string();
        if !discrepancy_keys.insert(key.clone()) {
            repeated.push(key);
        }
    }
    push_examples(&mut diffs, "discrepancy keys written twice", repeated);
    let kinds: BTreeSet<&String> = truth.discrepancies.keys().chain(by_kind.keys()).collect();
    for kind in kinds {
        let expected = truth.discrepancies.get(kind).copied().unwrap_or(0);
        let got = by_kind.get(kind).copied().unwrap_or(0);
        check(&format!("discrepancies.{kind}"), expected, got, &mut diffs);
    }

    // Dead letters.
    check(
        "dead_letters",
        truth.dead_letters,
        outputs.dead_letters.len() as u64,
        &mut diffs,
    );

    // Revenue: the latest version of each window is its value. Two records of one version
    // must be the same record (a re-emission after a crash), never two different values.
    let mut latest: BTreeMap<String, (u64, Value)> = BTreeMap::new();
    let mut conflicting = Vec::new();
    for r in &outputs.revenue_windows {
        let Some(v) = keyed_value("revenue_windows", r, &mut diffs) else {
            continue;
        };
        let key = v["key"].as_str().unwrap_or_default().to_string();
        let version = v["version"].as_u64().unwrap_or_default();
        match latest.get(&key) {
            Some((have, _)) if *have > version => {}
            Some((have, old)) if *have == version => {
                if *old != v {
                    conflicting.push(format!("{key} version {version}"));
                }
            }
            _ => {
                latest.insert(key, (version, v));
            }
        }
    }
    push_examples(
        &mut diffs,
        "revenue window versions written with two different values",
        conflicting,
    );
    let mut tracked: BTreeMap<String, Money> = BTreeMap::new();
    let mut backend: BTreeMap<String, Money> = BTreeMap::new();
    for (_, window) in latest.values() {
        let currency = window["currency"].as_str().unwrap_or_default().to_string();
        let money = |field: &str| -> Money {
            serde_json::from_value(window[field].clone()).unwrap_or_else(|e| {
                panic!("revenue window {field} is not an amount ({e}): {window}")
            })
        };
        tracked.entry(currency.clone()).or_default().0 += money("tracked_revenue").0;
        backend.entry(currency).or_default().0 += money("backend_revenue").0;
    }
    for (what, expected, got) in [
        ("tracked_revenue", &truth.tracked_revenue, &tracked),
        ("backend_revenue", &truth.backend_revenue, &backend),
    ] {
        let currencies: BTreeSet<&String> = expected.keys().chain(got.keys()).collect();
        for c in currencies {
            let e = expected.get(c).copied().unwrap_or_default();
            let g = got.get(c).copied().unwrap_or_default();
            if e != g {
                diffs.push(format!(
                    "{what}.{c}: expected {}, got {}",
                    e.to_f64(),
                    g.to_f64()
                ));
            }
        }
    }
    diffs
}

/// Whether an output holds more than the truth allows: outputs only grow, so waiting longer
/// cannot fix it.
fn overshoots(truth: &Truth, outputs: &Outputs) -> bool {
    outputs.conversions.len() as u64 > truth.conversions
        || outputs.discrepancies.len() as u64 > truth.discrepancies.values().sum::<u64>()
        || outputs.dead_letters.len() as u64 > truth.dead_letters
}

/// Which actions the outputs classify otherwise than a replay of the same traffic does: each
/// conversion key whose `sources` differ (or that only one side has), with its event time, and
/// each discrepancy key only one side has. For failure messages: it names the records to look
/// at, where the truth only gives counts.
pub fn differences_from_replay(traffic: &Traffic, outputs: &Outputs) -> Vec<String> {
    let lines = traffic.files();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input).expect("creating the replay input directory");
    for (file, lines) in [
        ("browser.jsonl", lines.browser),
        ("server.jsonl", lines.server),
        ("orders.jsonl", lines.orders),
    ] {
        let mut text = String::new();
        for line in &lines {
            text.push_str(line.value.as_deref().unwrap_or("null"));
            text.push('\n');
        }
        std::fs::write(input.join(file), text).expect("writing a replay input");
    }
    onecount::replay::replay(
        &onecount::config::Config::default(),
        &onecount::replay::ReplayInputs::in_dir(&input),
        &output,
        None,
    )
    .expect("replaying the generated traffic");
    let replayed = Outputs::from_replay_dir(&output);
    let by_key = |records: &[Record]| -> BTreeMap<String, Vec<Value>> {
        let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for r in records {
            if let Some(v) = r.value.as_deref() {
                let v = json(v);
                let key = v["key"].as_str().unwrap_or_default();
                // A discrepancy about a record ends with where it was read
                // (`/partition:offset:index`), which differs between files and topics.
                let key = match key.rsplit_once('/') {
                    Some((head, tail))
                        if tail.split(':').count() == 3
                            && tail.split(':').all(|n| n.parse::<i64>().is_ok()) =>
                    {
                        head
                    }
                    _ => key,
                };
                map.entry(key.to_string()).or_default().push(v);
            }
        }
        map
    };
    let describe = |v: Option<&Vec<Value>>| -> String {
        match v {
            None => "absent".to_string(),
            Some(vs) => vs
                .iter()
                .map(|v| format!("sources={} event_time={}", v["sources"], v["event_time"]))
                .collect::<Vec<_>>()
                .join(" + "),
        }
    };
    let mut diffs = Vec::new();
    // A copy without event_id is keyed by where it was read (`~source:partition:offset`),
    // which differs between files and topics: those are compared by count, the rest by key.
    let keys = |what: &str,
                want: &BTreeMap<String, Vec<Value>>,
                got: &BTreeMap<String, Vec<Value>>,
                diffs: &mut Vec<String>|
     -> BTreeSet<String> {
        let unkeyed =
            |m: &BTreeMap<String, Vec<Value>>| m.keys().filter(|k| k.contains("/~")).count();
        if unkeyed(want) != unkeyed(got) {
            diffs.push(format!(
                "{what} without event_id: replay {}, service {}",
                unkeyed(want),
                unkeyed(got)
            ));
        }
        want.keys()
            .chain(got.keys())
            .filter(|k| !k.contains("/~"))
            .cloned()
            .collect()
    };
    let (want, got) = (by_key(&replayed.conversions), by_key(&outputs.conversions));
    let keyed = keys("conversions", &want, &got, &mut diffs);
    for key in &keyed {
        let (w, g) = (want.get(key), got.get(key));
        let sources = |v: Option<&Vec<Value>>| {
            v.map(|vs| vs.iter().map(|v| v["sources"].clone()).collect::<Vec<_>>())
        };
        if sources(w) != sources(g) {
            diffs.push(format!(
                "conversion {key}: replay {}, service {}",
                describe(w),
                describe(g)
            ));
        }
    }
    let (want, got) = (
        by_key(&replayed.discrepancies),
        by_key(&outputs.discrepancies),
    );
    let keyed = keys("discrepancies about copies", &want, &got, &mut diffs);
    for key in &keyed {
        let count = |m: &BTreeMap<String, Vec<Value>>| m.get(key).map_or(0, Vec::len);
        if count(&want) != count(&got) {
            diffs.push(format!(
                "discrepancy {key}: replay {}, service {}",
                count(&want),
                count(&got)
            ));
        }
    }
    diffs
}
