"""Build detectors and metrics by name, as the Monitor does from the TOML config.

>>> from detectors.registry import build, restore
>>> acc = build("accuracy", {"window": 100})
>>> acc.update_many([1, 0], [1, 1]).statistic
0.5
>>> restore(acc.state()).result().statistic
0.5
>>> build("acuracy", {})
Traceback (most recent call last):
...
ValueError: unknown detector kind 'acuracy'; expected one of ...
"""
from __future__ import annotations

from typing import Any

from . import change, drift, metrics
from .base import constructor_arguments

_CLASSES: dict[str, type] = {cls.kind: cls for cls in (*metrics.METRICS, *drift.DRIFT_DETECTORS, *change.CHANGE_DETECTORS)}

def kinds() -> tuple[str, ...]:
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
