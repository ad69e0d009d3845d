//! Revenue reconciliation: a two-sided keyed join of purchase conversions and orders on
//! order_id, with expiry.
//!
//! Owns: the order table (current row per order, the last applied change), the conversion side,
//! the `order_wait` deadlines, and each order's contribution to its revenue window. Each side
//! inserts into its own slot and probes the other; a side whose deadline passes unmatched becomes
//! a discrepancy. Must not: decide which conversions exist (dedup does) or read a clock.

use std::collections::BTreeSet;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::model::{Discrepancy, DiscrepancyKind, Money, OrderChange, OrderOp};

use super::changelog::DirtySet;
use super::revenue::{hour_of, OrderContribution, RevenueWindows};
use super::stats::{OrderOutcome, Stats};
use super::{push_discrepancy, Outputs};

/// The reconciliation parameters, in the units they are compared in.
#[derive(Debug, Clone)]
pub struct ReconcileRules {
    pub ttl_ms: i64,
    pub order_wait_ms: i64,
    pub value_tolerance: Money,
    pub default_pixel: Option<String>,
    pub non_revenue_statuses: Vec<String>,
}

/// The order as its last applied change left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderRow {
    total: Money,
    currency: String,
    status: Option<String>,
    created_at: i64,
    changed_at: i64,
    pixel: Option<String>,
    lsn: Option<i64>,
    deleted: bool,
}

/// A purchase conversion waiting for, or matched to, its order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurchaseRef {
    pub order_id: String,
    pub pixel: String,
    pub event: String,
    pub event_id: Option<String>,
    pub value: Option<Money>,
    pub currency: Option<String>,
    pub event_time: i64,
}

/// Everything known about one order id; also its changelog record.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    order: Option<OrderRow>,
    purchase: Option<PurchaseRef>,
    /// Both sides were there and have been compared.
    compared: bool,
    /// The `order_wait` deadline passed.
    timed_out: bool,
    /// The deadline registered in the timer queue, if any.
    deadline: Option<i64>,
    /// What the order currently adds to its revenue window (set once reconciled).
    contribution: Option<OrderContribution>,
}

impl Entry {
    /// Latest event time this entry is about, for retention.
    fn last_time(&self) -> i64 {
        let o = self
            .order
            .as_ref()
            .map_or(i64::MIN, |o| o.created_at.max(o.changed_at));
        let p = self.purchase.as_ref().map_or(i64::MIN, |p| p.event_time);
        o.max(p)
    }
}

pub struct Reconciler {
    rules: ReconcileRules,
    entries: HashMap<String, Entry>,
    timers: BTreeSet<(i64, String)>,
    /// Order ids changed since the last changelog flush.
    dirty: DirtySet<String>,
}

impl Reconciler {
    pub fn new(rules: ReconcileRules) -> Reconciler {
        Reconciler {
            rules,
            entries: HashMap::new(),
            timers: BTreeSet::new(),
            dirty: DirtySet::default(),
        }
    }

    /// Applies one order change; returns its accounting bucket.
    pub fn on_order(
        &mut self,
        change: &OrderChange,
        watermark: Option<i64>,
        revenue: &mut RevenueWindows,
        stats: &mut Stats,
        out: &mut Outputs,
    ) -> OrderOutcome {
        self.forget_if_stale(&change.order_id, change.changed_at);
        let existing = self.entries.get(&change.order_id);
        let current = existing.and_then(|e| e.order.as_ref());
        // Historical is decided first, so the bucket never depends on whether an old order's
        // state has been swept yet.
        let Some(created_at) = change.created_at.or(current.map(|r| r.created_at)) else {
            // A key-only delete of an order this instance does not hold: it was created before
            // anything still tracked.
            return OrderOutcome::Historical;
        };
        let now = watermark.map_or(change.changed_at, |w| w.max(change.changed_at));
        if created_at < now - self.rules.ttl_ms {
            return OrderOutcome::Historical;
        }
        if let Some(row) = current {
            let redelivered = match (change.lsn, row.lsn) {
                (Some(new), Some(applied)) => new <= applied,
                (None, None) => {
                    change.op == OrderOp::Upsert
                        && !row.deleted
                        && change.changed_at == row.changed_at
                        && change.total == Some(row.total)
                        && change.status == row.status
                }
                _ => false,
            };
            if redelivered {
                return OrderOutcome::Redelivered;
            }
        }

        let row = match (change.op, current) {
            (OrderOp::Upsert, _) | (OrderOp::Delete, None) => OrderRow {
                total: change
                    .total
                    .or(current.map(|r| r.total))
                    .unwrap_or_default(),
                currency: change
                    .currency
                    .clone()
                    .or_else(|| current.map(|r| r.currency.clone()))
                    .unwrap_or_default(),
                status: change.status.clone(),
                created_at,
                changed_at: change.changed_at,
                pixel: change
                    .pixel
                    .clone()
                    .or_else(|| current.and_then(|r| r.pixel.clone())),
                lsn: change.lsn,
                deleted: change.op == OrderOp::Delete,
            },
            (OrderOp::Delete, Some(prev)) => OrderRow {
                deleted: true,
                changed_at: change.changed_at,
                lsn: change.lsn.or(prev.lsn),
                ..prev.clone()
            },
        };
        self.dirty.mark(change.order_id.clone());
        let entry = self.entries.entry(change.order_id.clone()).or_default();
        entry.order = Some(row);
        if !entry.compared {
            if let Some(purchase) = entry.purchase.clone() {
                compare(&self.rules, entry, &purchase, stats, out);
            }
        }
        if entry.compared || entry.timed_out {
            update_contribution(&self.rules, entry, revenue, stats, out);
        } else if entry.deadline.is_none() {
            let due = created_at + self.rules.order_wait_ms;
            entry.deadline = Some(due);
            self.timers.insert((due, change.order_id.clone()));
        }
        OrderOutcome::Applied
    }

