//! Revenue windows: tracked (conversions) against backend (orders) revenue per pixel, currency
//! and UTC hour.
//!
//! Owns: the per-hour aggregates, when a window is first emitted (the watermark passes the hour's
//! end plus `order_wait`, when every order of the hour has been reconciled) and its re-emission
//! with a higher version when a later change alters it. Must not: decide matches (that is
//! `reconcile`); it only adds and removes contributions.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{Money, RevenueWindow, FORMAT_VERSION};

use super::changelog::DirtySet;
use super::stats::Stats;
use super::Outputs;

const HOUR_MS: i64 = 3_600_000;

/// The hour (Unix ms of its start) a time falls in.
pub fn hour_of(time_ms: i64) -> i64 {
    time_ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// A window's identity; also its changelog key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowKey {
    hour_start: i64,
    pixel: String,
    currency: String,
}

/// One window's aggregates; also its changelog record. Version 0: not emitted yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    orders: u64,
    purchases: u64,
    matched: u64,
    tracked: Money,
    backend: Money,
    version: u32,
}

/// What one order adds to its hour's window; removed and re-added when the order changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderContribution {
    pub pixel: String,
    pub currency: String,
    pub hour_start: i64,
    /// Whether the order counts as revenue (not cancelled, refunded or deleted).
    pub counts: bool,
    pub total: Money,
    pub matched: bool,
}

pub struct RevenueWindows {
    order_wait_ms: i64,
    windows: BTreeMap<WindowKey, Window>,
    /// Hours whose windows have not been emitted yet.
    open_hours: BTreeSet<i64>,
    /// Windows changed since the last changelog flush.
    dirty: DirtySet<WindowKey>,
}

impl RevenueWindows {
    pub fn new(order_wait_ms: i64) -> RevenueWindows {
        RevenueWindows {
            order_wait_ms,
            windows: BTreeMap::new(),
            open_hours: BTreeSet::new(),
            dirty: DirtySet::default(),
        }
    }

    /// A purchase conversion was emitted.
    pub fn track(
        &mut self,
        pixel: &str,
        currency: &str,
        event_time: i64,
        value: Money,
        stats: &mut Stats,
        out: &mut Outputs,
    ) {
        stats.track_revenue(pixel, currency, value);
        self.change(pixel, currency, hour_of(event_time), stats, out, |w| {
            w.purchases += 1;
            w.tracked.0 += value.0;
        });
    }

    /// Replaces an order's contribution (`prev`, if it had one) with `next`, as one change per
    /// window touched, so an emitted window gets exactly one new version per order change.
    pub fn order_changed(
        &mut self,
        prev: Option<&OrderContribution>,
        next: &OrderContribution,
        stats: &mut Stats,
        out: &mut Outputs,
    ) {
        let same_window = prev.is_some_and(|p| {
            (p.hour_start, &p.pixel, &p.currency) == (next.hour_start, &next.pixel, &next.currency)
        });
        if same_window {
            let p = prev.expect("checked");
            let (orders, matched, backend) = delta(p, -1);
            let (n_orders, n_matched, n_backend) = delta(next, 1);
            self.apply_order_delta(
                next,
                orders + n_orders,
                matched + n_matched,
                backend + n_backend,
                stats,
                out,
            );
            return;
        }
        if let Some(p) = prev {
            let (orders, matched, backend) = delta(p, -1);
            self.apply_order_delta(p, orders, matched, backend, stats, out);
        }
        let (orders, matched, backend) = delta(next, 1);
        self.apply_order_delta(next, orders, matched, backend, stats, out);
    }

    fn apply_order_delta(
        &mut self,
        c: &OrderContribution,
        orders: i64,
        matched: i64,
        backend: i64,
        stats: &mut Stats,
        out: &mut Outputs,
    ) {
        if orders == 0 && matched == 0 && backend == 0 {
            return;
        }
        stats.backend_revenue(&c.pixel, &c.currency, Money(backend));
        self.change(&c.pixel, &c.currency, c.hour_start, stats, out, |w| {
            w.orders = w.orders.saturating_add_signed(orders);
            w.matched = w.matched.saturating_add_signed(matched);
            w.backend.0 += backend;
        });
    }

