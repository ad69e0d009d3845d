//! The configuration (`onecount.toml` plus `ONECOUNT_*` environment variables): one strict struct
//! per table, defaults in one place.
//!
//! Owns: parsing and validating the file, the environment overlay ([`ENV_SETTINGS`], applied by
//! [`Config::load_with_env`]), the defaults, and which Kafka properties are secrets
//! ([`is_secret_property`]). Unknown keys are errors (a typo must not silently fall back to a
//! default), durations are strings with a unit (`"48h"`), and cross-field checks run once in
//! [`Config::validate`], naming the field at fault. Must not: talk to Kafka or print a secret:
//! `Debug` and `Display` of a [`Config`] redact secret Kafka properties. `docs/CONFIG.md` is the
//! user's copy of what this file says; keep them together.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::Input;

/// The whole configuration. Every table is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The dedup and reconciliation rules (`[engine]`).
    pub engine: EngineConfig,
    /// How order rows are read (`[orders]`).
    pub orders: OrdersConfig,
    /// The Kafka cluster and client settings (`[kafka]`).
    pub kafka: KafkaConfig,
    /// Topic names and the settings of the topics onecount creates (`[topics]`).
    pub topics: TopicsConfig,
    /// The HTTP endpoint for metrics and health (`[http]`).
    pub http: HttpConfig,
    /// How `onecount run` checkpoints and shuts down (`[service]`).
    pub service: ServiceConfig,
    /// Log format and level (`[log]`).
    pub log: LogConfig,
}

/// The dedup and reconciliation rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// How long a dedup key lives after its action was first seen, in event time. A copy within
    /// it is a duplicate; after it, a new action. TikTok and Meta use 48 hours.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub ttl: Duration,
    /// Browser and server copies whose event times are at most this far apart are merged into
    /// one conversion. 0 emits the first copy at once. TikTok uses 5 minutes.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub merge_window: Duration,
    /// How far behind the highest event time seen on an input its watermark trails: the arrival
    /// spread the engine waits for before releasing a merge or a reconciliation.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub allowed_lateness: Duration,
    /// How long, in event time, a purchase waits for its order and an order for its purchase
    /// before the pair is reported unmatched.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub order_wait: Duration,
    /// Service only: when no input at all arrives for this long (wall clock, the one place it
    /// enters), the inputs are declared idle and pending timers fire, so the last actions come
    /// out without new traffic. A copy arriving after that is late by the core's rules.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    /// Largest difference between a conversion's value and its order's total that is not a
    /// `value_mismatch`, absolute, in the currency's major unit.
    pub value_tolerance: f64,
    /// Consent assumed for a copy that does not state it.
    pub default_consent: ConsentDefault,
    /// Event names that are purchases: deduplicated per order id and reconciled with orders.
    pub purchase_events: Vec<String>,
    /// Pair copies without an event_id on the `_ttp` cookie (TikTok's fallback), per pixel and
    /// event name, instead of emitting each as its own action.
    pub pair_on_ttp: bool,
    /// Drop the original bytes from dead letters (keep reason and position only).
    pub redact_dead_letters: bool,
    /// Records larger than this are dead-lettered unread.
    pub max_record_bytes: usize,
}

/// The largest `engine.max_record_bytes` accepted. A parsed event keeps its text in one buffer
/// addressed by 32-bit offsets (`model::Event`); even a record whose every field grows when
/// read (a number id written out in full) stays far below 4 GiB at this size.
const MAX_RECORD_BYTES_CAP: usize = 64 << 20;

/// Consent assumed for a copy that does not state it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDefault {
    Granted,
    Denied,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ttl: Duration::from_secs(48 * 3600),
            merge_window: Duration::from_secs(5 * 60),
            allowed_lateness: Duration::from_secs(10 * 60),
            order_wait: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(30),
            value_tolerance: 0.01,
            default_consent: ConsentDefault::Granted,
            purchase_events: ["CompletePayment", "PlaceAnOrder", "Purchase"]
                .map(String::from)
                .to_vec(),
            pair_on_ttp: false,
            redact_dead_letters: false,
            max_record_bytes: 1024 * 1024,
        }
    }
}

/// How order rows are read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersConfig {
    /// Column names in the order rows.
    pub fields: OrderFields,
    /// Shop -> pixel code, for multi-brand setups where the `shop` column names the store.
    pub shops: BTreeMap<String, String>,
    /// Pixel that orders are attributed to when neither a shop mapping nor a matched conversion
    /// names one.
    pub default_pixel: Option<String>,
    /// Decimal scale of `total` when Debezium sends it in `precise` mode (base64 unscaled
    /// integer) without its schema (`schemas.enable=false`).
    pub total_scale: Option<u32>,
    /// Statuses (lower case) under which an order does not count as revenue.
    pub non_revenue_statuses: Vec<String>,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        OrdersConfig {
            fields: OrderFields::default(),
            shops: BTreeMap::new(),
            default_pixel: None,
            total_scale: None,
            non_revenue_statuses: ["cancelled", "canceled", "refunded", "voided", "failed"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Column names of the order table, e.g. `order_id = "id"`, `total = "total_price"` (Shopify).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrderFields {
    /// The order's id: the join key with purchase conversions.
    pub order_id: String,
    /// The order's total, in the currency's major unit.
    pub total: String,
    /// ISO 4217 currency code of the total.
    pub currency: String,
    /// The order's status (see `orders.non_revenue_statuses`).
    pub status: String,
    /// When the order was placed.
    pub created_at: String,
    /// When the row last changed: the orders input's event time.
    pub updated_at: String,
    /// The store, mapped to a pixel by `[orders.shops]`.
    pub shop: String,
}

impl Default for OrderFields {
    fn default() -> Self {
        OrderFields {
            order_id: "order_id".into(),
            total: "total".into(),
            currency: "currency".into(),
            status: "status".into(),
            created_at: "created_at".into(),
            updated_at: "updated_at".into(),
            shop: "shop".into(),
        }
    }
}

/// The Kafka cluster and client settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` separated by commas (librdkafka `bootstrap.servers`).
    pub brokers: String,
    /// The service's consumer group (librdkafka `group.id`). Instances with the same group id
    /// split the input partitions between them.
    pub group_id: String,
    /// Any librdkafka property, passed through as is to every client onecount makes (SASL, SSL,
    /// timeouts), over onecount's own defaults. Values may be strings, integers or booleans.
    /// Secrets among them are never printed.
    pub properties: KafkaProperties,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "onecount".into(),
            properties: KafkaProperties::default(),
        }
    }
}

