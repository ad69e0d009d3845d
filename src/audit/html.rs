//! The audit as one self-contained HTML page: the checklist, three SVG charts and the revenue
//! tables.
//!
//! Owns: markup, inline CSS and hand-drawn SVG. Must not: load anything. No script, no URL, no
//! font or image from elsewhere: the page is opened from a CI artifact or an e-mail, offline,
//! and must show the same everywhere. Every string from the data (pixel codes, currencies) is
//! escaped.
//!
//! Each chart is a `<figure class="chart">` with a stable `id` and `data-points` (how many
//! non-zero values or defined points it draws) and `data-total`, so a test or a person can tell
//! an empty chart from a missing one.

use std::fmt::Write;

use crate::model::DiscrepancyKind;

use super::report::{drift, pct, utc, HourDrift, Report, Status};

/// Drift chart's vertical range: points beyond it are drawn on its edge, hollow.
const DRIFT_CLAMP: f64 = 0.5;

/// Colours of the currencies' lines, in order of first appearance.
const SERIES_COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

const CSS: &str = r#"
:root { --pass: #2e7d32; --warn: #b26a00; --fail: #c62828; --ink: #1d2330; --mute: #5f6b7a; --line: #d9dee5; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: #f6f7f9; }
h1 { font-size: 22px; margin: 0 0 4px; display: flex; align-items: center; gap: 12px; }
h2 { font-size: 16px; margin: 28px 0 10px; }
.sub { color: var(--mute); margin: 0; }
.badge { display: inline-block; min-width: 48px; padding: 2px 8px; border-radius: 4px; color: #fff; font-weight: 600; font-size: 12px; text-align: center; letter-spacing: .04em; }
.badge.pass { background: var(--pass); } .badge.warn { background: var(--warn); } .badge.fail { background: var(--fail); }
.badge.none { background: #8a94a3; }
h1 .badge { font-size: 15px; padding: 3px 12px; }
.counts { margin: 8px 0 0; font-weight: 600; }
.counts .fail { color: var(--fail); } .counts .warn { color: var(--warn); } .counts .pass { color: var(--pass); }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
th, td { text-align: left; vertical-align: top; padding: 7px 10px; border-bottom: 1px solid var(--line); }
th { background: #eef1f5; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--mute); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.fail td:first-child { border-left: 4px solid var(--fail); } tr.warn td:first-child { border-left: 4px solid var(--warn); } tr.pass td:first-child { border-left: 4px solid var(--pass); }
.checks td.title { font-weight: 600; width: 26%; }
.checks ul { margin: 6px 0 0; padding-left: 18px; color: var(--mute); }
.checks li { margin: 2px 0; word-break: break-word; }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.chart { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; }
.chart.wide { grid-column: 1 / -1; }
.chart figcaption { font-weight: 600; margin-bottom: 6px; }
.chart figcaption span { font-weight: 400; color: var(--mute); }
.chart svg { width: 100%; height: auto; display: block; }
svg text { font: 12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; fill: var(--ink); }
svg text.mute { fill: var(--mute); }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .zero { stroke: #8a94a3; stroke-width: 1; }
svg .band { fill: #e8f5e9; }
svg .limit { stroke: var(--pass); stroke-width: 1; stroke-dasharray: 4 3; }
svg .clipped { fill: #fff; stroke-width: 1.5; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; margin-top: 6px; color: var(--mute); font-size: 12px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 5px; vertical-align: -2px; }
.empty { color: var(--mute); font-style: italic; }
footer { margin-top: 32px; color: var(--mute); font-size: 12px; }
"#;

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn class(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Warn => "warn",
        Status::Fail => "fail",
    }
}

fn badge(status: Status) -> String {
    format!(
        r#"<span class="badge {}">{}</span>"#,
        class(status),
        status.label()
    )
}

pub fn render(report: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>onecount audit: {status}</title>
<style>{CSS}</style>
</head>
<body>
<header id="summary" data-status="{cls}">
<h1>onecount audit {badge}</h1>
<p class="sub">{source}</p>
"#,
        status = report.status.label(),
        cls = class(report.status),
        badge = badge(report.status),
        source = esc(&report.source),
    );
    let r = &report.records;
    let mut sub = format!(
        "{} conversions, {} discrepancies, {} dead letters, {} revenue windows",
        r.conversions, r.discrepancies, r.dead_letters, r.revenue_windows
    );
    if let Some(t) = report.time_range {
        let _ = write!(
            sub,
            "; conversions from {} to {}",
            utc(t.first),
            utc(t.last)
        );
    }
    let _ = writeln!(h, r#"<p class="sub">{}</p>"#, esc(&sub));
    let _ = writeln!(
        h,
        r#"<p class="counts"><span class="fail">{} failed</span> · <span class="warn">{} warnings</span> · <span class="pass">{} passed</span></p>
</header>"#,
        report.counts.fail, report.counts.warn, report.counts.pass
    );

    checklist(&mut h, report);

    h.push_str("<h2>Charts</h2>\n<section class=\"charts\">\n");
    dedup_chart(&mut h, report);
    discrepancy_chart(&mut h, report);
    drift_chart(&mut h, &report.drift_by_hour);
    h.push_str("</section>\n");

    revenue_tables(&mut h, report);

    let _ = writeln!(
        h,
        "<footer>onecount audit, report format {}. Thresholds and the reason for each: src/audit/checks.rs. Machine-readable: <code>onecount audit --format json</code>.</footer>\n</body>\n</html>",
        report.format_version
    );
    h
}

fn checklist(h: &mut String, report: &Report) {
    h.push_str(
        "<h2>Checklist</h2>\n<table class=\"checks\" id=\"checks\">\n<thead><tr><th>Status</th><th>Check</th><th>Result</th></tr></thead>\n<tbody>\n",
    );
    for c in &report.checks {
        let _ = write!(
            h,
            r#"<tr class="{cls}" data-check="{id}" data-status="{cls}"><td>{badge}</td><td class="title">{title}</td><td>{summary}"#,
            cls = class(c.status),
            id = c.id,
            badge = badge(c.status),
            title = esc(c.title),
            summary = esc(&c.summary),
        );
        if !c.findings.is_empty() {
            h.push_str("<ul>");
            for f in &c.findings {
                let _ = write!(h, "<li>{}</li>", esc(f));
            }
            h.push_str("</ul>");
        }
        h.push_str("</td></tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
}

/// Horizontal bars, one per (label, value, colour), with the value and its share of `total`.
fn bars(h: &mut String, rows: &[(&str, u64, &str)], total: u64, label_width: f64) {
    let row_h = 26.0;
    let bar_x = label_width + 8.0;
    let bar_w = 300.0;
    let width = bar_x + bar_w + 120.0;
    let height = row_h * rows.len() as f64 + 8.0;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let _ = writeln!(
        h,
        r#"<svg viewBox="0 0 {width} {height}" role="img" aria-hidden="false">"#
    );
    for (i, (label, value, colour)) in rows.iter().enumerate() {
        let y = 4.0 + i as f64 * row_h;
        let w = if *value == 0 {
            0.0
        } else {
            (bar_w * *value as f64 / max as f64).max(1.5)
        };
        let share = if total > 0 {
            format!("{:.1}%", *value as f64 * 100.0 / total as f64)
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            h,
            r#"<g class="bar" data-label="{label}" data-value="{value}"><title>{label}: {value} ({share})</title><text x="{lx}" y="{ty}" text-anchor="end">{label}</text><rect x="{bar_x}" y="{ry}" width="{w:.1}" height="{bh}" rx="2" fill="{colour}"/><text x="{vx:.1}" y="{ty}" class="mute">{value} · {share}</text></g>"#,
            label = esc(label),
            lx = label_width,
            ty = y + row_h / 2.0 + 4.0,
            ry = y + 4.0,
            bh = row_h - 8.0,
            vx = bar_x + w + 6.0,
        );
    }
    h.push_str("</svg>\n");
}

/// Pixels drawn in the dedup chart's per-pixel part, most conversions first.
const MAX_PIXEL_BARS: usize = 12;

fn dedup_chart(h: &mut String, report: &Report) {
    let s = &report.conversions_by_sources;
    let rows = [
        ("merged (browser + server)", s.both, COLOUR_BOTH),
        ("browser only", s.browser, COLOUR_BROWSER),
        ("server only", s.server, COLOUR_SERVER),
    ];
    let total = s.both + s.browser + s.server;
    let points = rows.iter().filter(|r| r.1 > 0).count();
    let _ = writeln!(
        h,
        r#"<figure class="chart" id="chart-dedup-status" data-points="{points}" data-total="{total}" data-pixels="{}">
<figcaption>Dedup status <span>· {total} conversions by the copies they merged</span></figcaption>"#,
        report.conversions_by_pixel.len()
    );
    if total == 0 {
        h.push_str("<p class=\"empty\">No conversions.</p>\n</figure>\n");
        return;
    }
    bars(h, &rows, total, 170.0);
    pixel_bars(h, report);
    let _ = writeln!(
        h,
        r#"<div class="legend"><span><i style="background:{COLOUR_BOTH}"></i>merged</span><span><i style="background:{COLOUR_BROWSER}"></i>browser only</span><span><i style="background:{COLOUR_SERVER}"></i>server only</span></div>"#
    );
    h.push_str("</figure>\n");
}

const COLOUR_BOTH: &str = "#2e7d32";
const COLOUR_BROWSER: &str = "#1f77b4";
const COLOUR_SERVER: &str = "#9467bd";

/// One 100% bar per pixel: merged, browser only, server only; its pair rate beside it.
fn pixel_bars(h: &mut String, report: &Report) {
    let mut pixels: Vec<_> = report.conversions_by_pixel.iter().collect();
    pixels.sort_by_key(|p| std::cmp::Reverse(p.both + p.browser + p.server));
    let shown = pixels.len().min(MAX_PIXEL_BARS);
    let (label_w, bar_w, row_h) = (170.0, 300.0, 24.0);
    let width = label_w + 8.0 + bar_w + 120.0;
    let height = 24.0 + row_h * shown as f64;
    let _ = writeln!(
        h,
        r#"<svg viewBox="0 0 {width} {height}" role="img" class="by-pixel"><text x="0" y="14" class="mute">pair rate by pixel</text>"#
    );
    for (i, p) in pixels.iter().take(shown).enumerate() {
        let n = (p.both + p.browser + p.server).max(1) as f64;
        let y = 24.0 + i as f64 * row_h;
        let mut x = label_w + 8.0;
        let _ = write!(
            h,
            r#"<g class="pixel" data-pixel="{pixel}"><title>{pixel}: {} merged, {} browser only, {} server only</title><text x="{label_w}" y="{ty}" text-anchor="end">{pixel}</text>"#,
            p.both,
            p.browser,
            p.server,
            pixel = esc(&p.pixel),
            ty = y + row_h / 2.0 + 4.0,
        );
        for (v, colour) in [
            (p.both, COLOUR_BOTH),
            (p.browser, COLOUR_BROWSER),
            (p.server, COLOUR_SERVER),
        ] {
            let w = bar_w * v as f64 / n;
            if w > 0.0 {
                let _ = write!(
                    h,
                    r#"<rect x="{x:.1}" y="{ry}" width="{w:.1}" height="{bh}" fill="{colour}"/>"#,
                    ry = y + 4.0,
                    bh = row_h - 8.0,
                );
            }
            x += w;
        }
        let _ = writeln!(
            h,
            r#"<text x="{tx}" y="{ty}" class="mute">{}</text></g>"#,
            pct(p.pair_rate),
            tx = label_w + 8.0 + bar_w + 6.0,
            ty = y + row_h / 2.0 + 4.0,
        );
    }
    h.push_str("</svg>\n");
    if pixels.len() > shown {
        let _ = writeln!(
            h,
            r#"<p class="empty">and {} more pixels (in the JSON report).</p>"#,
            pixels.len() - shown
        );
    }
}

/// The kinds' groups, for colour: what part of the pipeline each finding is about.
fn kind_colour(kind: &str) -> &'static str {
    match kind {
        "value_parity" | "currency_parity" | "match_key_parity" => "#ff7f0e",
        "consent_violation" | "consent_after_emit" => "#c62828",
        "order_without_conversion"
        | "conversion_without_order"
        | "value_mismatch"
        | "currency_mismatch" => "#17becf",
        _ => "#5f6b7a",
    }
}

fn discrepancy_chart(h: &mut String, report: &Report) {
    // In the model's order, which groups the kinds by what they are about.
    let rows: Vec<(&str, u64, &str)> = DiscrepancyKind::ALL
        .iter()
        .map(|k| {
            let n = report
                .discrepancies_by_kind
                .get(k.as_str())
                .copied()
                .unwrap_or(0);
            (k.as_str(), n, kind_colour(k.as_str()))
        })
        .collect();
    let total: u64 = rows.iter().map(|r| r.1).sum();
    let points = rows.iter().filter(|r| r.1 > 0).count();
    let _ = writeln!(
        h,
        r#"<figure class="chart" id="chart-discrepancy-kinds" data-points="{points}" data-total="{total}">
<figcaption>Discrepancy kinds <span>· {total} findings</span></figcaption>"#
    );
    bars(h, &rows, total, 190.0);
    h.push_str(
        r##"<div class="legend"><span><i style="background:#5f6b7a"></i>dedup and parameters</span><span><i style="background:#ff7f0e"></i>browser/server parity</span><span><i style="background:#c62828"></i>consent</span><span><i style="background:#17becf"></i>orders</span></div>
"##,
    );
    h.push_str("</figure>\n");
}

fn drift_chart(h: &mut String, hours: &[HourDrift]) {
    let mut currencies: Vec<&str> = Vec::new();
    for p in hours {
        if !currencies.contains(&p.currency.as_str()) {
            currencies.push(&p.currency);
        }
    }
    let defined = hours.iter().filter(|p| p.drift_ratio.is_some()).count();
    let beyond = hours
        .iter()
        .filter(|p| {
            p.drift_ratio
                .is_some_and(|r| r.abs() > super::checks::DRIFT_FAIL_ABOVE)
        })
        .count();
    let _ = writeln!(
        h,
        r#"<figure class="chart wide" id="chart-drift-over-time" data-points="{defined}" data-total="{}" data-series="{}">
<figcaption>Revenue drift over time <span>· (tracked − backend) / backend per currency, all pixels. Lines: drift since the first hour; dots: each UTC hour's own drift ({beyond} of {defined} beyond ±{:.0}%, the shaded band; beyond ±{:.0}% drawn hollow on the edge)</span></figcaption>"#,
        hours.len(),
        currencies.len(),
        super::checks::DRIFT_FAIL_ABOVE * 100.0,
        DRIFT_CLAMP * 100.0,
    );
    if defined == 0 {
        h.push_str(
            "<p class=\"empty\">No hour with backend revenue: no drift to draw.</p>\n</figure>\n",
        );
        return;
    }
    let (left, right, top, bottom) = (64.0, 1100.0, 12.0, 300.0);
    let width = right + 16.0;
    let height = bottom + 34.0;
    let t0 = hours.iter().map(|p| p.hour_start).min().unwrap_or(0);
    let t1 = hours
        .iter()
        .map(|p| p.hour_start)
        .max()
        .unwrap_or(0)
        .max(t0 + 3600);
    let x = |t: i64| left + (right - left) * (t - t0) as f64 / (t1 - t0) as f64;
    let y = |r: f64| {
        let r = r.clamp(-DRIFT_CLAMP, DRIFT_CLAMP);
        top + (bottom - top) * (DRIFT_CLAMP - r) / (2.0 * DRIFT_CLAMP)
    };
    let limit = super::checks::DRIFT_FAIL_ABOVE;
    let _ = writeln!(
        h,
        r#"<svg viewBox="0 0 {width} {height}" role="img"><rect class="band" x="{left}" y="{by:.1}" width="{bw}" height="{bh:.1}"/>"#,
        by = y(limit),
        bw = right - left,
        bh = y(-limit) - y(limit),
    );
    for tick in [-0.5f64, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5] {
        let cls = if tick == 0.0 {
            "zero"
        } else if tick.abs() == limit {
            "limit"
        } else {
            "grid"
        };
        let _ = writeln!(
            h,
            r#"<line class="{cls}" x1="{left}" x2="{right}" y1="{yy:.1}" y2="{yy:.1}"/><text x="{lx}" y="{ty:.1}" text-anchor="end" class="mute">{label}</text>"#,
            yy = y(tick),
            lx = left - 6.0,
            ty = y(tick) + 4.0,
            label = if tick == 0.0 {
                "0%".to_string()
            } else {
                format!("{:+.0}%", tick * 100.0)
            },
        );
    }
    // A tick per UTC day (or every few days over a long range).
    let days = ((t1 - t0) / 86_400).max(1);
    let step = 86_400 * (days / 14 + 1);
    let mut t = t0 - t0.rem_euclid(86_400);
    while t <= t1 {
        if t >= t0 {
            let xx = x(t);
            let date = utc(t);
            let _ = writeln!(
                h,
                r#"<line class="grid" x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{bottom}"/><text x="{xx:.1}" y="{ty}" text-anchor="middle" class="mute">{}</text>"#,
                &date[5..10],
                ty = bottom + 18.0,
            );
        }
        t += step;
    }
    for (i, cur) in currencies.iter().enumerate() {
        let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()];
        let series: Vec<&HourDrift> = hours.iter().filter(|p| p.currency == *cur).collect();
        let _ = writeln!(
            h,
            r#"<g class="series" data-currency="{c}" data-points="{n}">"#,
            c = esc(cur),
            n = series.iter().filter(|p| p.drift_ratio.is_some()).count(),
        );
        let line: Vec<String> = series
            .iter()
            .filter_map(|p| {
                p.cumulative_drift_ratio
                    .map(|r| format!("{:.1},{:.1}", x(p.hour_start), y(r)))
            })
            .collect();
        if line.len() > 1 {
            let _ = writeln!(
                h,
                r#"<polyline class="cumulative" fill="none" stroke="{colour}" stroke-width="2.5" points="{}"/>"#,
                line.join(" ")
            );
        }
        for p in &series {
            let Some(r) = p.drift_ratio else { continue };
            let clipped = r.abs() > DRIFT_CLAMP;
            let _ = writeln!(
                h,
                r#"<circle cx="{:.1}" cy="{:.1}" r="{}" {} stroke="{colour}" opacity="0.55"><title>{} {}: drift {} (tracked {:.2}, backend {:.2}); since the first hour {}</title></circle>"#,
                x(p.hour_start),
                y(r),
                if clipped { 3.0 } else { 2.5 },
                if clipped {
                    "class=\"clipped\"".to_string()
                } else {
                    format!("fill=\"{colour}\"")
                },
                esc(cur),
                utc(p.hour_start),
                drift(Some(r)),
                p.tracked_revenue.to_f64(),
                p.backend_revenue.to_f64(),
                drift(p.cumulative_drift_ratio),
            );
        }
        h.push_str("</g>\n");
    }
    h.push_str("</svg>\n<div class=\"legend\">");
    for (i, cur) in currencies.iter().enumerate() {
        let _ = write!(
            h,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            SERIES_COLOURS[i % SERIES_COLOURS.len()],
            esc(cur)
        );
    }
    h.push_str("</div>\n</figure>\n");
}

fn revenue_tables(h: &mut String, report: &Report) {
    h.push_str("<h2>Revenue by currency</h2>\n");
    if report.revenue_by_currency.is_empty() {
        h.push_str("<p class=\"empty\">No revenue windows.</p>\n");
        return;
    }
    h.push_str(
        "<table id=\"revenue-by-currency\"><thead><tr><th>Status</th><th>Currency</th><th class=\"num\">Orders</th><th class=\"num\">Purchases</th><th class=\"num\">Tracked</th><th class=\"num\">Backend</th><th class=\"num\">of it unattributed</th><th class=\"num\">Drift</th></tr></thead><tbody>\n",
    );
    for c in &report.revenue_by_currency {
        let _ = writeln!(
            h,
            r#"<tr class="{cls}"><td>{badge}</td><td>{cur}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{:.2}</td><td class="num">{:.2}</td><td class="num">{:.2}</td><td class="num">{}</td></tr>"#,
            c.orders,
            c.purchases,
            c.tracked_revenue.to_f64(),
            c.backend_revenue.to_f64(),
            c.unattributed_backend_revenue.to_f64(),
            drift(c.drift_ratio),
            cls = class(c.status),
            badge = badge(c.status),
            cur = esc(&c.currency),
        );
    }
    h.push_str("</tbody></table>\n<h2>Revenue by pixel and currency</h2>\n");
    h.push_str(
        "<table id=\"revenue-by-pixel\"><thead><tr><th>Status</th><th>Pixel</th><th>Currency</th><th class=\"num\">Orders</th><th class=\"num\">Purchases</th><th class=\"num\">Matched</th><th class=\"num\">Tracked</th><th class=\"num\">Backend</th><th class=\"num\">Drift</th><th class=\"num\">Hours beyond</th></tr></thead><tbody>\n",
    );
    for p in &report.revenue_by_pixel {
        let (cls, badge) = match p.status {
            Some(s) => (class(s), badge(s)),
            None => ("", r#"<span class="badge none">n/a</span>"#.to_string()),
        };
        let _ = writeln!(
            h,
            r#"<tr class="{cls}"><td>{badge}</td><td>{pixel}</td><td>{cur}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{:.2}</td><td class="num">{:.2}</td><td class="num">{}</td><td class="num">{} / {}</td></tr>"#,
            p.orders,
            p.purchases,
            p.matched,
            p.tracked_revenue.to_f64(),
            p.backend_revenue.to_f64(),
            drift(p.drift_ratio),
            p.hours_beyond,
            p.hours,
            pixel = esc(&p.pixel),
            cur = esc(&p.currency),
        );
    }
    h.push_str("</tbody></table>\n");
}
