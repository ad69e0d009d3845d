//! The audit report: graded checks plus the data behind the charts, and its text and JSON forms.
//!
//! Owns: the report's shape, which is the JSON contract (`--format json`): every key is always
//! present (absent numbers are `null`), checks come in a fixed order with fixed ids, maps are
//! sorted. Must not: grade anything (that is `checks`).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use crate::model::Money;

/// Version of the JSON report's shape; bumped when a key changes meaning or goes away.
pub const REPORT_VERSION: u32 = 1;

/// A check's grade. Ordered: the report's status is the worst of its checks'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Stable identifier (`one_conversion_per_action`, ...).
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    /// One sentence with the numbers.
    pub summary: String,
    /// The numbers graded and their context; `null` when they cannot be known from the input.
    pub metrics: BTreeMap<&'static str, Value>,
    /// The thresholds applied (`warn_above`, `fail_above`, `warn_below`, ...), as fractions or
    /// counts.
    pub thresholds: BTreeMap<&'static str, f64>,
    /// What raised a WARN or FAIL, and examples (at most a few per cause).
    pub findings: Vec<String>,
}

impl Check {
    pub fn new(id: &'static str, title: &'static str) -> Check {
        Check {
            id,
            title,
            status: Status::Pass,
            summary: String::new(),
            metrics: BTreeMap::new(),
            thresholds: BTreeMap::new(),
            findings: Vec::new(),
        }
    }

    pub fn metric(&mut self, name: &'static str, value: impl Into<Value>) -> &mut Self {
        self.metrics.insert(name, value.into());
        self
    }

    pub fn threshold(&mut self, name: &'static str, value: f64) -> &mut Self {
        self.thresholds.insert(name, value);
        self
    }

    /// Lowers the grade to `status` (never raises it back) and says why.
    pub fn raise(&mut self, status: Status, finding: String) {
        self.status = self.status.max(status);
        self.findings.push(finding);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    pub pass: u64,
    pub warn: u64,
    pub fail: u64,
}

/// Records read, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Records {
    pub conversions: u64,
    pub discrepancies: u64,
    pub dead_letters: u64,
    pub revenue_windows: u64,
}

/// Earliest and latest conversion event time, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeRange {
    pub first: i64,
    pub last: i64,
}

/// Conversions by the sources they saw: the dedup-status chart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sources {
    pub both: u64,
    pub browser: u64,
    pub server: u64,
}

/// One pixel's conversions by sources: the dedup-status chart's per-pixel bars.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PixelSources {
    pub pixel: String,
    pub both: u64,
    pub browser: u64,
    pub server: u64,
    /// both / all conversions of the pixel.
    pub pair_rate: Option<f64>,
}

/// Tracked vs backend revenue of one pixel and currency over the audited range (latest window
/// versions summed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PixelRevenue {
    pub pixel: String,
    pub currency: String,
    /// Revenue orders of the range.
    pub orders: u64,
    pub purchases: u64,
    pub matched: u64,
    pub tracked_revenue: Money,
    pub backend_revenue: Money,
    /// (tracked - backend) / backend; `null` when backend revenue is 0.
    pub drift_ratio: Option<f64>,
    /// The drift had every unattributed order of the currency been this pixel's; `null` when
    /// the currency has no unattributed backend revenue (or this is the unattributed row).
    pub drift_ratio_with_unattributed: Option<f64>,
    /// Hours with a window, and those whose own drift is beyond the threshold.
    pub hours: u64,
    pub hours_beyond: u64,
    /// `fail`: beyond the threshold, with enough volume, whoever the unattributed orders belong
    /// to; `warn`: beyond it as attributed, but on too little volume or within it once the
    /// unattributed orders are credited; `pass`; `null` for the `unattributed` row itself.
    pub status: Option<Status>,
}

/// Tracked vs backend revenue of one currency, every pixel (and unattributed orders) together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurrencyRevenue {
    pub currency: String,
    pub orders: u64,
    pub purchases: u64,
    pub tracked_revenue: Money,
    pub backend_revenue: Money,
    /// Backend revenue of orders no pixel claimed (no shop mapping, no conversion, no default
    /// pixel): part of `backend_revenue`.
    pub unattributed_backend_revenue: Money,
    pub drift_ratio: Option<f64>,
    pub status: Status,
}

