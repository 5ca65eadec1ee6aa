"""The config checks that need the detectors: a model section's metrics, change detectors and
drift statistics, each built through :mod:`detectors.registry` (the one place that knows
detector kinds; their constructors are the one check of their parameters), and each rule
condition against the statistics the model computes.

:mod:`streams.core.config` runs these after its own checks; :class:`streams.core.statistics.ModelStatistics`
builds its detectors with the same functions, so a config that passes here builds at run time.
Nothing here feeds a detector or calibrates a threshold (a threshold is calibrated when first
judged). A problem raises ``ValueError`` with the line the config error shows after the model's key.
"""
from __future__ import annotations

import fnmatch
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from detectors.calibration import judgement_level
from detectors.estimation import ESTIMATED_METRICS
from detectors.kinds import CHANGE_KINDS, CHI2, DRIFT_KINDS
from detectors.registry import CLASSIFICATION_METRIC_KINDS, DRIFT_TEST_KINDS, REGRESSION_METRIC_KINDS, build

if TYPE_CHECKING:
    from retrain_trigger.rules import Condition
    from streams.core.config import Model



def computed_statistics(model: Model, source: str) -> dict[str, bool]:
    """Every statistic the model computes, by the name rules use (in the order the Monitor
    observes them), each with whether it can fire: a change detector, or a drift statistic with
    a threshold or a false-alarm level."""
    metrics = metric_kinds(model)
    for kind in metrics:
        build(kind, metric_params(model, model.window.size))
    changes = change_detectors(model)
    feature_drift, prediction_drift = drift_detectors(model, source)
    computed = dict.fromkeys(metrics, False)
    computed.update((f"detector.{kind}", True) for kind in changes)
    computed.update((f"feature.{feature}.{kind}", _can_fire(d)) for (feature, kind), d in feature_drift.items())
    computed.update((f"prediction.{kind}", _can_fire(d)) for kind, d in prediction_drift.items())
    if model.estimation is not None:
        computed.update((f"estimated.{metric}", False) for metric in ESTIMATED_METRICS)
    return computed


def _can_fire(detector: Any) -> bool:
    return detector.threshold is not None or detector.level is not None


def metric_kinds(model: Model) -> list[str]:
    """The model's performance metrics (default: accuracy, or mae for a regression model)."""
    regression = model.task == "regression"
    kinds = list(model.metrics) or (["mae"] if regression else ["accuracy"])
    allowed = REGRESSION_METRIC_KINDS if regression else CLASSIFICATION_METRIC_KINDS
    for i, kind in enumerate(kinds):
        if kind not in allowed:
            raise ValueError(f"metrics[{i}]: {kind!r} is not a {model.task} metric; expected one of "
                             f"{', '.join(allowed)}")
    return kinds


def metric_params(model: Model, window: int) -> dict[str, Any]:
    """A performance metric's parameters over a window of ``window`` labelled pairs."""
    params: dict[str, Any] = {"window": window}
    if model.task != "regression":
        params["positive"] = model.positive
        if model.classes:
            params["classes"] = list(model.classes)
    return params


def change_detectors(model: Model) -> dict[str, Any]:
    """The change detectors on the model's error stream, by kind."""
    changes = {}
    for i, spec in enumerate(model.detectors):
        params = {k: v for k, v in spec.items() if k != "kind"}
        kind = spec.get("kind")
        if kind not in CHANGE_KINDS:
            raise ValueError(f"detectors[{i}].kind: {kind!r} is not a change detector")
        try:
            changes[kind] = build(kind, params)
        except ValueError as exc:
            raise ValueError(f"detectors[{i}]: {exc}") from None
        if model.task == "regression" and changes[kind].unit_interval:
            # a regression model's errors are absolute errors, not bits: the first one above 1
            # would stop the engine at every restart
            raise ValueError(f"detectors[{i}].kind: {kind!r} takes 0/1 errors (classification); for "
                             "a regression model use adwin, page_hinkley or kswin")
    return changes


