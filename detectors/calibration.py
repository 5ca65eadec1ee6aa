"""False-alarm control: a model's false-alarm budget, and many features at once.

* :func:`judgement_level`: the false-alarm probability each drift statistic may have at each
  evaluation point so that, with no drift, the whole model raises a false alarm at most once
  per ``false_alarm_every`` predictions on average (Bonferroni over the statistics, a union
  bound over the evaluation points).
* :func:`null_threshold`: the level a binned distance (PSI, JS, Wasserstein) exceeds with a
  given small probability when nothing drifted, by simulating the reference against itself.
* :func:`reject` / :func:`adjusted_p_values`: Benjamini-Hochberg or Bonferroni over p-values,
  for a model whose budget is turned off and whose tests alarm at a hand-set ``alpha``.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Any, Callable

import numpy as np

from .base import as_finite_array

METHODS = ("bh", "bonferroni")
#: simulated (reference, window) pairs per calibration
CALIBRATION_RUNS = 10_000
#: the share of the simulated statistics above which the tail is fitted
TAIL = 0.02


def judgement_level(false_alarm_every: float, evaluate_every: int, statistics: int) -> float:
    """Per-statistic, per-evaluation false-alarm probability that keeps a model within its budget.

    A model judges its ``statistics`` drift statistics every ``evaluate_every`` predictions. If
    each alarms falsely with probability at most ``level`` at each judgement, the expected number
    of judgements with any false alarm in ``N`` predictions is at most
    ``N / evaluate_every * statistics * level`` (a union bound: it holds however the statistics
    and the overlapping windows of successive judgements depend on each other), and a trigger
    needs at least one. Setting that to ``N / false_alarm_every`` gives the level.

    >>> judgement_level(1_000_000, 50, 12)   # 12 statistics judged every 50 predictions
    4.166666666666667e-06
    """
    if false_alarm_every <= 0 or evaluate_every < 1 or statistics < 1:
        raise ValueError("need false_alarm_every > 0, evaluate_every >= 1 and statistics >= 1")
    return min(0.5, evaluate_every / (false_alarm_every * statistics))


def tail_quantile(values: Any, level: float, tail: float = TAIL) -> float:
    """The value exceeded with probability ``level`` by the distribution ``values`` is a sample of.

    Levels at or above ``tail`` are read off the sample. Smaller ones, which a sample of
    ``CALIBRATION_RUNS`` cannot show, are extrapolated: above its ``1 - tail`` quantile ``u``
    the excesses are fitted with an exponential of mean ``beta`` (peaks over a threshold, a
    generalized Pareto tail of shape 0; ``beta`` is their mean one standard error high), so the
    answer is ``u + beta * ln(tail / level)``.
    For a light tail that bends down (chi-squared-like statistics, Gaussian-like distances:
    their mean excess falls as ``u`` grows), the fitted tail is heavier than the true one and
    the threshold errs high, that is, towards fewer false alarms.

    >>> values = np.random.default_rng(0).exponential(size=100_000)
    >>> round(tail_quantile(values, 1e-6), 1), round(float(-np.log(1e-6)), 1)   # an exponential: exact
    (14.1, 13.8)
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise ValueError("no finite values to fit")
    if level >= tail:
        return float(np.quantile(values, 1 - level))
    u = float(np.quantile(values, 1 - tail))
    excess = values[values > u] - u
    # the mean excess one standard error high (an exponential's mean has a relative standard
    # error of 1 / sqrt(count)): a threshold from a finite sample should err high
    beta = float(excess.mean()) * (1 + 1 / np.sqrt(len(excess))) if len(excess) else 0.0
    return float(u + beta * np.log(tail / level))


def null_threshold(statistic_rows: Callable[[np.ndarray, np.ndarray], np.ndarray], reference_counts: Any,
                   n_current: int, level: float, runs: int = CALIBRATION_RUNS) -> float:
    """The threshold a binned drift statistic exceeds with probability ``level`` under no drift.

    Each run draws a reference of the reference's size and a window of ``n_current`` values
    from the reference's own bin proportions (multinomially: both sides of the comparison are
    samples, as in the deployed detector, whose reference is a sample too), and measures them
    with ``statistic_rows(reference_rows, current_rows)``. A bin the reference never saw (the
    "other / unseen" bucket of a categorical feature) gets half a count, so that values the
    reference missed still turn up now and then. The tail is fitted by :func:`tail_quantile`.
    The draws are seeded from the counts and ``n_current``: the same reference always gives the
    same threshold, live, in a backtest and after a restart; and detectors on equal counts (PSI
    and JS of one feature, quantile bins of continuous features) measure the same draws.

    >>> from detectors.drift import _psi_rows
    >>> threshold = null_threshold(_psi_rows, [100] * 10, 1000, 1e-4)
    >>> bool(0.05 < threshold < 0.1)
    True
    """
    counts = tuple(int(c) for c in np.asarray(reference_counts).tolist())
    if sum(counts) < 1 or n_current < 1:
        raise ValueError("need a non-empty reference and window to calibrate")
    reference, current = _null_samples(counts, int(n_current), int(runs))
    return tail_quantile(statistic_rows(reference, current), level)


@functools.lru_cache(maxsize=4)
def _null_samples(counts: tuple[int, ...], n_current: int, runs: int) -> tuple[np.ndarray, np.ndarray]:
    """``runs`` (reference, window) count rows drawn from the reference's proportions (see
    :func:`null_threshold`), read-only."""
    weights = np.array([c if c > 0 else 0.5 for c in counts], dtype=np.float64)
    digest = hashlib.sha256(repr((counts, n_current, runs)).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    reference = rng.multinomial(sum(counts), weights / weights.sum(), size=runs)
    current = rng.multinomial(n_current, weights / weights.sum(), size=runs)
    reference.flags.writeable = current.flags.writeable = False
    return reference, current


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
