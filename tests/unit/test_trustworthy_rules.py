"""Rules mean what they say: min_samples on a change detector counts the model's labelled pairs, a
glob rule's cooldown does not hide another feature, rules that can never fire are refused."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from retrain_trigger.policy import Observation
from streams.core.codecs import Label, Prediction
from streams.core.config import ConfigError, parse_config
from streams.core.monitor import Monitor, Source
from tests.unit.test_policy import evaluate_step, make_policy

T0 = 1_700_000_000_000


def config(**model):
    return parse_config({"kafka": {"bootstrap.servers": "unused:9092"},
                         "models": [{"id": "m", "label_ttl_seconds": 3600, **model}]}, "cfg.toml")


def test_min_samples_on_adwin_counts_pairs_seen_so_an_abrupt_drop_triggers():
    # Accuracy 0.90 -> 0.72 at pair 3000. ADWIN's window shrinks to the pairs since the change
    # when it detects it, far below 500; the rule still fires, as the model has seen 3000+ pairs.
    cfg = config(detectors=[{"kind": "adwin"}], evaluate_every=50,
                 rules=[{"name": "errors", "min_samples": 500,
                         "conditions": [{"statistic": "detector.adwin", "fired": True}]}])
    monitor = Monitor(cfg)
    rng = np.random.default_rng(7)
    triggers = []
    for i in range(5000):
        wrong = rng.random() < (0.10 if i < 3000 else 0.28)
        events = [Prediction(prediction_id=f"p{i}", model_id="m", timestamp=T0 + i * 1000, prediction=1),
                  Label(prediction_id=f"p{i}", model_id="m", timestamp=T0 + i * 1000 + 1, label=0 if wrong else 1)]
        triggers += monitor.process((e, Source("labels" if isinstance(e, Label) else "predictions", 0, 2 * i + k))
                                    for k, e in enumerate(events))
    after = [t for t in triggers if t.evidence["n"] > 3000]
    assert after, "the ADWIN rule never fired after the drop"
    assert after[0].evidence["n"] - 3000 < 400  # n counts pairs seen: the delay in pairs


def observations(**fired):
    return {f"feature.{name}.ks": Observation(value=0.3 if on else 0.01, n=1000, fired=on)
            for name, on in fired.items()}


def test_a_second_feature_drifting_within_the_cooldown_is_a_new_trigger():
    policy = make_policy({"name": "drift", "cooldown_seconds": 86400,
                          "conditions": [{"statistic": "feature.*.ks", "fired": True}]})
    steps = [observations(age=False, plan=False), observations(age=True, plan=False),
             observations(age=True, plan=False), observations(age=True, plan=True),
             observations(age=True, plan=True), observations(age=False, plan=False),
             observations(age=True, plan=False)]
    fired = [evaluate_step(policy, i, step) for i, step in enumerate(steps)]
    assert [len(f) for f in fired] == [0, 1, 0, 1, 0, 0, 0]  # age, then plan; age again: cooldown
    assert "new_subjects" not in fired[1][0].evidence
    assert fired[3][0].evidence["new_subjects"] == ["feature.plan"]
    assert fired[1][0].trigger_id != fired[3][0].trigger_id
    assert policy.suppressed["drift"]["cooldown"] == 1
    # the memory of what triggered is checkpointed
    restored = type(policy).from_state("churn", policy.rules, policy.state())
    assert restored.state() == policy.state()


def test_a_feature_that_already_triggered_does_not_trigger_again_in_its_episode():
    policy = make_policy({"name": "drift", "conditions": [{"statistic": "feature.*.ks", "fired": True}]})
    steps = [observations(age=True, plan=False), observations(age=True, plan=False),
             observations(age=False, plan=False), observations(age=True, plan=False)]
    assert [len(evaluate_step(policy, i, s)) for i, s in enumerate(steps)] == [1, 0, 0, 1]  # re-armed: new episode


BASE = {"features": {"numeric": ["age"], "categorical": ["plan"]}, "detectors": [{"kind": "adwin"}]}


@pytest.mark.parametrize("condition, message", [
    ({"statistic": "accuracy", "op": "<", "threshold": float("nan")},
     "models[0].rules[0].conditions[0].threshold: nan is not a finite number"),
    ({"statistic": "accuracy", "op": "<", "threshold": 0.8, "rearm": float("inf")},
     "models[0].rules[0].conditions[0].rearm: inf is not a finite number"),
    ({"statistic": "accuracy", "fired": True},
     "models[0].rules[0].conditions[0].fired: 'accuracy' never fires"),
    ({"statistic": "feature.*.ks", "fired": True, "at_least": 2},
     "models[0].rules[0].conditions[0].at_least: 2 is more than the 1 statistics 'feature.*.ks' matches"),
])
def test_rules_that_can_never_fire_are_refused_with_one_line(condition, message):
    with pytest.raises(ConfigError) as info:
        config(**BASE, rules=[{"name": "r", "conditions": [condition]}])
    assert str(info.value) == f"cfg.toml: {message}" or str(info.value).startswith(f"cfg.toml: {message}")
    assert "\n" not in str(info.value)


def test_a_distance_without_a_threshold_never_fires_with_the_budget_off():
    with pytest.raises(ConfigError, match="'feature.age.wasserstein' never fires"):
        config(features={"numeric": ["age"]}, drift={"numeric": ["wasserstein"], "false_alarm_every": 0},
               rules=[{"name": "r", "conditions": [{"statistic": "feature.age.wasserstein", "fired": True}]}])
    # under the budget every drift statistic fires past its calibrated threshold
    config(features={"numeric": ["age"]}, drift={"numeric": ["wasserstein"]},
           rules=[{"name": "r", "conditions": [{"statistic": "feature.age.wasserstein", "fired": True}]}])


def test_a_p_value_written_as_a_ks_threshold_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="driftline.config"):
        config(**BASE, rules=[{"name": "r", "conditions": [{"statistic": "feature.age.ks", "op": "<",
                                                            "threshold": 0.05}]}])
    assert "compares the KS distance, not its p-value" in caplog.text and "fired = true" in caplog.text


def test_feature_star_matches_every_drift_statistic():
    cfg = config(**BASE, rules=[{"name": "r", "conditions": [{"statistic": "feature.*", "fired": True}]}])
    assert cfg.models[0].drift is not None


def test_another_statistic_of_a_feature_that_triggered_is_not_a_new_trigger():
    policy = make_policy({"name": "drift", "cooldown_seconds": 86400,
                          "conditions": [{"statistic": "feature.*", "fired": True}]})
    ks_only = {"feature.age.ks": Observation(value=0.3, n=1000, fired=True),
               "feature.age.psi": Observation(value=0.01, n=1000, fired=False)}
    both = {"feature.age.ks": Observation(value=0.3, n=1000, fired=True),
            "feature.age.psi": Observation(value=0.3, n=1000, fired=True)}
    assert [len(evaluate_step(policy, i, s)) for i, s in enumerate([ks_only, both, both])] == [1, 0, 0]
