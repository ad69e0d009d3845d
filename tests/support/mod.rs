//! Builders for engine tests: events and orders in a few words, and a runner that feeds them in
//! the order given and checks the accounting.
#![allow(dead_code)]

use onecount::config::{Config, EngineConfig, OrdersConfig};
use onecount::engine::stats::Stats;
use onecount::engine::{Engine, Outputs};
use onecount::model::*;
use onecount::parse::Parsed;

pub const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, ms
pub const SEC: i64 = 1000;
pub const MIN: i64 = 60 * SEC;
pub const HOUR: i64 = 60 * MIN;

pub fn hash(s: &str) -> String {
    use std::fmt::Write;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(s.as_bytes());
    digest.iter().fold(String::new(), |mut acc, b| {
        let _ = write!(acc, "{b:02x}");
        acc
    })
}

static NEXT_OFFSET: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);

/// A unique offset per built record keeps positions distinct, as in a real input.
fn next_offset() -> i64 {
    NEXT_OFFSET.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[derive(Clone)]
pub struct Copy(pub EventFields);

pub fn copy(source: Source, event: &str, id: &str, t: i64) -> Copy {
    let input = source.input();
    Copy(EventFields {
        source,
        pixel: "PIXEL1".into(),
        event: event.into(),
        event_id: (!id.is_empty()).then(|| id.to_string()),
        event_time: t,
        user: User::default(),
        properties: Properties::default(),
        page: Page::default(),
        consent: None,
        position: Position {
            input,
            partition: 0,
            offset: next_offset(),
            index: 0,
        },
    })
}

pub fn browser(event: &str, id: &str, t: i64) -> Copy {
    copy(Source::Browser, event, id, t)
}

pub fn server(event: &str, id: &str, t: i64) -> Copy {
    copy(Source::Server, event, id, t)
}

impl Copy {
    pub fn value(mut self, v: f64, currency: &str) -> Self {
        self.0.properties.value = Some(Money((v * 1e6).round() as i64));
        self.0.properties.currency = Some(currency.into());
        self
    }
    pub fn order(mut self, order_id: &str) -> Self {
        self.0.properties.order_id = Some(order_id.into());
        self
    }
    pub fn email(mut self, clear: &str) -> Self {
        self.0.user.email = Some(hash(clear));
        self
    }
    pub fn phone(mut self, e164: &str) -> Self {
        self.0.user.phone = Some(hash(e164));
        self
    }
    pub fn ttp(mut self, ttp: &str) -> Self {
        self.0.user.ttp = Some(ttp.into());
        self
    }
    pub fn url(mut self, url: &str) -> Self {
        self.0.page.url = Some(url.into());
        self
    }
    pub fn denied(mut self) -> Self {
        self.0.consent = Some(Consent::Denied);
        self
    }
    pub fn granted(mut self) -> Self {
        self.0.consent = Some(Consent::Granted);
        self
    }
    pub fn pixel(mut self, p: &str) -> Self {
        self.0.pixel = p.into();
        self
    }
    pub fn at(mut self, offset: i64) -> Self {
        self.0.position.offset = offset;
        self
    }
    /// The input partition the copy came through (a file is partition 0).
    pub fn partition(mut self, partition: i32) -> Self {
        self.0.position.partition = partition;
        self
    }
    pub fn rec(self) -> Parsed {
        Parsed::Record(Record::Event(Box::new(Event::pack(&self.0))))
    }
}

pub struct OrderRow(pub OrderChange);

pub fn order(order_id: &str, total: f64, currency: &str, created_at: i64) -> OrderRow {
    OrderRow(OrderChange {
        op: OrderOp::Upsert,
        order_id: order_id.into(),
        total: Some(Money((total * 1e6).round() as i64)),
        currency: Some(currency.into()),
        status: Some("paid".into()),
        created_at: Some(created_at),
        changed_at: created_at,
        pixel: None,
        lsn: None,
        position: Position {
            input: Input::Orders,
            partition: 0,
            offset: next_offset(),
            index: 0,
        },
    })
}

impl OrderRow {
    pub fn status(mut self, s: &str, changed_at: i64) -> Self {
        self.0.status = Some(s.into());
        self.0.changed_at = changed_at;
        self
    }
    pub fn lsn(mut self, lsn: i64) -> Self {
        self.0.lsn = Some(lsn);
        self
    }
    pub fn pixel(mut self, p: &str) -> Self {
        self.0.pixel = Some(p.into());
        self
    }
    pub fn changed(mut self, changed_at: i64) -> Self {
        self.0.changed_at = changed_at;
        self
    }
    pub fn delete(mut self) -> Self {
        self.0.op = OrderOp::Delete;
        self
    }
    /// The offset the row came at (for records that must not depend on the test's order).
    pub fn at(mut self, offset: i64) -> Self {
        self.0.position.offset = offset;
        self
    }
    pub fn rec(self) -> Parsed {
        Parsed::Record(Record::Order(self.0))
    }
}

pub fn tombstone() -> Parsed {
    Parsed::Record(Record::Tombstone(Position {
        input: Input::Orders,
        partition: 0,
        offset: next_offset(),
        index: 0,
    }))
}

pub fn engine_config() -> EngineConfig {
    EngineConfig::default()
}

/// Feeds `records` in order, flushes, checks conservation, returns outputs and stats.
pub fn run_with(config: &EngineConfig, records: Vec<Parsed>) -> (Outputs, Stats) {
    let mut engine = Engine::new(config, &OrdersConfig::default());
    let mut out = Outputs::default();
    for r in records {
        engine.process(r, &mut out);
    }
    engine.flush(&mut out);
    let stats = engine.stats().clone();
    assert_eq!(
        stats.accounted(),
        stats.input_records.total,
        "every input record lands in exactly one bucket: {stats:#?}"
    );
    (out, stats)
}

pub fn run(records: Vec<Parsed>) -> (Outputs, Stats) {
    run_with(&engine_config(), records)
}

pub fn kinds(out: &Outputs) -> Vec<&'static str> {
    let mut k: Vec<_> = out.discrepancies.iter().map(|d| d.kind.as_str()).collect();
    k.sort();
    k
}

pub fn keys(out: &Outputs) -> Vec<String> {
    out.conversions.iter().map(|c| c.key().to_owned()).collect()
}

pub fn dup(stats: &Stats, reason: &str) -> u64 {
    stats.duplicates_by_reason[reason]
}

pub fn default_config() -> Config {
    Config::default()
}
