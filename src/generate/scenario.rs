//! The plan: which scenario each action gets, and what it must come to under `docs/RULES.md`.
//!
//! Owns: the scenario shares ([`Shares`], all in one place), the choice of scenario per action,
//! the copies and order changes each scenario produces, and each record's accounting bucket and
//! each action's findings (discrepancies, revenue, sources). Must not: simulate an engine. An
//! outcome is derived from the scenario as planned, and every scenario is built so that its
//! outcome does not depend on how it interleaves with other traffic:
//!
//! - ids are unique per action (event_id) and per order (order_id), except where a scenario
//!   reuses one on purpose (a retry, a reload's order id, an event_id reused after the TTL);
//! - prompt copies arrive within [`JITTER_MS`] (< 2 min) of their event time, and the copies of
//!   one action lie within 21 s of each other: when the second copy is read the engine's
//!   watermark is at most (its arrival - allowed lateness) < (its time - 8 min), so its action
//!   is still pending and it merges, whatever the order of the copies;
//! - deliberately late copies (after_merge_window, after_release, consent_after_emit, late) are
//!   deferred by the scheduler until their own file guarantees the watermark they need;
//! - an order's `created_at` lies within 90 s before its purchase and it arrives within the
//!   jitter, so the conversion (released once the watermark passes its time + merge window)
//!   meets the order long before either waits `order_wait`, whichever comes first;
//! - a cancel of an unmatched order comes 5-30 min after it, long before its wait ends; a full
//!   refund (hours later) keeps the total, so it changes nothing a comparison sees; a partial
//!   refund or a delete is preceded by the order's own `fulfilled` update 30-90 min after it,
//!   so it is read after the order met its conversion, however sparse the orders are.

use std::collections::VecDeque;

use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::model::{DiscrepancyKind, Money, Source, SourcesSeen};

use super::schedule::{Defer, File, Scheduler};
use super::traffic::{
    self, is_known_iso, minor_unit, pick, price_in, ServerShape, Session, Step, CATALOG,
    CURRENCIES, INVALID_CURRENCIES, PIXELS,
};
use super::truth::{Bucket, DupReason};
use super::wire::{
    ContentWire, DecimalMode, Defect, EventCopy, EventIdWire, OrderChange, OrderFmt, OrderOp,
    TimeFmt, UserWire,
};
use super::{ALLOWED_LATENESS_MS, MERGE_WINDOW_MS, ORDER_WAIT_MS, TTL_MS, VALUE_TOLERANCE};

/// Prompt copies arrive within this of their event time (exclusive).
pub(crate) const JITTER_MS: i64 = 120_000;
/// Server copies that go into a batch plan to arrive within this; the batch adds at most
/// `BATCH_WINDOW_MS`, and copies of one action lie at most 21 s apart, so they still arrive
/// within `JITTER_MS`.
const BATCH_JITTER_MS: i64 = 60_000;
/// The server copy of an action is sent up to this much after the browser copy.
const SERVER_DELAY_MS: i64 = 20_000;
/// Extra event time beyond the strict bound that every watermark-dependent condition keeps.
const MARGIN_MS: i64 = 5 * 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// `very late` records are sent only once the stream is this far into its span.
const LATE_FROM_MS: i64 = 76 * HOUR_MS;
const LSN_BASE: i64 = 40_000_000_000;
const MASK_48: u64 = (1 << 48) - 1;

/// How often each scenario happens: shares of actions (funnel steps), or of purchase steps,
/// or of orders. One place to tune the traffic mix.
#[derive(Debug, Clone, PartialEq)]
pub struct Shares {
    // Per action (any funnel step); the rest is a normal browser + server pair.
    /// Browser copy lost to an ad blocker: server only.
    pub server_only: f64,
    /// No server integration for this event: browser only.
    pub browser_only: f64,
    /// A second copy from the same side (server retry, or the pixel firing twice).
    pub retry: f64,
    /// The other side's copy carries an event_time beyond the merge window.
    pub after_merge_window: f64,
    /// The other side's copy arrives an hour or more after its event time.
    pub after_release: f64,
    pub value_parity: f64,
    pub currency_parity: f64,
    pub match_key_parity: f64,
    /// A misconfigured tag sends an invalid currency code (non-purchase events).
    pub invalid_currency: f64,
    /// A copy without event_id (non-purchase events).
    pub missing_event_id: f64,
    /// Browser denied consent, server did not send.
    pub browser_denied: f64,
    /// Browser denied consent, server sent anyway.
    pub consent_violation: f64,
    /// Server says denied.
    pub server_denied: f64,
    /// A denied copy arrives long after its action was emitted.
    pub consent_after_emit: f64,
    /// An event_id used again more than the TTL later (non-purchase events).
    pub reuse_after_ttl: f64,
    /// A record sent 3+ days after its event time (only after hour 76; not purchases).
    pub late: f64,
    // Per purchase step.
    /// The purchase was not tracked at all: an order with no conversion.
    pub order_only: f64,
    /// The checkout ended in a cancelled order and no event.
    pub cancelled_order: f64,
    pub missing_order_id: f64,
    pub conversion_without_order: f64,
    pub value_mismatch: f64,
    pub currency_mismatch: f64,
    /// The thank-you page is reloaded (1 or 2 extra purchase actions for the same order).
    pub reload: f64,
    // Per order matched to a conversion.
    pub refund: f64,
    pub partial_refund: f64,
    /// Deleted (Debezium orders): a delete and its tombstone.
    pub delete: f64,
    // Per order.
    /// The connector redelivers the order's first change.
    pub redelivery: f64,
    // Noise.
    /// Per action: a malformed line in one of the files.
    pub malformed_line: f64,
    /// Per action: a defective event inside an open server batch.
    pub bad_event_in_batch: f64,
    /// Snapshot rows of historical orders at the start, per action (at least 3).
    pub historical_orders: f64,
}

impl Shares {
    pub const DEFAULT: Shares = Shares {
        server_only: 0.12,
        browser_only: 0.07,
        retry: 0.03,
        after_merge_window: 0.015,
        after_release: 0.012,
        value_parity: 0.015,
        currency_parity: 0.008,
        match_key_parity: 0.02,
        invalid_currency: 0.006,
        missing_event_id: 0.01,
        browser_denied: 0.02,
        consent_violation: 0.008,
        server_denied: 0.006,
        consent_after_emit: 0.008,
        reuse_after_ttl: 0.008,
        late: 0.01,
        order_only: 0.05,
        cancelled_order: 0.03,
        missing_order_id: 0.02,
        conversion_without_order: 0.03,
        value_mismatch: 0.04,
        currency_mismatch: 0.02,
        reload: 0.05,
        refund: 0.05,
        partial_refund: 0.02,
        delete: 0.03,
        redelivery: 0.03,
        malformed_line: 0.004,
        bad_event_in_batch: 0.004,
        historical_orders: 0.002,
    };
}

