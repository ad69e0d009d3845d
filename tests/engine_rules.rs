//! Golden scenarios for every rule in docs/RULES.md: records in, outputs and buckets out.

mod support;

use onecount::config::ConsentDefault;
use onecount::model::{MatchKey, Source, SourcesSeen, ValueSource};
use support::*;

// ---- dedup and merge ----

#[test]
fn browser_and_server_copies_within_the_merge_window_become_one_conversion() {
    let (out, stats) = run(vec![
        browser("AddToCart", "e1", T0)
            .email("a@b.com")
            .url("https://shop/p")
            .rec(),
        server("AddToCart", "e1", T0 + 30 * SEC)
            .phone("+15551234567")
            .rec(),
    ]);
    assert_eq!(out.conversions.len(), 1);
    let c = &out.conversions[0].to_conversion();
    assert_eq!(c.sources, SourcesSeen::Both);
    assert_eq!(c.first_source, Source::Browser);
    assert_eq!(c.event_time, T0 / 1000);
    assert_eq!(c.user.email.as_deref(), Some(hash("a@b.com").as_str()));
    assert_eq!(
        c.user.phone.as_deref(),
        Some(hash("+15551234567").as_str()),
        "server adds the match key the browser lacked"
    );
    assert_eq!(c.page.url.as_deref(), Some("https://shop/p"));
    assert_eq!(
        (stats.conversions, stats.merged, stats.duplicates),
        (1, 1, 0)
    );
}

#[test]
fn server_first_with_equal_time_still_makes_the_browser_copy_first() {
    let (out, _) = run(vec![
        server("ViewContent", "e1", T0).rec(),
        browser("ViewContent", "e1", T0).rec(),
    ]);
    assert_eq!(
        out.conversions[0].to_conversion().first_source,
        Source::Browser
    );
}

#[test]
fn earlier_server_copy_arriving_second_becomes_the_first_copy() {
    let (out, _) = run(vec![
        browser("ViewContent", "e1", T0 + 10 * SEC).rec(),
        server("ViewContent", "e1", T0).rec(),
    ]);
    assert_eq!(out.conversions.len(), 1);
    assert_eq!(
        out.conversions[0].to_conversion().first_source,
        Source::Server
    );
    assert_eq!(out.conversions[0].to_conversion().event_time, T0 / 1000);
}

#[test]
fn other_source_beyond_the_merge_window_is_a_duplicate() {
    let (out, stats) = run(vec![
        browser("AddToCart", "e1", T0).rec(),
        server("AddToCart", "e1", T0 + 5 * MIN + SEC).rec(),
    ]);
    assert_eq!(out.conversions.len(), 1);
    assert_eq!(
        out.conversions[0].to_conversion().sources,
        SourcesSeen::Browser
    );
    assert_eq!(dup(&stats, "after_merge_window"), 1);
}

#[test]
fn copy_exactly_at_the_end_of_the_merge_window_still_merges() {
    let (out, _) = run(vec![
        browser("AddToCart", "e1", T0).rec(),
        server("AddToCart", "e1", T0 + 5 * MIN).rec(),
    ]);
    assert_eq!(
        out.conversions[0].to_conversion().sources,
        SourcesSeen::Both
    );
}

#[test]
fn same_source_retry_is_a_duplicate() {
    let (out, stats) = run(vec![
        server("AddToCart", "e1", T0).rec(),
        server("AddToCart", "e1", T0 + SEC).rec(),
        server("AddToCart", "e1", T0 + HOUR).rec(),
    ]);
    assert_eq!(out.conversions.len(), 1);
    assert_eq!(dup(&stats, "same_source"), 2);
}

