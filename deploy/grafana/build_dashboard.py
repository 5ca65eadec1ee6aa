"""Generate ``deploy/grafana/dashboards/driftline.json`` (Grafana 10/11 dashboard schema).

    python deploy/grafana/build_dashboard.py          # rewrite the JSON
    python deploy/grafana/build_dashboard.py --check  # exit 1 if the committed JSON is stale

The JSON is committed; this script is the readable source of it. Every query uses only the
template variables ``$datasource``, ``$model``, ``$version``, ``$segment`` and Grafana's
``$__rate_interval`` / ``$__range``, which the e2e test substitutes before asking a real Prometheus.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "driftline.json"
UID = "driftline-overview"
DS = {"type": "prometheus", "uid": "${datasource}"}

M = 'model=~"$model"'
MV = 'model=~"$model", version=~"$version"'  # statistics are per model and version
MS = 'model=~"$model", segment=~"$segment"'  # driftline_predictions_total alone carries segment


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> dict:
    t = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref, "range": not instant,
         "instant": instant, "editorMode": "code"}
    if fmt != "time_series":
        t["format"] = fmt
    return t


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self):
        self.x = self.y = 0
        self.row_h = 0
        self.next_id = 1
        self.panels: list[dict] = []

    def row(self, title: str) -> None:
        self.newline()
        self.panels.append({"type": "row", "title": title, "id": self._id(), "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def newline(self) -> None:
        if self.x:
            self.y += self.row_h
            self.x = self.row_h = 0

    def add(self, panel: dict, w: int, h: int) -> None:
        if self.x + w > 24:
            self.newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        panel.setdefault("datasource", DS)
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def timeseries(title: str, targets: list[dict], unit: str = "short", description: str = "", overrides=None,
               min_=None, max_=None, stack: bool = False, bars: bool = False) -> dict:
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 10 if not bars else 80,
              "showPoints": "never", "spanNulls": False,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    defaults = {"unit": unit, "custom": custom}
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    return {"type": "timeseries", "title": title, "description": description, "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title: str, expr: str, unit: str = "short", legend: str = "", description: str = "",
         thresholds: list[tuple[float | None, str]] | None = None, mappings=None) -> dict:
    steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
    return {"type": "stat", "title": title, "description": description,
            "targets": [target(expr, legend, instant=True)],
            "fieldConfig": {"defaults": {"unit": unit, "mappings": mappings or [],
                                         "thresholds": {"mode": "absolute", "steps": steps}}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "area", "textMode": "auto"}}


def dashed_red(match_regex: str) -> dict:
    """An override that draws series whose name matches as a dashed red threshold line."""
    return {"matcher": {"id": "byRegexp", "options": match_regex},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                           {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                           {"id": "custom.fillOpacity", "value": 0},
                           {"id": "custom.lineWidth", "value": 2}]}


def build() -> dict:
    L = Layout()

    # -- freshness and throughput ---------------------------------------------------------
    L.row("Freshness and throughput")
    L.add(stat("Engine up", "min(driftline_engine_up)", description="1 while every engine instance is consuming; "
               "0 or no data: the engine is down or not scraped.",
               thresholds=[(None, "red"), (1, "green")],
               mappings=[{"type": "value", "options": {"0": {"text": "DOWN"}, "1": {"text": "UP"}}}]), 4, 4)
    L.add(stat("Events/s in", "sum(rate(driftline_events_consumed_total[$__rate_interval]))", "ops",
               description="Messages read from the predictions and labels topics."), 5, 4)
    L.add(stat("Consumer lag", "sum(driftline_consumer_lag_messages)", "short",
               description="Messages between the engine's position and the end of the input partitions.",
               thresholds=[(None, "green"), (10000, "orange"), (100000, "red")]), 5, 4)
    L.add(stat("Label lag p95", f"histogram_quantile(0.95, sum by (le) "
               f"(rate(driftline_label_lag_seconds_bucket{{{M}}}[$__rate_interval])))", "s",
               description="Event time from a prediction to its label, 95th percentile, selected models."), 5, 4)
    L.add(stat("Last scrape age", "time() - max(timestamp(driftline_engine_up))", "s",
               description="Seconds since Prometheus last scraped an engine: the freshness of everything below.",
               thresholds=[(None, "green"), (60, "orange"), (300, "red")]), 5, 4)
    L.add(timeseries("Events/s by topic and model", [
        target("sum by (topic) (rate(driftline_events_consumed_total[$__rate_interval]))", "consumed {{topic}}", "A"),
        target(f"sum by (model, segment) (rate(driftline_predictions_total{{{MS}}}[$__rate_interval]))",
               "predictions {{model}} {{segment}}", "B"),
        target(f"sum by (model) (rate(driftline_labels_total{{{M}}}[$__rate_interval]))", "labels {{model}}", "C"),
        target(f"sum by (model) (rate(driftline_events_joined_total{{{M}}}[$__rate_interval]))",
               "joined {{model}}", "D"),
    ], "ops"), 12, 8)
    L.add(timeseries("Label lag (event time, prediction to label)", [
        target(f"histogram_quantile(0.5, sum by (le, model) "
               f"(rate(driftline_label_lag_seconds_bucket{{{M}}}[$__rate_interval])))", "p50 {{model}}", "A"),
        target(f"histogram_quantile(0.95, sum by (le, model) "
               f"(rate(driftline_label_lag_seconds_bucket{{{M}}}[$__rate_interval])))", "p95 {{model}}", "B"),
    ], "s"), 12, 8)
    L.add(timeseries("Consumer lag by topic", [
        target("sum by (topic) (driftline_consumer_lag_messages)", "{{topic}}", "A"),
    ], "short"), 8, 8)
    L.add(timeseries("Predictions waiting for a label", [
        target(f"sum by (model) (driftline_pending_predictions{{{M}}})", "{{model}}", "A"),
    ], "short"), 8, 8)
    L.add(timeseries("Expired and duplicate events/s", [
        target(f"sum by (model, kind) (rate(driftline_events_expired_total{{{M}}}[$__rate_interval]))",
               "expired {{kind}} {{model}}", "A"),
        target(f"sum by (model, kind) (rate(driftline_events_duplicate_total{{{M}}}[$__rate_interval]))",
               "duplicate {{kind}} {{model}}", "B"),
    ], "ops"), 8, 8)

    # -- performance ------------------------------------------------------------------------
    L.row("Model performance")
    L.add(timeseries("Performance per model, with rule thresholds", [
        target(f"driftline_performance{{{MV}}}", "{{model}} {{version}} {{metric}}", "A"),
        target(f"driftline_rule_threshold{{{M}}} and on (model, metric) driftline_performance{{{MV}}}",
               "threshold {{model}} {{rule}} {{metric}}", "B"),
    ], "short", description="Window statistics (accuracy, …) per model and version; dashed red: the threshold "
       "of every rule on that statistic.", overrides=[dashed_red("threshold .*")]), 16, 9)
    L.add(timeseries("Labelled samples in the window", [
        target(f"driftline_window_samples{{{M}}}", "{{model}}", "A"),
    ], "short"), 8, 9)
    L.add(timeseries("Estimated (from scores, before labels) vs realized performance", [
        target(f"driftline_performance_estimated{{{MV}}}", "estimated {{model}} {{version}} {{metric}}", "A"),
        target(f"driftline_performance_estimated_lower{{{MV}}}", "band low {{model}} {{version}} {{metric}}", "B"),
        target(f"driftline_performance_estimated_upper{{{MV}}}", "band high {{model}} {{version}} {{metric}}", "C"),
        target(f"driftline_performance{{{MV}}} and on (model, version, metric) "
               f"driftline_performance_estimated{{{MV}}}", "realized {{model}} {{version}} {{metric}}", "D"),
        target(f"driftline_performance_estimated{{{MV}}} - on (model, version, metric) "
               f"driftline_performance{{{MV}}}", "gap {{model}} {{version}} {{metric}}", "E"),
    ], "short", description="CBPE: the metric of the latest predictions estimated from their calibrated scores, "
       "with its 95 % sampling band, beside the realized metric of the labelled window and their gap (estimated "
       "- realized). The estimate cannot see concept drift: the realized metric is authoritative.",
        overrides=[{"matcher": {"id": "byRegexp", "options": "band .*"},
                     "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [4, 4]}},
                                    {"id": "custom.lineWidth", "value": 1}]}]), 24, 9)

    # -- drift ------------------------------------------------------------------------------
    L.row("Drift")
    L.add({"type": "table", "title": "Feature drift: statistic, threshold, p-value, alarm",
           "description": "One row per model, feature and detector (psi, ks, wasserstein, js, chi2). "
                          "alarm = 1: past the threshold after multiple-testing correction.",
           "targets": [
               target(f"driftline_feature_drift{{{M}}}", "", "A", instant=True, fmt="table"),
               target(f"driftline_feature_drift_threshold{{{M}}}", "", "B", instant=True, fmt="table"),
               target(f"driftline_feature_drift_p_value{{{M}}}", "", "C", instant=True, fmt="table"),
               target(f"driftline_feature_drift_alarm{{{M}}}", "", "D", instant=True, fmt="table"),
           ],
           "transformations": [
               {"id": "merge", "options": {}},
               {"id": "organize", "options": {
                   "excludeByName": {"Time": True, "__name__": True, "instance": True, "job": True},
                   "indexByName": {"model": 0, "feature": 1, "detector": 2, "Value #A": 3, "Value #B": 4,
                                   "Value #C": 5, "Value #D": 6},
                   "renameByName": {"Value #A": "statistic", "Value #B": "threshold", "Value #C": "p-value",
                                    "Value #D": "alarm"}}},
               {"id": "sortBy", "options": {"sort": [{"field": "alarm", "desc": True}]}},
           ],
           "fieldConfig": {"defaults": {"decimals": 4}, "overrides": [
               {"matcher": {"id": "byName", "options": "alarm"},
                "properties": [{"id": "custom.cellOptions", "value": {"type": "color-background"}},
                               {"id": "decimals", "value": 0},
                               {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                                   {"value": None, "color": "green"}, {"value": 1, "color": "red"}]}}]}]},
           "options": {"showHeader": True, "cellHeight": "sm"}}, 12, 9)
    L.add(timeseries("Feature drift distance relative to its threshold (> 1 alarms)", [
        target(f"driftline_feature_drift{{{M}}} / on (model, feature, detector) "
               f"driftline_feature_drift_threshold{{{M}}} unless on (model, feature, detector) "
               f"driftline_feature_drift_p_value{{{M}}}", "{{model}} {{feature}} {{detector}}", "A"),
        target("vector(1)", "alarm level", "B"),
    ], "short", description="Distances (psi, wasserstein, js) divided by their threshold: above the dashed line 1 "
       "the feature drifts. Tests (ks, chi2) are judged by their p-value, in the panel beside.",
        overrides=[dashed_red("alarm level")]), 12, 9)
    L.add({"type": "state-timeline", "title": "Feature drift alarms",
           "targets": [target(f"max by (model, feature) (driftline_feature_drift_alarm{{{M}}})",
                              "{{model}} {{feature}}", "A")],
           "fieldConfig": {"defaults": {"min": 0, "max": 1, "color": {"mode": "thresholds"},
                                        "thresholds": {"mode": "absolute", "steps": [
                                            {"value": None, "color": "green"}, {"value": 1, "color": "red"}]},
                                        "mappings": [{"type": "value", "options": {
                                            "0": {"text": "ok"}, "1": {"text": "drift"}}}]},
                           "overrides": []},
           "options": {"showValue": "never", "mergeValues": True, "rowHeight": 0.8}}, 12, 8)
    L.add(timeseries("Feature p-values (KS, chi2)", [
        target(f"driftline_feature_drift_p_value{{{M}}}", "{{model}} {{feature}} {{detector}}", "A"),
        target(f"max by (model) (driftline_feature_drift_threshold{{{M}}} and on (model, feature, detector) "
               f"driftline_feature_drift_p_value{{{M}}})", "threshold alpha {{model}}", "B"),
    ], "short", description="p-values of the tests, before multiple-testing correction; dashed: the "
       "significance level (the alarm applies the model's correction across features).",
        overrides=[dashed_red("threshold .*")]), 6, 8)
    L.add(timeseries("Prediction drift", [
        target(f"driftline_prediction_drift{{{M}}}", "{{model}} {{detector}}", "A"),
    ], "short", description="Drift of the prediction/score distribution against its reference."), 6, 8)

    # -- change detectors -------------------------------------------------------------------
    L.row("Change detectors (error stream)")
    L.add(timeseries("Change-detector statistic", [
        target(f"driftline_change_detector_statistic{{{M}}}", "{{model}} {{detector}}", "A"),
    ], "short", description="Running statistic of each change detector (ADWIN, DDM, Page-Hinkley, …) on the "
       "model's error stream."), 12, 8)
    L.add(timeseries("Changes detected", [
        target(f"sum by (model, detector) (increase(driftline_change_detections_total{{{M}}}[$__rate_interval]))",
               "{{model}} {{detector}}", "A"),
    ], "short", bars=True), 6, 8)
    L.add(stat("Changes detected (range)",
               f"sum(increase(driftline_change_detections_total{{{M}}}[$__range])) or vector(0)", "short",
               thresholds=[(None, "green"), (1, "orange")]), 6, 8)

    # -- triggers and DLQ -------------------------------------------------------------------
    L.row("Retrain triggers and dead letters")
    L.add(timeseries("Retrain triggers and suppressed breaches (cumulative)", [
        target(f"sum by (model, rule) (driftline_triggers_total{{{M}}})", "trigger {{model}} {{rule}}", "A"),
        target(f"sum by (model, rule, reason) (driftline_triggers_suppressed_total{{{M}}})",
               "suppressed {{model}} {{rule}} ({{reason}})", "B"),
    ], "short", description="Triggers published per rule since the engine started; suppressed: breaches held "
       "back by cooldown or min_samples. Each trigger is also an annotation (red line) on every time panel."),
        8, 8)
    L.add(stat("Triggers published (total)", f"sum(driftline_triggers_total{{{M}}})", "short",
               thresholds=[(None, "blue")]), 4, 8)
    L.add(timeseries("Dead-letter rate by reason", [
        target("sum by (topic, reason) (rate(driftline_events_invalid_total[$__rate_interval]))",
               "{{topic}} {{reason}}", "A"),
    ], "ops", stack=True, description="Messages rejected to the dead-letter topic, by reason."), 12, 8)

    # -- engine internals -------------------------------------------------------------------
    L.row("Engine")
    L.add(timeseries("Transaction commit time", [
        target("histogram_quantile(0.5, sum by (le) (rate(driftline_transaction_commit_seconds_bucket"
               "[$__rate_interval])))", "p50", "A"),
        target("histogram_quantile(0.99, sum by (le) (rate(driftline_transaction_commit_seconds_bucket"
               "[$__rate_interval])))", "p99", "B"),
    ], "s"), 12, 7)
    L.add(timeseries("State checkpoint size", [
        target("sum by (partition) (driftline_checkpoint_bytes)", "partition {{partition}}", "A"),
    ], "bytes"), 12, 7)
    L.newline()

    def var_query(name: str, query: str, label: str) -> dict:
        return {"type": "query", "name": name, "label": label, "datasource": DS,
                "definition": query, "query": {"query": query, "refId": f"{name}-var", "qryType": 1},
                "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*", "sort": 1,
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [],
                "hide": 0, "regex": ""}

    return {
        "uid": UID,
        "title": "driftline",
        "description": "Streaming model monitoring: throughput, label lag, performance, drift, change "
                       "detectors, retrain triggers, dead letters. Generated by deploy/grafana/build_dashboard.py.",
        "tags": ["driftline", "mlops"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [],
        "panels": L.panels,
        "annotations": {"list": [
            {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
             "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
             "type": "dashboard"},
            {"name": "Retrain triggers", "datasource": DS, "enable": True, "hide": False, "iconColor": "red",
             # a counter's increase, plus a series that did not exist a minute ago (its first trigger)
             "expr": f"sum by (model, rule) (increase(driftline_triggers_total{{{M}}}[1m]) > 0) or "
                     f"sum by (model, rule) (driftline_triggers_total{{{M}}} unless "
                     f"driftline_triggers_total{{{M}}} offset 1m)",
             "step": "30s", "titleFormat": "retrain trigger", "textFormat": "{{model}} {{rule}}",
             "tagKeys": "model,rule", "useValueForTime": False},
        ]},
        "templating": {"list": [
            {"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus",
             "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
             "regex": ""},
            var_query("model", "label_values(driftline_predictions_total, model)", "model"),
            var_query("version", 'label_values(driftline_performance{model=~"$model"}, version)', "version"),
            var_query("segment", 'label_values(driftline_predictions_total{model=~"$model"}, segment)', "segment"),
        ]},
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


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