impl Default for Shares {
    fn default() -> Self {
        Shares::DEFAULT
    }
}

/// What happens to the copies of one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventScenario {
    Pair,
    ServerOnly,
    BrowserOnly,
    Retry,
    AfterMergeWindow,
    AfterRelease,
    ValueParity,
    CurrencyParity,
    MatchKeyParity,
    InvalidCurrency,
    MissingEventId,
    BrowserDenied,
    ConsentViolation,
    ServerDenied,
    ConsentAfterEmit,
    ReuseAfterTtl,
    Late,
}

/// How a purchase's order relates to its conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderScenario {
    Match,
    ValueMismatch,
    CurrencyMismatch,
    ConversionWithoutOrder,
    MissingOrderId,
}

/// What became of an action's copies.
enum Fate {
    /// Emitted as one conversion with this value and (normalised) currency.
    Emitted {
        value: Money,
        currency: String,
    },
    ConsentDropped,
    /// Nothing countable for reconciliation (late, or non-purchase multi-conversion cases).
    Other,
}

/// Which parity keys a copy carries.
#[derive(Debug, Clone, Copy)]
struct Keys {
    email: bool,
    phone: bool,
    external_id: bool,
}

/// One action as planned: the facts both copies share.
struct Action {
    pixel: usize,
    step: Step,
    id: String,
    /// The browser sends the id as a JSON number.
    id_numeric: bool,
    currency: usize,
    value: Money,
    contents: Vec<ContentWire>,
    /// Order id on the events (None: missing_order_id).
    order_on_events: Option<u64>,
    keys: Keys,
    url: String,
}

struct Reusable {
    id: String,
    anchor: i64,
}

/// Plans actions one at a time, in increasing event time.
pub(crate) struct Planner {
    pub(crate) rng: ChaCha8Rng,
    shares: Shares,
    start_ms: i64,
    event_seq: u64,
    order_seq: u64,
    /// Emitted simple actions whose event_id may be reused after the TTL, per pixel and
    /// non-purchase step; sampled, so bounded.
    reusable: Vec<VecDeque<Reusable>>,
    last_offer: Vec<i64>,
    /// See [`super::GenerateOptions::every_order_names_its_shop`].
    pub(crate) every_order_names_its_shop: bool,
}

impl Planner {
    pub(crate) fn new(seed: u64, start_ms: i64, shares: Shares) -> Planner {
        Planner {
            rng: ChaCha8Rng::seed_from_u64(seed),
            shares,
            start_ms,
            event_seq: 0,
            order_seq: 0,
            reusable: (0..PIXELS.len() * 4).map(|_| VecDeque::new()).collect(),
            last_offer: vec![i64::MIN; PIXELS.len() * 4],
            every_order_names_its_shop: false,
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p.clamp(0.0, 1.0))
    }

    fn jitter(&mut self, max: i64) -> i64 {
        let u: f64 = self.rng.gen();
        ((u * u) * (max - 1) as f64) as i64
    }

    /// Planned arrival of a prompt copy.
    fn arrival(&mut self, copy: &EventCopy) -> i64 {
        let max = if copy.source == Source::Server && copy.shape.is_batch() {
            BATCH_JITTER_MS
        } else {
            JITTER_MS
        };
        copy.time + self.jitter(max)
    }

    fn new_event_id(&mut self, t: i64) -> (String, bool) {
        self.event_seq += 1;
        let n = self.event_seq;
        match self.rng.gen_range(0..100) {
            0..=59 => {
                // A v4-looking UUID whose last 48 bits are a bijection of the counter: unique.
                let r: u64 = self.rng.gen();
                let mixed = (n.wrapping_mul(0x5851_f42d_4c95_7f2d) ^ 0x9e37_79b9_7f4a) & MASK_48;
                (
                    format!(
                        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                        r >> 32,
                        (r >> 16) & 0xffff,
                        r & 0xfff,
                        0x8000 | ((r >> 40) & 0x3fff),
                        mixed
                    ),
                    false,
                )
            }
            60..=96 => (format!("evt_{}_{n}", t.div_euclid(1000)), false),
            _ => ((4_000_000_000_000 + n).to_string(), true),
        }
    }

    fn new_order_id(&mut self) -> u64 {
        self.order_seq += 1;
        10_000_000 + self.order_seq
    }

    // ----------------------------------------------------------------------------------
    // Entry points
    // ----------------------------------------------------------------------------------

    /// A Debezium snapshot of historical orders at the start of the stream: `created_at` 30+
    /// days before, `source.ts_ms` at the start, no `updated_at`: all historical.
    pub(crate) fn snapshot(&mut self, sched: &mut Scheduler, actions: u64) {
        let n = ((actions as f64 * self.shares.historical_orders).ceil() as u64).max(3);
        for k in 0..n {
            let currency = self.rng.gen_range(0..CURRENCIES.len());
            let product = self.rng.gen_range(0..CATALOG.len());
            let total =
                Money(price_in(CATALOG[product].usd_cents, currency).0 * self.rng.gen_range(1..4));
            let created = self.start_ms - self.rng.gen_range(30 * DAY_MS..400 * DAY_MS);
            let fmt = self.debezium_fmt();
            let status =
                ["paid", "paid", "paid", "refunded", "cancelled"][self.rng.gen_range(0..5)];
            let change = OrderChange {
                op: OrderOp::Snapshot,
                order_id: 10_000 + k,
                id_as_number: true,
                total,
                decimals: CURRENCIES[currency].decimals,
                currency: CURRENCIES[currency].code.to_string(),
                status: status.to_string(),
                shop: Some(PIXELS[self.rng.gen_range(0..PIXELS.len())].shop),
                shop_in_key: self.every_order_names_its_shop,
                created_at: time_of(fmt).quantize(created),
                changed_at: self.start_ms,
                updated_at_null: true,
                lsn: LSN_BASE - 1_000,
                processed_at: self.start_ms + 40 + k as i64 * 3,
                snapshot: if k + 1 == n { "last" } else { "true" },
                fmt,
                defect: None,
            };
            sched.push_order(
                &change,
                self.start_ms + k as i64 * 5,
                Bucket::OrderHistorical,
            );
        }
    }