#[test]
fn kafka_streams_sequence_keeps_the_first_of_each_id() {
    let ids = ["a", "b", "a", "a", "b", "c", "c", "a", "b"];
    let records = ids
        .iter()
        .enumerate()
        .map(|(i, id)| browser("ViewContent", id, T0 + i as i64 * SEC).rec())
        .collect();
    let (out, stats) = run(records);
    assert_eq!(
        keys(&out),
        [
            "PIXEL1/ViewContent/a",
            "PIXEL1/ViewContent/b",
            "PIXEL1/ViewContent/c"
        ]
    );
    assert_eq!(stats.duplicates, 6);
}

#[test]
fn same_event_id_under_another_event_name_or_pixel_is_another_action() {
    let (out, _) = run(vec![
        browser("ViewContent", "e1", T0).rec(),
        browser("AddToCart", "e1", T0).rec(),
        browser("ViewContent", "e1", T0).pixel("PIXEL2").rec(),
    ]);
    assert_eq!(out.conversions.len(), 3);
}

#[test]
fn key_seen_again_after_its_ttl_is_a_new_action() {
    let (out, stats) = run(vec![
        browser("ViewContent", "e1", T0).rec(),
        browser("ViewContent", "e1", T0 + 48 * HOUR - SEC).rec(),
        browser("ViewContent", "e1", T0 + 48 * HOUR).rec(),
    ]);
    assert_eq!(out.conversions.len(), 2);
    assert_eq!(dup(&stats, "same_source"), 1);
}

#[test]
fn pending_action_is_released_only_when_the_watermark_passes_its_merge_window() {
    use onecount::engine::{Engine, Outputs};
    let config = engine_config();
    let mut engine = Engine::new(&config, &Default::default());
    let mut out = Outputs::default();
    engine.process(browser("ViewContent", "e1", T0).rec(), &mut out);
    engine.process(server("ViewContent", "x", T0).rec(), &mut out);
    // Watermark = min(browser, server) - 10 min lateness; needs to pass T0 + 5 min.
    engine.process(browser("ViewContent", "x2", T0 + 16 * MIN).rec(), &mut out);
    assert!(
        out.conversions.is_empty(),
        "server input still holds the watermark at T0 - 10min"
    );
    engine.process(server("ViewContent", "x3", T0 + 15 * MIN).rec(), &mut out);
    assert!(
        out.conversions.is_empty(),
        "watermark at T0 + 5min has not passed T0 + 5min"
    );
    engine.process(
        server("ViewContent", "x4", T0 + 15 * MIN + 1).rec(),
        &mut out,
    );
    assert_eq!(
        keys(&out),
        ["PIXEL1/ViewContent/e1", "PIXEL1/ViewContent/x"]
    );
    assert_eq!(
        out.conversions[0].to_conversion().sources,
        SourcesSeen::Browser
    );
}

#[test]
fn copy_arriving_after_its_action_was_released_is_an_after_release_duplicate() {
    let (out, stats) = run(vec![
        browser("ViewContent", "e1", T0).rec(),
        browser("ViewContent", "later", T0 + 2 * HOUR).rec(),
        server("ViewContent", "later", T0 + 2 * HOUR).rec(),
        // Within the merge window of e1 by event time, but two hours behind the watermark.
        server("ViewContent", "e1", T0 + MIN).rec(),
    ]);
    assert_eq!(out.conversions.len(), 2);
    assert_eq!(
        out.conversions[0].to_conversion().sources,
        SourcesSeen::Browser
    );
    assert_eq!(dup(&stats, "after_release"), 1);
}

#[test]
fn merge_window_zero_emits_the_first_copy_at_once() {
    use onecount::engine::{Engine, Outputs};
    let mut config = engine_config();
    config.merge_window = std::time::Duration::ZERO;
    config.allowed_lateness = std::time::Duration::ZERO;
    let mut engine = Engine::new(&config, &Default::default());
    let mut out = Outputs::default();
    engine.process(browser("ViewContent", "e1", T0).rec(), &mut out);
    engine.process(server("ViewContent", "e2", T0 + SEC).rec(), &mut out);
    engine.process(browser("ViewContent", "e3", T0 + 2 * SEC).rec(), &mut out);
    assert_eq!(keys(&out)[0], "PIXEL1/ViewContent/e1");
}

