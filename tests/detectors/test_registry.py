import json
import subprocess
import sys
from pathlib import Path

import pytest

from detectors import registry


def test_every_kind_builds_with_defaults_and_restores():
    for kind in registry.KINDS:
        detector = registry.build(kind, {})
        assert detector.kind == kind
        assert type(registry.restore(json.loads(json.dumps(detector.state())))) is type(detector)


def test_bad_kind_and_bad_parameter_are_named():
    with pytest.raises(ValueError, match="'acuracy'"):
        registry.build("acuracy", {})
    with pytest.raises(ValueError, match="accuracy: unknown parameter 'windw'"):
        registry.build("accuracy", {"windw": 10})
    with pytest.raises(ValueError, match="accuracy: window size must be >= 1"):
        registry.build("accuracy", {"window": 0})


def test_the_families_partition_the_kinds():
    families = (registry.METRIC_KINDS, registry.DRIFT_KINDS, registry.CHANGE_KINDS)
    assert sorted(k for family in families for k in family) == sorted(registry.KINDS)
    assert set(registry.CLASSIFICATION_METRIC_KINDS) | set(registry.REGRESSION_METRIC_KINDS) == set(registry.METRIC_KINDS)
    assert not set(registry.CLASSIFICATION_METRIC_KINDS) & set(registry.REGRESSION_METRIC_KINDS)
    assert set(registry.SCORE_METRIC_KINDS) <= set(registry.CLASSIFICATION_METRIC_KINDS)
    assert set(registry.BINARY_CHANGE_KINDS) <= set(registry.CHANGE_KINDS)
    assert set(registry.DRIFT_TEST_KINDS) <= set(registry.DRIFT_KINDS)
    assert registry.build("ks").result().threshold == 0.01 and "psi" not in registry.DRIFT_TEST_KINDS
    assert registry.build("ddm").unit_interval and not registry.build("adwin").unit_interval


def test_every_detector_class_is_registered():
    """A detector class added to a module but not to its family tuple would be unknown by name."""
    import inspect

    from detectors import change, drift, metrics

    for module in (change, drift, metrics):
        defined = {cls for _, cls in inspect.getmembers(module, inspect.isclass)
                   if cls.__module__ == module.__name__ and isinstance(cls.__dict__.get("kind"), str)}
        assert {cls.kind for cls in defined} <= set(registry.KINDS), module.__name__


def test_the_rules_know_the_registrys_names():
    from retrain_trigger import rules

    assert rules.PERFORMANCE_STATISTICS == registry.METRIC_KINDS
    assert rules.DRIFT_KINDS == registry.DRIFT_KINDS
    assert rules.DETECTOR_KINDS == registry.CHANGE_KINDS
    assert rules.ESTIMATED_STATISTICS == registry.ESTIMATED_METRICS


def test_naming_a_detector_loads_no_numerics():
    """The rules (and through them the config schema and every CLI command) name detectors
    through detectors.kinds, without importing numpy or scipy."""
    code = "import sys, retrain_trigger.rules; print(sorted(m for m in ('numpy', 'scipy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip() == "[]"


def test_every_kind_follows_its_protocol():
    from detectors.base import Detector, Metric
    from detectors.metrics import METRICS

    for kind in registry.KINDS:
        detector = registry.build(kind, {})
        assert isinstance(detector, Metric if type(detector) in METRICS else Detector)


def _feed(detector, rng, n):
    """A batch fitting the detector's inputs."""
    from detectors.metrics import METRICS

    if type(detector) in METRICS:
        if detector.kind in registry.REGRESSION_METRIC_KINDS:
            return detector.update_many(rng.normal(size=n), rng.normal(size=n))
        y_true = rng.integers(0, 2, n)
        return detector.update_many(y_true, rng.integers(0, 2, n), None if n % 2 else rng.random(n))
    if detector.kind in registry.BINARY_CHANGE_KINDS:
        return detector.update_many((rng.random(n) < 0.3).astype(float))
    return detector.update_many(rng.normal(size=n))


@pytest.mark.parametrize("kind", registry.KINDS)
@pytest.mark.parametrize("fed", [0, 40, 1500])  # fresh, warming up, running
def test_state_survives_the_engines_strict_json_checkpoint(kind, fed):
    """The engine checkpoints with msgspec, which writes inf and nan as null: states avoid them."""
    import msgspec
    import numpy as np

    rng = np.random.default_rng(len(kind) + fed)
    params = {"reference_size": 100, "window": 300} if kind in registry.DRIFT_KINDS else {}
    detector = registry.build(kind, params)
    if fed:
        _feed(detector, rng, fed)
    restored = registry.restore(msgspec.json.decode(msgspec.json.encode(detector.state())))
    for n in (7, 300, 8):
        seed = int(rng.integers(1 << 30))
        expected = _feed(detector, np.random.default_rng(seed), n)
        got = _feed(restored, np.random.default_rng(seed), n)
        assert repr(got) == repr(expected)  # repr: nan == nan


def test_event_time_window_state_survives_strict_json():
    import msgspec
    import numpy as np

    from detectors.event_windows import HoppingWindow

    windows = HoppingWindow(size=100, step=50, grace=10, kind="log_loss", params={"window": 1000})
    windows.update_many(np.arange(0.0, 120.0), np.ones(120), np.ones(120))  # no scores: nan columns
    restored = HoppingWindow.from_state(msgspec.json.decode(msgspec.json.encode(windows.state())))
    times, ones = np.arange(120.0, 400.0), np.ones(280)
    scores = np.full(280, 0.8)
    assert [repr(w.result) for w in restored.update_many(times, ones, ones, scores)] == \
        [repr(w.result) for w in windows.update_many(times, ones, ones, scores)]
