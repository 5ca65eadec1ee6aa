"""Retraining rules as written in the config, validated.

Each model in the TOML config carries a list of rules::

    [[models.rules]]
    name = "accuracy-floor"          # [A-Za-z0-9_.-]+, unique per model; part of trigger_id
    combine = "any"                  # "any" | "all": how the conditions combine
    min_samples = 500                # observations with fewer samples are not judged
    consecutive = 3                  # evaluations in a row that must breach ...
    breach_for_seconds = 0           # ... and/or event-time seconds the breach must last
    cooldown_seconds = 3600          # no new trigger this long (event time) after one fired
    severity = "warning"             # "info" | "warning" | "critical"
    reset_on_version_change = true   # a new model_version starts a fresh episode and baseline
    rearm = 0.85                     # shorthand for the single condition's rearm level

    [[models.rules.conditions]]
    statistic = "accuracy"           # a statistic the Monitor observes (see STATISTIC_HELP)
    op = "<"                         # "<" | "<=" | ">" | ">="
    threshold = 0.80
    rearm = 0.85                     # hysteresis: re-arm only once the value is back past this

Performance estimated from the scores before labels arrive is ``estimated.<metric>``
(``estimated.accuracy``; the model needs an ``estimation`` table). A change detector is a
condition ``{statistic = "detector.adwin", fired = true}``. A
statistic with a glob counts matches: ``{statistic = "feature.*.psi", op = ">",
threshold = 0.2, at_least = 3}`` breaches when at least 3 features have PSI > 0.2.

``load_rules(raw, where)`` turns the raw TOML list into :class:`Rule` objects and raises
:class:`RuleError` with one message naming the field path, e.g.
``models[0].rules[1].conditions[0].op: expected one of <, <=, >, >=``.
"""
from __future__ import annotations

import difflib
import functools
import math
import re
from typing import Any, Literal

import msgspec

from detectors import kinds

OPS = ("<", "<=", ">", ">=")

# The statistics a rule may name, by the names of the detectors behind them.
PERFORMANCE_STATISTICS = kinds.METRIC_KINDS
DRIFT_KINDS = kinds.DRIFT_KINDS
DETECTOR_KINDS = kinds.CHANGE_KINDS
#: performance estimated from the scores before labels arrive
ESTIMATED_STATISTICS = kinds.ESTIMATED_METRICS

STATISTIC_HELP = (
    f"one of {', '.join(PERFORMANCE_STATISTICS)}, "
    f"feature.<feature>.<{'|'.join(DRIFT_KINDS)}> (feature.* for all), prediction.<{'|'.join(DRIFT_KINDS)}>, "
    f"detector.<{'|'.join(DETECTOR_KINDS)}> "
    f"or estimated.<{'|'.join(ESTIMATED_STATISTICS)}>"
)

_RULE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_GLOB_CHARS = ("*", "?", "[")


class RuleError(ValueError):
    """A rule in the config is invalid; the message names the field path."""


class Condition(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    statistic: str
    op: Literal["<", "<=", ">", ">="] | None = None
    threshold: float | None = None
    fired: bool | None = None
    rearm: float | None = None
    at_least: int | None = None

    @property
    def is_glob(self) -> bool:
        return _is_glob(self.statistic)

    @property
    def is_fired(self) -> bool:
        return bool(self.fired)


class Rule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    conditions: list[Condition]
    combine: Literal["any", "all"] = "any"
    min_samples: int = 0
    consecutive: int = 1
    breach_for_seconds: float = 0.0
    cooldown_seconds: float = 0.0
    severity: Literal["info", "warning", "critical"] = "warning"
    reset_on_version_change: bool = True
    rearm: float | None = None


@functools.lru_cache(maxsize=1024)
def _is_glob(statistic: str) -> bool:
    """Whether a statistic a rule names is a glob: asked at every evaluation point, of the
    few names a config has."""
    return any(ch in statistic for ch in _GLOB_CHARS)


_MSGSPEC_ERROR = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def load_rules(raw: list[dict[str, Any]], where: str) -> list[Rule]:
    """Validate the raw rule tables of one model; ``where`` is their path, e.g. ``models[0].rules``."""
    if not isinstance(raw, list):
        raise RuleError(f"{where}: expected a list of rule tables ([[...rules]]), got {type(raw).__name__}")
    try:
        rules = msgspec.convert(raw, list[Rule])
    except msgspec.ValidationError as exc:
        raise RuleError(explain_validation_error(str(exc), list[Rule], where)) from None
    seen: set[str] = set()
    normalized = []
    for index, rule in enumerate(rules):
        path = f"{where}[{index}]"
        rule = _check_rule(rule, path)
        if rule.name in seen:
            raise RuleError(f"{path}.name: duplicate rule name {rule.name!r}")
        seen.add(rule.name)
        normalized.append(rule)
    return normalized


def explain_validation_error(message: str, root: Any, where: str = "") -> str:
    """A msgspec error of converting to ``root`` (``... - at `$[0].op```) as one line naming the
    key: ``<where>[0].op: expected one of <, <=, >, >=``. An unknown key gets the nearest known
    key of its table suggested, a misspelt value the values allowed there: msgspec names neither.
    Shared by the rules and the config, so that both say the same thing the same way."""
    match = _MSGSPEC_ERROR.match(message)
    text, path = match.group("msg"), match.group("path") or ""
    at = f"{where}{path}".lstrip(".")
    unknown = re.match(r"Object contains unknown field `(.+)`", text)
    missing = re.match(r"Object missing required field `(.+)`", text)
    if unknown:
        key = unknown.group(1)
        keys = _type_at(root, path, _keys)
        # `cooldown` for `cooldown_seconds`: a prefix is no close match by difflib's measure
        near = [k for k in keys if k.startswith(f"{key}_")] or difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
        hint = f" (did you mean `{near[0]}`?)" if near else ""
        return f"{_under(at, key)}: unknown key{hint}"
    if missing:
        return f"{_under(at, missing.group(1))}: required key is missing"
    allowed = _type_at(root, path, _literal_values)
    if text.startswith("Invalid enum value") and allowed:
        return f"{at}: expected one of {', '.join(map(str, allowed))}"
    return f"{at or '(top level)'}: {text[0].lower()}{text[1:]}"


def _under(at: str, key: str) -> str:
    """The path of ``key`` in the table at ``at`` ("" is the top level)."""
    return f"{at}.{key}" if at else key


def _type_at(root: Any, path: str, read: Any) -> list:
    """``read`` of the type found at a msgspec error path (``.models[0].window``) in ``root``, or []
    where the path leads nowhere known (a table of free keys, say)."""
    info = msgspec.inspect.type_info(root)
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        info = _struct_or_list(info)
        if name:
            info = {f.encode_name: f.type for f in getattr(info, "fields", ())}.get(name)
        else:
            info = getattr(info, "item_type", None)
        if info is None:
            return []
    return read(_struct_or_list(info))


def _struct_or_list(info: Any) -> Any:
    """An optional table (``Drift | None``) as the table."""
    if isinstance(info, msgspec.inspect.UnionType):
        return next((t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)), info)
    return info