/// librdkafka properties, name -> value. `Debug` and [`KafkaProperties::redacted`] hide the
/// values of secrets ([`is_secret_property`]); [`KafkaProperties::iter`] gives the real ones, for
/// the client config only.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct KafkaProperties(BTreeMap<String, String>);

/// What a redacted secret prints as.
pub const REDACTED: &str = "<redacted>";

/// Whether the value of a librdkafka property must never be logged or printed: a name that
/// contains `password` or `secret` (`sasl.password`, `ssl.key.password`,
/// `ssl.keystore.password`, `sasl.oauthbearer.client.secret`), an inline private key
/// (`ssl.key.pem`) or the OAUTHBEARER config string, which may carry credentials.
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("password")
        || name.contains("secret")
        || name == "ssl.key.pem"
        || name == "sasl.oauthbearer.config"
}

impl KafkaProperties {
    /// Name -> real value, in name order. For building a client config only: never print these.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Name -> value with every secret replaced by [`REDACTED`]: safe to print.
    pub fn redacted(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_property(k) {
                    REDACTED.to_string()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

impl<'de> Deserialize<'de> for KafkaProperties {
    /// librdkafka takes every value as a string; a TOML integer, float or boolean is accepted
    /// and written as librdkafka would read it (`6000`, `true`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a string, a number or a boolean")]
        enum Value {
            Str(String),
            Int(i64),
            Float(f64),
            Bool(bool),
        }
        let map = BTreeMap::<String, Value>::deserialize(d)?;
        Ok(KafkaProperties(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Str(s) => s,
                        Value::Int(i) => i.to_string(),
                        Value::Float(x) => x.to_string(),
                        Value::Bool(b) => b.to_string(),
                    };
                    (k, v)
                })
                .collect(),
        ))
    }
}

/// Properties onecount sets from its own keys: setting them in `[kafka.properties]` is an error
/// naming the key to use instead.
const OWNED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.brokers"),
    ("metadata.broker.list", "kafka.brokers"),
    ("group.id", "kafka.group_id"),
];

/// Topic names, and the settings of the topics onecount creates when they are missing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Input: TikTok Pixel events as the first-party collector captures them.
    pub browser: String,
    /// Input: Events API bodies, as the servers send them.
    pub server: String,
    /// Input: order rows or Debezium change events, keyed by order id.
    pub orders: String,
    /// Output: one conversion per action, keyed by its dedup key.
    pub conversions: String,
    /// Output: discrepancy records.
    pub discrepancies: String,
    /// Output: records that could not be read, with the reason.
    pub dead_letters: String,
    /// Output: per-hour tracked and backend revenue.
    pub revenue_windows: String,
    /// Partitions of the input and output topics onecount creates when they are missing (the
    /// service creates all seven, `generate --kafka` the inputs); the internal `<group_id>-log`
    /// and `<group_id>-changelog` get `service.state_partitions` instead. Existing topics are
    /// never altered. The instances of one group split the inputs' partitions, so choose it up
    /// front.
    pub partitions: u32,
    /// Replication factor of every topic onecount creates; absent: the broker's
    /// `default.replication.factor`.
    pub replication_factor: Option<u16>,
    /// `retention.ms` of the internal repartition topics onecount creates: how long a record
    /// routed by its join key stays readable, so it must cover the longest outage the service
    /// should survive. Changelog topics are compacted and keep every live key whatever this is.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub retention: Duration,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            browser: "tiktok.pixel".into(),
            server: "tiktok.events_api".into(),
            orders: "orders".into(),
            conversions: "onecount.conversions".into(),
            discrepancies: "onecount.discrepancies".into(),
            dead_letters: "onecount.dead_letters".into(),
            revenue_windows: "onecount.revenue_windows".into(),
            partitions: 6,
            replication_factor: None,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl TopicsConfig {
    /// The topic of `input`.
    pub fn input(&self, input: Input) -> &str {
        self.inputs()[input.index()].1
    }

    /// `(field, topic name)` of the three inputs, in the order of [`Input::ALL`].
    pub fn inputs(&self) -> [(&'static str, &str); 3] {
        [
            ("topics.browser", self.browser.as_str()),
            ("topics.server", self.server.as_str()),
            ("topics.orders", self.orders.as_str()),
        ]
    }

    /// `(field, topic name)` of the four outputs.
    pub fn outputs(&self) -> [(&'static str, &str); 4] {
        [
            ("topics.conversions", self.conversions.as_str()),
            ("topics.discrepancies", self.discrepancies.as_str()),
            ("topics.dead_letters", self.dead_letters.as_str()),
            ("topics.revenue_windows", self.revenue_windows.as_str()),
        ]
    }
}

/// The HTTP endpoint (Prometheus metrics, health).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port to listen on, e.g. `"0.0.0.0:9464"` to be scraped from other hosts.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// How the Kafka service checkpoints, bounds its queues and stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// How often state is checkpointed to the changelog and input offsets are committed. A
    /// crash replays at most this much input (its outputs are recognised and not written
    /// twice); shorter costs more transactions.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub commit_interval: Duration,
    /// On SIGTERM or SIGINT: how long to finish, flush, checkpoint and commit before exiting
    /// anyway (non-zero). Keep it below the orchestrator's kill grace period.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub shutdown_timeout: Duration,
    /// Records produced and not yet acknowledged, per producer, before reading pauses: the
    /// bound on memory while the broker is slow or unreachable.
    pub max_in_flight: usize,
    /// Partitions of the internal log and changelog: the state is split by pixel over this
    /// many state tasks, which the instances of the group share. Fixed for the life of a
    /// group (a pixel's state lives in its partition); more than 1 needs
    /// `orders.default_pixel`, so that every order change reaches one pixel's partition.
    pub state_partitions: u32,
    /// Internal-log items a state task's merge may hold back while it waits for an input
    /// partition behind them in event time (they hold the records' bytes: about 1 KB each).
    /// Past it the wait is given up: the others go ahead, and outcomes may differ from
    /// `replay`'s (counted in `onecount_merge_waits_given_up_total`).
    pub merge_queue_limit: usize,
}

/// The most state partitions a group may have (each is a changelog partition, a transactional
/// producer and an engine on some instance).
pub const MAX_STATE_PARTITIONS: u32 = 1024;

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            commit_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            max_in_flight: 10_000,
            state_partitions: 1,
            merge_queue_limit: 100_000,
        }
    }
}

