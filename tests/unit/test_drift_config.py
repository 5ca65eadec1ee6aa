"""The false-alarm budget from the config: one level per judgement for every drift statistic of a
model, thresholds calibrated from the reference when first needed, what the budget refuses."""
import json

import numpy as np
import pytest

from detectors.calibration import judgement_level, null_threshold
from detectors.drift import _psi_rows
from streams.core.config import ConfigError, parse_config
from streams.core.statistics import ModelStatistics


def config(tmp_path, drift: dict | None, evaluate_every: int = 100, features=None):
    rng = np.random.default_rng(4)
    (tmp_path / "reference.json").write_text(json.dumps({"age": rng.normal(40, 8, 2000).round(2).tolist()}))
    model = {"id": "m", "evaluate_every": evaluate_every, "features": features or {"numeric": ["age"]}}
    if drift is not None:
        model["drift"] = drift
    return parse_config({"kafka": {"bootstrap.servers": "x:1"}, "models": [model]}, str(tmp_path / "driftline.toml"))


def test_listed_features_get_the_documented_drift_defaults_under_the_budget(tmp_path):
    cfg = config(tmp_path, None, features={"numeric": ["age", "income"], "categorical": ["plan"]})
    stats = ModelStatistics(cfg.models[0], cfg.source)
    assert sorted(stats.feature_drift) == [("age", "ks"), ("age", "psi"), ("income", "ks"), ("income", "psi"),
                                           ("plan", "chi2")]
    assert list(stats.prediction_drift) == ["psi"]
    # 6 statistics judged every 100 predictions, one false alarm per 1,000,000 predictions
    level = judgement_level(1_000_000, 100, 6)
    assert level == pytest.approx(100 / 6e6)
    assert {d.level for d in [*stats.feature_drift.values(), *stats.prediction_drift.values()]} == {level}
    assert stats.feature_drift["age", "ks"].threshold == level  # a test: its p-value against the level


def test_a_reference_file_distance_is_calibrated_when_first_judged_not_at_load(tmp_path):
    cfg = config(tmp_path, {"numeric": ["psi", "ks"], "window": 500, "reference_file": "reference.json",
                            "false_alarm_every": 200_000})
    psi = ModelStatistics(cfg.models[0], cfg.source).feature_drift["age", "psi"]
    assert psi.threshold is None  # check-config and start-up build the detectors without calibrating
    result = psi.update_many(np.random.default_rng(1).normal(40, 8, 500))
    level = judgement_level(200_000, 100, 3)
    assert result.threshold == null_threshold(_psi_rows, psi.reference_counts, psi.min_samples, level)
    assert 0.05 < result.threshold < 0.5 and not result.fired
    # every partition's Monitor gets the same threshold
    again = ModelStatistics(cfg.models[0], cfg.source).feature_drift["age", "psi"]
    assert again.update_many(np.random.default_rng(2).normal(40, 8, 500)).threshold == result.threshold


def test_with_the_budget_off_thresholds_and_alpha_are_the_users(tmp_path):
    cfg = config(tmp_path, {"false_alarm_every": 0, "params": {"psi": {"threshold": 0.3}}, "alpha": 0.05})
    stats = ModelStatistics(cfg.models[0], cfg.source)
    assert stats.feature_drift["age", "psi"].threshold == 0.3
    assert stats.feature_drift["age", "psi"].level is None
    assert cfg.models[0].drift.test_alpha == 0.05


@pytest.mark.parametrize("drift, message", [
    ({"ert": 10_000}, "models[0].drift.ert: replaced by drift.false_alarm_every"),
    ({"false_alarm_every": -1}, "models[0].drift.false_alarm_every: must be >= 0"),
    ({"alpha": 0.05}, "models[0].drift.alpha: the false-alarm budget (drift.false_alarm_every) sets every test's"),
    ({"correction": "bh"}, "models[0].drift.correction: the false-alarm budget"),
    ({"params": {"psi": {"threshold": 0.3}}}, "models[0].drift.params.psi.threshold: the false-alarm budget "
                                              "(drift.false_alarm_every) calibrates every threshold"),
    ({"numeric": []}, "models[0].features.numeric: features are listed but drift.numeric is empty"),
    ({"false_alarm_every": 0, "params": {"ks": {"threshold": 0.05}}},
     "models[0].drift.params.ks.threshold: tests alarm at drift.alpha"),
    ({"false_alarm_every": 0, "alpha": 2}, "models[0].drift.alpha: must be in (0, 1)"),
])
def test_false_alarm_settings_that_cannot_work_fail_at_load(tmp_path, drift, message):
    with pytest.raises(ConfigError) as info:
        config(tmp_path, drift)
    assert message in str(info.value)
