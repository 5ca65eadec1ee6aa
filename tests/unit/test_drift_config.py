"""Drift false-alarm settings from the config: thresholds calibrated to an ERT, test thresholds
under a multiple-testing correction."""
import json

import numpy as np
import pytest

from detectors.calibration import calibrate_threshold
from streams.config import ConfigError, parse_config
from streams.statistics import ModelStatistics


def config(tmp_path, drift: dict, evaluate_every: int = 100):
    rng = np.random.default_rng(4)
    (tmp_path / "reference.json").write_text(json.dumps({"age": rng.normal(40, 8, 2000).round(2).tolist()}))
    return parse_config({"kafka": {"bootstrap.servers": "x:1"}, "models": [{
        "id": "m", "evaluate_every": evaluate_every, "features": {"numeric": ["age"]},
        "drift": {"numeric": ["psi", "ks"], "window": 500, "reference_file": "reference.json", **drift}}]},
        str(tmp_path / "driftline.toml"))


def test_ert_calibrates_the_distance_thresholds_from_the_reference_file(tmp_path):
    cfg = config(tmp_path, {"ert": 3000})
    stats = ModelStatistics(cfg.models[0], cfg.source)
    psi, ks = stats.feature_drift["age", "psi"], stats.feature_drift["age", "ks"]
    reference = json.loads((tmp_path / "reference.json").read_text())["age"]
    expected = calibrate_threshold("psi", {"window": 500, "reference_size": 1000, "categorical": False},
                                   np.asarray(reference), 3000, batch_size=100)
    assert psi.threshold == expected.threshold and psi.threshold != 0.2  # not PSI's default
    assert ks.threshold == 0.01  # a test: alpha and the correction control it, not the ERT
    # Every partition's Monitor builds the same thresholds (calibrated once per process).
    assert ModelStatistics(cfg.models[0], cfg.source).feature_drift["age", "psi"].threshold == psi.threshold


def test_an_explicit_threshold_is_kept(tmp_path):
    cfg = config(tmp_path, {"ert": 3000, "params": {"psi": {"threshold": 0.3}}})
    assert ModelStatistics(cfg.models[0], cfg.source).feature_drift["age", "psi"].threshold == 0.3


@pytest.mark.parametrize("drift, message", [
    ({"ert": 0}, "models[0].drift.ert: must be >= 1 and needs drift.reference_file"),
    ({"params": {"ks": {"threshold": 0.05}}}, "models[0].drift.params.ks.threshold: tests alarm at drift.alpha"),
])
def test_false_alarm_settings_that_cannot_work_fail_at_load(tmp_path, drift, message):
    with pytest.raises(ConfigError) as info:
        config(tmp_path, drift)
    assert message in str(info.value)