    /// A purchase conversion with an order_id was emitted.
    pub fn on_purchase(
        &mut self,
        purchase: PurchaseRef,
        revenue: &mut RevenueWindows,
        stats: &mut Stats,
        out: &mut Outputs,
    ) {
        self.forget_if_stale(&purchase.order_id, purchase.event_time);
        let entry = self.entries.entry(purchase.order_id.clone()).or_default();
        if entry.purchase.is_some() {
            // Order dedup is per pixel; the same order id under a second pixel is emitted but
            // only the first conversion is reconciled against the order.
            return;
        }
        entry.purchase = Some(purchase.clone());
        self.dirty.mark(purchase.order_id.clone());
        if entry.order.is_some() {
            compare(&self.rules, entry, &purchase, stats, out);
            update_contribution(&self.rules, entry, revenue, stats, out);
        } else if entry.deadline.is_none() && !entry.timed_out {
            let due = purchase.event_time + self.rules.order_wait_ms;
            entry.deadline = Some(due);
            self.timers.insert((due, purchase.order_id.clone()));
        }
    }

    /// An entry a TTL older than the record at hand belongs to an earlier life of the order id:
    /// it is dropped here, so the outcome never depends on whether the periodic sweep (which
    /// runs on the watermark, i.e. on arrival) has removed it yet.
    fn forget_if_stale(&mut self, order_id: &str, time: i64) {
        let stale = self.entries.get(order_id).is_some_and(|e| {
            e.deadline.is_none() && e.last_time().saturating_add(self.rules.ttl_ms) <= time
        });
        if stale {
            self.entries.remove(order_id);
            self.dirty.mark(order_id.to_string());
        }
    }

    pub fn next_due(&self) -> Option<i64> {
        self.timers.first().map(|(due, _)| *due)
    }

    /// The earliest deadline passed: report whichever side is still unmatched.
    pub fn fire_next(
        &mut self,
        revenue: &mut RevenueWindows,
        stats: &mut Stats,
        out: &mut Outputs,
    ) {
        let Some((_, order_id)) = self.timers.pop_first() else {
            return;
        };
        let Some(entry) = self.entries.get_mut(&order_id) else {
            return;
        };
        entry.timed_out = true;
        entry.deadline = None;
        self.dirty.mark(order_id.clone());
        if entry.compared {
            return;
        }
        if let Some(order) = &entry.order {
            if counts_as_revenue(&self.rules, order) {
                let mut d = Discrepancy::new(
                    DiscrepancyKind::OrderWithoutConversion,
                    format!("order_without_conversion/{order_id}"),
                    order.created_at,
                );
                d.order_id = Some(order_id.clone());
                d.event_source_id = order.pixel.clone().or(self.rules.default_pixel.clone());
                d.order_total = Some(order.total);
                d.order_currency = Some(order.currency.clone());
                push_discrepancy(d, stats, out);
            }
            update_contribution(&self.rules, entry, revenue, stats, out);
        } else if let Some(p) = &entry.purchase {
            let mut d = purchase_discrepancy(DiscrepancyKind::ConversionWithoutOrder, p);
            d.conversion_value = p.value;
            d.conversion_currency = p.currency.clone();
            push_discrepancy(d, stats, out);
        }
    }

