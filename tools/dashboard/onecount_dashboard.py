"""The onecount Grafana dashboard, built with Grafana's grafana-foundation-sdk.

Run through build.sh (it provides the pinned SDK):  tools/dashboard/build.sh [OUT]
Writes the dashboard JSON to OUT (default grafana/dashboards/onecount.json). The output is
deterministic (sorted keys, fixed ids), so tests/ops_artifacts.rs can compare the committed file
with a fresh build. Every query uses only the metrics of docs/METRICS.md and the recording rules of
prometheus/rules.yml; the test checks that too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m

UID = "onecount"
DATASOURCE = dash_m.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Label filter for the pixel variable (multi-value, "All" = every pixel).
PIXEL = 'pixel=~"$pixel"'


class Ids:
    """Panel ids in layout order, so links to a panel (viewPanel=N) stay stable."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self) -> int:
        self.next += 1
        return self.next


def query(expr: str, legend: str, ref: str = "A") -> prom_b.Dataquery:
    return (
        prom_b.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref)
        .range()
        .datasource(DATASOURCE)
    )


def timeseries(
    ids: Ids,
    title: str,
    description: str,
    targets: list[prom_b.Dataquery],
    unit: str,
    width: int = 8,
    stacked: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    thresholds: list[tuple[float | None, str]] | None = None,
) -> ts_b.Panel:
    panel = (
        ts_b.Panel()
        .id(ids())
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common_m.LegendDisplayMode.LIST)
            .placement(common_m.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(common_b.VizTooltipOptions().mode(common_m.TooltipDisplayMode.MULTI))
    )
    for target in targets:
        panel = panel.with_target(target)
    if stacked:
        panel = panel.stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL))
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    if thresholds:
        panel = panel.thresholds(
            dash_b.ThresholdsConfig()
            .mode(dash_m.ThresholdsMode.ABSOLUTE)
            .steps([dash_m.Threshold(value=v, color=c) for v, c in thresholds])
        ).thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common_m.GraphThresholdsStyleMode.DASHED)
        )
    return panel


def stat(
    ids: Ids,
    title: str,
    description: str,
    target: prom_b.Dataquery,
    unit: str,
    thresholds: list[tuple[float | None, str]],
    width: int = 4,
) -> stat_b.Panel:
    return (
        stat_b.Panel()
        .id(ids())
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(target)
        .unit(unit)
        .span(width)
        .height(8)
        .color_mode(common_m.BigValueColorMode.BACKGROUND)
        .graph_mode(common_m.BigValueGraphMode.NONE)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(
            dash_b.ThresholdsConfig()
            .mode(dash_m.ThresholdsMode.ABSOLUTE)
            .steps([dash_m.Threshold(value=v, color=c) for v, c in thresholds])
        )
    )