    fn change(
        &mut self,
        pixel: &str,
        currency: &str,
        hour_start: i64,
        stats: &mut Stats,
        out: &mut Outputs,
        apply: impl FnOnce(&mut Window),
    ) {
        let key = WindowKey {
            hour_start,
            pixel: pixel.to_string(),
            currency: currency.to_string(),
        };
        let window = self.windows.entry(key.clone()).or_default();
        apply(window);
        self.dirty.mark(key.clone());
        if window.version > 0 {
            // Already emitted: an emitted window is corrected by a newer version, never edited.
            window.version += 1;
            out.revenue_windows.push(render(&key, window));
            stats.revenue_windows += 1;
        } else {
            self.open_hours.insert(hour_start);
        }
    }

    /// When the earliest unemitted hour is due: its end plus `order_wait`.
    pub fn next_due(&self) -> Option<i64> {
        self.open_hours
            .first()
            .map(|h| h + HOUR_MS + self.order_wait_ms)
    }

    /// Emits every window of the earliest unemitted hour.
    pub fn fire_next(&mut self, stats: &mut Stats, out: &mut Outputs) {
        let Some(hour) = self.open_hours.pop_first() else {
            return;
        };
        let from = WindowKey {
            hour_start: hour,
            pixel: String::new(),
            currency: String::new(),
        };
        for (key, window) in self.windows.range_mut(from..) {
            if key.hour_start != hour {
                break;
            }
            if window.version == 0 {
                window.version = 1;
                self.dirty.mark(key.clone());
                out.revenue_windows.push(render(key, window));
                stats.revenue_windows += 1;
            }
        }
    }

    /// Forgets windows whose hour ended before `cutoff`: nothing can change them any more. Each
    /// forgotten window is marked changed, so the changelog tombstones it.
    pub fn expire_before(&mut self, cutoff: i64) {
        let dirty = &mut self.dirty;
        self.windows.retain(|k, w| {
            let keep = k.hour_start + HOUR_MS >= cutoff || w.version == 0;
            if !keep {
                dirty.mark_with(|| k.clone());
            }
            keep
        });
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Every window changed since the last call (`None`: forgotten).
    /// Starts tracking changed keys for the changelog.
    pub fn track_changes(&mut self) {
        self.dirty.enable();
    }

    pub fn take_changes(&mut self) -> impl Iterator<Item = (WindowKey, Option<Window>)> + '_ {
        let windows = &self.windows;
        self.dirty.drain_sorted().into_iter().map(move |k| {
            let w = windows.get(&k).cloned();
            (k, w)
        })
    }

    /// Puts back one window from the changelog (`None` removes it).
    pub fn restore(&mut self, key: WindowKey, window: Option<Window>) {
        match window {
            Some(w) => {
                if w.version == 0 {
                    self.open_hours.insert(key.hour_start);
                }
                self.windows.insert(key, w);
            }
            None => {
                self.windows.remove(&key);
            }
        }
    }
}

/// What a contribution adds (`sign = 1`) or removes (`sign = -1`): orders, matched, backend.
fn delta(c: &OrderContribution, sign: i64) -> (i64, i64, i64) {
    if !c.counts {
        return (0, 0, 0);
    }
    (sign, if c.matched { sign } else { 0 }, sign * c.total.0)
}

fn render(key: &WindowKey, w: &Window) -> RevenueWindow {
    let hour_start = key.hour_start.div_euclid(1000);
    RevenueWindow {
        format_version: FORMAT_VERSION,
        key: format!("{}/{}/{}", key.pixel, key.currency, hour_start),
        event_source_id: key.pixel.clone(),
        currency: key.currency.clone(),
        hour_start,
        version: w.version,
        orders: w.orders,
        purchases: w.purchases,
        matched: w.matched,
        tracked_revenue: w.tracked,
        backend_revenue: w.backend,
        drift_ratio: (w.backend.0 != 0)
            .then(|| (w.tracked.0 - w.backend.0) as f64 / w.backend.0 as f64),
    }
}
