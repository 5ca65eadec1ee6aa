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