def _keys(info: Any) -> list[str]:
    return [f.encode_name for f in getattr(info, "fields", ())]


def _literal_values(info: Any) -> list:
    return list(info.values) if isinstance(info, msgspec.inspect.LiteralType) else []


def _check_rule(rule: Rule, path: str) -> Rule:
    if not _RULE_NAME.match(rule.name):
        raise RuleError(f"{path}.name: {rule.name!r} may use only letters, digits, '_', '.', '-'")
    if not rule.conditions:
        raise RuleError(f"{path}.conditions: a rule needs at least one condition")
    for key in ("min_samples", "breach_for_seconds", "cooldown_seconds"):
        if getattr(rule, key) < 0:
            raise RuleError(f"{path}.{key}: must be >= 0")
    if rule.consecutive < 1:
        raise RuleError(f"{path}.consecutive: must be >= 1")
    conditions = list(rule.conditions)
    if rule.rearm is not None:
        if len(conditions) != 1:
            raise RuleError(f"{path}.rearm: only for a rule with one condition; set rearm on each condition")
        if conditions[0].rearm is not None:
            raise RuleError(f"{path}.rearm: set either the rule's or the condition's rearm, not both")
        conditions[0] = msgspec.structs.replace(conditions[0], rearm=rule.rearm)
    for index, condition in enumerate(conditions):
        _check_condition(condition, f"{path}.conditions[{index}]")
    return msgspec.structs.replace(rule, conditions=conditions, rearm=None)


def _check_condition(condition: Condition, path: str) -> None:
    _check_statistic(condition.statistic, f"{path}.statistic")
    if condition.fired is not None:
        if condition.fired is not True:
            raise RuleError(f"{path}.fired: only `fired = true` is meaningful; drop the condition otherwise")
        for key in ("op", "threshold", "rearm"):
            if getattr(condition, key) is not None:
                raise RuleError(f"{path}.{key}: not allowed with `fired = true`")
    else:
        if condition.op is None:
            raise RuleError(f"{path}.op: required (one of {', '.join(OPS)}) unless `fired = true`")
        if condition.threshold is None:
            raise RuleError(f"{path}.threshold: required with op {condition.op!r}")
        for key in ("threshold", "rearm"):
            value = getattr(condition, key)
            if value is not None and not math.isfinite(value):
                raise RuleError(f"{path}.{key}: {value!r} is not a finite number, so the rule could never fire")
        _check_rearm(condition, path)
    if condition.at_least is not None:
        if not condition.is_glob:
            raise RuleError(f"{path}.at_least: only with a glob statistic such as feature.*.psi")
        if condition.at_least < 1:
            raise RuleError(f"{path}.at_least: must be >= 1")


def _check_rearm(condition: Condition, path: str) -> None:
    if condition.rearm is None:
        return
    if condition.op in ("<", "<=") and condition.rearm < condition.threshold:
        raise RuleError(f"{path}.rearm: must be >= threshold {condition.threshold} for op {condition.op!r}")
    if condition.op in (">", ">=") and condition.rearm > condition.threshold:
        raise RuleError(f"{path}.rearm: must be <= threshold {condition.threshold} for op {condition.op!r}")


def _check_statistic(statistic: str, path: str) -> None:
    if statistic in PERFORMANCE_STATISTICS:
        return
    family, _, rest = statistic.partition(".")
    kind = rest.rsplit(".", 1)[-1]
    wildcard = any(ch in kind for ch in _GLOB_CHARS)
    if family == "feature" and (("." in rest and (kind in DRIFT_KINDS or wildcard)) or rest == "*"):
        return
    if family == "prediction" and rest and (rest in DRIFT_KINDS or wildcard):
        return
    if family == "detector" and rest and (rest in DETECTOR_KINDS or wildcard):
        return
    if family == "estimated" and rest and (rest in ESTIMATED_STATISTICS or wildcard):
        return
    raise RuleError(f"{path}: unknown statistic {statistic!r}; expected {STATISTIC_HELP}")
