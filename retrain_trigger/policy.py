"""Rule evaluation: from windowed statistics to retrain-trigger events.

The Monitor owns one :class:`TriggerPolicy` per model and calls it once per evaluation
point (a closed window or a batch)::

    policy = TriggerPolicy(model_id, rules)            # rules from rules.load_rules
    events = policy.evaluate(
        observations,                                  # Mapping[str, Observation]
        model_version="2024-06-01",                    # None when events carry no version
        window=TriggerWindow(start=..., end=..., count=..., offsets=...),
        at_ms=window_end_epoch_ms,                     # EVENT time, never the wall clock
        evidence_extra={"segment": "eu"},              # merged into each event's evidence
    )
    policy.suppressed                                  # {rule: {"cooldown": n, "min_samples": n}}
    policy.take_held()                                 # {(rule, reason): n} held back since the last call
    checkpoint = policy.state()                        # JSON-able
    policy = TriggerPolicy.from_state(model_id, rules, checkpoint)

Observation keys are statistic names: performance metrics (``accuracy``, ``f1_macro``,
``precision_macro``, ``recall_macro``, ``log_loss``, ``brier``, ``ece``, ``mae``, ``rmse``,
``bias``), per-feature drift ``feature.<feature>.<psi|ks|wasserstein|js|chi2>``, prediction
drift ``prediction.<kind>``, change detectors ``detector.<kind>`` and performance estimated
from the scores ``estimated.<accuracy|precision|recall|f1>``. The evidence's ``source`` says
which family the headline statistic is from: ``realized``, ``estimated``, ``drift`` or ``detector``.

Semantics per rule (see retrain_trigger/README.md for a timeline):

* Each condition is judged BREACH, OK or UNKNOWN. UNKNOWN means no usable observation: the
  statistic is missing or has fewer than ``min_samples`` samples. ``combine`` uses
  three-valued logic ("any": one BREACH breaches; "all": one OK clears).
* An UNKNOWN evaluation is skipped: it neither extends nor breaks a breach streak. A breach
  hidden only by ``min_samples`` is counted in ``suppressed[rule]["min_samples"]``.
* A breach must persist ``consecutive`` evaluations in a row and ``breach_for_seconds`` of
  event time (first breaching ``at_ms`` to now) before it counts.
* A rule fires once per breach episode and then disarms. It re-arms only after the
  statistic recovers past ``rearm`` (hysteresis; without ``rearm``, once it no longer
  breaches the threshold).
* For ``cooldown_seconds`` after a trigger no trigger fires; a breach that persists while
  cooling down is counted in ``suppressed[rule]["cooldown"]`` and fires when cooldown ends.
* A glob condition (``feature.*``) is about each feature it matches: within an episode or a
  cooldown, a feature whose statistics had not triggered breaching (another feature drifting)
  fires a new trigger, with ``evidence.new_subjects`` naming it (``["feature.plan"]``); the
  features that already triggered do not fire again until the rule re-arms and the cooldown
  has passed. Other globs (``detector.*``) are about each statistic.
* A ``detector.*`` observation's ``n`` is the labelled pairs the model has seen, so
  ``min_samples`` on a change detector asks whether the model has seen enough pairs.
* When the model version changes (None never counts as a change) and
  ``reset_on_version_change`` is set, the rule's episode, streak, cooldown and baseline
  restart; its trigger sequence does not, so trigger ids stay unique.
* ``trigger_id = make_trigger_id(model_id, rule, n)`` where n counts the rule's triggers
  from 1: the same inputs always give the same ids.
* ``baseline`` in the evidence is the rule's primary statistic the last time the rule was
  armed and healthy (or the first value seen).
"""
from __future__ import annotations

import datetime as dt
import enum
import fnmatch
import functools
import math
from collections.abc import Mapping
from typing import Any, Callable

import msgspec

from detectors.base import DeferredPValue
from retrain_trigger.events import TriggerEvent, TriggerWindow, make_trigger_id
from retrain_trigger.rules import Condition, Rule