    /// Forgets orders and purchases more than two TTLs behind the watermark: a change to such an
    /// order is historical by then. Each forgotten order id is marked changed, so the changelog
    /// tombstones it (the id moves into the dirty set: no clone).
    pub fn expire(&mut self, watermark: i64) {
        let cutoff = watermark - 2 * self.rules.ttl_ms;
        let expired = self
            .entries
            .extract_if(|_, e| e.deadline.is_none() && e.last_time() < cutoff);
        for (order_id, _) in expired {
            self.dirty.mark(order_id);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The state of every order id changed since the last call (`None`: forgotten).
    /// Starts tracking changed keys for the changelog.
    pub fn track_changes(&mut self) {
        self.dirty.enable();
    }

    pub fn take_changes(&mut self) -> impl Iterator<Item = (String, Option<Entry>)> + '_ {
        let entries = &self.entries;
        self.dirty.drain_sorted().into_iter().map(move |id| {
            let entry = entries.get(&id).cloned();
            (id, entry)
        })
    }

    /// Puts back one order id from the changelog (`None` removes it).
    pub fn restore(&mut self, order_id: String, entry: Option<Entry>) {
        if let Some(old) = self.entries.remove(&order_id) {
            if let Some(due) = old.deadline {
                self.timers.remove(&(due, order_id.clone()));
            }
        }
        if let Some(entry) = entry {
            if let Some(due) = entry.deadline {
                self.timers.insert((due, order_id.clone()));
            }
            self.entries.insert(order_id, entry);
        }
    }
}

fn counts_as_revenue(rules: &ReconcileRules, order: &OrderRow) -> bool {
    !order.deleted
        && !order
            .status
            .as_ref()
            .is_some_and(|s| rules.non_revenue_statuses.iter().any(|n| n == s))
}

fn purchase_discrepancy(kind: DiscrepancyKind, p: &PurchaseRef) -> Discrepancy {
    let mut d = Discrepancy::new(
        kind,
        format!("{}/{}", kind.as_str(), p.order_id),
        p.event_time,
    );
    d.order_id = Some(p.order_id.clone());
    d.event_source_id = Some(p.pixel.clone());
    d.event = Some(p.event.clone());
    d.event_id = p.event_id.clone();
    d
}

/// Compares a purchase with its order: a currency difference alone, else a value difference
/// beyond the tolerance.
fn compare(
    rules: &ReconcileRules,
    entry: &mut Entry,
    purchase: &PurchaseRef,
    stats: &mut Stats,
    out: &mut Outputs,
) {
    let order = entry.order.as_ref().expect("compared with an order");
    entry.compared = true;
    let kind = if purchase.currency.as_deref() != Some(order.currency.as_str()) {
        DiscrepancyKind::CurrencyMismatch
    } else if purchase
        .value
        .is_none_or(|v| v.abs_diff(order.total) > rules.value_tolerance)
    {
        DiscrepancyKind::ValueMismatch
    } else {
        return;
    };
    let mut d = purchase_discrepancy(kind, purchase);
    d.conversion_value = purchase.value;
    d.conversion_currency = purchase.currency.clone();
    d.order_total = Some(order.total);
    d.order_currency = Some(order.currency.clone());
    push_discrepancy(d, stats, out);
}

/// Replaces the order's contribution to its revenue window with what it is now.
fn update_contribution(
    rules: &ReconcileRules,
    entry: &mut Entry,
    revenue: &mut RevenueWindows,
    stats: &mut Stats,
    out: &mut Outputs,
) {
    let order = entry.order.as_ref().expect("an order to contribute");
    let pixel = order
        .pixel
        .clone()
        .or_else(|| entry.purchase.as_ref().map(|p| p.pixel.clone()))
        .or_else(|| rules.default_pixel.clone())
        .unwrap_or_else(|| "unattributed".to_string());
    let next = OrderContribution {
        pixel,
        currency: order.currency.clone(),
        hour_start: hour_of(order.created_at),
        counts: counts_as_revenue(rules, order),
        total: order.total,
        matched: entry.compared,
    };
    if entry.contribution.as_ref() == Some(&next) {
        return;
    }
    revenue.order_changed(entry.contribution.as_ref(), &next, stats, out);
    entry.contribution = Some(next);
}