    /// Plans one action: funnel `step` of session `s` at event time `t`.
    pub(crate) fn plan(&mut self, sched: &mut Scheduler, s: &mut Session, step: Step, t: i64) {
        self.noise(sched, s, t);
        let (contents, value) = self.walk_funnel(s, step);
        let sh = self.shares.clone();
        if step.is_purchase() {
            let u: f64 = self.rng.gen();
            if u < sh.order_only {
                return self.untracked_order(sched, s, value, t, false);
            }
            if u < sh.order_only + sh.cancelled_order {
                return self.untracked_order(sched, s, value, t, true);
            }
        }
        let mut scenario = self.draw_event_scenario();
        let purchase_excluded = matches!(
            scenario,
            EventScenario::InvalidCurrency
                | EventScenario::MissingEventId
                | EventScenario::ReuseAfterTtl
                | EventScenario::Late
        );
        if (step.is_purchase() && purchase_excluded)
            || (scenario == EventScenario::Late && t - self.start_ms < LATE_FROM_MS)
        {
            scenario = EventScenario::Pair;
        }
        let (mut id, id_numeric) = self.new_event_id(t);
        if scenario == EventScenario::ReuseAfterTtl {
            match self.take_reusable(s.pixel, step, t) {
                Some(old) => id = old,
                None => scenario = EventScenario::Pair,
            }
        }
        let order_scenario = if step.is_purchase() {
            Some(self.draw_order_scenario())
        } else {
            None
        };
        let order_id = step.is_purchase().then(|| self.new_order_id());
        let action = Action {
            pixel: s.pixel,
            step,
            id_numeric: id_numeric && scenario != EventScenario::ReuseAfterTtl,
            id,
            currency: s.currency,
            value,
            contents,
            order_on_events: match order_scenario {
                Some(OrderScenario::MissingOrderId) => None,
                _ => order_id,
            },
            keys: keys_for(s, step),
            url: self.page_url(s, step),
        };
        let (fate, anchor) = self.plan_events(sched, s, &action, scenario, t);
        if let (Some(order_id), Some(order_scenario)) = (order_id, order_scenario) {
            self.plan_order(sched, s, &action, fate, order_scenario, order_id, t);
        } else if matches!(
            scenario,
            EventScenario::Pair | EventScenario::ServerOnly | EventScenario::BrowserOnly
        ) && !action.id_numeric
        {
            self.offer_reusable(action.pixel, step, &action.id, anchor);
        }
    }

    // ----------------------------------------------------------------------------------
    // Events
    // ----------------------------------------------------------------------------------

    fn draw_event_scenario(&mut self) -> EventScenario {
        use EventScenario::*;
        let sh = &self.shares;
        let table = [
            (ServerOnly, sh.server_only),
            (BrowserOnly, sh.browser_only),
            (Retry, sh.retry),
            (AfterMergeWindow, sh.after_merge_window),
            (AfterRelease, sh.after_release),
            (ValueParity, sh.value_parity),
            (CurrencyParity, sh.currency_parity),
            (MatchKeyParity, sh.match_key_parity),
            (InvalidCurrency, sh.invalid_currency),
            (MissingEventId, sh.missing_event_id),
            (BrowserDenied, sh.browser_denied),
            (ConsentViolation, sh.consent_violation),
            (ServerDenied, sh.server_denied),
            (ConsentAfterEmit, sh.consent_after_emit),
            (ReuseAfterTtl, sh.reuse_after_ttl),
            (Late, sh.late),
        ];
        let mut u: f64 = self.rng.gen();
        for (scenario, share) in table {
            if u < share {
                return scenario;
            }
            u -= share;
        }
        Pair
    }