#[test]
fn copies_older_than_the_ttl_behind_the_watermark_are_late() {
    let (out, stats) = run(vec![
        browser("ViewContent", "now", T0 + 72 * HOUR).rec(),
        server("ViewContent", "now", T0 + 72 * HOUR).rec(),
        browser("ViewContent", "old", T0).rec(),
    ]);
    assert_eq!(out.conversions.len(), 1);
    assert_eq!(stats.late, 1);
}

// ---- missing event_id ----

#[test]
fn copy_without_event_id_is_emitted_alone_with_a_discrepancy() {
    let (out, stats) = run(vec![
        browser("ViewContent", "", T0).ttp("t1").rec(),
        server("ViewContent", "", T0).ttp("t1").rec(),
    ]);
    assert_eq!(out.conversions.len(), 2);
    assert_eq!(kinds(&out), ["missing_event_id", "missing_event_id"]);
    assert_eq!(stats.discrepancies["missing_event_id"], 2);
    assert_ne!(
        out.conversions[0].to_conversion().key,
        out.conversions[1].to_conversion().key
    );
}

#[test]
fn pair_on_ttp_merges_copies_without_event_id() {
    let mut config = engine_config();
    config.pair_on_ttp = true;
    let (out, _) = run_with(
        &config,
        vec![
            browser("ViewContent", "", T0).ttp("t1").rec(),
            server("ViewContent", "", T0).ttp("t1").rec(),
        ],
    );
    assert_eq!(out.conversions.len(), 1);
    assert_eq!(
        out.conversions[0].to_conversion().sources,
        SourcesSeen::Both
    );
    assert_eq!(kinds(&out), ["missing_event_id"]);
}

// ---- value authority and parity ----

#[test]
fn server_value_wins_over_browser_and_mismatch_is_reported() {
    let (out, _) = run(vec![
        browser("AddToCart", "e1", T0).value(10.0, "USD").rec(),
        server("AddToCart", "e1", T0).value(12.5, "USD").rec(),
    ]);
    let c = &out.conversions[0].to_conversion();
    assert_eq!(c.value_source, ValueSource::Server);
    assert_eq!(c.properties.value.unwrap().to_f64(), 12.5);
    assert_eq!(kinds(&out), ["value_parity"]);
    let d = &out.discrepancies[0];
    assert_eq!(d.browser_value.unwrap().to_f64(), 10.0);
    assert_eq!(d.server_value.unwrap().to_f64(), 12.5);
}

#[test]
fn values_within_tolerance_are_at_parity() {
    let (out, _) = run(vec![
        browser("AddToCart", "e1", T0).value(10.0, "USD").rec(),
        server("AddToCart", "e1", T0).value(10.01, "USD").rec(),
    ]);
    assert!(out.discrepancies.is_empty());
}

#[test]
fn currency_difference_is_reported_alone() {
    let (out, _) = run(vec![
        browser("AddToCart", "e1", T0).value(10.0, "USD").rec(),
        server("AddToCart", "e1", T0).value(99.0, "EUR").rec(),
    ]);
    assert_eq!(kinds(&out), ["currency_parity"]);
}

#[test]
fn browser_only_value_is_used_when_the_server_has_none() {
    let (out, _) = run(vec![
        browser("AddToCart", "e1", T0).value(10.0, "USD").rec(),
        server("AddToCart", "e1", T0).rec(),
    ]);
    assert_eq!(
        out.conversions[0].to_conversion().value_source,
        ValueSource::Browser
    );
}

#[test]
fn match_key_on_one_side_only_is_reported_per_key() {
    let (out, _) = run(vec![
        browser("AddToCart", "e1", T0)
            .email("a@b.com")
            .ttp("cookie")
            .rec(),
        server("AddToCart", "e1", T0).phone("+15550000000").rec(),
    ]);
    let mut found: Vec<_> = out
        .discrepancies
        .iter()
        .map(|d| (d.match_key.unwrap(), d.present_on.unwrap()))
        .collect();
    found.sort_by_key(|(k, _)| k.as_str());
    assert_eq!(
        found,
        [
            (MatchKey::Email, Source::Browser),
            (MatchKey::Phone, Source::Server)
        ]
    );
}