/// How logs are written (always to standard error).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` (one readable line per event) or `json` (one JSON object per line, for log
    /// pipelines).
    pub format: LogFormat,
    /// A `tracing` filter: a level (`info`, `debug`) or directives (`onecount=debug,rdkafka=warn`).
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Human,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read (the I/O error is part of the message, not a `source`, so that
    /// an error chain does not print it twice).
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    /// The file is not TOML, or a key or value does not fit (`field` is the dotted path).
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// A value does not fit its key: `field` is the dotted path, `origin` the file or the
    /// environment variable it came from.
    #[error("{field}: {message} (from {origin})")]
    Field {
        field: String,
        origin: String,
        message: String,
    },
    /// An `ONECOUNT_*` variable that is not a setting, or whose value cannot be read.
    #[error("{var}: {message}")]
    Env { var: String, message: String },
    /// A cross-field check failed.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Every environment variable starts with this.
pub const ENV_PREFIX: &str = "ONECOUNT_";

/// `ONECOUNT_KAFKA_PROPERTY_<NAME>` sets the librdkafka property `<name>`: lower-cased, `_` read
/// as `.` (`ONECOUNT_KAFKA_PROPERTY_SASL_MECHANISM` -> `sasl.mechanism`).
pub const ENV_PROPERTY_PREFIX: &str = "ONECOUNT_KAFKA_PROPERTY_";

/// How an environment variable's text becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    /// Taken as is (names, addresses, durations such as `48h`).
    Text,
    /// A whole number.
    Integer,
    /// A decimal number.
    Float,
    /// `true` or `false`.
    Bool,
    /// Items separated by commas, each trimmed; empty text is an empty list.
    List,
    /// `key=value` pairs separated by commas, each side trimmed.
    Map,
}

/// Every setting that can come from the environment, by its dotted path. Its variable is
/// `ONECOUNT_` + the path upper-cased with `.` as `_` ([`env_var_name`]): `engine.merge_window`
/// is `ONECOUNT_ENGINE_MERGE_WINDOW`. A test checks this list against the structs both ways.
pub const ENV_SETTINGS: &[(&str, EnvKind)] = &[
    ("engine.ttl", EnvKind::Text),
    ("engine.merge_window", EnvKind::Text),
    ("engine.allowed_lateness", EnvKind::Text),
    ("engine.order_wait", EnvKind::Text),
    ("engine.idle_timeout", EnvKind::Text),
    ("engine.value_tolerance", EnvKind::Float),
    ("engine.default_consent", EnvKind::Text),
    ("engine.purchase_events", EnvKind::List),
    ("engine.pair_on_ttp", EnvKind::Bool),
    ("engine.redact_dead_letters", EnvKind::Bool),
    ("engine.max_record_bytes", EnvKind::Integer),
    ("orders.fields.order_id", EnvKind::Text),
    ("orders.fields.total", EnvKind::Text),
    ("orders.fields.currency", EnvKind::Text),
    ("orders.fields.status", EnvKind::Text),
    ("orders.fields.created_at", EnvKind::Text),
    ("orders.fields.updated_at", EnvKind::Text),
    ("orders.fields.shop", EnvKind::Text),
    ("orders.shops", EnvKind::Map),
    ("orders.default_pixel", EnvKind::Text),
    ("orders.total_scale", EnvKind::Integer),
    ("orders.non_revenue_statuses", EnvKind::List),
    ("kafka.brokers", EnvKind::Text),
    ("kafka.group_id", EnvKind::Text),
    ("topics.browser", EnvKind::Text),
    ("topics.server", EnvKind::Text),
    ("topics.orders", EnvKind::Text),
    ("topics.conversions", EnvKind::Text),
    ("topics.discrepancies", EnvKind::Text),
    ("topics.dead_letters", EnvKind::Text),
    ("topics.revenue_windows", EnvKind::Text),
    ("topics.partitions", EnvKind::Integer),
    ("topics.replication_factor", EnvKind::Integer),
    ("topics.retention", EnvKind::Text),
    ("http.listen", EnvKind::Text),
    ("service.commit_interval", EnvKind::Text),
    ("service.shutdown_timeout", EnvKind::Text),
    ("service.max_in_flight", EnvKind::Integer),
    ("service.state_partitions", EnvKind::Integer),
    ("service.merge_queue_limit", EnvKind::Integer),
    ("log.format", EnvKind::Text),
    ("log.level", EnvKind::Text),
];