def build() -> dash_m.Dashboard:
    ids = Ids()
    rate_iv = "$__rate_interval"
    board = (
        dash_b.Dashboard("onecount")
        .uid(UID)
        .description(
            "Dedup and reconciliation of TikTok Pixel and Events API conversions: "
            "docs/METRICS.md explains every metric and alert."
        )
        .tags(["onecount", "tiktok", "conversions"])
        .editable()
        .timezone("utc")
        .time("now-6h", "now")
        .refresh("1m")
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dash_b.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dash_b.QueryVariable("pixel")
            .label("Pixel")
            .datasource(DATASOURCE)
            .query("label_values(onecount_events_received_total, pixel)")
            .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(dash_m.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )
    )

    # ------------------------------------------------------------------ dedup
    board = board.with_row(dash_b.Row("Dedup").id(ids()))
    board = board.with_panel(
        timeseries(
            ids,
            "Dedup rate by pixel",
            "Share of event copies merged into a conversion or dropped as duplicates, last hour. "
            "About 50% when every action arrives from browser and server.",
            [query(f"pixel:onecount_dedup_rate:ratio_rate1h{{{PIXEL}}}", "{{pixel}}")],
            "percentunit",
            width=6,
            minimum=0,
            maximum=1,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Pair rate by pixel",
            "Share of conversions that merged a browser and a server copy, last hour. "
            "Alert OnecountPairRateDropped below 30% or 70% of a day earlier.",
            [query(f"pixel:onecount_pair_rate:ratio_rate1h{{{PIXEL}}}", "{{pixel}}")],
            "percentunit",
            width=6,
            minimum=0,
            maximum=1,
            thresholds=[(None, "red"), (0.3, "green")],
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Conversions by source",
            "Conversions emitted per second: both = browser and server copies merged.",
            [
                query(
                    f"sum by (sources) (rate(onecount_conversions_total{{{PIXEL}}}[{rate_iv}]))",
                    "{{sources}}",
                )
            ],
            "cps",
            width=6,
            stacked=True,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Duplicates by reason",
            "Copies dropped as duplicates per second (docs/RULES.md, Dedup).",
            [
                query(
                    f"sum by (reason) (rate(onecount_duplicates_total{{{PIXEL}}}[{rate_iv}]))",
                    "{{reason}}",
                )
            ],
            "cps",
            width=6,
            stacked=True,
        )
    )

    # ------------------------------------------------------------------ revenue
    board = board.with_row(dash_b.Row("Revenue").id(ids()))
    board = board.with_panel(
        timeseries(
            ids,
            "Revenue per hour: tracked vs backend",
            "Revenue added in the last hour, in each currency's major unit: tracked = purchase "
            "conversions, backend = orders as reconciled (falls on refunds).",
            [
                query(
                    f"pixel_currency:onecount_tracked_revenue:delta1h{{{PIXEL}}}",
                    "tracked {{pixel}} {{currency}}",
                    "A",
                ),
                query(
                    f"pixel_currency:onecount_backend_revenue:delta1h{{{PIXEL}}}",
                    "backend {{pixel}} {{currency}}",
                    "B",
                ),
            ],
            "short",
            width=12,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Revenue drift, last hour",
            "(tracked - backend) / backend over the last hour. "
            "Alert OnecountRevenueDrift beyond 10% for 2 hours.",
            [
                query(
                    f"pixel_currency:onecount_revenue_drift:ratio_delta1h{{{PIXEL}}}",
                    "{{pixel}} {{currency}}",
                )
            ],
            "percentunit",
            width=6,
            thresholds=[(None, "red"), (-0.1, "green"), (0.1, "red")],
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Revenue drift, latest closed hour",
            "Drift of the latest emitted hourly revenue window (the revenue_windows output).",
            [query(f"onecount_revenue_drift_ratio{{{PIXEL}}}", "{{pixel}} {{currency}}")],
            "percentunit",
            width=6,
            thresholds=[(None, "red"), (-0.1, "green"), (0.1, "red")],
        )
    )

    # ------------------------------------------------------------------ data quality
    board = board.with_row(dash_b.Row("Data quality").id(ids()))
    board = board.with_panel(
        timeseries(
            ids,
            "Discrepancies by kind",
            "Discrepancy records in the last hour, by kind (docs/RULES.md).",
            [
                query(
                    f"sum by (kind) (increase(onecount_discrepancies_total{{{PIXEL}}}[1h]))",
                    "{{kind}}",
                )
            ],
            "short",
            width=12,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Match-key coverage",
            "Share of conversions carrying each match key, last hour: the EMQ-like signal.",
            [
                query(
                    f"pixel_key:onecount_match_key_coverage:ratio_rate1h{{{PIXEL}}}",
                    "{{pixel}} {{key}}",
                )
            ],
            "percentunit",
            width=12,
            minimum=0,
            maximum=1,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Consent drops",
            "Copies dropped for denied consent, per second.",
            [
                query(
                    f"sum by (input) (rate(onecount_consent_dropped_total{{{PIXEL}}}[{rate_iv}]))",
                    "{{input}}",
                )
            ],
            "cps",
            width=6,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Consent violations",
            "consent_violation and consent_after_emit discrepancies in the last hour. "
            "Alert OnecountConsentViolation on any.",
            [
                query(
                    "sum by (pixel, kind) (increase(onecount_discrepancies_total"
                    f'{{kind=~"consent_violation|consent_after_emit",{PIXEL}}}[1h]))',
                    "{{pixel}} {{kind}}",
                )
            ],
            "short",
            width=6,
            thresholds=[(None, "green"), (1, "red")],
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Dead letters by reason",
            "Records that could not be parsed, per second.",
            [
                query(
                    f"sum by (input, reason) (rate(onecount_dead_letters_total[{rate_iv}]))",
                    "{{input}} {{reason}}",
                )
            ],
            "cps",
            width=6,
            stacked=True,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Dead-letter share",
            "Dead letters / records read, by input: last 10 minutes and last day. "
            "Alert OnecountDeadLetterSpike above 1% and 3x the day.",
            [
                query("input:onecount_dead_letters:ratio_rate10m", "{{input}} 10m", "A"),
                query("input:onecount_dead_letters:ratio_rate1d", "{{input}} 1d", "B"),
            ],
            "percentunit",
            width=6,
            minimum=0,
        )
    )

    # ------------------------------------------------------------------ pipeline
    board = board.with_row(dash_b.Row("Pipeline").id(ids()))
    board = board.with_panel(
        stat(
            ids,
            "Ready instances",
            "Instances with partitions assigned and restored and the broker reachable, "
            "of those running.",
            query("sum(onecount_ready)", "ready"),
            "short",
            [(None, "red"), (1, "green")],
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Throughput by input",
            "Input records per second, whatever their outcome.",
            [
                query(
                    f"sum by (input) (rate(onecount_input_records_total[{rate_iv}]))",
                    "{{input}}",
                )
            ],
            "cps",
            width=10,
            stacked=True,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Input records by outcome",
            "The accounting buckets per second (README, Accounting).",
            [
                query(
                    f"sum by (input, outcome) (rate(onecount_input_records_total[{rate_iv}]))",
                    "{{input}} {{outcome}}",
                )
            ],
            "cps",
            width=10,
            stacked=True,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Consumer lag",
            "Records behind the partitions' end, by topic. "
            "Alert OnecountConsumerLagGrowing when growing for 15m above 10000.",
            [query("topic:onecount_consumer_lag_records:sum", "{{topic}}")],
            "short",
            width=8,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Watermark lag",
            "Wall clock minus each input's event-time watermark (large for historical traffic).",
            [query("max by (input) (onecount_watermark_lag_seconds)", "{{input}}")],
            "s",
            width=8,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Processing latency",
            "Poll to outputs acknowledged and offsets stored, per batch.",
            [
                query(
                    "histogram_quantile(0.5, sum by (le) "
                    f"(rate(onecount_processing_latency_seconds_bucket[{rate_iv}])))",
                    "p50",
                    "A",
                ),
                query(
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(onecount_processing_latency_seconds_bucket[{rate_iv}])))",
                    "p99",
                    "B",
                ),
            ],
            "s",
            width=8,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "State keys",
            "Live entries in the engine's state, by kind.",
            [query("sum by (kind) (onecount_state_keys)", "{{kind}}")],
            "short",
            width=6,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "State size",
            "Estimated heap bytes of the engine's state, per instance.",
            [query("onecount_state_bytes", "{{instance}}")],
            "bytes",
            width=6,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Restores",
            "State restorations from the changelog and changelog records read, last hour. "
            "Alert OnecountRestoreLoop at 4 or more in 15m, for 15m, on one instance.",
            [
                query("sum(increase(onecount_restores_total[1h]))", "restores", "A"),
                query("sum(increase(onecount_restored_records_total[1h]))", "records read", "B"),
            ],
            "short",
            width=4,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Restore duration",
            "p99 of the restorations of the last hour.",
            [
                query(
                    "histogram_quantile(0.99, sum by (le) "
                    "(rate(onecount_restore_duration_seconds_bucket[1h])))",
                    "p99",
                )
            ],
            "s",
            width=4,
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Recovery",
            "After restores, last hour: outputs recognised as already written (not written "
            "twice) and input records forwarded again and skipped; the log offset each "
            "instance resumed from; and what the state task holds back in its merge while an "
            "input partition's records are on their way (a rebalance, a slow instance); waits "
            "it gave up at service.merge_queue_limit (alert OnecountMergeGaveUp).",
            [
                query("sum(increase(onecount_outputs_suppressed_total[1h]))", "suppressed", "A"),
                query("sum(increase(onecount_replayed_records_total[1h]))", "replayed", "B"),
                query("max(onecount_resume_offset)", "resume offset", "C"),
                query("max(onecount_merge_queued_records)", "held in merge", "D"),
                query(
                    "sum(increase(onecount_merge_waits_given_up_total[1h]))",
                    "merge waits given up",
                    "E",
                ),
            ],
            "short",
            width=4,
        )
    )
    board = board.with_panel(
        stat(
            ids,
            "Broker reachable",
            "Instances that reach the Kafka cluster, of those running. "
            "Alert OnecountBrokerUnreachable when one reaches none for 1m.",
            query("sum(onecount_broker_up)", "up"),
            "short",
            [(None, "red"), (1, "green")],
        )
    )
    board = board.with_panel(
        timeseries(
            ids,
            "Accounted input records",
            "Input records the engine's state accounts for (every bucket), restored with it.",
            [query("max(onecount_accounted_records)", "accounted")],
            "short",
            width=4,
        )
    )
    board = board.with_panel(
        stat(
            ids,
            "Versions running",
            "Running instances by onecount version.",
            query("count by (version) (onecount_build_info)", "{{version}}"),
            "short",
            [(None, "blue")],
        )
    )
    return board.build()


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[2]
    out = Path(argv[1]) if len(argv) > 1 else root / "grafana" / "dashboards" / "onecount.json"
    text = json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
