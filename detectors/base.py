"""The one interface every detector, window and metric in driftline follows.

A detector consumes a numpy batch with ``update_many`` (vectorized; ``update`` is the
one-value case), reports a :class:`Result`, and round-trips through a plain JSON-able
dict with ``state()`` / ``from_state()`` so the engine can checkpoint it to Kafka.
"""
from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

import numpy as np


class DeferredPValue:
    """A p-value that may be handed over as a function of no arguments, computed when first
    read (an exact test's p-value costs far more than its statistic, and most are never read).
    Shared by detector results and the rules' observations made from them."""

    __slots__ = ("_p_value",)

    @property
    def p_value(self) -> float | None:
        if callable(self._p_value):
            self._p_value = float(self._p_value())
        return self._p_value

    def deferred_p_value(self) -> float | None | Callable[[], float]:
        """The p-value, or the function that computes it if nobody has read it yet (to pass on)."""
        return self._p_value


class Result(DeferredPValue):
    """What a detector or metric says now.

    ``statistic`` is the value dashboards plot (accuracy, PSI, a KS distance, …);
    ``threshold`` the level it is compared to (None when it has none); ``p_value``
    where the test defines one; ``n`` the samples behind the statistic; ``fired``
    whether the detector signals drift/change at this point.

    A p-value may be handed over *deferred*, as a function of no arguments (an exact KS
    p-value costs far more than the distance, and a monitor reads few of the many it could): it
    is computed when ``p_value`` is first read. :meth:`p_value_below` decides ``p_value < level`` without
    computing it when the function offers a cheaper way (a ``below(level)`` method).

    >>> Result(0.2, p_value=lambda: 0.03).p_value
    0.03
    """

    __slots__ = ("statistic", "threshold", "n", "fired")

    def __init__(self, statistic: float, threshold: float | None = None,
                 p_value: float | None | Callable[[], float] = None, n: int = 0, fired: bool = False):
        self.statistic = statistic
        self.threshold = threshold
        self._p_value = p_value
        self.n = n
        self.fired = fired

    def p_value_below(self, level: float) -> bool:
        """``p_value < level`` (False without a p-value), computing a deferred one only if needed."""
        below = getattr(self._p_value, "below", None)
        if below is not None:
            return bool(below(level))
        p_value = self.p_value
        return p_value is not None and p_value < level

    def _fields(self) -> tuple:
        return self.statistic, self.threshold, self.p_value, self.n, self.fired

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Result):
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        return (f"Result(statistic={self.statistic!r}, threshold={self.threshold!r}, p_value={self.p_value!r}, "
                f"n={self.n!r}, fired={self.fired!r})")


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