#[test]
fn unknown_currency_code_is_a_discrepancy() {
    let (out, _) = run(vec![server("AddToCart", "e1", T0).value(1.0, "XYZ").rec()]);
    assert_eq!(kinds(&out), ["invalid_currency"]);
    assert_eq!(out.discrepancies[0].currency.as_deref(), Some("XYZ"));
}

// ---- consent ----

#[test]
fn denied_browser_copy_alone_is_dropped() {
    let (out, stats) = run(vec![browser("AddToCart", "e1", T0).denied().rec()]);
    assert!(out.conversions.is_empty());
    assert_eq!(stats.consent_dropped, 1);
}

#[test]
fn server_copy_of_a_denied_browser_action_is_a_violation_in_either_arrival_order() {
    for browser_first in [true, false] {
        let b = browser("CompletePayment", "e1", T0).denied().rec();
        let s = server("CompletePayment", "e1", T0 + SEC).rec();
        let records = if browser_first {
            vec![b, s]
        } else {
            vec![s, b]
        };
        let (out, stats) = run(records);
        assert!(out.conversions.is_empty());
        assert_eq!(stats.consent_dropped, 2);
        assert_eq!(
            kinds(&out),
            ["consent_violation"],
            "browser first: {browser_first}"
        );
    }
}

#[test]
fn denied_server_copy_drops_the_action_without_a_violation() {
    let (out, stats) = run(vec![
        browser("AddToCart", "e1", T0).granted().rec(),
        server("AddToCart", "e1", T0).denied().rec(),
    ]);
    assert!(out.conversions.is_empty());
    assert!(out.discrepancies.is_empty());
    assert_eq!(stats.consent_dropped, 2);
}

#[test]
fn later_copies_of_a_consent_dropped_action_are_dropped_too() {
    let (out, stats) = run(vec![
        browser("AddToCart", "e1", T0).denied().rec(),
        browser("AddToCart", "e1", T0 + HOUR).rec(),
        server("AddToCart", "e1", T0 + 2 * HOUR).rec(),
        server("AddToCart", "e1", T0 + 3 * HOUR).rec(),
    ]);
    assert!(out.conversions.is_empty());
    assert_eq!(stats.consent_dropped, 4);
    assert_eq!(
        kinds(&out),
        ["consent_violation"],
        "one violation per action"
    );
}

#[test]
fn denied_copy_after_emission_cannot_recall_it() {
    let (out, stats) = run(vec![
        browser("AddToCart", "e1", T0).rec(),
        browser("AddToCart", "x", T0 + 2 * HOUR).rec(),
        server("AddToCart", "x", T0 + 2 * HOUR).rec(),
        server("AddToCart", "e1", T0 + MIN).denied().rec(),
    ]);
    assert_eq!(out.conversions.len(), 2);
    assert_eq!(stats.consent_dropped, 1);
    assert_eq!(kinds(&out), ["consent_after_emit"]);
}

#[test]
fn default_consent_denied_drops_copies_that_do_not_state_it() {
    let mut config = engine_config();
    config.default_consent = ConsentDefault::Denied;
    let (out, stats) = run_with(
        &config,
        vec![
            browser("AddToCart", "e1", T0).rec(),
            browser("AddToCart", "e2", T0).granted().rec(),
        ],
    );
    assert_eq!(keys(&out), ["PIXEL1/AddToCart/e2"]);
    assert_eq!(stats.consent_dropped, 1);
}

// ---- purchases ----

