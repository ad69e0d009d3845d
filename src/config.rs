//! The configuration file (`onecount.toml`): one strict struct per table, defaults in one place.
//!
//! Owns: parsing and validating the file, and the defaults. Unknown keys are errors (a typo must
//! not silently fall back to a default), durations are strings with a unit (`"48h"`), and
//! cross-field checks run once in [`Config::validate`], naming the field at fault.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The whole file. Every table is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub engine: EngineConfig,
    pub orders: OrdersConfig,
}

/// The dedup and reconciliation rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// How long a dedup key lives after its action was first seen, in event time. A copy within
    /// it is a duplicate; after it, a new action. TikTok and Meta use 48 hours.
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    /// Browser and server copies whose event times are at most this far apart are merged into
    /// one conversion. 0 emits the first copy at once. TikTok uses 5 minutes.
    #[serde(deserialize_with = "duration")]
    pub merge_window: Duration,
    /// How far behind the highest event time seen on an input its watermark trails: the arrival
    /// spread the engine waits for before releasing a merge or a reconciliation.
    #[serde(deserialize_with = "duration")]
    pub allowed_lateness: Duration,
    /// How long, in event time, a purchase waits for its order and an order for its purchase
    /// before the pair is reported unmatched.
    #[serde(deserialize_with = "duration")]
    pub order_wait: Duration,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrderFields {
    pub order_id: String,
    pub total: String,
    pub currency: String,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
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
        if !(e.value_tolerance.is_finite() && e.value_tolerance >= 0.0) {
            return invalid("engine.value_tolerance", "must be a finite number >= 0");
        }
        if e.max_record_bytes == 0 {
            return invalid("engine.max_record_bytes", "must be greater than 0");
        }
        if e.purchase_events.iter().any(|name| name.trim().is_empty()) {
            return invalid("engine.purchase_events", "names must not be empty");
        }
        Ok(())
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write a number with a unit, e.g. \"48h\", \"5m\", \"30s\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.engine.ttl, Duration::from_secs(172_800));
        assert_eq!(c.engine.merge_window, Duration::from_secs(300));
        assert_eq!(c.engine.order_wait, Duration::from_secs(3600));
        assert_eq!(c.orders.fields.order_id, "order_id");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = Config::parse("[engine]\nttll = \"1h\"\n").unwrap_err();
        assert!(err.to_string().contains("ttll"), "{err}");
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
}