STATE_VERSION = 1
TOP_FEATURES = 5


class Observation(DeferredPValue):
    """One statistic at an evaluation point, as the Monitor reports it.

    ``p_value`` may be a function of no arguments, called when the p-value is first read: rules
    judge ``value`` and ``fired``; only trigger evidence and the exporter read p-values, and an
    exact one can cost a fraction of a millisecond.
    """

    __slots__ = ("value", "n", "fired", "threshold", "detector")

    def __init__(self, value: float, n: int, fired: bool = False,
                 p_value: float | None | Callable[[], float] = None, threshold: float | None = None,
                 detector: str | None = None):
        self.value, self.n, self.fired = value, n, fired
        self._p_value, self.threshold, self.detector = p_value, threshold, detector

    def _fields(self) -> tuple:
        return self.value, self.n, self.fired, self.p_value, self.threshold, self.detector

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Observation):
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        return (f"Observation(value={self.value!r}, n={self.n!r}, fired={self.fired!r}, p_value={self.p_value!r}, "
                f"threshold={self.threshold!r}, detector={self.detector!r})")


class Verdict(enum.Enum):
    BREACH = "breach"
    OK = "ok"
    UNKNOWN = "unknown"


class _RuleState(msgspec.Struct):
    """Everything that decides a rule's future; round-trips through ``state()``."""

    armed: bool = True
    streak: int = 0
    breach_started_ms: int | None = None
    cooldown_until_ms: int | None = None
    sequence: int = 0
    baseline: float | None = None
    suppressed_cooldown: int = 0
    suppressed_min_samples: int = 0
    #: what the statistics a glob condition matched were about (``feature.<name>``, …) in the
    #: triggers since the last one that opened a cooldown: another subject breaching is news
    triggered: list[str] = []


_OPERATORS = {
    "<": lambda value, level: value < level,
    "<=": lambda value, level: value <= level,
    ">": lambda value, level: value > level,
    ">=": lambda value, level: value >= level,
}


