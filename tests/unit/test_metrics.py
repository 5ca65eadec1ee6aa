"""The exporter's batch-fed histogram exports what prometheus_client's Histogram would."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st
from prometheus_client import CollectorRegistry, Histogram

from streams.runtime.exporter import BatchHistogram

BUCKETS = (1, 5, 15, 60, 300)


def samples(registry: CollectorRegistry) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples if not s.name.endswith("_created")}


@given(batches=st.lists(st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.0001, 5.0, 14.9, 15.0, 60.0, 299.0, 300.0,
                                                  301.0, 1e6]), max_size=30), max_size=5))
def test_same_buckets_count_and_sum_as_a_histogram_observed_one_by_one(batches):
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("lag_seconds", "doc", ["model"], buckets=BUCKETS, registry=one_by_one)
    histogram = BatchHistogram("lag_seconds", "doc", "model", buckets=BUCKETS, registry=batched)
    reference.labels("m")
    for batch in batches:
        for value in batch:
            reference.labels("m").observe(value)
        histogram.observe_many("m", batch)
    histogram.observe_many("m", [])
    want, got = samples(one_by_one), samples(batched)
    assert want.keys() == got.keys()
    for key, value in want.items():  # counts exactly; the sum up to float rounding
        assert got[key] == (pytest.approx(value, rel=1e-12) if key[0].endswith("_sum") else value), key


def test_drift_p_values_are_exported_at_scrape_with_scipys_value():
    """The exporter stores each KS test's p-value deferred; a scrape computes it, and it is the
    exact kstwo.sf of the detector's counts (the feature's statistic and alarm are set at once)."""
    import numpy as np
    from scipy import stats

    from streams.core.config import parse_config
    from streams.runtime.exporter import Exporter
    from streams.core.monitor import Monitor, Source
    from streams.core.codecs import Prediction

    config = parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:9092"}, "models": [{
        "id": "m", "features": {"numeric": ["x"]},
        "drift": {"numeric": ["ks"], "prediction": [], "window": 400, "reference_size": 300}}]})
    rng = np.random.default_rng(5)
    values = np.concatenate((rng.normal(0, 1, 300), rng.normal(0.3, 1, 400)))
    monitor = Monitor(config)
    monitor.process([(Prediction(f"p{i}", "m", 1_000 + i, 1, {"x": float(v)}, score=0.5), Source("p", 0, i))
                     for i, v in enumerate(values)])
    exporter = Exporter(config)
    exporter.observe(monitor)
    detector = monitor.models["m"].stats.feature_drift["x", "ks"]
    reference, current = detector.reference_counts, detector.current_counts()
    n_ref, n_cur = reference.sum(), current.sum()
    gap = np.abs(np.cumsum(reference) / n_ref - np.cumsum(current) / n_cur).max()
    expected = stats.kstwo.sf(round(float(gap), 12), np.round(n_ref * n_cur / (n_ref + n_cur)))
    got = samples(exporter.registry)
    labels = (("detector", "ks"), ("feature", "x"), ("model", "m"))
    assert got[("driftline_feature_drift_p_value", labels)] == pytest.approx(expected, rel=1e-12)
    assert got[("driftline_feature_drift", labels)] == pytest.approx(gap, rel=1e-12)
    assert got[("driftline_feature_drift_alarm", labels)] == float(expected < 0.01)


def test_the_exporter_looks_only_at_models_touched_or_restored_and_exports_what_looking_at_all_would():
    """Observing after every batch only the models the batch touched (or a restore brought back)
    gives the same samples as an exporter that observes every model after every batch."""
    from streams.core.codecs import Label, Prediction
    from streams.core.config import parse_config
    from streams.runtime.exporter import Exporter
    from streams.core.monitor import Monitor, Source

    config = parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:9092"}, "metrics": {"refresh_ms": 0}, "models": [
        {"id": m, "features": {"numeric": ["x"]}, "evaluate_every": 5,
         "drift": {"numeric": ["psi"], "prediction": [], "window": 20, "reference_size": 20}} for m in "ab"]})

    def batch(model: str, start: int, n: int = 30) -> list:
        events = []
        for i in range(start, start + n):
            events.append((Prediction(f"p{i}", model, 1_000 * i, 1, {"x": float(i % 7)}, score=0.7),
                           Source("predictions", 0, i)))
            events.append((Label(f"p{i}", model, i % 2, 1_000 * i + 1), Source("labels", 0, i)))
        return events

    batches = [batch("a", 0) + batch("b", 0), batch("a", 30), batch("a", 60)[:7], batch("b", 30)]
    touched, everything = Monitor(config), Monitor(config)
    lazy, eager = Exporter(config), Exporter(config)
    for events in batches:
        touched.process(events)
        everything.process(events)
        lazy.observe(touched)
        everything._unobserved.update(everything.models)  # the old behaviour: look at every model
        eager.observe(everything)
        assert samples(lazy.registry) == samples(eager.registry)
    restored = Monitor(config)
    restored.restore(touched.state())
    after_restart = Exporter(config)
    after_restart.observe(restored)
    pending = {k: v for k, v in samples(after_restart.registry).items() if k[0] == "driftline_pending_predictions"}
    assert pending == {k: v for k, v in samples(lazy.registry).items() if k[0] == "driftline_pending_predictions"}
    assert set(pending) == {("driftline_pending_predictions", (("model", m),)) for m in "ab"}


def test_gauges_are_set_at_most_once_per_refresh_interval_and_then_as_after_every_batch(monkeypatch):
    """Within ``metrics.refresh_ms`` of the last refresh a batch's counters count at once and its
    gauges wait; the next refresh (a later batch, or the engine's call between batches) sets them
    to what an exporter that refreshes after every batch shows."""
    from streams.core.codecs import Label, Prediction
    from streams.core.config import parse_config
    from streams.core.monitor import Monitor, Source
    from streams.runtime import exporter as exporter_module
    from streams.runtime.exporter import Exporter

    def config(refresh_ms):
        return parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:9092"}, "metrics": {"refresh_ms": refresh_ms},
                             "models": [{"id": "a", "features": {"numeric": ["x"]}, "evaluate_every": 5,
                                         "drift": {"numeric": ["psi"], "prediction": [], "window": 20,
                                                   "reference_size": 20}}]})

    clock = [100.0]
    monkeypatch.setattr(exporter_module.time, "monotonic", lambda: clock[0])
    throttled, every_batch = Exporter(config(1000)), Exporter(config(0))
    one, other = Monitor(config(1000)), Monitor(config(0))

    def feed(start, n, label_of=lambda i: i % 2):
        events = []
        for i in range(start, start + n):
            events.append((Prediction(f"p{i}", "a", 1_000 * i, 1, {"x": float(i % 7)}, score=0.7), Source("p", 0, i)))
            events.append((Label(f"p{i}", "a", label_of(i), 1_000 * i + 1), Source("l", 0, i)))
        for monitor, exporter in ((one, throttled), (other, every_batch)):
            monitor.process(events)
            exporter.observe(monitor)

    def gauges(exporter):
        return {k: v for k, v in samples(exporter.registry).items() if not k[0].endswith(("_total", "_bucket",
                                                                                           "_count", "_sum"))}

    def counters(exporter):
        return {k: v for k, v in samples(exporter.registry).items() if k[0].endswith("_total")}

    feed(0, 30)  # the first batch refreshes at once
    assert gauges(throttled) == gauges(every_batch)
    before = gauges(throttled)
    clock[0] += 0.5
    feed(30, 40, label_of=lambda i: 1)  # within the interval: counters now, gauges later
    assert counters(throttled) == counters(every_batch)
    assert gauges(throttled) == before != gauges(every_batch)
    throttled.refresh()
    assert gauges(throttled) == before
    clock[0] += 0.5
    throttled.refresh()
    assert gauges(throttled) == gauges(every_batch)


def test_the_performance_gauge_is_the_current_window_between_evaluation_points():
    """README: driftline_performance is the count window's statistic with every labelled pair,
    not the value judged at the last evaluation point (here every 50 pairs)."""
    from streams.core.codecs import Label, Prediction
    from streams.core.config import parse_config
    from streams.core.monitor import Monitor, Source
    from streams.runtime.exporter import Exporter

    config = parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:9092"}, "metrics": {"refresh_ms": 0}, "models": [
        {"id": "a", "evaluate_every": 50, "window": {"kind": "count", "size": 1000},
         "rules": [{"name": "floor", "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.1}]}]}]})
    monitor, exporter = Monitor(config), Exporter(config)
    labels: list[int] = []
    for new in ([int(i % 10 < 7) for i in range(1200)], [1] * 10, [1] * 7):
        ids = range(len(labels), len(labels) + len(new))
        labels += new
        # as the engine gets them: a batch of predictions, then one of their labels
        monitor.process([(Prediction(f"p{i}", "a", 1_000 * i, 1, {}), Source("predictions", 0, i)) for i in ids])
        exporter.observe(monitor)
        monitor.process([(Label(f"p{i}", "a", labels[i], 1_000 * i + 1), Source("labels", 0, i)) for i in ids])
        exporter.observe(monitor)
        exported = samples(exporter.registry)[
            ("driftline_performance", (("metric", "accuracy"), ("model", "a"), ("version", "none")))]
        assert exported == pytest.approx(sum(labels[-1000:]) / 1000, abs=1e-12), len(labels)


def test_forget_drops_the_gauges_of_a_revoked_partitions_models_only():
    """A partition revoked from an engine: its models' gauges go (the new owner exports them),
    the other models' gauges and every counter stay, and a later observe exports them again."""
    from streams.core.codecs import Label, Prediction
    from streams.core.config import parse_config
    from streams.core.monitor import Monitor, Source
    from streams.runtime.exporter import Exporter

    config = parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:9092"}, "metrics": {"refresh_ms": 0}, "models": [
        {"id": m, "features": {"numeric": ["x"]}, "evaluate_every": 5,
         "drift": {"numeric": ["psi", "ks"], "prediction": ["ks"], "window": 20, "reference_size": 20}} for m in "ab"]})

    def events(model: str, partition: int) -> list:
        return [(Prediction(f"p{i}", model, 1_000 * i, 1, {"x": float(i % 7)}, score=0.1 * (i % 9)),
                 Source("predictions", partition, i)) for i in range(60)] + \
               [(Label(f"p{i}", model, i % 2, 1_000 * i + 1), Source("labels", partition, i)) for i in range(50)]

    def of(model: str, exporter: Exporter, kept) -> dict:
        return {k: v for k, v in samples(exporter.registry).items() if dict(k[1]).get("model") == model and kept(k)}

    def gauge(key) -> bool:
        return not key[0].endswith(("_total", "_bucket", "_count", "_sum"))

    exporter, only_b = Exporter(config), Exporter(config)
    first, second, alone = Monitor(config), Monitor(config), Monitor(config)
    first.process(events("a", 0))
    second.process(events("b", 1))
    alone.process(events("b", 1))
    exporter.observe(first)
    exporter.observe(second)
    only_b.observe(alone)
    counted = of("a", exporter, lambda k: not gauge(k))
    assert ("driftline_feature_drift_p_value", (("detector", "ks"), ("feature", "x"), ("model", "a"))) in \
        of("a", exporter, gauge)
    exporter.forget(first.models)
    assert of("a", exporter, gauge) == {}
    assert of("a", exporter, lambda k: not gauge(k)) == counted
    assert of("b", exporter, gauge) and of("b", exporter, gauge) == of("b", only_b, gauge)
    restored = Monitor(config)
    restored.restore(first.state())
    exporter.observe(restored)
    assert ("driftline_window_samples", (("model", "a"),)) in of("a", exporter, gauge)
