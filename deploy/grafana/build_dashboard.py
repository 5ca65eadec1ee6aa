"""Generate ``deploy/grafana/dashboards/driftline.json`` with grafana-foundation-sdk, Grafana's own
typed builders for dashboards (panels, queries, variables, annotations; the layout on the 24-column
grid is the SDK's: panels fill a line left to right, a row starts a new one).

    python deploy/grafana/build_dashboard.py          # rewrite the JSON
    python deploy/grafana/build_dashboard.py --check  # exit 1 if the committed JSON is stale

The JSON is committed; this script is the readable source of it. Every query uses only the
template variables ``$datasource``, ``$model``, ``$version``, ``$segment`` and Grafana's
``$__rate_interval`` / ``$__range``, which the e2e test substitutes before asking a real Prometheus.
"""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat as stat_panel, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

OUT = Path(__file__).resolve().parent / "dashboards" / "driftline.json"
UID = "driftline-overview"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")

M = 'model=~"$model"'
MV = 'model=~"$model", version=~"$version"'  # statistics are per model and version
MS = 'model=~"$model", segment=~"$segment"'  # driftline_predictions_total alone carries segment

_ids = itertools.count(1)


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
           fmt: PromQueryFormat = PromQueryFormat.TIME_SERIES) -> prometheus.Dataquery:
    q = (prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DS)
         .editor_mode(QueryEditorMode.CODE))
    q = q.instant() if instant else q.range()
    return q.format(fmt) if fmt != PromQueryFormat.TIME_SERIES else q


def place(panel, w: int, h: int, title: str, description: str = ""):
    """The settings every panel shares: id, size, title, the Prometheus data source."""
    return panel.id(next(_ids)).span(w).height(h).title(title).description(description).datasource(DS)


def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps([dm.Threshold(v, c) for v, c in pairs])


def text_map(**texts: str) -> list[dm.ValueMap]:
    return [dm.ValueMap({value: dm.ValueMappingResult(text=text) for value, text in texts.items()})]


def timeseries_panel(title: str, targets: list, w: int, h: int, unit: str = "short", description: str = "",
                     dashed: str | None = None, stack: bool = False, bars: bool = False) -> timeseries.Panel:
    """A time series; series whose name matches ``dashed`` are drawn as a dashed red threshold line."""
    panel = (place(timeseries.Panel(), w, h, title, description).targets(targets).unit(unit)
             .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
             .line_width(1).fill_opacity(80 if bars else 10).show_points(common.VisibilityMode.NEVER)
             .span_nulls(False)
             .stacking(cb.StackingConfig().mode(common.StackingMode.NORMAL if stack else common.StackingMode.NONE)
                       .group("A"))
             .legend(cb.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                     .placement(common.LegendPlacement.BOTTOM).calcs(["lastNotNull"]).show_legend(True))
             .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)))
    if dashed:
        panel = panel.override_by_regexp(dashed, [
            dm.DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "red"}),
            dm.DynamicConfigValue("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
            dm.DynamicConfigValue("custom.fillOpacity", 0),
            dm.DynamicConfigValue("custom.lineWidth", 2)])
    return panel


def stat(title: str, expr: str, w: int, h: int, unit: str = "short", legend: str = "", description: str = "",
         thresholds: tuple = ((None, "green"),), mappings: list | None = None) -> stat_panel.Panel:
    return (place(stat_panel.Panel(), w, h, title, description).targets([target(expr, legend, instant=True)])
            .unit(unit).mappings(mappings or []).thresholds(steps(*thresholds))
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
            .color_mode(common.BigValueColorMode.BACKGROUND).graph_mode(common.BigValueGraphMode.AREA)
            .text_mode(common.BigValueTextMode.AUTO))