class TriggerPolicy:
    def __init__(self, model_id: str, rules: list[Rule]):
        self.model_id = model_id
        self.rules = list(rules)
        self.model_version: str | None = None
        self._states: dict[str, _RuleState] = {rule.name: _RuleState() for rule in self.rules}
        #: the rules with a rearm level: of the others, one that judges OK re-arms (see _step)
        self._rearmed = {rule.name for rule in self.rules if any(c.rearm is not None for c in rule.conditions)}
        #: breaches held back since :meth:`take_held`, by (rule, reason)
        self._held: dict[tuple[str, str], int] = {}

    # -- checkpoints -------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "model_version": self.model_version,
            "rules": {name: msgspec.to_builtins(state) for name, state in self._states.items()},
        }

    @classmethod
    def from_state(cls, model_id: str, rules: list[Rule], state: Mapping[str, Any]) -> "TriggerPolicy":
        """Restore a policy; rules added since the checkpoint start fresh, removed ones are dropped."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"trigger policy state version {state.get('version')!r} is not {STATE_VERSION}")
        policy = cls(model_id, rules)
        policy.model_version = state.get("model_version")
        saved = state.get("rules", {})
        for name in policy._states:
            if name in saved:
                policy._states[name] = msgspec.convert(saved[name], _RuleState)
        return policy

    @property
    def suppressed(self) -> dict[str, dict[str, int]]:
        """Breaches that did not fire, per rule and reason (for metrics counters)."""
        return {
            name: {"cooldown": state.suppressed_cooldown, "min_samples": state.suppressed_min_samples}
            for name, state in self._states.items()
        }

    def take_held(self) -> dict[tuple[str, str], int]:
        """The breaches held back since the last call, by (rule, reason): what :attr:`suppressed`
        grew by, without comparing it before and after every evaluation point."""
        held, self._held = self._held, {}
        return held

    def _hold(self, rule: Rule, reason: str) -> None:
        key = (rule.name, reason)
        self._held[key] = self._held.get(key, 0) + 1

    # -- evaluation --------------------------------------------------------------------

    def evaluate(
        self,
        observations: Mapping[str, Observation],
        *,
        model_version: str | None,
        window: TriggerWindow | Callable[[], TriggerWindow],
        at_ms: int,
        evidence_extra: dict[str, Any] | None = None,
    ) -> list[TriggerEvent]:
        """The triggers of one evaluation point. ``window`` may be a function of no arguments
        that makes it: it is called only if a rule fires (most points fire none)."""
        version_changed = (
            model_version is not None
            and self.model_version is not None
            and model_version != self.model_version
        )
        if model_version is not None:
            self.model_version = model_version
        events = []
        for rule in self.rules:
            state = self._states[rule.name]
            if version_changed and rule.reset_on_version_change:
                self._states[rule.name] = state = _RuleState(
                    sequence=state.sequence,
                    suppressed_cooldown=state.suppressed_cooldown,
                    suppressed_min_samples=state.suppressed_min_samples,
                )
            fired, new = self._step(rule, state, observations, at_ms)
            if fired:
                if not isinstance(window, TriggerWindow):
                    window = window()
                extra = {**(evidence_extra or {}), "new_subjects": new} if new else evidence_extra
                events.append(self._event(rule, state, observations, window, at_ms, extra))
        return events

    def _step(self, rule: Rule, state: _RuleState, observations: Mapping[str, Observation],
              at_ms: int) -> tuple[bool, list[str]]:
        """Advance one rule's state machine: whether it fires now, and what the glob-matched
        statistics that made it fire within another trigger's episode or cooldown are about."""
        verdict = _judge(rule, observations, rule.min_samples, use_rearm=False)
        primary = _primary_value(rule, observations, rule.min_samples)
        if state.baseline is None and primary is not None:
            state.baseline = primary
        if verdict is Verdict.UNKNOWN:
            if _judge(rule, observations, 0, use_rearm=False) is Verdict.BREACH:
                state.suppressed_min_samples += 1
                self._hold(rule, "min_samples")
            return False, []
        if verdict is Verdict.OK:
            state.streak, state.breach_started_ms = 0, None
            if not state.armed:  # judged again at the rearm levels, when the rule has any
                state.armed = (rule.name not in self._rearmed
                               or _judge(rule, observations, rule.min_samples, use_rearm=True) is Verdict.OK)
            if state.armed and primary is not None:
                state.baseline = primary
            return False, []
        state.streak += 1
        if state.breach_started_ms is None:
            state.breach_started_ms = at_ms
        persisted = (
            state.streak >= rule.consecutive
            and at_ms - state.breach_started_ms >= rule.breach_for_seconds * 1000
        )
        if not persisted:
            return False, []
        cooling = state.cooldown_until_ms is not None and at_ms < state.cooldown_until_ms
        new: list[str] = []
        if state.armed and not cooling:
            state.triggered = _glob_breaches(rule, observations)
        else:
            # Within an episode or a cooldown only a subject that has not triggered yet is news:
            # a second feature drifting is a second trigger; the same feature's other statistic
            # is not.
            new = [name for name in _glob_breaches(rule, observations) if name not in state.triggered]
            if not new:
                if state.armed:
                    state.suppressed_cooldown += 1
                    self._hold(rule, "cooldown")
                return False, []
            state.triggered = sorted({*state.triggered, *new})
        state.armed = False
        state.sequence += 1
        state.cooldown_until_ms = at_ms + int(rule.cooldown_seconds * 1000) if rule.cooldown_seconds else None
        return True, new

    def _event(
        self,
        rule: Rule,
        state: _RuleState,
        observations: Mapping[str, Observation],
        window: TriggerWindow,
        at_ms: int,
        evidence_extra: dict[str, Any] | None,
    ) -> TriggerEvent:
        condition = _first_breaching(rule, observations)
        metric, value, threshold, observation = _headline(condition, observations, rule.min_samples)
        evidence: dict[str, Any] = {
            "statistic": metric,
            "source": _source_of(metric),
            "op": ">=" if condition.is_glob else (condition.op or "fired"),
            "baseline": _json_float(state.baseline),
            "n": int(observation.n) if observation else None,
            "detector": (observation.detector if observation else None) or _detector_of(metric),
            "p_value": _json_float(observation.p_value) if observation else None,
            "distance": _json_float(observation.value) if observation else None,
            "episode": state.sequence,
            "breach_started_at": iso_from_ms(state.breach_started_ms),
            "combine": rule.combine,
            "conditions": [_condition_evidence(c, observations, rule.min_samples) for c in rule.conditions],
            "top_features": _top_features(observations),
        }
        if evidence_extra:
            evidence.update(evidence_extra)
        return TriggerEvent(
            trigger_id=make_trigger_id(self.model_id, rule.name, state.sequence),
            model_id=self.model_id,
            model_version=self.model_version,
            rule=rule.name,
            metric=metric,
            value=value,
            threshold=threshold,
            window=window,
            triggered_at=iso_from_ms(at_ms),
            evidence=evidence,
            severity=rule.severity,
        )


