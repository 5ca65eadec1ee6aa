import json

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
        if detector.kind in ("mae", "rmse", "bias"):
            return detector.update_many(rng.normal(size=n), rng.normal(size=n))
        y_true = rng.integers(0, 2, n)
        return detector.update_many(y_true, rng.integers(0, 2, n), None if n % 2 else rng.random(n))
    if detector.kind in ("ddm", "eddm", "hddm_a", "hddm_w"):
        return detector.update_many((rng.random(n) < 0.3).astype(float))
    return detector.update_many(rng.normal(size=n))


@pytest.mark.parametrize("kind", registry.KINDS)
@pytest.mark.parametrize("fed", [0, 40, 1500])  # fresh, warming up, running
def test_state_survives_the_engines_strict_json_checkpoint(kind, fed):
    """The engine checkpoints with msgspec, which writes inf and nan as null: states avoid them."""
    import msgspec
    import numpy as np

    rng = np.random.default_rng(len(kind) + fed)
    params = {"reference_size": 100, "window": 300} if kind in ("psi", "ks", "wasserstein", "js", "chi2") else {}
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
