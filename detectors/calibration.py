"""False-alarm control: many features at once, and thresholds for a target run length.

* :func:`reject` / :func:`adjusted_p_values`: correct the p-values of many per-feature tests
  (KS, chi-squared) with Benjamini-Hochberg (false discovery rate) or Bonferroni (family-wise
  error rate).
* :func:`calibrate_threshold`: the threshold of a drift statistic such that, with no drift, the
  expected number of events before a false alarm (expected run length, ERT) is at least the
  target, estimated by simulating no-drift streams from the reference, as Alibi Detect's online
  detectors do. (Alibi sets a threshold per time step so that each step's false-alarm hazard is
  1/ERT; here one constant threshold is chosen whose mean simulated run length reaches the ERT,
  which fits detectors evaluated once per batch.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import as_finite_array

METHODS = ("bh", "bonferroni")


def adjusted_p_values(p_values: Any, method: str = "bh") -> np.ndarray:
    """Multiplicity-adjusted p-values (reject a hypothesis when its adjusted p-value <= alpha).

    ``bh``: Benjamini-Hochberg, ``p_(i) * m / i`` made monotone from the largest down;
    ``bonferroni``: ``p * m``. Both capped at 1.

    >>> adjusted_p_values([0.01, 0.04, 0.03, 0.2]).round(4).tolist()
    [0.04, 0.0533, 0.0533, 0.2]
    >>> adjusted_p_values([0.01, 0.04, 0.03, 0.2], "bonferroni").tolist()
    [0.04, 0.16, 0.12, 0.8]
    """
    p = as_finite_array(p_values, "p_values")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    m = len(p)
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    if method != "bh":
        raise ValueError(f"unknown correction method {method!r}; expected one of {', '.join(METHODS)}")
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    monotone = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(monotone, 1.0)
    return adjusted


def reject(p_values: Any, alpha: float = 0.05, method: str = "bh") -> np.ndarray:
    """Which hypotheses to reject at level ``alpha`` after correction (a boolean array).

    >>> reject([0.01, 0.04, 0.03, 0.2], alpha=0.05).tolist()   # only 0.01 <= 1/4 * 0.05
    [True, False, False, False]
    >>> reject([0.01, 0.02, 0.03, 0.2], alpha=0.05).tolist()   # 0.03 <= 3/4 * 0.05: first three
    [True, True, True, False]
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return adjusted_p_values(p_values, method) <= alpha


@dataclass(frozen=True)
class Calibration:
    """A calibrated threshold and what the simulation says about it.

    ``threshold`` is the level for the statistic (distances) or the ``alpha`` for the p-value
    (tests); ``ert`` the estimated expected run length in events with no drift; ``censored`` the
    share of simulated streams that ran to the horizon without a false alarm (their run length
    is counted as the horizon, which makes the estimate conservative).
    """

    threshold: float
    ert: float
    censored: float


def calibrate_threshold(kind: str, params: dict[str, Any], reference: Any, ert: int,
                        batch_size: int = 100, n_runs: int = 40, horizon: int | None = None,
                        seed: int = 0) -> Calibration:
    """Threshold giving an expected run length of at least ``ert`` events under no drift.

    Each of ``n_runs`` simulations shuffles the reference, builds the detector
    (``registry.build(kind, params)``) on one half and feeds it, ``batch_size`` events at a time
    as the Monitor does, values drawn with replacement from the other half: a stream with no
    drift, whose differences from the detector's reference are sampling noise only. The alarm
    level after each batch is the statistic (or ``-log10 p`` for tests); a run's length for a
    candidate threshold is the number of events until its level first crosses it. The returned
    threshold is the smallest whose mean run length reaches ``ert``. Using half the reference
    makes the detector noisier than the deployed one, so the deployed ERT is, if anything, longer.
    ``horizon`` (events per run) defaults to ``3 * ert``.

    >>> import numpy as np
    >>> reference = np.random.default_rng(0).normal(size=4000)
    >>> calibration = calibrate_threshold("psi", {"window": 500, "min_samples": 500}, reference, ert=5000)
    >>> 0.01 < calibration.threshold < 0.2, calibration.ert >= 5000
    (True, True)
    """
    from .registry import build  # the registry imports the detector modules

    reference = np.asarray(reference)
    if len(reference) < 4:
        raise ValueError("need a reference of at least 4 values to calibrate")
    steps = int(np.ceil((horizon or 3 * ert) / batch_size))
    rng = np.random.default_rng(seed)
    levels = np.full((n_runs, steps), -np.inf)
    is_test = False
    for run in range(n_runs):
        shuffled = rng.permutation(reference)
        half = len(shuffled) // 2
        detector = build(kind, {**params, "reference": shuffled[:half], "threshold": None})
        is_test = getattr(detector, "is_test", False)
        stream = rng.choice(shuffled[half:], size=steps * batch_size)
        for step in range(steps):
            result = detector.update_many(stream[step * batch_size:(step + 1) * batch_size])
            if result.n >= getattr(detector, "min_samples", 0):
                levels[run, step] = _alarm_level(result, is_test)
    threshold, expected = _smallest_level_reaching(levels, ert / batch_size)
    censored = float(np.mean(levels.max(axis=1) <= threshold))
    return Calibration(threshold=float(10 ** -threshold) if is_test else threshold,
                       ert=expected * batch_size, censored=censored)


def _alarm_level(result, is_test: bool) -> float:
    if is_test:
        return float(-np.log10(max(result.p_value, 1e-300)))
    return result.statistic


def _smallest_level_reaching(levels: np.ndarray, target_steps: float) -> tuple[float, float]:
    """Smallest h among the observed levels with mean(steps until level > h) >= target."""
    running_max = np.maximum.accumulate(levels, axis=1)
    steps = levels.shape[1]

    def mean_run_length(h: float) -> float:
        quiet = np.array([np.searchsorted(row, h, side="right") for row in running_max])
        return float(np.mean(np.minimum(quiet + 1, steps)))

    candidates = np.unique(levels[np.isfinite(levels)])
    low, high = 0, len(candidates) - 1
    if len(candidates) == 0 or mean_run_length(candidates[-1]) < target_steps:
        raise ValueError("the simulated horizon is too short for this ERT; raise horizon or lower ert")
    while low < high:  # mean run length grows with h: binary search
        middle = (low + high) // 2
        if mean_run_length(candidates[middle]) >= target_steps:
            high = middle
        else:
            low = middle + 1
    return float(candidates[low]), mean_run_length(candidates[low])