/// The tables a `ONECOUNT_<TABLE>_...` variable may address. A variable under one of them that
/// is not a setting is an error (a typo must not be ignored); other `ONECOUNT_*` variables
/// (`ONECOUNT_TEST_KAFKA`, the scripts' `ONECOUNT_CACHE`...) are not configuration and are left
/// alone.
pub const ENV_TABLES: &[&str] = &[
    "ENGINE", "ORDERS", "KAFKA", "TOPICS", "HTTP", "SERVICE", "LOG",
];

/// The environment variable of a setting: `engine.ttl` -> `ONECOUNT_ENGINE_TTL`.
pub fn env_var_name(path: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        path.to_ascii_uppercase().replace('.', "_")
    )
}

/// The librdkafka property an `ONECOUNT_KAFKA_PROPERTY_<NAME>` variable sets, if `var` is one.
pub fn env_property_name(var: &str) -> Option<String> {
    var.strip_prefix(ENV_PROPERTY_PREFIX)
        .map(|name| name.to_ascii_lowercase().replace('_', "."))
}

/// Where each overridden setting came from: dotted path -> environment variable.
type EnvOrigins = BTreeMap<String, String>;

/// Applies the `ONECOUNT_*` variables among `vars` to `doc` (the file's table), replacing what
/// the file says. Returns which paths were set and by which variable.
fn overlay_env(
    doc: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<EnvOrigins, ConfigError> {
    let mut origins = EnvOrigins::new();
    // Sorted, so that an error names the same variable whatever the environment's order.
    let vars: BTreeMap<String, String> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    for (var, text) in vars {
        let env_err = |message: String| ConfigError::Env {
            var: var.to_string(),
            message,
        };
        if let Some(name) = env_property_name(&var) {
            if name.is_empty() || name.starts_with('.') || name.ends_with('.') {
                return Err(env_err(format!(
                    "no property name after {ENV_PROPERTY_PREFIX}: write e.g. {ENV_PROPERTY_PREFIX}SASL_MECHANISM"
                )));
            }
            let path = ["kafka", "properties", name.as_str()];
            insert_path(doc, &path, toml::Value::String(text)).map_err(env_err)?;
            origins.insert(format!("kafka.properties.{name}"), var.clone());
            continue;
        }
        let setting = ENV_SETTINGS
            .iter()
            .find(|(path, _)| env_var_name(path) == var);
        let Some(&(path, kind)) = setting else {
            let rest = &var[ENV_PREFIX.len()..];
            if ENV_TABLES
                .iter()
                .any(|t| rest.strip_prefix(t).is_some_and(|r| r.starts_with('_')))
            {
                return Err(env_err(format!(
                    "not a onecount setting (see docs/CONFIG.md; librdkafka properties are {ENV_PROPERTY_PREFIX}<NAME>)"
                )));
            }
            continue;
        };
        let value = env_value(&text, kind).map_err(env_err)?;
        let keys: Vec<&str> = path.split('.').collect();
        insert_path(doc, &keys, value).map_err(env_err)?;
        origins.insert(path.to_string(), var.clone());
    }
    Ok(origins)
}

fn env_value(text: &str, kind: EnvKind) -> Result<toml::Value, String> {
    Ok(match kind {
        EnvKind::Text => toml::Value::String(text.to_string()),
        EnvKind::Integer => toml::Value::Integer(
            text.trim()
                .parse()
                .map_err(|_| format!("{text:?} is not a whole number"))?,
        ),
        EnvKind::Float => toml::Value::Float(
            text.trim()
                .parse()
                .map_err(|_| format!("{text:?} is not a number"))?,
        ),
        EnvKind::Bool => toml::Value::Boolean(match text.trim() {
            "true" => true,
            "false" => false,
            _ => return Err(format!("{text:?} is not true or false")),
        }),
        EnvKind::List => toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        EnvKind::Map => {
            let mut table = toml::Table::new();
            for pair in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{pair:?} is not key=value"))?;
                table.insert(k.trim().to_string(), toml::Value::String(v.trim().into()));
            }
            toml::Value::Table(table)
        }
    })
}

