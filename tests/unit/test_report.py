"""The report's arithmetic: drift scaled to the alarm level, p-values as the detectors compute
them, warm-up left out, the features a trigger names, bins merged for reading."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from detectors.drift import KS, PSI, Chi2
from retrain_trigger.events import TriggerEvent, TriggerWindow
from streams.core.config import parse_config
from streams.tools.report import DriftInfo, ReportRecorder, drifted_features, readable_bins, scale_drift

CONFIG = parse_config({"kafka": {"bootstrap.servers": "127.0.0.1:1"},
                       "models": [{"id": "m", "features": {"numeric": ["x"]}}]}, "test.toml")


def recorder(drift: dict[str, DriftInfo], alpha=0.01, correction="none") -> ReportRecorder:
    r = ReportRecorder(CONFIG)
    r.drift["m"] = drift
    r.alpha["m"] = (alpha, correction)
    return r


@pytest.mark.parametrize("kind", ["ks", "chi2"])
def test_a_test_is_scaled_by_the_detectors_own_p_value(kind):
    rng = np.random.default_rng(7)
    if kind == "ks":
        detector = KS(reference=rng.normal(0, 1, 800), window=500, min_samples=10)
        values = rng.normal(0.15, 1, 500)
    else:
        detector = Chi2(reference=rng.choice(list("abcd"), 800, p=[.4, .3, .2, .1]), categorical=True, window=500,
                        min_samples=10)
        values = rng.choice(list("abcd"), 500, p=[.3, .3, .25, .15])
    result = detector.update_many(values)
    both = detector.reference_counts + detector.current_counts()
    r = recorder({f"feature.x.{kind}": DriftInfo(True, 0.01, 10)})
    r.test_sizes["m", f"feature.x.{kind}", 7] = (float(detector.reference_counts.sum()), int((both > 0).sum()) - 1)
    scaled, raw = scale_drift("m", {f"feature.x.{kind}": [(1000, 7, result.statistic, result.n)]}, r)
    assert not raw
    expected = -math.log10(float(result.p_value)) / -math.log10(0.01)
    assert scaled[0].scaled[0] == pytest.approx(expected, rel=1e-9)
    assert bool(scaled[0].alarm[0]) == result.fired


def test_a_distance_is_divided_by_its_threshold_and_warm_up_is_left_out():
    psi = PSI(reference=np.arange(100.0), min_samples=100)
    r = recorder({"feature.x.psi": DriftInfo(False, psi.threshold, psi.min_samples)})
    points = [(1, 1, 1.5, 38), (2, 2, 0.1, 100), (3, 3, 0.3, 200)]
    (series,), raw = scale_drift("m", {"feature.x.psi": points}, r)
    assert series.at_ms.tolist() == [2, 3]  # the warm-up spike at n=38 is not drawn
    assert series.scaled.tolist() == pytest.approx([0.1 / 0.2, 0.3 / 0.2])
    assert series.alarm.tolist() == [False, True]


def test_bh_decides_the_alarms_of_a_family_of_tests():
    # p-values 0.004 and 0.009 at one sample, alpha 0.01, BH over 2: 0.004 <= 0.005 and 0.009 <= 0.01: both
    info = {f"feature.{f}.chi2": DriftInfo(True, 0.01, 1) for f in "ab"}
    r = recorder(info, alpha=0.01, correction="bh")
    from scipy import stats

    rows = {}
    for f, p in (("a", 0.004), ("b", 0.009)):
        r.test_sizes["m", f"feature.{f}.chi2", 5] = (100.0, 1)
        rows[f"feature.{f}.chi2"] = [(1, 5, float(stats.chi2.isf(p, 1)), 100)]
    scaled, _ = scale_drift("m", rows, r)
    assert [bool(s.alarm[0]) for s in scaled] == [True, True]
    r2 = recorder(info, alpha=0.01, correction="bonferroni")
    r2.test_sizes = r.test_sizes
    assert [bool(s.alarm[0]) for s in scale_drift("m", rows, r2)[0]] == [True, False]


def test_a_statistic_without_threshold_is_drawn_raw():
    r = recorder({"feature.x.wasserstein": DriftInfo(False, None, 1)})
    scaled, raw = scale_drift("m", {"feature.x.wasserstein": [(1, 1, 3.0, 5)]}, r)
    assert not scaled and list(raw) == ["feature.x.wasserstein"]


def test_the_features_a_trigger_names():
    trigger = TriggerEvent(
        trigger_id="m:r:000001", model_id="m", rule="r", metric="feature.*.psi", value=1.0, threshold=1.0,
        window=TriggerWindow(start="a", end="b", count=1), triggered_at="2026-01-01T00:00:00.000Z",
        evidence={"conditions": [{"matched": ["feature.x1.psi", "feature.a.b.psi"]}],
                  "top_features": [{"feature": "x0", "kind": "ks", "fired": True},
                                   {"feature": "x2", "kind": "ks", "fired": False}]})
    assert drifted_features(trigger) == {("x1", "psi"), ("a.b", "psi"), ("x0", "ks")}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=150, unique=True), st.integers(0, 10**6))
def test_merged_bins_keep_every_count(edges, seed):
    class Profile:
        pass

    profile = Profile()
    profile.edges = np.sort(np.asarray(edges))
    rng = np.random.default_rng(seed)
    reference, current = rng.integers(0, 50, len(edges) + 1), rng.integers(0, 50, len(edges) + 1)
    labels, ref, cur = readable_bins(profile, reference, current)
    assert len(labels) == len(ref) == len(cur) <= 20
    assert ref.sum() == reference.sum() and cur.sum() == current.sum()
