"""Detectors and metrics by name: build one from its kind and parameters, restore one from its state.

The names are spelled in :mod:`detectors.kinds` (which imports nothing, for the rules and the
config schema); each class takes its ``kind`` from there. This module maps them to the classes,
builds one from a kind and parameters as the Monitor does from the TOML config, restores one
from a checkpointed ``state()``, and derives the finer families from what the classes say of
themselves (which metrics are for regression, which drift statistics are tests). The config
checks and the Monitor ask these families instead of keeping lists of their own.

>>> from detectors.registry import build, restore
>>> acc = build("accuracy", {"window": 100})
>>> acc.update_many([1, 0], [1, 1]).statistic
0.5
>>> restore(acc.state()).result().statistic
0.5
>>> REGRESSION_METRIC_KINDS
('mae', 'rmse', 'bias')
>>> build("acuracy", {})
Traceback (most recent call last):
...
ValueError: unknown detector kind 'acuracy'; expected one of ...
"""
from __future__ import annotations

from typing import Any

from . import change, drift, metrics
from .base import constructor_arguments
from .kinds import CHANGE_KINDS, DRIFT_KINDS, ESTIMATED_METRICS, METRIC_KINDS

__all__ = ["KINDS", "METRIC_KINDS", "CLASSIFICATION_METRIC_KINDS", "REGRESSION_METRIC_KINDS", "SCORE_METRIC_KINDS",
           "DRIFT_KINDS", "DRIFT_TEST_KINDS", "CHANGE_KINDS", "BINARY_CHANGE_KINDS", "ESTIMATED_METRICS",
           "kinds", "build", "restore"]

_CLASSES: dict[str, type] = {cls.kind: cls for cls in (*metrics.METRICS, *drift.DRIFT_DETECTORS, *change.CHANGE_DETECTORS)}

#: the metrics of a classification model (binary or multiclass)
CLASSIFICATION_METRIC_KINDS: tuple[str, ...] = tuple(cls.kind for cls in metrics.METRICS if cls.task == "classification")
#: the metrics of a regression model
REGRESSION_METRIC_KINDS: tuple[str, ...] = tuple(cls.kind for cls in metrics.METRICS if cls.task == "regression")
#: the metrics computed from the scores (pairs pushed without scores are left out of them)
SCORE_METRIC_KINDS: tuple[str, ...] = tuple(cls.kind for cls in metrics.METRICS if cls.uses_scores)
#: the drift statistics that are tests: their threshold bounds the p-value, not the statistic
DRIFT_TEST_KINDS: tuple[str, ...] = tuple(cls.kind for cls in drift.DRIFT_DETECTORS if cls.is_test)
#: the change detectors that take 0/1 errors only (classification models)
BINARY_CHANGE_KINDS: tuple[str, ...] = tuple(cls.kind for cls in change.CHANGE_DETECTORS if cls.unit_interval)


def kinds() -> tuple[str, ...]:
    """Every kind :func:`build` takes: metrics, drift statistics, change detectors."""
    return tuple(_CLASSES)


def build(kind: str, params: dict[str, Any] | None = None):
    """A new detector of ``kind`` with ``params``; ``ValueError`` names a bad kind or parameter."""
    cls = _CLASSES.get(kind)
    if cls is None:
        raise ValueError(f"unknown detector kind {kind!r}; expected one of {', '.join(sorted(_CLASSES))}")
    params = dict(params or {})
    accepted = constructor_arguments(cls)
    for name in params:
        if name not in accepted:
            raise ValueError(f"{kind}: unknown parameter {name!r}; accepted: {', '.join(accepted)}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{kind}: {exc}") from None


def restore(state: dict[str, Any]):
    """The detector a ``state()`` dict was taken from (its ``kind`` picks the class)."""
    kind = state.get("kind")
    if kind not in _CLASSES:
        raise ValueError(f"state of unknown detector kind {kind!r}")
    return _CLASSES[kind].from_state(state)


KINDS = kinds()