#[test]
fn reloaded_thank_you_page_with_a_new_event_id_is_a_duplicate_order_conversion() {
    let (out, stats) = run(vec![
        browser("CompletePayment", "e1", T0)
            .value(50.0, "USD")
            .order("o1")
            .rec(),
        server("CompletePayment", "e1", T0)
            .value(50.0, "USD")
            .order("o1")
            .rec(),
        browser("CompletePayment", "e2", T0 + 3 * MIN)
            .value(50.0, "USD")
            .order("o1")
            .rec(),
        order("o1", 50.0, "USD", T0).rec(),
    ]);
    assert_eq!(keys(&out), ["PIXEL1/CompletePayment/e1"]);
    assert_eq!(kinds(&out), ["duplicate_order_conversion"]);
    assert_eq!(dup(&stats, "duplicate_order"), 1);
}

#[test]
fn order_dedup_spans_purchase_event_names() {
    let (out, _) = run(vec![
        server("PlaceAnOrder", "e1", T0)
            .value(50.0, "USD")
            .order("o1")
            .rec(),
        server("CompletePayment", "e2", T0 + MIN)
            .value(50.0, "USD")
            .order("o1")
            .rec(),
        order("o1", 50.0, "USD", T0).rec(),
    ]);
    assert_eq!(out.conversions.len(), 1);
    assert_eq!(kinds(&out), ["duplicate_order_conversion"]);
}

#[test]
fn purchase_without_order_id_is_emitted_with_a_discrepancy() {
    let (out, _) = run(vec![server("CompletePayment", "e1", T0)
        .value(5.0, "USD")
        .rec()]);
    assert_eq!(out.conversions.len(), 1);
    assert_eq!(kinds(&out), ["missing_order_id"]);
}

// ---- reconciliation ----

#[test]
fn purchase_matching_its_order_raises_nothing_whichever_comes_first() {
    for order_first in [true, false] {
        let o = order("o1", 50.0, "USD", T0).rec();
        let p = server("CompletePayment", "e1", T0)
            .value(50.0, "USD")
            .order("o1")
            .rec();
        let (out, _) = run(if order_first { vec![o, p] } else { vec![p, o] });
        assert!(
            out.discrepancies.is_empty(),
            "order first: {order_first}: {:?}",
            out.discrepancies
        );
    }
}

#[test]
fn totals_beyond_tolerance_are_a_value_mismatch() {
    let (out, _) = run(vec![
        server("CompletePayment", "e1", T0)
            .value(50.0, "USD")
            .order("o1")
            .rec(),
        order("o1", 55.0, "USD", T0).rec(),
    ]);
    assert_eq!(kinds(&out), ["value_mismatch"]);
    let d = &out.discrepancies[0];
    assert_eq!(d.order_total.unwrap().to_f64(), 55.0);
    assert_eq!(d.conversion_value.unwrap().to_f64(), 50.0);
}

#[test]
fn different_currencies_are_a_currency_mismatch_only() {
    let (out, _) = run(vec![
        server("CompletePayment", "e1", T0)
            .value(50.0, "USD")
            .order("o1")
            .rec(),
        order("o1", 45.0, "EUR", T0).rec(),
    ]);
    assert_eq!(kinds(&out), ["currency_mismatch"]);
}

#[test]
fn order_and_purchase_without_counterparts_are_reported_after_the_wait() {
    let (out, _) = run(vec![
        order("o1", 50.0, "USD", T0).rec(),
        server("CompletePayment", "e9", T0)
            .value(9.0, "USD")
            .order("o9")
            .rec(),
    ]);
    assert_eq!(
        kinds(&out),
        ["conversion_without_order", "order_without_conversion"]
    );
}

#[test]
fn cancelled_order_without_conversion_is_not_signal_loss() {
    let (out, _) = run(vec![order("o1", 50.0, "USD", T0)
        .status("cancelled", T0)
        .rec()]);
    assert!(out.discrepancies.is_empty());
}

