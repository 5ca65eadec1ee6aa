"""Events the policy produces validate against the shipped JSON Schema (draft 2020-12)."""
from __future__ import annotations

import json

import jsonschema
import pytest

from retrain_trigger.events import TriggerWindow, encode_trigger, load_trigger_schema
from retrain_trigger.policy import Observation, TriggerPolicy, iso_from_ms
from retrain_trigger.rules import load_rules

AT_MS = 1_795_000_000_000


@pytest.fixture(scope="module")
def validator():
    schema = load_trigger_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def produced_events():
    rules = load_rules([
        {"name": "accuracy-floor", "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.8}]},
        {"name": "wide-drift", "conditions": [{"statistic": "feature.*.psi", "op": ">", "threshold": 0.2, "at_least": 2}]},
        {"name": "adwin", "severity": "info", "conditions": [{"statistic": "detector.adwin", "fired": True}]},
        {"name": "both", "combine": "all", "conditions": [
            {"statistic": "mae", "op": ">", "threshold": 1.0}, {"statistic": "recall_macro", "op": ">=", "threshold": 0.1}]},
    ], "models[0].rules")
    policy = TriggerPolicy("churn", rules)
    observations = {
        "accuracy": Observation(0.7, 5000),
        "feature.age.psi": Observation(0.4, 5000),
        "feature.plan.psi": Observation(float("inf"), 5000),
        "feature.tenure.psi": Observation(0.3, 5000, p_value=1e-9, detector="psi"),
        "detector.adwin": Observation(0.12, 5000, fired=True),
        "mae": Observation(2.0, 5000),
        "recall_macro": Observation(0.5, 10000),
    }
    window = TriggerWindow(start=iso_from_ms(AT_MS - 60_000), end=iso_from_ms(AT_MS), count=5000,
                           offsets={"predictions:3": [10, 5009], "labels:3": [7, 4000]})
    return policy.evaluate(observations, model_version=None, window=window, at_ms=AT_MS,
                           evidence_extra={"segment": "eu"})


def test_produced_events_validate(validator):
    events = produced_events()
    assert sorted(e.rule for e in events) == ["accuracy-floor", "adwin", "both", "wide-drift"]
    for event in events:
        validator.validate(json.loads(encode_trigger(event)))


def test_contract_example_validates(validator):
    validator.validate({
        "trigger_id": "churn:accuracy:000042", "model_id": "churn", "model_version": "2024-06-01",
        "rule": "accuracy-floor", "metric": "accuracy", "value": 0.71, "threshold": 0.80,
        "window": {"start": "2026-11-23T10:00:00Z", "end": "2026-11-23T10:15:00Z", "count": 5000},
        "evidence": {"detector": "adwin", "p_value": 1e-9, "baseline": 0.91},
        "triggered_at": "2026-11-23T10:15:02.120Z", "schema_version": 1,
    })


@pytest.mark.parametrize(
    "mutation",
    [
        lambda e: e.pop("trigger_id"),
        lambda e: e.update(schema_version=2),
        lambda e: e.update(value="low"),
        lambda e: e.update(severity="page"),
        lambda e: e.update(unexpected=1),
        lambda e: e["window"].update(count=-1),
        lambda e: e["window"].update(offsets={"predictions:0": [1]}),
        lambda e: e.update(triggered_at="yesterday"),
    ],
)
def test_schema_rejects_broken_events(validator, mutation):
    event = json.loads(encode_trigger(produced_events()[0]))
    mutation(event)
    assert not validator.is_valid(event)