def build() -> db.Dashboard:
    d = (db.Dashboard("driftline").uid(UID)
         .description("Streaming model monitoring: throughput, label lag, performance, drift, change detectors, "
                      "retrain triggers, dead letters. Generated by deploy/grafana/build_dashboard.py.")
         .tags(["driftline", "mlops"]).timezone("browser").editable().tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .refresh("10s").time("now-1h", "now").version(1))

    def row(title: str) -> None:
        d.with_row(db.Row(title).id(next(_ids)))

    # -- freshness and throughput ---------------------------------------------------------
    row("Freshness and throughput")
    d.with_panel(stat("Engine up", "min(driftline_engine_up)", 4, 4,
                      description="1 while every engine instance is consuming; 0 or no data: the engine is down "
                                  "or not scraped.",
                      thresholds=((None, "red"), (1, "green")), mappings=text_map(**{"0": "DOWN", "1": "UP"})))
    d.with_panel(stat("Events/s in", "sum(rate(driftline_events_consumed_total[$__rate_interval]))", 5, 4, "ops",
                      description="Messages read from the predictions and labels topics."))
    d.with_panel(stat("Consumer lag", "sum(driftline_consumer_lag_messages)", 5, 4, "short",
                      description="Messages between the engine's position and the end of the input partitions.",
                      thresholds=((None, "green"), (10000, "orange"), (100000, "red"))))
    d.with_panel(stat("Label lag p95", f"histogram_quantile(0.95, sum by (le) "
                      f"(rate(driftline_label_lag_seconds_bucket{{{M}}}[$__rate_interval])))", 5, 4, "s",
                      description="Event time from a prediction to its label, 95th percentile, selected models."))
    d.with_panel(stat("Last scrape age", "time() - max(timestamp(driftline_engine_up))", 5, 4, "s",
                      description="Seconds since Prometheus last scraped an engine: the freshness of everything "
                                  "below.",
                      thresholds=((None, "green"), (60, "orange"), (300, "red"))))
    d.with_panel(timeseries_panel("Events/s by topic and model", [
        target("sum by (topic) (rate(driftline_events_consumed_total[$__rate_interval]))", "consumed {{topic}}", "A"),
        target(f"sum by (model, segment) (rate(driftline_predictions_total{{{MS}}}[$__rate_interval]))",
               "predictions {{model}} {{segment}}", "B"),
        target(f"sum by (model) (rate(driftline_labels_total{{{M}}}[$__rate_interval]))", "labels {{model}}", "C"),
        target(f"sum by (model) (rate(driftline_events_joined_total{{{M}}}[$__rate_interval]))",
               "joined {{model}}", "D"),
    ], 12, 8, "ops"))
    d.with_panel(timeseries_panel("Label lag (event time, prediction to label)", [
        target(f"histogram_quantile(0.5, sum by (le, model) "
               f"(rate(driftline_label_lag_seconds_bucket{{{M}}}[$__rate_interval])))", "p50 {{model}}", "A"),
        target(f"histogram_quantile(0.95, sum by (le, model) "
               f"(rate(driftline_label_lag_seconds_bucket{{{M}}}[$__rate_interval])))", "p95 {{model}}", "B"),
    ], 12, 8, "s"))
    d.with_panel(timeseries_panel("Consumer lag by topic", [
        target("sum by (topic) (driftline_consumer_lag_messages)", "{{topic}}", "A"),
    ], 8, 8))
    d.with_panel(timeseries_panel("Predictions waiting for a label", [
        target(f"sum by (model) (driftline_pending_predictions{{{M}}})", "{{model}}", "A"),
    ], 8, 8))
    d.with_panel(timeseries_panel("Expired and duplicate events/s", [
        target(f"sum by (model, kind) (rate(driftline_events_expired_total{{{M}}}[$__rate_interval]))",
               "expired {{kind}} {{model}}", "A"),
        target(f"sum by (model, kind) (rate(driftline_events_duplicate_total{{{M}}}[$__rate_interval]))",
               "duplicate {{kind}} {{model}}", "B"),
    ], 8, 8, "ops"))

    # -- performance ------------------------------------------------------------------------
    row("Model performance")
    d.with_panel(timeseries_panel("Performance per model, with rule thresholds", [
        target(f"driftline_performance{{{MV}}}", "{{model}} {{version}} {{metric}}", "A"),
        target(f"driftline_rule_threshold{{{M}}} and on (model, metric) driftline_performance{{{MV}}}",
               "threshold {{model}} {{rule}} {{metric}}", "B"),
    ], 16, 9, description="Window statistics (accuracy, …) per model and version; dashed red: the threshold "
       "of every rule on that statistic.", dashed="threshold .*"))
    d.with_panel(timeseries_panel("Labelled samples in the window", [
        target(f"driftline_window_samples{{{M}}}", "{{model}}", "A"),
    ], 8, 9))
    d.with_panel(timeseries_panel("Estimated (from scores, before labels) vs realized performance", [
        target(f"driftline_performance_estimated{{{MV}}}", "estimated {{model}} {{version}} {{metric}}", "A"),
        target(f"driftline_performance_estimated_lower{{{MV}}}", "band low {{model}} {{version}} {{metric}}", "B"),
        target(f"driftline_performance_estimated_upper{{{MV}}}", "band high {{model}} {{version}} {{metric}}", "C"),
        target(f"driftline_performance{{{MV}}} and on (model, version, metric) "
               f"driftline_performance_estimated{{{MV}}}", "realized {{model}} {{version}} {{metric}}", "D"),
        target(f"driftline_performance_estimated{{{MV}}} - on (model, version, metric) "
               f"driftline_performance{{{MV}}}", "gap {{model}} {{version}} {{metric}}", "E"),
    ], 24, 9, "short", description="CBPE: the metric of the latest predictions estimated from their calibrated "
       "scores, with its 95 % sampling band, beside the realized metric of the labelled window and their gap "
       "(estimated - realized). The estimate cannot see concept drift: the realized metric is authoritative.")
                 .override_by_regexp("band .*", [
                     dm.DynamicConfigValue("custom.lineStyle", {"fill": "dash", "dash": [4, 4]}),
                     dm.DynamicConfigValue("custom.lineWidth", 1)]))

    # -- drift ------------------------------------------------------------------------------
    row("Drift")
    table_query = {"instant": True, "fmt": PromQueryFormat.TABLE}
    d.with_panel(
        place(table.Panel(), 12, 9, "Feature drift: statistic, threshold, p-value, alarm",
              "One row per model, feature and detector (psi, ks, wasserstein, js, chi2). alarm = 1: past the "
              "threshold after multiple-testing correction.")
        .targets([target(f"driftline_feature_drift{{{M}}}", "", "A", **table_query),
                  target(f"driftline_feature_drift_threshold{{{M}}}", "", "B", **table_query),
                  target(f"driftline_feature_drift_p_value{{{M}}}", "", "C", **table_query),
                  target(f"driftline_feature_drift_alarm{{{M}}}", "", "D", **table_query)])
        .transformations([
            dm.DataTransformerConfig("merge", options={}),
            dm.DataTransformerConfig("organize", options={
                "excludeByName": {"Time": True, "__name__": True, "instance": True, "job": True},
                "indexByName": {"model": 0, "feature": 1, "detector": 2, "Value #A": 3, "Value #B": 4,
                                "Value #C": 5, "Value #D": 6},
                "renameByName": {"Value #A": "statistic", "Value #B": "threshold", "Value #C": "p-value",
                                 "Value #D": "alarm"}}),
            dm.DataTransformerConfig("sortBy", options={"sort": [{"field": "alarm", "desc": True}]}),
        ])
        .decimals(4)
        .override_by_name("alarm", [dm.DynamicConfigValue("custom.cellOptions", {"type": "color-background"}),
                                    dm.DynamicConfigValue("decimals", 0),
                                    dm.DynamicConfigValue("thresholds", steps((None, "green"), (1, "red")).build())])
        .show_header(True).cell_height(common.TableCellHeight.SM))
    d.with_panel(timeseries_panel("Feature drift distance relative to its threshold (> 1 alarms)", [
        target(f"driftline_feature_drift{{{M}}} / on (model, feature, detector) "
               f"driftline_feature_drift_threshold{{{M}}} unless on (model, feature, detector) "
               f"driftline_feature_drift_p_value{{{M}}}", "{{model}} {{feature}} {{detector}}", "A"),
        target("vector(1)", "alarm level", "B"),
    ], 12, 9, description="Distances (psi, wasserstein, js) divided by their threshold: above the dashed line 1 "
       "the feature drifts. Tests (ks, chi2) are judged by their p-value, in the panel beside.",
        dashed="alarm level"))
    d.with_panel(
        place(statetimeline.Panel(), 12, 8, "Feature drift alarms")
        .targets([target(f"max by (model, feature) (driftline_feature_drift_alarm{{{M}}})",
                         "{{model}} {{feature}}", "A")])
        .min(0).max(1).color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .thresholds(steps((None, "green"), (1, "red"))).mappings(text_map(**{"0": "ok", "1": "drift"}))
        .show_value(common.VisibilityMode.NEVER).merge_values(True).row_height(0.8))
    d.with_panel(timeseries_panel("Feature p-values (KS, chi2)", [
        target(f"driftline_feature_drift_p_value{{{M}}}", "{{model}} {{feature}} {{detector}}", "A"),
        target(f"max by (model) (driftline_feature_drift_threshold{{{M}}} and on (model, feature, detector) "
               f"driftline_feature_drift_p_value{{{M}}})", "threshold alpha {{model}}", "B"),
    ], 6, 8, description="p-values of the tests, before multiple-testing correction; dashed: the significance "
       "level (the alarm applies the model's correction across features).", dashed="threshold .*"))
    d.with_panel(timeseries_panel("Prediction drift", [
        target(f"driftline_prediction_drift{{{M}}}", "{{model}} {{detector}}", "A"),
    ], 6, 8, description="Drift of the prediction/score distribution against its reference."))

    # -- change detectors -------------------------------------------------------------------
    row("Change detectors (error stream)")
    d.with_panel(timeseries_panel("Change-detector statistic", [
        target(f"driftline_change_detector_statistic{{{M}}}", "{{model}} {{detector}}", "A"),
    ], 12, 8, description="Running statistic of each change detector (ADWIN, DDM, Page-Hinkley, …) on the "
       "model's error stream."))
    d.with_panel(timeseries_panel("Changes detected", [
        target(f"sum by (model, detector) (increase(driftline_change_detections_total{{{M}}}[$__rate_interval]))",
               "{{model}} {{detector}}", "A"),
    ], 6, 8, bars=True))
    d.with_panel(stat("Changes detected (range)",
                      f"sum(increase(driftline_change_detections_total{{{M}}}[$__range])) or vector(0)", 6, 8,
                      thresholds=((None, "green"), (1, "orange"))))

    # -- triggers and DLQ -------------------------------------------------------------------
    row("Retrain triggers and dead letters")
    d.with_panel(timeseries_panel("Retrain triggers and suppressed breaches (cumulative)", [
        target(f"sum by (model, rule) (driftline_triggers_total{{{M}}})", "trigger {{model}} {{rule}}", "A"),
        target(f"sum by (model, rule, reason) (driftline_triggers_suppressed_total{{{M}}})",
               "suppressed {{model}} {{rule}} ({{reason}})", "B"),
    ], 8, 8, description="Triggers published per rule since the engine started; suppressed: breaches held back "
       "by cooldown or min_samples. Each trigger is also an annotation (red line) on every time panel."))
    d.with_panel(stat("Triggers published (total)", f"sum(driftline_triggers_total{{{M}}})", 4, 8,
                      thresholds=((None, "blue"),)))
    d.with_panel(timeseries_panel("Dead-letter rate by reason", [
        target("sum by (topic, reason) (rate(driftline_events_invalid_total[$__rate_interval]))",
               "{{topic}} {{reason}}", "A"),
    ], 12, 8, "ops", stack=True, description="Messages rejected to the dead-letter topic, by reason."))

    # -- engine internals -------------------------------------------------------------------
    row("Engine")
    d.with_panel(timeseries_panel("Transaction commit time", [
        target("histogram_quantile(0.5, sum by (le) (rate(driftline_transaction_commit_seconds_bucket"
               "[$__rate_interval])))", "p50", "A"),
        target("histogram_quantile(0.99, sum by (le) (rate(driftline_transaction_commit_seconds_bucket"
               "[$__rate_interval])))", "p99", "B"),
    ], 12, 7, "s"))
    d.with_panel(timeseries_panel("State checkpoint size", [
        target("sum by (partition) (driftline_checkpoint_bytes)", "partition {{partition}}", "A"),
    ], 12, 7, "bytes"))

    # -- annotations and variables ----------------------------------------------------------
    d.annotation(db.AnnotationQuery().name("Annotations & Alerts")
                 .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --")).enable(True).hide(True)
                 .icon_color("rgba(0, 211, 255, 1)").type("dashboard"))
    # a counter's increase, plus a series that did not exist a minute ago (its first trigger)
    d.annotation(db.AnnotationQuery().name("Retrain triggers").datasource(DS).enable(True).hide(False)
                 .icon_color("red")
                 .expr(f"sum by (model, rule) (increase(driftline_triggers_total{{{M}}}[1m]) > 0) or "
                       f"sum by (model, rule) (driftline_triggers_total{{{M}}} unless "
                       f"driftline_triggers_total{{{M}}} offset 1m)"))

    def var_query(name: str, query: str) -> db.QueryVariable:
        return (db.QueryVariable(name).label(name).datasource(DS).query(query)
                .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).include_all(True).multi(True).all_value(".*")
                .sort(dm.VariableSort.ALPHABETICAL_ASC)
                .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"])))

    d.with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    d.with_variable(var_query("model", "label_values(driftline_predictions_total, model)"))
    d.with_variable(var_query("version", 'label_values(driftline_performance{model=~"$model"}, version)'))
    d.with_variable(var_query("segment", 'label_values(driftline_predictions_total{model=~"$model"}, segment)'))
    return d


def render() -> str:
    model = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    # Grafana reads a Prometheus annotation's step, title and text from these keys, and shows a
    # query variable's ``definition``; the SDK's models do not carry them.
    for a in model["annotations"]["list"]:
        if "expr" in a:
            a.update({"step": "30s", "titleFormat": "retrain trigger", "textFormat": "{{model}} {{rule}}",
                      "tagKeys": "model,rule", "useValueForTime": False})
    for v in model["templating"]["list"]:
        if v["type"] == "query":
            v["definition"] = v["query"]
    return json.dumps(model, indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUT.read_text() != text:
            print(f"{OUT} is stale: run python deploy/grafana/build_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