/// Sets `doc[keys[0]][keys[1]]... = value`, creating missing tables.
fn insert_path(doc: &mut toml::Table, keys: &[&str], value: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().expect("a setting has a path");
    let mut table = doc;
    for (i, key) in parents.iter().enumerate() {
        let entry = table
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| {
            format!(
                "the file's `{}` is not a table, so it cannot take this setting",
                keys[..=i].join(".")
            )
        })?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

impl Config {
    /// Reads, parses and validates a config file (the file alone: see
    /// [`Config::load_with_env`] for what the service and the CLI use).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        Config::parse(&text).map_err(|e| with_path(e, path))
    }

    /// The file (if any) with the process's `ONECOUNT_*` environment variables over it,
    /// validated. Without a file, the defaults with the environment over them.
    pub fn load_with_env(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => read(p)?,
            None => String::new(),
        };
        let origin = path.map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
        Config::parse_with_env(&text, &origin, std::env::vars()).map_err(|e| match path {
            Some(p) => with_path(e, p),
            None => e,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "config".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses config text (`origin` names it in errors: a file name), applies the `ONECOUNT_*`
    /// variables among `vars` over it, and validates the result. An error names the field, and
    /// the variable when the value came from one.
    pub fn parse_with_env(
        text: &str,
        origin: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut doc: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: "config".into(),
                    message: e.to_string(),
                })?;
        let origins = overlay_env(&mut doc, vars)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
                let field = e.path().to_string();
                let origin = origins
                    .iter()
                    .find(|(path, _)| field == **path || field.starts_with(&format!("{path}.")))
                    .map_or_else(|| origin.to_string(), |(_, var)| var.clone());
                ConfigError::Field {
                    field,
                    origin,
                    message: e.into_inner().message().trim().to_string(),
                }
            })?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { field, message } => match origins.get(field) {
                Some(var) => ConfigError::Invalid {
                    field,
                    message: format!("{message} (value from {var})"),
                },
                None => ConfigError::Invalid { field, message },
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Cross-field checks, once at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = &self.engine;
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_string(),
            })
        };
        if e.ttl.is_zero() {
            return invalid("engine.ttl", "must be greater than 0");
        }
        if e.merge_window >= e.ttl {
            return invalid("engine.merge_window", "must be shorter than engine.ttl");
        }
        if e.order_wait >= e.ttl {
            return invalid("engine.order_wait", "must be shorter than engine.ttl");
        }
        if e.allowed_lateness >= e.ttl {
            return invalid("engine.allowed_lateness", "must be shorter than engine.ttl");
        }
        if e.idle_timeout.is_zero() {
            return invalid("engine.idle_timeout", "must be greater than 0");
        }
        if !(e.value_tolerance.is_finite() && e.value_tolerance >= 0.0) {
            return invalid("engine.value_tolerance", "must be a finite number >= 0");
        }
        if e.max_record_bytes == 0 || e.max_record_bytes > MAX_RECORD_BYTES_CAP {
            return invalid(
                "engine.max_record_bytes",
                "must be greater than 0 and at most 67108864 (64 MiB)",
            );
        }
        if e.purchase_events.iter().any(|name| name.trim().is_empty()) {
            return invalid("engine.purchase_events", "names must not be empty");
        }
        let s = &self.service;
        if s.commit_interval.is_zero() {
            return invalid("service.commit_interval", "must be greater than 0");
        }
        if s.shutdown_timeout.is_zero() {
            return invalid("service.shutdown_timeout", "must be greater than 0");
        }
        if s.max_in_flight == 0 {
            return invalid("service.max_in_flight", "must be greater than 0");
        }
        if s.merge_queue_limit == 0 {
            return invalid("service.merge_queue_limit", "must be greater than 0");
        }
        if s.state_partitions == 0 || s.state_partitions > MAX_STATE_PARTITIONS {
            return invalid(
                "service.state_partitions",
                &format!("must be between 1 and {MAX_STATE_PARTITIONS}"),
            );
        }
        if s.state_partitions > 1 && self.orders.default_pixel.is_none() {
            return invalid(
                "service.state_partitions",
                "more than 1 needs orders.default_pixel: the state is split by pixel, and an \
                 order change whose shop is not in orders.shops must still reach one pixel's \
                 partition",
            );
        }
        if let Err(e) = self.log.level.parse::<tracing_subscriber::EnvFilter>() {
            return invalid("log.level", &format!("not a tracing filter: {e}"));
        }
        self.validate_kafka()?;
        self.validate_topics()
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        if k.brokers.trim().is_empty() {
            return invalid("kafka.brokers", "must name at least one host:port".into());
        }
        if let Some(bad) = k
            .brokers
            .split(',')
            .map(str::trim)
            .find(|b| b.is_empty() || b.contains(char::is_whitespace))
        {
            return invalid(
                "kafka.brokers",
                format!("{bad:?} is not a host:port (write \"host1:9092,host2:9092\")"),
            );
        }
        if k.group_id.trim().is_empty() {
            return invalid("kafka.group_id", "must not be empty".into());
        }
        for (name, _) in k.properties.iter() {
            if name.trim().is_empty() || name.contains(char::is_whitespace) {
                return invalid(
                    "kafka.properties",
                    format!("{name:?} is not a property name"),
                );
            }
            if let Some((_, instead)) = OWNED_PROPERTIES.iter().find(|(p, _)| *p == name) {
                return invalid(
                    "kafka.properties",
                    format!("\"{name}\" comes from {instead}: set that instead"),
                );
            }
        }
        Ok(())
    }

    fn validate_topics(&self) -> Result<(), ConfigError> {
        let t = &self.topics;
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        let mut seen: BTreeMap<&str, &'static str> = BTreeMap::new();
        for (field, name) in t.inputs().into_iter().chain(t.outputs()) {
            if let Err(message) = check_topic_name(name) {
                return invalid(field, message);
            }
            if let Some(other) = seen.insert(name, field) {
                return invalid(
                    field,
                    format!("{name:?} is also {other}: every topic must differ"),
                );
            }
        }
        if t.partitions == 0 || t.partitions > i32::MAX as u32 {
            return invalid(
                "topics.partitions",
                "must be between 1 and 2147483647".into(),
            );
        }
        if let Some(rf) = t.replication_factor {
            if rf == 0 || rf > i16::MAX as u16 {
                return invalid(
                    "topics.replication_factor",
                    "must be between 1 and 32767 (leave it out for the broker's default)".into(),
                );
            }
        }
        if t.retention.is_zero() {
            return invalid("topics.retention", "must be greater than 0".into());
        }
        Ok(())
    }

    /// Every setting as TOML, with secret Kafka properties replaced by [`REDACTED`]: safe to
    /// print or log (`check-config` prints it).
    pub fn redacted_toml(&self) -> String {
        let mut value = toml::Value::try_from(self).expect("a Config always serializes");
        if let Some(props) = value
            .get_mut("kafka")
            .and_then(|k| k.get_mut("properties"))
            .and_then(toml::Value::as_table_mut)
        {
            for (name, v) in props.iter_mut() {
                if is_secret_property(name) {
                    *v = toml::Value::String(REDACTED.into());
                }
            }
        }
        toml::to_string_pretty(&value).expect("a TOML value always prints")
    }

    /// The paths of all environment settings the process sets (for a summary: which values did
    /// not come from the file). Property variables are listed as `kafka.properties.<name>`.
    pub fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> BTreeSet<String> {
        vars.into_iter()
            .filter_map(|(var, _)| {
                if let Some(name) = env_property_name(&var) {
                    return Some(format!("kafka.properties.{name}"));
                }
                ENV_SETTINGS
                    .iter()
                    .find(|(path, _)| env_var_name(path) == var)
                    .map(|(path, _)| path.to_string())
            })
            .collect()
    }
}