    /// Plans the copies of one action; returns its fate and its anchor (first copy's time).
    fn plan_events(
        &mut self,
        sched: &mut Scheduler,
        s: &Session,
        a: &Action,
        scenario: EventScenario,
        t: i64,
    ) -> (Fate, i64) {
        use EventScenario::*;
        let server_at = if self.chance(0.4) {
            t
        } else {
            t + self.rng.gen_range(1_000..SERVER_DELAY_MS)
        };
        let mut b = self.browser_copy(s, a, t);
        let mut sv = self.server_copy(s, a, server_at);
        let anchor = b.time.min(sv.time);
        let fate = match scenario {
            Pair | ReuseAfterTtl => self.emit(sched, Some(b), Some(sv)),
            ServerOnly => self.emit(sched, None, Some(sv)),
            BrowserOnly => self.emit(sched, Some(b), None),
            Retry => {
                let again = if self.chance(0.7) {
                    let mut again = sv.clone();
                    again.shape = again.shape.single();
                    again
                } else {
                    b.clone()
                };
                let fate = self.emit(sched, Some(b), Some(sv));
                let at = self.arrival(&again);
                sched.push_event(again, at, Bucket::Duplicate(DupReason::SameSource));
                fate
            }
            AfterMergeWindow => {
                let (first, mut far) = if self.chance(0.7) { (b, sv) } else { (sv, b) };
                let gap = self.rng.gen_range(MERGE_WINDOW_MS + 60_000..40 * 60_000);
                far.time = far.time_fmt.quantize(first.time + gap);
                far.shape = far.shape.single();
                let first_time = first.time;
                let fate = self.emit_one(sched, first);
                let min_arrival = far.time + self.jitter(JITTER_MS);
                let defer = Defer {
                    // The far copy's file must already be past the first copy's arrival, so
                    // the first copy is read first and anchors the action.
                    after_event_time: first_time + JITTER_MS + 60_000,
                    min_arrival,
                    max_arrival: far.time + TTL_MS - HOUR_MS,
                };
                let tag = Bucket::Duplicate(DupReason::AfterMergeWindow);
                sched.defer_event(far, tag, defer);
                fate
            }
            AfterRelease | ConsentAfterEmit => {
                let late_server = scenario == ConsentAfterEmit || self.chance(0.6);
                let (first, mut late) = if late_server { (b, sv) } else { (sv, b) };
                if scenario == ConsentAfterEmit {
                    late.consent = Some("denied");
                }
                late.time = late
                    .time_fmt
                    .quantize(first.time + self.rng.gen_range(0..SERVER_DELAY_MS));
                late.shape = late.shape.single();
                let f = first.time;
                let fate = self.emit_one(sched, first);
                let min_arrival = late.time + HOUR_MS + self.rng.gen_range(0..3 * HOUR_MS);
                let defer = Defer {
                    // Read only once the watermark is past f + merge_window: released.
                    after_event_time: f + MERGE_WINDOW_MS + ALLOWED_LATENESS_MS + MARGIN_MS,
                    min_arrival,
                    max_arrival: late.time + TTL_MS - HOUR_MS,
                };
                let tag = if scenario == ConsentAfterEmit {
                    Bucket::ConsentAfterEmit
                } else {
                    Bucket::Duplicate(DupReason::AfterRelease)
                };
                sched.defer_event(late, tag, defer);
                fate
            }
            ValueParity => {
                let extra = self.amount_delta(a.currency);
                b.value = Money(sv.value.0 + extra);
                self.emit(sched, Some(b), Some(sv))
            }
            CurrencyParity => {
                let other = self.other_currency(a.currency);
                b.value = traffic::convert(sv.value, a.currency, other);
                b.value_decimals = CURRENCIES[other].decimals;
                b.currency = CURRENCIES[other].code.to_string();
                self.emit(sched, Some(b), Some(sv))
            }
            MatchKeyParity => {
                let present: Vec<usize> = [a.keys.email, a.keys.phone, a.keys.external_id]
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| **p)
                    .map(|(i, _)| i)
                    .collect();
                if present.is_empty() {
                    // The backend knows the logged-out buyer's email; the pixel does not.
                    sv.user.email = Some(s.user.email_sha.clone());
                } else {
                    let strip_browser = self.chance(0.75);
                    let n = self.rng.gen_range(1..=present.len());
                    let side = if strip_browser { &mut b } else { &mut sv };
                    for key in present.iter().take(n) {
                        match key {
                            0 => side.user.email = None,
                            1 => side.user.phone = None,
                            _ => side.user.external_id = None,
                        }
                    }
                }
                self.emit(sched, Some(b), Some(sv))
            }
            InvalidCurrency => {
                let code = INVALID_CURRENCIES[self.rng.gen_range(0..INVALID_CURRENCIES.len())];
                for c in [&mut b, &mut sv] {
                    c.currency = code.to_string();
                    c.value_decimals = 2;
                }
                match self.rng.gen_range(0..10) {
                    0..=6 => self.emit(sched, Some(b), Some(sv)),
                    7 | 8 => self.emit(sched, None, Some(sv)),
                    _ => self.emit(sched, Some(b), None),
                }
            }
            MissingEventId => {
                let missing = if self.chance(0.7) {
                    EventIdWire::Absent
                } else {
                    EventIdWire::Empty
                };
                match self.rng.gen_range(0..10) {
                    0..=3 => {
                        sv.event_id = missing;
                        self.emit(sched, None, Some(sv));
                    }
                    4 | 5 => {
                        b.event_id = missing;
                        self.emit(sched, Some(b), None);
                    }
                    _ => {
                        // The server integration forgot the id: the browser copy is its own
                        // action, the server copy another: two conversions.
                        self.emit(sched, Some(b), None);
                        sv.event_id = missing;
                        self.emit(sched, None, Some(sv));
                    }
                }
                sched.truth.discrepancy(DiscrepancyKind::MissingEventId);
                Fate::Other
            }
            BrowserDenied => {
                b.consent = Some("denied");
                self.drop_for_consent(sched, Some(b), None);
                Fate::ConsentDropped
            }
            ConsentViolation => {
                b.consent = Some("denied");
                self.drop_for_consent(sched, Some(b), Some(sv));
                sched.truth.discrepancy(DiscrepancyKind::ConsentViolation);
                Fate::ConsentDropped
            }
            ServerDenied => {
                sv.consent = Some("denied");
                let with_browser = self.chance(0.6);
                self.drop_for_consent(sched, with_browser.then_some(b), Some(sv));
                Fate::ConsentDropped
            }
            Late => {
                let mut copy = if self.chance(0.5) { b } else { sv };
                let old = t - 3 * DAY_MS - self.rng.gen_range(0..3 * HOUR_MS);
                copy.time = copy.time_fmt.quantize(old);
                copy.shape = copy.shape.single();
                let defer = Defer {
                    // Read only once the watermark is more than the TTL past it.
                    after_event_time: copy.time + TTL_MS + ALLOWED_LATENESS_MS + MARGIN_MS,
                    min_arrival: t + self.jitter(JITTER_MS),
                    max_arrival: i64::MAX,
                };
                sched.defer_event(copy, Bucket::Late, defer);
                Fate::Other
            }
        };
        (fate, anchor)
    }

    /// Places the copies of one action that merge into one conversion and records its
    /// findings: sources, parity between the copies, an invalid currency. Value and currency
    /// are the server copy's when there is one (every copy carries a value).
    fn emit(&mut self, sched: &mut Scheduler, b: Option<EventCopy>, s: Option<EventCopy>) -> Fate {
        let (sources, browser_first) = match (&b, &s) {
            (Some(b), Some(s)) => (SourcesSeen::Both, b.time <= s.time),
            (Some(_), None) => (SourcesSeen::Browser, true),
            (None, Some(_)) => (SourcesSeen::Server, false),
            (None, None) => unreachable!("an action has a copy"),
        };
        let authority = s.as_ref().or(b.as_ref()).expect("a copy");
        let value = authority.value;
        let currency = authority.currency.trim().to_ascii_uppercase();
        let truth = &mut sched.truth;
        truth.source(sources);
        if let (Some(b), Some(s)) = (&b, &s) {
            let (cb, cs) = (
                b.currency.trim().to_ascii_uppercase(),
                s.currency.trim().to_ascii_uppercase(),
            );
            if cb != cs {
                truth.discrepancy(DiscrepancyKind::CurrencyParity);
            } else if b.value.abs_diff(s.value) > VALUE_TOLERANCE {
                truth.discrepancy(DiscrepancyKind::ValueParity);
            }
            let keys = |c: &EventCopy| {
                [
                    c.user.email.is_some(),
                    c.user.phone.is_some(),
                    c.user.external_id.is_some(),
                ]
            };
            let (kb, ks) = (keys(b), keys(s));
            for i in 0..3 {
                if kb[i] != ks[i] {
                    truth.discrepancy(DiscrepancyKind::MatchKeyParity);
                }
            }
        }
        if !is_known_iso(&currency) {
            truth.discrepancy(DiscrepancyKind::InvalidCurrency);
        }
        let (tag_b, tag_s) = if browser_first {
            (Bucket::Conversion, Bucket::Merged)
        } else {
            (Bucket::Merged, Bucket::Conversion)
        };
        if let Some(b) = b {
            let at = self.arrival(&b);
            sched.push_event(b, at, tag_b);
        }
        if let Some(s) = s {
            let at = self.arrival(&s);
            sched.push_event(s, at, tag_s);
        }
        Fate::Emitted { value, currency }
    }

    fn emit_one(&mut self, sched: &mut Scheduler, copy: EventCopy) -> Fate {
        match copy.source {
            Source::Browser => self.emit(sched, Some(copy), None),
            Source::Server => self.emit(sched, None, Some(copy)),
        }
    }

    fn drop_for_consent(
        &mut self,
        sched: &mut Scheduler,
        b: Option<EventCopy>,
        s: Option<EventCopy>,
    ) {
        for copy in [b, s].into_iter().flatten() {
            let at = self.arrival(&copy);
            sched.push_event(copy, at, Bucket::ConsentDropped);
        }
    }

    fn browser_copy(&mut self, s: &Session, a: &Action, at: i64) -> EventCopy {
        let time_fmt = match self.rng.gen_range(0..20) {
            0..=9 => TimeFmt::UnixS,
            10..=15 => TimeFmt::UnixMs,
            16..=18 => TimeFmt::Rfc3339 { offset_min: 0 },
            _ => TimeFmt::Rfc3339 {
                offset_min: [60, 120, -300, 540, 330][self.rng.gen_range(0..5)],
            },
        };
        let consent = if self.chance(0.5) {
            Some("granted")
        } else {
            None
        };
        let event_id = if a.id_numeric {
            EventIdWire::Number(a.id.parse().expect("numeric id"))
        } else {
            EventIdWire::Text(a.id.clone())
        };
        self.copy(
            s,
            a,
            Source::Browser,
            event_id,
            at,
            time_fmt,
            ServerShape::Api2Single,
            consent,
        )
    }

    fn server_copy(&mut self, s: &Session, a: &Action, at: i64) -> EventCopy {
        let shapes = PIXELS[s.pixel].server_shapes;
        let weights: Vec<u32> = shapes.iter().map(|(_, w)| *w).collect();
        let shape = shapes[pick(&mut self.rng, &weights)].0;
        let time_fmt = match shape {
            ServerShape::LegacyTrack | ServerShape::LegacyBatch => {
                TimeFmt::Rfc3339 { offset_min: 0 }
            }
            _ if self.chance(0.1) => TimeFmt::UnixMs,
            _ => TimeFmt::UnixS,
        };
        let consent = if self.chance(0.2) {
            Some("granted")
        } else {
            None
        };
        let event_id = EventIdWire::Text(a.id.clone());
        self.copy(s, a, Source::Server, event_id, at, time_fmt, shape, consent)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        s: &Session,
        a: &Action,
        source: Source,
        event_id: EventIdWire,
        at: i64,
        time_fmt: TimeFmt,
        shape: ServerShape,
        consent: Option<&'static str>,
    ) -> EventCopy {
        let browser = source == Source::Browser;
        let user = self.user_wire(s, a.keys, browser);
        let mut currency = CURRENCIES[a.currency].code.to_string();
        if browser && self.chance(0.05) {
            currency = currency.to_ascii_lowercase();
        }
        EventCopy {
            source,
            pixel: a.pixel,
            event: a.step.name(),
            event_id,
            time: time_fmt.quantize(at),
            time_fmt,
            shape,
            user,
            value: a.value,
            value_decimals: CURRENCIES[a.currency].decimals,
            value_as_string: !matches!(shape, ServerShape::LegacyTrack | ServerShape::LegacyBatch)
                && self.chance(0.1),
            currency,
            order_id: a.order_on_events,
            order_id_as_number: browser && self.chance(0.1),
            contents: a.contents.clone(),
            url: a.url.clone(),
            referrer: s.referrer,
            consent,
            defect: None,
        }
    }

    fn user_wire(&mut self, s: &Session, keys: Keys, browser: bool) -> UserWire {
        let u = &s.user;
        let clear_share = if browser { 0.5 } else { 0.3 };
        let email = keys.email.then(|| {
            if self.chance(clear_share) {
                if self.chance(0.2) {
                    format!("  {} ", capitalise(&u.email))
                } else {
                    u.email.clone()
                }
            } else {
                u.email_sha.clone()
            }
        });
        let phone = keys.phone.then(|| match self.rng.gen_range(0..3) {
            0 => u.phone_typed.clone(),
            1 => u.phone_e164.clone(),
            _ => u.phone_sha.clone(),
        });
        let external_id = keys.external_id.then(|| {
            if self.chance(clear_share) {
                u.external_id.clone()
            } else {
                u.external_id_sha.clone()
            }
        });
        UserWire {
            email,
            phone,
            external_id,
            ttclid: u.ttclid.clone().filter(|_| browser || self.chance(0.7)),
            ttp: u.ttp.clone().filter(|_| browser || self.chance(0.8)),
            ip: (browser || self.chance(0.9)).then(|| u.ip.clone()),
            user_agent: (browser || self.chance(0.9)).then_some(u.user_agent),
        }
    }

    /// Moves the session along the funnel; returns the step's contents and value.
    fn walk_funnel(&mut self, s: &mut Session, step: Step) -> (Vec<ContentWire>, Money) {
        let line = |s: &Session, product: usize, quantity: i64| ContentWire {
            product,
            quantity,
            price: price_in(CATALOG[product].usd_cents, s.currency),
        };
        let contents = match step {
            Step::ViewContent => {
                let product = if s.views_done == 0 {
                    s.viewed[0]
                } else {
                    let p = self.rng.gen_range(0..CATALOG.len());
                    s.viewed.push(p);
                    p
                };
                s.views_done += 1;
                vec![line(s, product, 1)]
            }
            Step::AddToCart => {
                let product = s.viewed[self.rng.gen_range(0..s.viewed.len())];
                let quantity = if self.chance(0.2) { 2 } else { 1 };
                s.cart.push(traffic::Line { product, quantity });
                vec![line(s, product, quantity)]
            }
            Step::InitiateCheckout | Step::CompletePayment => {
                if s.cart.is_empty() {
                    s.cart.push(traffic::Line {
                        product: s.viewed[0],
                        quantity: 1,
                    });
                }
                if step == Step::InitiateCheckout && self.chance(0.15) {
                    let product = self.rng.gen_range(0..CATALOG.len());
                    s.cart.push(traffic::Line {
                        product,
                        quantity: 1,
                    });
                }
                s.cart
                    .iter()
                    .map(|l| line(s, l.product, l.quantity))
                    .collect()
            }
        };
        let value = Money(contents.iter().map(|c| c.price.0 * c.quantity).sum());
        (contents, value)
    }

    fn page_url(&mut self, s: &Session, step: Step) -> String {
        let host = PIXELS[s.pixel].host;
        match step {
            Step::ViewContent if s.views_done <= 1 => s.landing.clone(),
            Step::ViewContent => format!(
                "https://{host}/products/{}",
                CATALOG[*s.viewed.last().expect("viewed")]
                    .id
                    .to_ascii_lowercase()
            ),
            Step::AddToCart => format!("https://{host}/cart"),
            Step::InitiateCheckout => format!("https://{host}/checkout"),
            Step::CompletePayment => format!("https://{host}/checkout/thank-you"),
        }
    }

    fn amount_delta(&mut self, currency: usize) -> i64 {
        // 0.50 to 15.00 (50 to 1500 yen): far beyond the 0.01 tolerance.
        self.rng.gen_range(50..1_500) * minor_unit(currency)
    }

    fn other_currency(&mut self, currency: usize) -> usize {
        let k = self.rng.gen_range(1..CURRENCIES.len());
        (currency + k) % CURRENCIES.len()
    }

    fn take_reusable(&mut self, pixel: usize, step: Step, t: i64) -> Option<String> {
        let q = &mut self.reusable[pixel * 4 + step.index()];
        let front = q.front()?;
        // The new copies' times are at least t - 1 s (whole-second formats round down): at
        // least ttl + 1 h after the old anchor.
        (front.anchor + TTL_MS + HOUR_MS + 1_000 <= t).then(|| q.pop_front().expect("front").id)
    }

    fn offer_reusable(&mut self, pixel: usize, step: Step, id: &str, anchor: i64) {
        let at = pixel * 4 + step.index();
        if anchor < self.last_offer[at].saturating_add(10 * 60_000)
            || self.reusable[at].len() >= 1_000
        {
            return;
        }
        self.last_offer[at] = anchor;
        self.reusable[at].push_back(Reusable {
            id: id.to_string(),
            anchor,
        });
    }

    // ----------------------------------------------------------------------------------
    // Orders
    // ----------------------------------------------------------------------------------

    fn draw_order_scenario(&mut self) -> OrderScenario {
        use OrderScenario::*;
        let sh = &self.shares;
        let table = [
            (MissingOrderId, sh.missing_order_id),
            (ConversionWithoutOrder, sh.conversion_without_order),
            (ValueMismatch, sh.value_mismatch),
            (CurrencyMismatch, sh.currency_mismatch),
        ];
        let mut u: f64 = self.rng.gen();
        for (scenario, share) in table {
            if u < share {
                return scenario;
            }
            u -= share;
        }
        Match
    }

    #[allow(clippy::too_many_arguments)]
    fn plan_order(
        &mut self,
        sched: &mut Scheduler,
        s: &Session,
        a: &Action,
        fate: Fate,
        scenario: OrderScenario,
        order_id: u64,
        t: i64,
    ) {
        let created = t - self.rng.gen_range(0..90_000);
        let (value, currency) = match fate {
            Fate::Emitted { value, currency } => (value, currency),
            Fate::ConsentDropped => {
                // The purchase happened; the order has no conversion to meet.
                let code = CURRENCIES[a.currency].code.to_string();
                sched
                    .truth
                    .discrepancy(DiscrepancyKind::OrderWithoutConversion);
                self.order_lifecycle(sched, s, order_id, a.value, &code, "paid", created, false);
                return;
            }
            Fate::Other => unreachable!("purchases are emitted or dropped for consent"),
        };
        sched.truth.tracked(&currency, value);
        let currency_index = CURRENCIES
            .iter()
            .position(|c| c.code == currency)
            .expect("purchases carry a valid currency");
        match scenario {
            OrderScenario::MissingOrderId => {
                sched.truth.discrepancy(DiscrepancyKind::MissingOrderId);
                sched
                    .truth
                    .discrepancy(DiscrepancyKind::OrderWithoutConversion);
                self.order_lifecycle(sched, s, order_id, value, &currency, "paid", created, false);
                return;
            }
            OrderScenario::ConversionWithoutOrder => {
                sched
                    .truth
                    .discrepancy(DiscrepancyKind::ConversionWithoutOrder);
            }
            OrderScenario::Match
            | OrderScenario::ValueMismatch
            | OrderScenario::CurrencyMismatch => {
                let (total, order_currency) = match scenario {
                    OrderScenario::ValueMismatch => {
                        let delta = self.amount_delta(currency_index);
                        let total = if value.0 > 2 * delta && self.chance(0.4) {
                            Money(value.0 - delta) // a discount code the pixel did not see
                        } else {
                            Money(value.0 + delta) // shipping the pixel did not include
                        };
                        (total, currency_index)
                    }
                    OrderScenario::CurrencyMismatch => {
                        let other = self.other_currency(currency_index);
                        (traffic::convert(value, currency_index, other), other)
                    }
                    _ => (value, currency_index),
                };
                let truth = &mut sched.truth;
                if order_currency != currency_index {
                    truth.discrepancy(DiscrepancyKind::CurrencyMismatch);
                } else if total.abs_diff(value) > VALUE_TOLERANCE {
                    truth.discrepancy(DiscrepancyKind::ValueMismatch);
                }
                let mut code = CURRENCIES[order_currency].code.to_string();
                if self.chance(0.05) {
                    code = code.to_ascii_lowercase();
                }
                let status = match self.rng.gen_range(0..100) {
                    0..=89 => "paid",
                    90..=93 => "Paid",
                    94..=96 => "PAID",
                    _ => "completed",
                };
                self.order_lifecycle(sched, s, order_id, total, &code, status, created, true);
            }
        }
        if self.chance(self.shares.reload) {
            let reloads = if self.chance(0.2) { 2 } else { 1 };
            let mut at = t;
            for _ in 0..reloads {
                // Strictly later than every copy of the original: released after it.
                at += self.rng.gen_range(2 * 60_000..12 * 60_000);
                let (id, _) = self.new_event_id(at);
                let reload = Action {
                    pixel: a.pixel,
                    step: a.step,
                    id,
                    id_numeric: false,
                    currency: a.currency,
                    value: a.value,
                    contents: a.contents.clone(),
                    order_on_events: a.order_on_events,
                    keys: a.keys,
                    url: a.url.clone(),
                };
                let copy = self.browser_copy(s, &reload, at);
                let arrival = self.arrival(&copy);
                sched.push_event(copy, arrival, Bucket::Duplicate(DupReason::DuplicateOrder));
                sched
                    .truth
                    .discrepancy(DiscrepancyKind::DuplicateOrderConversion);
            }
        }
    }

    /// An order placed with no purchase event at all: paid (order_without_conversion) or
    /// cancelled a few minutes later (no finding).
    fn untracked_order(
        &mut self,
        sched: &mut Scheduler,
        s: &Session,
        value: Money,
        t: i64,
        cancelled: bool,
    ) {
        let id = self.new_order_id();
        let code = CURRENCIES[s.currency].code;
        if !cancelled {
            sched
                .truth
                .discrepancy(DiscrepancyKind::OrderWithoutConversion);
            self.order_lifecycle(sched, s, id, value, code, "paid", t, false);
            return;
        }
        let fmt = self.order_fmt();
        let mut change = self.order_change(s, id, value, code, "pending", t, fmt);
        let arrival = change.changed_at + self.jitter(JITTER_MS);
        sched.push_order(&change, arrival, Bucket::OrderApplied);
        self.maybe_redeliver(sched, &change, arrival);
        // Cancelled well before the order's wait ends: at the wait, it is not revenue.
        let at = t + self.rng.gen_range(5 * 60_000..30 * 60_000);
        change.op = OrderOp::Update;
        change.status = if self.chance(0.8) {
            "cancelled"
        } else {
            "canceled"
        }
        .to_string();
        change.changed_at = time_of(fmt).quantize(at);
        change.lsn = self.lsn(change.changed_at);
        change.processed_at = change.changed_at + self.rng.gen_range(5..900);
        let arrival = change.changed_at + self.jitter(JITTER_MS);
        sched.push_order(&change, arrival, Bucket::OrderApplied);
    }

    /// Creates an order and, when `matched` (a conversion met it), maybe refunds, partly
    /// refunds or deletes it hours later; maybe the connector redelivers its first change.
    /// Records the order's final contribution to backend revenue.
    #[allow(clippy::too_many_arguments)]
    fn order_lifecycle(
        &mut self,
        sched: &mut Scheduler,
        s: &Session,
        id: u64,
        total: Money,
        currency: &str,
        status: &str,
        created: i64,
        matched: bool,
    ) {
        let fmt = self.order_fmt();
        let mut change = self.order_change(s, id, total, currency, status, created, fmt);
        let arrival = change.changed_at + self.jitter(JITTER_MS);
        sched.push_order(&change, arrival, Bucket::OrderApplied);
        self.maybe_redeliver(sched, &change, arrival);
        let revenue_currency = currency.to_ascii_uppercase();
        let sh = self.shares.clone();
        let u: f64 = self.rng.gen();
        let debezium = matches!(fmt, OrderFmt::Debezium { .. });
        let later = if matched && u < sh.refund + sh.partial_refund + sh.delete {
            // Hours later (after the order's wait, within the TTL). A full refund keeps the
            // total, so it changes nothing the comparison sees even if read before the match.
            let at = created + ORDER_WAIT_MS + self.rng.gen_range(HOUR_MS..30 * HOUR_MS);
            // Not in the span's quiet tail (see `schedule`): there the events have run dry,
            // and whether the conversion was released before the change is read depends on
            // how the reader lets a finished input go, not on the data.
            (at + JITTER_MS < sched.quiet_tail_from()).then(|| time_of(fmt).quantize(at))
        } else {
            None
        };
        match later {
            Some(at) if u < sh.refund => {
                change.op = OrderOp::Update;
                change.status = "refunded".to_string();
                self.push_later(sched, &mut change, at);
            }
            Some(at) if u < sh.refund + sh.partial_refund || !debezium => {
                self.fulfil(sched, &mut change, created, fmt);
                change.status = "partially_refunded".to_string();
                let unit = minor_unit(currency_index(currency));
                let kept = (total.0 / unit) * self.rng.gen_range(40..90) / 100;
                change.total = Money(kept.max(1) * unit);
                sched.truth.backend(&revenue_currency, change.total);
                self.push_later(sched, &mut change, at);
            }
            Some(at) => {
                self.fulfil(sched, &mut change, created, fmt);
                change.op = OrderOp::Delete;
                let arrival = self.push_later(sched, &mut change, at);
                let arrival = arrival + 1 + self.rng.gen_range(0..50);
                sched.push_tombstone(id, arrival);
            }
            None => sched.truth.backend(&revenue_currency, total),
        }
    }

    /// The order ships 30-90 min after it was created (status `fulfilled`, same total). A
    /// change that alters the total or removes the order must be read after the order met its
    /// conversion; this update, read first, guarantees it whatever the other traffic: when a
    /// later orders line is read the watermark is at least created + 20 min, past the
    /// conversion's release (at most created + 7 min).
    fn fulfil(
        &mut self,
        sched: &mut Scheduler,
        change: &mut OrderChange,
        created: i64,
        fmt: OrderFmt,
    ) {
        change.op = OrderOp::Update;
        change.status = "fulfilled".to_string();
        let at = created + self.rng.gen_range(30 * 60_000..90 * 60_000);
        self.push_later(sched, change, time_of(fmt).quantize(at));
    }

    /// Places a later change to an order at `at`; returns its arrival.
    fn push_later(&mut self, sched: &mut Scheduler, change: &mut OrderChange, at: i64) -> i64 {
        change.changed_at = at;
        change.lsn = self.lsn(at);
        change.processed_at = at + self.rng.gen_range(5..900);
        let arrival = at + self.jitter(JITTER_MS);
        sched.push_order(change, arrival, Bucket::OrderApplied);
        arrival
    }

    /// The connector crashes and sends the change again (same `source.lsn`), within a minute:
    /// before any later change to the same order.
    fn maybe_redeliver(&mut self, sched: &mut Scheduler, change: &OrderChange, arrival: i64) {
        if !self.chance(self.shares.redelivery) {
            return;
        }
        let mut again = change.clone();
        again.processed_at += self.rng.gen_range(30_000..120_000);
        let at = arrival + self.rng.gen_range(1_000..60_000);
        sched.push_order(&again, at, Bucket::OrderRedelivered);
    }

    #[allow(clippy::too_many_arguments)]
    fn order_change(
        &mut self,
        s: &Session,
        id: u64,
        total: Money,
        currency: &str,
        status: &str,
        created: i64,
        fmt: OrderFmt,
    ) -> OrderChange {
        let created = time_of(fmt).quantize(created);
        let debezium = matches!(fmt, OrderFmt::Debezium { .. });
        OrderChange {
            op: OrderOp::Create,
            order_id: id,
            id_as_number: debezium || self.chance(0.3),
            total,
            decimals: CURRENCIES[currency_index(currency)].decimals,
            currency: currency.to_string(),
            status: status.to_string(),
            // The draw is made either way: the option changes this column and nothing else.
            shop: (self.chance(0.6) || self.every_order_names_its_shop)
                .then_some(PIXELS[s.pixel].shop),
            shop_in_key: self.every_order_names_its_shop,
            created_at: created,
            changed_at: created,
            updated_at_null: false,
            lsn: self.lsn(created),
            processed_at: created + self.rng.gen_range(5..900),
            snapshot: "false",
            fmt,
            defect: None,
        }
    }

    fn lsn(&mut self, at: i64) -> i64 {
        LSN_BASE + (at - self.start_ms) * 8 + self.rng.gen_range(0..8)
    }

    fn order_fmt(&mut self) -> OrderFmt {
        if self.chance(0.35) {
            let time = match self.rng.gen_range(0..10) {
                0..=2 => TimeFmt::UnixS,
                3..=5 => TimeFmt::UnixMs,
                _ => TimeFmt::Rfc3339 { offset_min: 0 },
            };
            OrderFmt::Plain {
                time,
                total_as_string: self.chance(0.4),
            }
        } else {
            self.debezium_fmt()
        }
    }

    fn debezium_fmt(&mut self) -> OrderFmt {
        let wrapped = self.chance(0.6);
        let mode = match (wrapped, self.rng.gen_range(0..10)) {
            (true, 0..=5) => DecimalMode::Precise,
            (_, 0..=7) => DecimalMode::String,
            _ => DecimalMode::Double,
        };
        let time = match self.rng.gen_range(0..20) {
            0..=11 => TimeFmt::IsoMicros,
            12..=16 => TimeFmt::EpochUs,
            17 | 18 => TimeFmt::UnixMs,
            _ => TimeFmt::EpochNs,
        };
        OrderFmt::Debezium {
            wrapped,
            mode,
            time,
        }
    }

    // ----------------------------------------------------------------------------------
    // Noise
    // ----------------------------------------------------------------------------------

    /// Malformed lines (each one dead letter) and defective events inside server batches.
    fn noise(&mut self, sched: &mut Scheduler, s: &Session, t: i64) {
        if self.chance(self.shares.bad_event_in_batch) {
            let mut bad = self.throwaway_copy(s, Source::Server, t);
            bad.defect = Some(if self.chance(0.5) {
                Defect::NanAmount
            } else {
                Defect::BadTime
            });
            sched.spoil_batch(bad);
        }
        if !self.chance(self.shares.malformed_line) {
            return;
        }
        let arrival = t + self.jitter(JITTER_MS);
        match pick(&mut self.rng, &[40, 35, 25]) {
            0 => {
                let mut copy = self.throwaway_copy(s, Source::Browser, t);
                copy.defect = Some(
                    [
                        Defect::Truncated,
                        Defect::NanAmount,
                        Defect::BadTime,
                        Defect::WrongType,
                        Defect::MissingKey,
                        Defect::HugeAmount,
                        Defect::Empty,
                    ][self.rng.gen_range(0..7)],
                );
                sched.push_dead(File::Browser, arrival, copy.render_browser());
            }
            1 => {
                let mut copy = self.throwaway_copy(s, Source::Server, t);
                copy.shape = copy.shape.single();
                let text = match self.rng.gen_range(0..7) {
                    6 => super::wire::render_empty_batch(s.pixel),
                    k => {
                        copy.defect = Some(
                            [
                                Defect::Truncated,
                                Defect::NanAmount,
                                Defect::BadTime,
                                Defect::WrongType,
                                Defect::MissingKey,
                                Defect::Empty,
                            ][k],
                        );
                        copy.render_server_single()
                    }
                };
                sched.push_dead(File::Server, arrival, text);
            }
            _ => {
                let fmt = if self.chance(0.5) {
                    OrderFmt::Plain {
                        time: TimeFmt::Rfc3339 { offset_min: 0 },
                        total_as_string: self.chance(0.5),
                    }
                } else {
                    OrderFmt::Debezium {
                        wrapped: false,
                        mode: DecimalMode::String,
                        time: TimeFmt::IsoMicros,
                    }
                };
                let id = self.new_order_id();
                let mut change = self.order_change(
                    s,
                    id,
                    s.cart_value(),
                    CURRENCIES[s.currency].code,
                    "paid",
                    t,
                    fmt,
                );
                change.defect = Some(
                    [
                        Defect::Truncated,
                        Defect::NanAmount,
                        Defect::BadTime,
                        Defect::WrongType,
                        Defect::MissingKey,
                        Defect::Empty,
                    ][self.rng.gen_range(0..6)],
                );
                let text = change.render(&mut Default::default());
                sched.push_dead(File::Orders, arrival, text);
            }
        }
    }

    /// A copy that belongs to no action (fresh id), to be made defective.
    fn throwaway_copy(&mut self, s: &Session, source: Source, t: i64) -> EventCopy {
        let (id, _) = self.new_event_id(t);
        let product = s.viewed[0];
        let price = price_in(CATALOG[product].usd_cents, s.currency);
        let a = Action {
            pixel: s.pixel,
            step: Step::ViewContent,
            id,
            id_numeric: false,
            currency: s.currency,
            value: price,
            contents: vec![ContentWire {
                product,
                quantity: 1,
                price,
            }],
            order_on_events: None,
            keys: keys_for(s, Step::ViewContent),
            url: s.landing.clone(),
        };
        match source {
            Source::Browser => self.browser_copy(s, &a, t),
            Source::Server => self.server_copy(s, &a, t),
        }
    }
}

fn keys_for(s: &Session, step: Step) -> Keys {
    let u = &s.user;
    match step {
        Step::ViewContent | Step::AddToCart => Keys {
            email: u.logged_in,
            phone: false,
            external_id: u.logged_in,
        },
        Step::InitiateCheckout => Keys {
            email: true,
            phone: false,
            external_id: u.logged_in,
        },
        Step::CompletePayment => Keys {
            email: true,
            phone: u.has_phone,
            external_id: u.logged_in,
        },
    }
}

fn capitalise(email: &str) -> String {
    let mut out = String::with_capacity(email.len());
    let mut up = true;
    for c in email.chars() {
        if up {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        up = matches!(c, '.' | '@');
    }
    out
}

fn currency_index(code: &str) -> usize {
    let code = code.to_ascii_uppercase();
    CURRENCIES
        .iter()
        .position(|c| c.code == code)
        .expect("orders carry a known currency")
}

fn time_of(fmt: OrderFmt) -> TimeFmt {
    match fmt {
        OrderFmt::Plain { time, .. } | OrderFmt::Debezium { time, .. } => time,
    }
}