def drift_detectors(model: Model, source: str) -> tuple[dict[tuple[str, str], Any], dict[str, Any]]:
    """The drift detectors: by (feature, kind), and by kind for the prediction; none without a
    drift table. The reference is ``drift.reference_file`` (relative to the config file
    ``source``) where it has the feature, else the stream's first values."""
    drift = model.drift
    if drift is None:
        return {}, {}
    references = load_references(Path(source).parent / drift.reference_file) if drift.reference_file else {}
    common = {"window": drift.window, "reference_size": drift.reference_size}
    statistics = drift_statistic_count(model)
    if drift.budgeted and statistics:
        common["level"] = judgement_level(drift.false_alarm_every, model.evaluate_every, statistics)

    def make(kind: str, where: str, categorical: bool, reference) -> Any:
        if kind not in DRIFT_KINDS:
            raise ValueError(f"drift.{where}: {kind!r} is not a drift statistic; expected one of "
                             f"{', '.join(DRIFT_KINDS)}")
        params = {**common, **drift.params.get(kind, {}), "categorical": categorical}
        if reference is not None:
            params["reference"] = reference
        try:
            return build(kind, params)
        except ValueError as exc:
            raise ValueError(f"drift.{where}: {exc}") from None

    features = {}
    for feature in model.features.numeric:
        for kind in drift.numeric:
            features[feature, kind] = make(kind, "numeric", False, references.get(feature))
    for feature in model.features.categorical:
        for kind in drift.categorical:
            features[feature, kind] = make(kind, "categorical", True, references.get(feature))
    categorical_prediction = model.task == "multiclass"
    prediction = {kind: make(kind, "prediction", categorical_prediction, references.get("prediction"))
                  for kind in drift.prediction}
    return features, prediction


def drift_statistic_count(model: Model) -> int:
    """How many drift statistics the model computes (what its false-alarm budget is split over)."""
    drift = model.drift
    if drift is None:
        return 0
    return (len(model.features.numeric) * len(drift.numeric) + len(model.features.categorical) * len(drift.categorical)
            + len(drift.prediction))


def load_references(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"drift.reference_file: cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and v for v in data.values()):
        raise ValueError(f"drift.reference_file: {path} must be a JSON object of feature -> non-empty list")
    return data


def check_condition(condition: Condition, computed: dict[str, bool], where: str, fail: Callable[[str, str], None],
                    source: str) -> None:
    """A rule condition that can never fire is refused (``fail(key, problem)``); one that
    probably means something else warns."""
    matched = [name for name in computed if fnmatch.fnmatchcase(name, condition.statistic)]
    if not matched:
        fail(f"{where}.statistic", f"{condition.statistic!r} is not computed for this model; it computes "
             f"{', '.join(computed)} (add the metric, feature or detector first)")
    if condition.is_fired and not any(computed[name] for name in matched):
        fail(f"{where}.fired", f"{condition.statistic!r} never fires: only change detectors (detector.*) and drift "
             "statistics with a threshold (feature.*, prediction.*) do; compare a metric with op and threshold")
    if condition.at_least is not None and condition.at_least > len(matched):
        fail(f"{where}.at_least", f"{condition.at_least} is more than the {len(matched)} statistics "
             f"{condition.statistic!r} matches for this model, so it could never be reached")
    kind = condition.statistic.rsplit(".", 1)[-1]
    if not condition.is_fired and kind in DRIFT_TEST_KINDS and (
            condition.op in ("<", "<=") or (kind == CHI2 and condition.threshold < 1)):
        logging.getLogger("driftline.config").warning(
            "%s: %s.threshold: %r compares the %s, not its p-value; for the test's decision "
            "(calibrated to drift.false_alarm_every) write fired = true", source, where, condition.statistic,
            "KS distance" if kind == "ks" else "chi-squared statistic")