/// Redacted: see [`Config::redacted_toml`].
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted_toml())
    }
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!("{name:?}: a topic name has 1 to 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid topic name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{name:?}: a topic name may only hold ASCII letters, digits, '.', '_' and '-', not {c:?}"
        ));
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.display().to_string(),
        error,
    })
}

/// Names the file in a parse error.
fn with_path(e: ConfigError, path: &Path) -> ConfigError {
    match e {
        ConfigError::Parse { message, .. } => ConfigError::Parse {
            path: path.display().to_string(),
            message,
        },
        other => other,
    }
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid address {text:?}; write an IP address and a port, e.g. \"127.0.0.1:9464\" or \"[::]:9464\""
        ))
    })
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write a number with a unit, e.g. \"48h\", \"5m\", \"30s\""
        ))
    })
}

/// The largest unit that says the duration exactly: `"48h"`, `"5m"`, `"30s"`, `"250ms"`.
fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{ms}ms")
    } else {
        humantime::format_duration(d).to_string()
    }
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_input_names_its_own_topic() {
        let t = TopicsConfig::default();
        for (input, (field, topic)) in Input::ALL.into_iter().zip(t.inputs()) {
            assert_eq!(field, format!("topics.{}", input.as_str()));
            assert_eq!(t.input(input), topic);
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn with_env(text: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, "test.toml", env(pairs))
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.engine.ttl, Duration::from_secs(172_800));
        assert_eq!(c.engine.merge_window, Duration::from_secs(300));
        assert_eq!(c.engine.order_wait, Duration::from_secs(3600));
        assert_eq!(c.engine.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.orders.fields.order_id, "order_id");
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.kafka.group_id, "onecount");
        assert!(c.kafka.properties.is_empty());
        assert_eq!(c.topics.browser, "tiktok.pixel");
        assert_eq!(c.topics.server, "tiktok.events_api");
        assert_eq!(c.topics.orders, "orders");
        assert_eq!(c.topics.conversions, "onecount.conversions");
        assert_eq!(c.topics.discrepancies, "onecount.discrepancies");
        assert_eq!(c.topics.dead_letters, "onecount.dead_letters");
        assert_eq!(c.topics.revenue_windows, "onecount.revenue_windows");
        assert_eq!(c.topics.partitions, 6);
        assert_eq!(c.topics.replication_factor, None);
        assert_eq!(c.topics.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9464");
    }

    #[test]
    fn the_issues_example_file_parses() {
        let text = r#"
[kafka]
brokers = "127.0.0.1:9092"
group_id = "onecount"
[kafka.properties]
"session.timeout.ms" = "6000"
[topics]
browser = "tiktok.pixel"
server = "tiktok.events_api"
orders = "orders"
conversions = "onecount.conversions"
discrepancies = "onecount.discrepancies"
dead_letters = "onecount.dead_letters"
revenue_windows = "onecount.revenue_windows"
[engine]
ttl = "48h"
merge_window = "5m"
order_wait = "1h"
idle_timeout = "30s"
[http]
listen = "127.0.0.1:9464"
"#;
        let c = Config::parse(text).unwrap();
        assert_eq!(c.kafka.properties.get("session.timeout.ms"), Some("6000"));
        assert_eq!(
            with_env(text, &[]).unwrap().kafka.properties.len(),
            c.kafka.properties.len()
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = Config::parse("[engine]\nttll = \"1h\"\n").unwrap_err();
        assert!(err.to_string().contains("ttll"), "{err}");
        for table in ["kafka", "topics", "http"] {
            let err = with_env(&format!("[{table}]\nnope = 1\n"), &[]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("nope") && text.contains(table), "{text}");
        }
    }

    #[test]
    fn duration_without_unit_is_rejected_with_an_example() {
        let err = Config::parse("[engine]\nttl = \"48\"\n").unwrap_err();
        assert!(err.to_string().contains("48h"), "{err}");
    }

    #[test]
    fn merge_window_longer_than_ttl_names_the_field() {
        let err = Config::parse("[engine]\nttl = \"1h\"\nmerge_window = \"2h\"\n").unwrap_err();
        assert!(err.to_string().starts_with("engine.merge_window"), "{err}");
    }

    #[test]
    fn order_field_names_are_configurable() {
        let c =
            Config::parse("[orders.fields]\norder_id = \"id\"\ntotal = \"total_price\"\n").unwrap();
        assert_eq!(c.orders.fields.order_id, "id");
        assert_eq!(c.orders.fields.total, "total_price");
        assert_eq!(c.orders.fields.currency, "currency");
    }

    #[test]
    fn a_bad_value_in_the_file_names_its_dotted_path_and_the_file() {
        let err = with_env("[topics]\npartitions = \"six\"\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("topics.partitions: "), "{text}");
        assert!(text.contains("(from test.toml)"), "{text}");
        let err = with_env("[engine]\nidle_timeout = \"30\"\n", &[]).unwrap_err();
        assert!(
            err.to_string().starts_with("engine.idle_timeout: "),
            "{err}"
        );
        let err = with_env("[http]\nlisten = \"localhost\"\n", &[]).unwrap_err();
        assert!(err.to_string().starts_with("http.listen: "), "{err}");
    }

    #[test]
    fn env_overrides_the_file_and_the_defaults() {
        let text = "[kafka]\nbrokers = \"file:9092\"\n[engine]\nttl = \"24h\"\n";
        let c = with_env(
            text,
            &[
                ("ONECOUNT_KAFKA_BROKERS", "a:9092,b:9092"),
                ("ONECOUNT_ENGINE_TTL", "72h"),
                ("ONECOUNT_ENGINE_IDLE_TIMEOUT", "5s"),
                ("ONECOUNT_ENGINE_PAIR_ON_TTP", "true"),
                ("ONECOUNT_ENGINE_VALUE_TOLERANCE", "0.5"),
                (
                    "ONECOUNT_ENGINE_PURCHASE_EVENTS",
                    "Purchase, CompletePayment",
                ),
                ("ONECOUNT_TOPICS_BROWSER", "pixel.in"),
                ("ONECOUNT_TOPICS_PARTITIONS", "3"),
                ("ONECOUNT_TOPICS_REPLICATION_FACTOR", "3"),
                ("ONECOUNT_TOPICS_RETENTION", "2d"),
                ("ONECOUNT_HTTP_LISTEN", "0.0.0.0:9000"),
                ("ONECOUNT_ORDERS_FIELDS_ORDER_ID", "id"),
                ("ONECOUNT_ORDERS_SHOPS", "brand-a=C4A, brand-b = C4B"),
                ("ONECOUNT_ORDERS_TOTAL_SCALE", "2"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "a:9092,b:9092");
        assert_eq!(c.engine.ttl, Duration::from_secs(72 * 3600));
        assert_eq!(c.engine.idle_timeout, Duration::from_secs(5));
        assert!(c.engine.pair_on_ttp);
        assert_eq!(c.engine.value_tolerance, 0.5);
        assert_eq!(c.engine.purchase_events, ["Purchase", "CompletePayment"]);
        assert_eq!(c.topics.browser, "pixel.in");
        assert_eq!(c.topics.server, "tiktok.events_api");
        assert_eq!(c.topics.partitions, 3);
        assert_eq!(c.topics.replication_factor, Some(3));
        assert_eq!(c.topics.retention, Duration::from_secs(2 * 86_400));
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.orders.fields.order_id, "id");
        assert_eq!(c.orders.shops["brand-b"], "C4B");
        assert_eq!(c.orders.total_scale, Some(2));
    }

    #[test]
    fn property_variables_are_lower_cased_with_underscores_as_dots() {
        assert_eq!(
            env_property_name("ONECOUNT_KAFKA_PROPERTY_SASL_MECHANISM").as_deref(),
            Some("sasl.mechanism")
        );
        let c = with_env(
            "[kafka.properties]\n\"sasl.mechanism\" = \"PLAIN\"\n\"linger.ms\" = 20\n",
            &[
                ("ONECOUNT_KAFKA_PROPERTY_SASL_MECHANISM", "SCRAM-SHA-512"),
                ("ONECOUNT_KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL"),
                ("ONECOUNT_KAFKA_PROPERTY_SASL_PASSWORD", "hunter2"),
            ],
        )
        .unwrap();
        let p = &c.kafka.properties;
        assert_eq!(p.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(p.get("sasl.password"), Some("hunter2"));
        assert_eq!(
            p.get("linger.ms"),
            Some("20"),
            "an integer reads as its text"
        );
    }

    #[test]
    fn unknown_variable_under_a_config_table_is_an_error_naming_it() {
        let err = with_env("", &[("ONECOUNT_ENGINE_TTLL", "1h")]).unwrap_err();
        assert!(
            err.to_string().starts_with("ONECOUNT_ENGINE_TTLL: "),
            "{err}"
        );
        let err = with_env("", &[("ONECOUNT_KAFKA_PROPERTIES", "x")]).unwrap_err();
        assert!(
            err.to_string().contains("ONECOUNT_KAFKA_PROPERTY_"),
            "{err}"
        );
        let err = with_env("", &[("ONECOUNT_KAFKA_PROPERTY_", "x")]).unwrap_err();
        assert!(
            err.to_string().starts_with("ONECOUNT_KAFKA_PROPERTY_: "),
            "{err}"
        );
    }

    #[test]
    fn other_onecount_variables_are_not_configuration() {
        let c = with_env(
            "",
            &[
                ("ONECOUNT_TEST_KAFKA", "127.0.0.1:1"),
                ("ONECOUNT_CACHE", "/tmp"),
                ("ONECOUNT_STATE", "/tmp"),
                ("ONECOUNT_ROOT", "/tmp"),
                ("ONECOUNT_SKIP_APT", "1"),
                ("KAFKA_BROKERS", "not:ours"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, KafkaConfig::default().brokers);
    }

    #[test]
    fn a_bad_env_value_names_the_field_and_the_variable() {
        let err = with_env("", &[("ONECOUNT_ENGINE_TTL", "48")]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("engine.ttl: "), "{text}");
        assert!(text.contains("ONECOUNT_ENGINE_TTL"), "{text}");
        let err = with_env("", &[("ONECOUNT_TOPICS_PARTITIONS", "many")]).unwrap_err();
        assert!(
            err.to_string().starts_with("ONECOUNT_TOPICS_PARTITIONS: "),
            "{err}"
        );
        let err = with_env("", &[("ONECOUNT_ENGINE_PAIR_ON_TTP", "yes")]).unwrap_err();
        assert!(
            err.to_string().starts_with("ONECOUNT_ENGINE_PAIR_ON_TTP: "),
            "{err}"
        );
        // A cross-field check on a value from the environment names both.
        let err = with_env("", &[("ONECOUNT_TOPICS_SERVER", "tiktok.pixel")]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("topics.server: "), "{text}");
        assert!(text.contains("topics.browser"), "{text}");
        assert!(text.contains("ONECOUNT_TOPICS_SERVER"), "{text}");
    }

    #[test]
    fn every_setting_has_one_variable_and_every_variable_one_setting() {
        // Every listed path exists with its kind: a value of that kind deserializes.
        let sample = |kind| match kind {
            EnvKind::Text => "1s",
            EnvKind::Integer => "1",
            EnvKind::Float => "1.5",
            EnvKind::Bool => "true",
            EnvKind::List => "a,b",
            EnvKind::Map => "a=b",
        };
        let mut names = BTreeSet::new();
        for &(path, kind) in ENV_SETTINGS {
            let var = env_var_name(path);
            assert!(names.insert(var.clone()), "{var} twice");
            assert!(!var.starts_with(ENV_PROPERTY_PREFIX), "{var}");
            let mut doc = toml::Table::new();
            overlay_env(&mut doc, env(&[(&var, sample(kind))])).unwrap();
            let r: Result<Config, _> = serde_path_to_error::deserialize(toml::Value::Table(doc));
            if let Err(e) = r {
                // Only the sample text may be wrong for the field (e.g. "1s" as an address),
                // never the path: an unknown field would be reported on its table.
                assert!(
                    e.path().to_string() == path,
                    "{var}: {} at {}",
                    e.inner(),
                    e.path()
                );
            }
        }
        // Every leaf of a fully populated config has a variable (maps count as leaves).
        let mut full = Config::default();
        full.orders.default_pixel = Some("P".into());
        full.orders.total_scale = Some(2);
        full.topics.replication_factor = Some(1);
        let value = toml::Value::try_from(&full).unwrap();
        let mut leaves = Vec::new();
        collect_leaves(&value, "", &mut leaves);
        for leaf in leaves {
            if leaf == "kafka.properties" {
                continue; // ONECOUNT_KAFKA_PROPERTY_<NAME>
            }
            assert!(
                ENV_SETTINGS.iter().any(|(p, _)| *p == leaf),
                "{leaf} has no environment variable"
            );
        }
    }

    fn collect_leaves(v: &toml::Value, path: &str, out: &mut Vec<String>) {
        match v.as_table() {
            Some(t) if !["orders.shops", "kafka.properties"].contains(&path) => {
                for (k, v) in t {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    collect_leaves(v, &p, out);
                }
            }
            _ => out.push(path.to_string()),
        }
    }

    #[test]
    fn secrets_never_print() {
        let c = with_env(
            "[kafka.properties]\n\"sasl.username\" = \"svc\"\n\"sasl.password\" = \"hunter2\"\n\"ssl.key.password\" = \"k3y\"\n\"ssl.keystore.password\" = \"st0re\"\n\"sasl.oauthbearer.client.secret\" = \"s3cr3t\"\n",
            &[("ONECOUNT_KAFKA_PROPERTY_SSL_KEY_PEM", "-----BEGIN PRIVATE KEY-----")],
        )
        .unwrap();
        let shown = [format!("{c:?}"), format!("{c}"), c.redacted_toml()];
        for text in &shown {
            for secret in ["hunter2", "k3y", "st0re", "s3cr3t", "BEGIN PRIVATE"] {
                assert!(!text.contains(secret), "{secret} printed in {text}");
            }
            assert!(text.contains("svc"), "non-secrets stay visible: {text}");
            assert!(text.contains(REDACTED), "{text}");
        }
        assert_eq!(c.kafka.properties.get("sasl.password"), Some("hunter2"));
        assert!(is_secret_property("SASL.PASSWORD"));
        assert!(!is_secret_property("sasl.mechanism"));
    }

    #[test]
    fn the_redacted_summary_reads_back_as_the_same_config() {
        let c = with_env("[engine]\nmerge_window = \"90s\"\n", &[]).unwrap();
        let again = Config::parse(&c.redacted_toml()).unwrap();
        assert_eq!(again.engine.merge_window, Duration::from_secs(90));
        assert_eq!(again.engine.ttl, c.engine.ttl);
        assert_eq!(again.topics.retention, c.topics.retention);
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
    }

    #[test]
    fn properties_set_by_onecounts_own_keys_are_rejected() {
        for (prop, field) in [
            ("bootstrap.servers", "kafka.brokers"),
            ("group.id", "kafka.group_id"),
        ] {
            let err =
                with_env(&format!("[kafka.properties]\n\"{prop}\" = \"x\"\n"), &[]).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("kafka.properties: "), "{text}");
            assert!(text.contains(field), "{text}");
        }
    }

    #[test]
    fn cross_field_checks_name_the_field() {
        let cases = [
            ("[kafka]\nbrokers = \"\"\n", "kafka.brokers"),
            ("[kafka]\nbrokers = \"a:1,,b:2\"\n", "kafka.brokers"),
            ("[kafka]\ngroup_id = \" \"\n", "kafka.group_id"),
            ("[topics]\nbrowser = \"has space\"\n", "topics.browser"),
            ("[topics]\norders = \"\"\n", "topics.orders"),
            ("[topics]\nconversions = \"orders\"\n", "topics.conversions"),
            ("[topics]\npartitions = 0\n", "topics.partitions"),
            (
                "[topics]\nreplication_factor = 0\n",
                "topics.replication_factor",
            ),
            ("[topics]\nretention = \"0s\"\n", "topics.retention"),
            ("[engine]\nidle_timeout = \"0s\"\n", "engine.idle_timeout"),
            (
                "[engine]\nmax_record_bytes = 0\n",
                "engine.max_record_bytes",
            ),
            (
                "[engine]\nmax_record_bytes = 67108865\n",
                "engine.max_record_bytes",
            ),
            (
                "[service]\nmerge_queue_limit = 0\n",
                "service.merge_queue_limit",
            ),
            (
                "[service]\nstate_partitions = 0\n",
                "service.state_partitions",
            ),
            (
                "[service]\nstate_partitions = 5000\n",
                "service.state_partitions",
            ),
            // Split by pixel, an order of an unmapped shop would reach no partition.
            (
                "[service]\nstate_partitions = 3\n",
                "service.state_partitions",
            ),
        ];
        for (text, field) in cases {
            let err = with_env(text, &[]).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("{field}: ")),
                "{text:?}: {err}"
            );
        }
        let split = "[service]\nstate_partitions = 3\n[orders]\ndefault_pixel = \"P\"\n";
        assert_eq!(with_env(split, &[]).unwrap().service.state_partitions, 3);
    }
}