/// One point of the drift-over-time chart: a currency's windows of one hour, all pixels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HourDrift {
    pub currency: String,
    /// Unix seconds, start of the UTC hour.
    pub hour_start: i64,
    pub tracked_revenue: Money,
    pub backend_revenue: Money,
    pub drift_ratio: Option<f64>,
    /// The drift of the currency from the first hour up to and including this one.
    pub cumulative_drift_ratio: Option<f64>,
}

/// The whole audit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub format_version: u32,
    /// What was audited (a directory).
    pub source: String,
    /// The worst status of any check.
    pub status: Status,
    pub counts: StatusCounts,
    pub time_range: Option<TimeRange>,
    pub records: Records,
    /// In checklist order; ids are stable.
    pub checks: Vec<Check>,
    pub conversions_by_sources: Sources,
    pub conversions_by_pixel: Vec<PixelSources>,
    /// Every kind, including those with 0.
    pub discrepancies_by_kind: BTreeMap<&'static str, u64>,
    pub revenue_by_currency: Vec<CurrencyRevenue>,
    pub revenue_by_pixel: Vec<PixelRevenue>,
    pub drift_by_hour: Vec<HourDrift>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.status == Status::Fail
    }

    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a report serializes");
        s.push('\n');
        s
    }

    /// The one-line result: status and counts.
    pub fn result_line(&self) -> String {
        format!(
            "audit {}: {} failed, {} warnings, {} passed",
            self.status.label(),
            self.counts.fail,
            self.counts.warn,
            self.counts.pass
        )
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "onecount audit of {}", self.source);
        let r = &self.records;
        let _ = write!(
            s,
            "{} conversions, {} discrepancies, {} dead letters, {} revenue windows",
            r.conversions, r.discrepancies, r.dead_letters, r.revenue_windows
        );
        if let Some(t) = self.time_range {
            let _ = write!(s, "; conversions from {} to {}", utc(t.first), utc(t.last));
        }
        let _ = writeln!(s, "\n");
        for c in &self.checks {
            let _ = writeln!(s, "{}  {}", c.status.label(), c.title);
            let _ = writeln!(s, "      {}", c.summary);
            for f in &c.findings {
                let _ = writeln!(s, "      - {f}");
            }
        }
        if !self.revenue_by_currency.is_empty() {
            let _ = writeln!(s, "\nrevenue by currency (tracked vs backend):");
            for c in &self.revenue_by_currency {
                let _ = writeln!(
                    s,
                    "  {} {:<8} tracked {:>14.2}  backend {:>14.2}  drift {:>8}  ({} orders, {} purchases)",
                    c.status.label(),
                    c.currency,
                    c.tracked_revenue.to_f64(),
                    c.backend_revenue.to_f64(),
                    drift(c.drift_ratio),
                    c.orders,
                    c.purchases
                );
            }
        }
        if !self.revenue_by_pixel.is_empty() {
            let _ = writeln!(s, "revenue by pixel and currency:");
            for p in &self.revenue_by_pixel {
                let _ = writeln!(
                    s,
                    "  {} {:<22} {:<5} tracked {:>14.2}  backend {:>14.2}  drift {:>8}  ({} orders, {}/{} hours beyond)",
                    p.status.map_or("    ", Status::label),
                    p.pixel,
                    p.currency,
                    p.tracked_revenue.to_f64(),
                    p.backend_revenue.to_f64(),
                    drift(p.drift_ratio),
                    p.orders,
                    p.hours_beyond,
                    p.hours
                );
            }
        }
        let _ = writeln!(s, "\n{}", self.result_line());
        s
    }
}

/// A drift ratio as a signed percentage, `n/a` when undefined.
pub fn drift(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) => format!("{:+.1}%", r * 100.0),
        None => "n/a".to_string(),
    }
}

/// A share as a percentage, `n/a` when undefined.
pub fn pct(share: Option<f64>) -> String {
    match share {
        Some(r) => format!("{:.2}%", r * 100.0),
        None => "n/a".to_string(),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub fn utc(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => format!("{secs} (Unix seconds)"),
    }
}
