"""End to end with a real Prometheus: driftline (CLI subprocess) on the real broker, Debian's
``prometheus`` scraping it every second with ``deploy/prometheus/alerts.yml`` loaded, a drifting
stream; then every query of the Grafana dashboard must return data and the drift alert must fire.

The alert rules are loaded with every ``for:`` shortened to 2 s (expressions unchanged) so that
the test fits in two minutes; ``promtool test rules deploy/prometheus/alerts.test.yml`` (run by
``make test``) checks the real durations.
"""
from __future__ import annotations

import time

import pytest

from tests.integration.harness import Deployment

from .live import ALERTS, MODEL_CONFIG, MODEL_ID, DriftingStream, PrometheusServer, dashboard_queries, \
    finite_values, label_values, rules_with_short_for

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

#: Grafana's values for the variables, as with model=churn and version/segment = All.
VARIABLES = {"datasource": "prometheus", "model": MODEL_ID, "version": ".*", "segment": ".*",
             "__rate_interval": "10s", "__range": "5m", "__interval": "1s"}


@pytest.fixture
def live(kafka_bootstrap, unique, tmp_path):
    d = Deployment(kafka_bootstrap, unique, tmp_path, MODEL_CONFIG)
    prom = PrometheusServer(tmp_path, [f"127.0.0.1:{d.metrics_port}"],
                            rules=rules_with_short_for(ALERTS, tmp_path / "alerts.yml"))
    stream = None
    try:
        d.start()
        prom.start()
        stream = DriftingStream(d, drift_after=12)
        yield d, prom, stream
    finally:
        if stream is not None and stream.is_alive():
            stream.stop()
        prom.stop()
        d.stop_all()


def wait_for(what: str, check, timeout: float, context) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"{what} did not happen within {timeout}s\n{context()}")


def test_dashboard_queries_return_data_and_drift_alert_fires(live):
    d, prom, stream = live
    started = time.time()

    def context() -> str:
        alerts = [(a["labels"]["alertname"], a["state"]) for a in prom.alerts()]
        names = sorted(prom.api("label/__name__/values"))
        return (f"stream: sent {stream.sent} pairs, error {stream.error!r}\nalerts: {alerts}\n"
                f"series names: {names}\nengine log:\n{d.logs()[-2000:]}\nprometheus log:\n{prom.logs()[-1000:]}")

    wait_for("a successful scrape", prom.targets_up, 20, context)
    stream.start()

    # Accuracy falls and the drift statistics cross their thresholds after the switch at 12 s.
    accuracy = wait_for("DriftlineAccuracyBelowThreshold firing",
                        lambda: prom.firing("DriftlineAccuracyBelowThreshold"), 60, context)
    assert accuracy[0]["labels"]["model"] == MODEL_ID
    drift = wait_for("DriftlineFeatureDrift firing", lambda: prom.firing("DriftlineFeatureDrift"), 45, context)
    drifting = {(a["labels"]["model"], a["labels"]["feature"]) for a in drift}
    assert (MODEL_ID, "x") in drifting, drift
    assert stream.error is None, stream.error
    assert not prom.firing("DriftlineDown") and not prom.firing("DriftlineConsumerLagGrowing")

    # Every dashboard query, asked while the stream still flows, returns at least one finite value.
    queries = dashboard_queries(VARIABLES)
    assert len([q for q in queries if q.kind == "panel"]) >= 30
    empty = []
    for q in queries:
        if q.kind == "panel":
            result = prom.query(q.expr)
        elif q.kind == "annotation":  # Grafana asks annotation queries over the dashboard's range
            result = prom.query_range(q.expr, started, time.time(), 1)
        else:
            values = label_values(prom, q.expr)
            if q.ref == "segment":
                assert "region=eu" in values or "region=us" in values, values  # the stream's segments
            result = [{"value": [0, "1"]}] if values else []
        if not finite_values(result):
            empty.append(f"{q.panel} [{q.ref}]: {q.expr} -> {result}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty) + "\n" + context()

    # The DLQ panel names the reasons sent; one accuracy trigger (after the drift), cold-start breaches held back.
    reasons = {r["metric"]["reason"] for r in prom.query(
        "sum by (reason) (driftline_events_invalid_total)")}
    assert {"invalid_json", "missing_field", "unknown_model"} <= reasons
    assert finite_values(prom.query(f'driftline_triggers_total{{model="{MODEL_ID}", rule="accuracy-floor"}}')) == [1]
    held = finite_values(prom.query(f'driftline_triggers_suppressed_total{{model="{MODEL_ID}", reason="min_samples"}}'))
    assert held and held[0] >= 1  # the cold start breached before the window held min_samples
    stream.stop()
    assert stream.error is None, stream.error