#[test]
fn order_redelivered_with_the_same_lsn_is_not_applied_twice() {
    let (_, stats) = run(vec![
        order("o1", 50.0, "USD", T0).lsn(100).rec(),
        order("o1", 50.0, "USD", T0).lsn(100).rec(),
        order("o2", 50.0, "USD", T0).rec(),
        order("o2", 50.0, "USD", T0).rec(),
        tombstone(),
    ]);
    assert_eq!(stats.orders_applied, 2);
    assert_eq!(stats.orders_redelivered, 2);
    assert_eq!(stats.orders_tombstones, 1);
}

#[test]
fn snapshot_of_orders_older_than_the_ttl_is_historical() {
    let (out, stats) = run(vec![order("old", 50.0, "USD", T0 - 30 * 24 * HOUR)
        .changed(T0)
        .rec()]);
    assert_eq!(stats.orders_historical, 1);
    assert!(out.discrepancies.is_empty());
    assert!(out.revenue_windows.is_empty());
}

#[test]
fn refund_after_reconciliation_reemits_the_window_with_a_higher_version() {
    let (out, stats) = run(vec![
        server("CompletePayment", "e1", T0)
            .value(50.0, "USD")
            .order("o1")
            .rec(),
        order("o1", 50.0, "USD", T0).lsn(1).rec(),
        // Every input moves on, so the watermark passes the hour and its order wait.
        browser("ViewContent", "tick", T0 + 3 * HOUR).rec(),
        server("ViewContent", "tick", T0 + 3 * HOUR).rec(),
        order("o2", 0.0, "USD", T0 + 3 * HOUR)
            .status("cancelled", T0 + 3 * HOUR)
            .rec(),
        order("o1", 50.0, "USD", T0)
            .status("refunded", T0 + 3 * HOUR)
            .lsn(2)
            .rec(),
    ]);
    assert!(out.discrepancies.is_empty());
    let versions: Vec<_> = out
        .revenue_windows
        .iter()
        .filter(|w| w.hour_start == T0 / 1000)
        .map(|w| {
            (
                w.version,
                w.orders,
                w.backend_revenue.to_f64(),
                w.tracked_revenue.to_f64(),
            )
        })
        .collect();
    assert_eq!(versions, [(1, 1, 50.0, 50.0), (2, 0, 0.0, 50.0)]);
    assert_eq!(stats.orders_applied, 3);
    assert!(stats.backend_revenue.get("USD").is_none_or(|m| m.0 == 0));
}

#[test]
fn revenue_window_reports_drift_per_pixel_currency_and_hour() {
    let (out, _) = run(vec![
        server("CompletePayment", "e1", T0)
            .value(60.0, "USD")
            .order("o1")
            .rec(),
        order("o1", 50.0, "USD", T0).rec(),
        order("o2", 50.0, "USD", T0 + MIN).pixel("PIXEL1").rec(),
    ]);
    let w = &out.revenue_windows[0];
    assert_eq!(
        (
            w.event_source_id.as_str(),
            w.currency.as_str(),
            w.hour_start
        ),
        ("PIXEL1", "USD", T0 / 1000)
    );
    assert_eq!((w.orders, w.purchases, w.matched), (2, 1, 1));
    assert_eq!(w.drift_ratio, Some(-0.4));
    assert_eq!(kinds(&out), ["order_without_conversion", "value_mismatch"]);
}

// ---- watermarks per channel (input partition) ----

