"""load_rules: valid TOML rule tables load; every invalid one names its field path."""
from __future__ import annotations

import tomllib

import pytest

from retrain_trigger.rules import Condition, RuleError, load_rules

EXAMPLE_TOML = """
[[models]]
id = "churn"

[[models.rules]]
name = "accuracy-floor"
min_samples = 500
consecutive = 3
cooldown_seconds = 3600
severity = "critical"
rearm = 0.85
conditions = [{statistic = "accuracy", op = "<", threshold = 0.80}]

[[models.rules]]
name = "wide-drift"
combine = "any"
breach_for_seconds = 600

[[models.rules.conditions]]
statistic = "feature.*.psi"
op = ">"
threshold = 0.2
at_least = 3

[[models.rules.conditions]]
statistic = "detector.adwin"
fired = true
"""


def test_loads_rules_from_toml():
    raw = tomllib.loads(EXAMPLE_TOML)["models"][0]["rules"]
    floor, drift = load_rules(raw, "models[0].rules")
    assert floor.name == "accuracy-floor"
    assert floor.conditions == [Condition(statistic="accuracy", op="<", threshold=0.8, rearm=0.85)]
    assert floor.rearm is None  # folded into the condition
    assert (floor.min_samples, floor.consecutive, floor.cooldown_seconds, floor.severity) == (500, 3, 3600, "critical")
    assert drift.conditions[0].is_glob and drift.conditions[0].at_least == 3
    assert drift.conditions[1].is_fired
    assert drift.breach_for_seconds == 600 and drift.reset_on_version_change


def test_defaults():
    (rule,) = load_rules([{"name": "r", "conditions": [{"statistic": "mae", "op": ">", "threshold": 2}]}], "w")
    assert (rule.combine, rule.min_samples, rule.consecutive, rule.breach_for_seconds, rule.cooldown_seconds,
            rule.severity, rule.reset_on_version_change) == ("any", 0, 1, 0, 0, "warning", True)


def rule_with(condition: dict | None = None, **fields) -> dict:
    rule = {"name": "r", "conditions": [condition or {"statistic": "accuracy", "op": "<", "threshold": 0.8}]}
    rule.update(fields)
    return rule


OK_FILLER = rule_with()


@pytest.mark.parametrize(
    "second_rule, message",
    [
        (rule_with({"statistic": "accuracy", "op": "=>", "threshold": 0.8}),
         "models[0].rules[1].conditions[0].op: expected one of <, <=, >, >="),
        (rule_with(combine="most"), "models[0].rules[1].combine: expected one of all, any"),
        (rule_with(severity="page"), "models[0].rules[1].severity: expected one of critical, info, warning"),
        (rule_with({"statistic": "accuracy", "op": "<", "threshold": "high"}),
         "models[0].rules[1].conditions[0].threshold: expected `float | null`, got `str`"),
        (rule_with({"statistic": "accuracy", "op": "<", "threshold": "0.85"}),  # a number in quotes, as the
         "models[0].rules[1].conditions[0].threshold: expected `float | null`, got `str`"),  # engine's keys
        (rule_with(min_samples="500"), "models[0].rules[1].min_samples: expected `int`, got `str`"),
        (rule_with(cooldown="1h"), "models[0].rules[1].cooldown: unknown key"),
        ({"conditions": []}, "models[0].rules[1].name: required key is missing"),
        (rule_with(conditions=[]), "models[0].rules[1].conditions: a rule needs at least one condition"),
        (rule_with(name="a:b"), "models[0].rules[1].name: 'a:b' may use only letters"),
        (rule_with(consecutive=0), "models[0].rules[1].consecutive: must be >= 1"),
        (rule_with(cooldown_seconds=-1), "models[0].rules[1].cooldown_seconds: must be >= 0"),
        (rule_with({"statistic": "acuracy", "op": "<", "threshold": 0.8}),
         "models[0].rules[1].conditions[0].statistic: unknown statistic 'acuracy'; expected one of accuracy"),
        (rule_with({"statistic": "feature.age.psx", "op": ">", "threshold": 0.2}),
         "models[0].rules[1].conditions[0].statistic: unknown statistic 'feature.age.psx'"),
        (rule_with({"statistic": "detector.adwn", "fired": True}),
         "models[0].rules[1].conditions[0].statistic: unknown statistic 'detector.adwn'"),
        (rule_with({"statistic": "accuracy", "threshold": 0.8}),
         "models[0].rules[1].conditions[0].op: required (one of <, <=, >, >=) unless `fired = true`"),
        (rule_with({"statistic": "accuracy", "op": "<"}),
         "models[0].rules[1].conditions[0].threshold: required with op '<'"),
        (rule_with({"statistic": "detector.ddm", "fired": False}),
         "models[0].rules[1].conditions[0].fired: only `fired = true` is meaningful"),
        (rule_with({"statistic": "detector.ddm", "fired": True, "op": "<"}),
         "models[0].rules[1].conditions[0].op: not allowed with `fired = true`"),
        (rule_with({"statistic": "accuracy", "op": "<", "threshold": 0.8, "rearm": 0.7}),
         "models[0].rules[1].conditions[0].rearm: must be >= threshold 0.8 for op '<'"),
        (rule_with({"statistic": "prediction.psi", "op": ">", "threshold": 0.2, "rearm": 0.3}),
         "models[0].rules[1].conditions[0].rearm: must be <= threshold 0.2 for op '>'"),
        (rule_with({"statistic": "accuracy", "op": "<", "threshold": 0.8, "at_least": 2}),
         "models[0].rules[1].conditions[0].at_least: only with a glob statistic"),
        (rule_with({"statistic": "feature.*.psi", "op": ">", "threshold": 0.2, "at_least": 0}),
         "models[0].rules[1].conditions[0].at_least: must be >= 1"),
        (rule_with({"statistic": "accuracy", "op": "<", "threshold": 0.8, "rearm": 0.9}, rearm=0.9),
         "models[0].rules[1].rearm: set either the rule's or the condition's rearm, not both"),
        ({"name": "r", "rearm": 0.9, "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.8},
                                                    {"statistic": "mae", "op": ">", "threshold": 1}]},
         "models[0].rules[1].rearm: only for a rule with one condition"),
        ({**OK_FILLER, "name": "r"}, "models[0].rules[1].name: duplicate rule name 'r'"),
    ],
)
def test_invalid_rules_name_the_field(second_rule, message):
    with pytest.raises(RuleError) as caught:
        load_rules([OK_FILLER, second_rule], "models[0].rules")
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_rules_must_be_a_list():
    with pytest.raises(RuleError, match=r"^models\[0\]\.rules: expected a list"):
        load_rules({"name": "r"}, "models[0].rules")


@pytest.mark.parametrize(
    "statistic",
    ["accuracy", "ece", "feature.age.psi", "feature.a.b.ks", "feature.*.wasserstein",
     "feature.*.*", "prediction.js", "prediction.*", "detector.kswin", "detector.*"],
)
def test_known_statistics_are_accepted(statistic):
    condition = {"statistic": statistic, "fired": True} if statistic.startswith("detector") else {
        "statistic": statistic, "op": ">", "threshold": 1}
    load_rules([rule_with(condition)], "w")