# -- judging conditions -------------------------------------------------------------------


def _judge(rule: Rule, observations: Mapping[str, Observation], min_samples: int, *, use_rearm: bool) -> Verdict:
    """Three-valued verdict of the whole rule; with ``use_rearm``, levels are the rearm levels."""
    if len(rule.conditions) == 1:  # combined with nothing, either way
        return _judge_condition(rule.conditions[0], observations, min_samples, use_rearm)
    verdicts = [_judge_condition(c, observations, min_samples, use_rearm) for c in rule.conditions]
    decisive, opposite = (Verdict.BREACH, Verdict.OK) if rule.combine == "any" else (Verdict.OK, Verdict.BREACH)
    if decisive in verdicts:
        return decisive
    if all(v is opposite for v in verdicts):
        return opposite
    return Verdict.UNKNOWN


def _judge_condition(
    condition: Condition, observations: Mapping[str, Observation], min_samples: int, use_rearm: bool
) -> Verdict:
    if not condition.is_glob:
        return _judge_one(condition, observations.get(condition.statistic), min_samples, use_rearm)
    names = _matching_names(condition.statistic, _names(observations))
    if not names:
        return Verdict.UNKNOWN
    counted = _fired_counts(observations, names, min_samples) if condition.is_fired else None
    if counted is not None:
        breaching, unknown = counted
    elif condition.is_fired:  # _judge_one of each, without a call per statistic (a drift rule's dozens)
        matched = _values_of(observations, names)
        judged = [observation for observation in matched if observation is not None and observation.n >= min_samples]
        breaching = len([observation for observation in judged if observation.fired])
        unknown = len(matched) - len(judged)
    else:
        matched = _values_of(observations, names)
        verdicts = [_judge_one(condition, observation, min_samples, use_rearm) for observation in matched]
        breaching, unknown = verdicts.count(Verdict.BREACH), verdicts.count(Verdict.UNKNOWN)
    needed = condition.at_least or 1
    if breaching >= needed:
        return Verdict.BREACH
    if breaching + unknown < needed:
        return Verdict.OK
    return Verdict.UNKNOWN


def _judge_one(condition: Condition, observation: Observation | None, min_samples: int, use_rearm: bool) -> Verdict:
    if observation is None or observation.n < min_samples:
        return Verdict.UNKNOWN
    if condition.is_fired:
        return Verdict.BREACH if observation.fired else Verdict.OK
    if not math.isfinite(observation.value):
        return Verdict.UNKNOWN
    level = condition.rearm if use_rearm and condition.rearm is not None else condition.threshold
    return Verdict.BREACH if _OPERATORS[condition.op](observation.value, level) else Verdict.OK


def _glob_breaches(rule: Rule, observations: Mapping[str, Observation]) -> list[str]:
    """What the statistics the rule's glob conditions match and that breach now are about,
    sorted: ``feature.<name>`` for a feature's statistics (its PSI and KS are one feature
    drifting), the statistic's own name otherwise."""
    # Unranked: the subjects are sorted by name, so no p-value need be computed to rank them.
    return sorted({_subject(name) for condition in rule.conditions if condition.is_glob
                   for name in _breaching_names(condition, observations, rule.min_samples)})