#[test]
fn lagging_partition_holds_the_watermark_so_its_copies_are_neither_late_nor_out_of_order() {
    use onecount::engine::{Engine, Outputs};
    let mut engine = Engine::new(&engine_config(), &Default::default());
    let mut out = Outputs::default();
    // Browser partition 1 lags far behind partition 0: more than a TTL (48 h).
    engine.process(
        browser("ViewContent", "early", T0 - MIN).partition(1).rec(),
        &mut out,
    );
    engine.process(server("ViewContent", "lag", T0 + 30 * SEC).rec(), &mut out);
    engine.process(
        browser("ViewContent", "ahead", T0 + 50 * HOUR).rec(),
        &mut out,
    );
    engine.process(
        server("ViewContent", "ahead", T0 + 50 * HOUR).rec(),
        &mut out,
    );
    assert!(
        out.conversions.is_empty(),
        "browser partition 1 at T0 - 1 min holds the watermark: {:?}",
        keys(&out)
    );
    assert_eq!(engine.watermark(), Some(T0 - 11 * MIN));
    engine.process(
        browser("ViewContent", "lag", T0).partition(1).rec(),
        &mut out,
    );
    engine.process(
        browser("ViewContent", "caught_up", T0 + 50 * HOUR)
            .partition(1)
            .rec(),
        &mut out,
    );
    assert_eq!(
        keys(&out),
        ["PIXEL1/ViewContent/early", "PIXEL1/ViewContent/lag"],
        "released in event-time order once partition 1 moved on"
    );
    let lag = &out.conversions[1].to_conversion();
    assert_eq!(lag.sources, SourcesSeen::Both, "merged, not after_release");
    assert_eq!(
        lag.first_source,
        Source::Browser,
        "the earlier copy is first"
    );
    engine.flush(&mut out);
    let stats = engine.stats();
    assert_eq!(stats.late, 0);
    assert_eq!(stats.duplicates, 0);
    assert_eq!((stats.conversions, stats.merged), (4, 2));
    assert_eq!(stats.accounted(), stats.input_records.total);
}

#[test]
fn every_channel_idle_releases_what_is_pending_and_later_copies_are_still_duplicates() {
    use onecount::engine::{Engine, Outputs};
    use onecount::model::Input;
    let mut engine = Engine::new(&engine_config(), &Default::default());
    let mut out = Outputs::default();
    engine.process(browser("ViewContent", "x", T0).rec(), &mut out);
    engine.process(
        browser("ViewContent", "y", T0 + MIN).partition(1).rec(),
        &mut out,
    );
    engine.process(server("ViewContent", "x", T0 + 10 * SEC).rec(), &mut out);
    engine.mark_idle_channel(Input::Browser, 0, &mut out);
    engine.mark_idle_channel(Input::Browser, 1, &mut out);
    engine.mark_idle_channel(Input::Orders, 0, &mut out);
    assert!(
        out.conversions.is_empty(),
        "server partition 0 still holds the watermark at T0 - 10 min"
    );
    engine.mark_idle_channel(Input::Server, 0, &mut out);
    assert_eq!(
        keys(&out),
        ["PIXEL1/ViewContent/x", "PIXEL1/ViewContent/y"],
        "nothing holds the watermark: the tail comes out"
    );
    assert_eq!(
        out.conversions[0].to_conversion().sources,
        SourcesSeen::Both
    );
    assert_eq!(
        out.conversions[1].to_conversion().sources,
        SourcesSeen::Browser
    );

    // Copies after the release: duplicates by the usual rules, not new actions, not late.
    engine.process(
        server("ViewContent", "y", T0 + 2 * MIN).partition(3).rec(),
        &mut out,
    );
    engine.process(browser("ViewContent", "x", T0 + 5 * SEC).rec(), &mut out);
    engine.process(
        server("ViewContent", "x", T0 + 47 * HOUR)
            .partition(3)
            .rec(),
        &mut out,
    );
    engine.process(browser("ViewContent", "z", T0 + 47 * HOUR).rec(), &mut out);
    engine.flush(&mut out);
    assert_eq!(
        keys(&out),
        [
            "PIXEL1/ViewContent/x",
            "PIXEL1/ViewContent/y",
            "PIXEL1/ViewContent/z"
        ]
    );
    let stats = engine.stats();
    assert_eq!(stats.late, 0);
    assert_eq!(dup(stats, "after_release"), 1, "server y joined too late");
    assert_eq!(
        dup(stats, "same_source"),
        2,
        "browser x again, and server x 47 h later: within the TTL, the closed key survived"
    );
    assert_eq!(stats.accounted(), stats.input_records.total);
}
