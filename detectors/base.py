"""The one interface every detector, window and metric in driftline follows.

A detector consumes a numpy batch with ``update_many`` (vectorized; ``update`` is the
one-value case), reports a :class:`Result`, and round-trips through a plain JSON-able
dict with ``state()`` / ``from_state()`` so the engine can checkpoint it to Kafka.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class Result:
    """What a detector or metric says now.

    ``statistic`` is the value dashboards plot (accuracy, PSI, a KS distance, …);
    ``threshold`` the level it is compared to (None when it has none); ``p_value``
    where the test defines one; ``n`` the samples behind the statistic; ``fired``
    whether the detector signals drift/change at this point.
    """

    statistic: float
    threshold: float | None = None
    p_value: float | None = None
    n: int = 0
    fired: bool = False


@runtime_checkable
class Detector(Protocol):
    kind: ClassVar[str]

    def update_many(self, values: np.ndarray) -> Result: ...

    def update(self, value: float) -> Result: ...

    def result(self) -> Result: ...

    def state(self) -> dict[str, Any]: ...

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Detector": ...


@runtime_checkable
class Metric(Protocol):
    """A performance metric: the same shape as :class:`Detector`, fed aligned label arrays."""

    kind: ClassVar[str]

    def update_many(self, y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray | None = None) -> Result: ...

    def update(self, y_true: Any, y_pred: Any, score: Any = None) -> Result: ...

    def result(self) -> Result: ...

    def state(self) -> dict[str, Any]: ...

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Metric": ...


class InvalidInput(ValueError):
    """Raised for NaN, inf or otherwise unusable values handed to a detector."""


def as_finite_array(values: Any, name: str = "values") -> np.ndarray:
    """Return ``values`` as a float64 array, rejecting NaN and inf with a clear error."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise InvalidInput(f"{name}[{bad}] is {arr[bad]!r}; detectors accept finite numbers only")
    return arr


@lru_cache(maxsize=None)
def constructor_arguments(cls: type) -> tuple[str, ...]:
    """Names of ``cls.__init__``'s parameters: the keys a detector's ``params`` and the registry use."""
    return tuple(name for name in inspect.signature(cls.__init__).parameters if name != "self")


def plain_label(label: Any) -> Any:
    """A JSON-able Python scalar for a label or category (numpy scalars unwrapped); integral
    floats become ints, so 1.0 and 1 are one label."""
    if isinstance(label, np.generic):
        label = label.item()
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    return label


_NON_FINITE = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}


def json_floats(tree: Any) -> Any:
    """``tree`` with inf / -inf / nan floats spelled as strings, for states that must be strict JSON
    (msgspec and most JSON encoders turn them into null). :func:`from_json_floats` undoes it."""
    if isinstance(tree, float) and not np.isfinite(tree):
        return "nan" if np.isnan(tree) else ("inf" if tree > 0 else "-inf")
    if isinstance(tree, list):
        return [json_floats(v) for v in tree]
    if isinstance(tree, dict):
        return {k: json_floats(v) for k, v in tree.items()}
    return tree


def from_json_floats(tree: Any) -> Any:
    """Inverse of :func:`json_floats` (for trees of numbers, where no other string occurs)."""
    if isinstance(tree, str):
        return float(_NON_FINITE[tree])
    if isinstance(tree, list):
        return [from_json_floats(v) for v in tree]
    if isinstance(tree, dict):
        return {k: from_json_floats(v) for k, v in tree.items()}
    return tree