def _breaching_names(condition: Condition, observations: Mapping[str, Observation], min_samples: int) -> list[str]:
    """The names of :func:`_breaching_matches`, unranked; of a ``fired`` glob, read without
    the observations when the mapping can (see :func:`_fired_counts`)."""
    if condition.is_fired:
        fired_names = getattr(observations, "fired_names", None)
        if fired_names is not None:
            names = fired_names(_matching_names(condition.statistic, _names(observations)), min_samples)
            if names is not None:
                return names
    return [name for name, _ in _breaching_matches(condition, observations, min_samples, ranked=False)]


def _fired_counts(observations: Mapping[str, Observation], names: tuple[str, ...],
                  min_samples: int) -> tuple[int, int] | None:
    """Of the named observations, how many fired with at least ``min_samples`` samples and how
    many have fewer, when the mapping offers ``fired_counts(names, min_samples)`` and can
    answer without making the observations (a Monitor's drift statistics, at every evaluation
    point); else None, and the rule reads the observations."""
    fired_counts = getattr(observations, "fired_counts", None)
    return None if fired_counts is None else fired_counts(names, min_samples)


def _subject(statistic: str) -> str:
    if statistic.startswith("feature."):
        return statistic.rsplit(".", 1)[0]
    return statistic


def _first_breaching(rule: Rule, observations: Mapping[str, Observation]) -> Condition:
    for condition in rule.conditions:
        if _judge_condition(condition, observations, rule.min_samples, False) is Verdict.BREACH:
            return condition
    return rule.conditions[0]


def _primary_value(rule: Rule, observations: Mapping[str, Observation], min_samples: int) -> float | None:
    """The value the baseline tracks: the first plain threshold condition's statistic, if judged."""
    for condition in rule.conditions:
        if not condition.is_glob and not condition.is_fired:
            observation = observations.get(condition.statistic)
            if observation is not None and observation.n >= min_samples and math.isfinite(observation.value):
                return float(observation.value)
    return None


# -- evidence -----------------------------------------------------------------------------


def _headline(
    condition: Condition, observations: Mapping[str, Observation], min_samples: int
) -> tuple[str, float, float, Observation | None]:
    """(metric, value, threshold, observation) for the event's top-level fields.

    A glob condition reports how many statistics breached against ``at_least``; a
    ``fired`` condition reports 1.0 against 1.0 (the detector's own statistic and
    threshold are in the evidence).
    """
    if condition.is_glob:
        matches = _breaching_matches(condition, observations, min_samples)
        strongest = matches[0][1] if matches else None
        return condition.statistic, float(len(matches)), float(condition.at_least or 1), strongest
    observation = observations.get(condition.statistic)
    if condition.is_fired:
        return condition.statistic, 1.0, 1.0, observation
    return condition.statistic, float(observation.value), float(condition.threshold), observation


def _breaching_matches(
    condition: Condition, observations: Mapping[str, Observation], min_samples: int, ranked: bool = True
) -> list[tuple[str, Observation]]:
    """The matches of a glob condition that breach, most drifted first (:func:`_drift_rank`,
    which reads their p-values) or, not ``ranked``, in the observations' order."""
    if condition.is_fired:  # _judge_one of each, inlined as in _judge_condition
        matches = [(name, observation) for name, observation in _matching(condition, observations)
                   if observation is not None and observation.n >= min_samples and observation.fired]
    else:
        matches = [(name, observation) for name, observation in _matching(condition, observations)
                   if _judge_one(condition, observation, min_samples, False) is Verdict.BREACH]
    return sorted(matches, key=lambda item: _drift_rank(item[1])) if ranked else matches


def _matching(condition: Condition, observations: Mapping[str, Observation]) -> list[tuple[str, Observation]]:
    """The observations a glob condition names, with their names. Names are matched first: a
    monitor computes an observation only when it is read."""
    names = _matching_names(condition.statistic, _names(observations))
    return list(zip(names, _values_of(observations, names)))


def _values_of(observations: Mapping[str, Observation], names: tuple[str, ...]) -> list[Observation]:
    """``[observations[name] for name in names]``, in one call when the mapping offers
    ``values_of(names)`` (a Monitor's observations do: a drift rule reads dozens at every
    evaluation point)."""
    values_of = getattr(observations, "values_of", None)
    if values_of is not None:
        return values_of(names)
    return [observations[name] for name in names]


def _names(observations: Mapping[str, Observation]) -> tuple[str, ...]:
    """``tuple(observations)``, or the mapping's ``names`` when it offers them (a Monitor's
    observations do, kept as a tuple: a glob rule matches them at every evaluation point)."""
    names = getattr(observations, "names", None)
    return tuple(observations) if names is None else names


@functools.lru_cache(maxsize=1024)
def _matching_names(pattern: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """The names a glob matches, in order. A model reports the same names at every evaluation
    point: matched once per set of names rather than a glob test of each name at each point."""
    return tuple(name for name in names if fnmatch.fnmatchcase(name, pattern))


def _condition_evidence(
    condition: Condition, observations: Mapping[str, Observation], min_samples: int
) -> dict[str, Any]:
    verdict = _judge_condition(condition, observations, min_samples, False)
    entry: dict[str, Any] = {"statistic": condition.statistic, "verdict": verdict.value}
    if condition.is_fired:
        entry["fired"] = True
    else:
        entry.update(op=condition.op, threshold=condition.threshold)
    if condition.is_glob:
        entry["at_least"] = condition.at_least or 1
        entry["matched"] = [name for name, _ in _breaching_matches(condition, observations, min_samples)]
    else:
        observation = observations.get(condition.statistic)
        entry["value"] = _json_float(observation.value) if observation else None
        entry["n"] = int(observation.n) if observation else None
    return entry


def _drift_rank(observation: Observation) -> tuple[float, float]:
    """Most drifted first: smallest p-value, then largest statistic."""
    p_value = observation.p_value if observation.p_value is not None else math.inf
    value = observation.value if math.isfinite(observation.value) else -math.inf
    return (p_value, -value)


def _top_features(observations: Mapping[str, Observation]) -> list[dict[str, Any]]:
    features = [(name, obs) for name, obs in observations.items() if name.startswith("feature.")]
    features.sort(key=lambda item: _drift_rank(item[1]))
    top = []
    for name, observation in features[:TOP_FEATURES]:
        feature, _, kind = name[len("feature."):].rpartition(".")
        top.append({
            "feature": feature,
            "kind": kind,
            "value": _json_float(observation.value),
            "p_value": _json_float(observation.p_value),
            "n": int(observation.n),
            "fired": bool(observation.fired),
        })
    return top


def _source_of(statistic: str) -> str:
    """Where the headline statistic comes from: ``estimated`` performance (from the scores, before
    labels), ``realized`` performance (from labels), ``drift`` or a change ``detector``."""
    family = statistic.partition(".")[0]
    if family in ("estimated", "detector"):
        return family
    if family in ("feature", "prediction"):
        return "drift"
    return "realized"


def _detector_of(statistic: str) -> str | None:
    if statistic.startswith("detector."):
        return statistic[len("detector."):]
    if statistic.startswith(("feature.", "prediction.")):
        return statistic.rsplit(".", 1)[-1]
    return None


def _json_float(value: float | None) -> float | None:
    """A plain float for JSON (numpy scalars included); JSON has no NaN/inf, so those are null."""
    return float(value) if value is not None and math.isfinite(value) else None


def iso_from_ms(epoch_ms: int | None) -> str | None:
    """Epoch milliseconds as ISO-8601 UTC with millisecond precision and a ``Z``."""
    if epoch_ms is None:
        return None
    seconds, millis = divmod(epoch_ms, 1000)
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}Z"
