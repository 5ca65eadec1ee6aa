"""TriggerPolicy on scripted sequences: one evaluation per window, one minute apart (event time)."""
from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain_trigger.events import TriggerWindow, decode_trigger, encode_trigger
from retrain_trigger.policy import Observation, TriggerPolicy, iso_from_ms
from retrain_trigger.rules import load_rules

MINUTE_MS = 60_000
T0_MS = 1_795_000_000_000  # 2026-11-17, an arbitrary event-time origin


def make_policy(*rules: dict, model_id: str = "churn") -> TriggerPolicy:
    return TriggerPolicy(model_id, load_rules(list(rules), "models[0].rules"))


def accuracy_floor(**overrides) -> dict:
    rule = {
        "name": "accuracy-floor",
        "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.8}],
    }
    rule.update(overrides)
    return rule


def as_observations(step) -> dict[str, Observation]:
    """A step is {statistic: value | (value, n) | Observation}; n defaults to 1000."""
    observations = {}
    for name, spec in step.items():
        if isinstance(spec, Observation):
            observations[name] = spec
        elif isinstance(spec, tuple):
            observations[name] = Observation(value=spec[0], n=spec[1])
        else:
            observations[name] = Observation(value=spec, n=1000)
    return observations


def window_at(index: int) -> TriggerWindow:
    start, end = T0_MS + index * MINUTE_MS, T0_MS + (index + 1) * MINUTE_MS
    return TriggerWindow(
        start=iso_from_ms(start), end=iso_from_ms(end), count=1000,
        offsets={"predictions:0": [index * 1000, index * 1000 + 999]},
    )


def evaluate_step(policy: TriggerPolicy, index: int, step, version: str | None = "v1"):
    return policy.evaluate(
        as_observations(step), model_version=version, window=window_at(index),
        at_ms=T0_MS + (index + 1) * MINUTE_MS,
    )


def run(policy: TriggerPolicy, steps, versions=None) -> list[list[str]]:
    """Trigger ids per step."""
    fired = []
    for index, step in enumerate(steps):
        version = versions[index] if versions else "v1"
        fired.append([event.trigger_id for event in evaluate_step(policy, index, step, version)])
    return fired


def ids_per_step(fired: list[list[str]]) -> list[str | None]:
    """One id or None per step (the scripted tables have at most one rule firing per step)."""
    assert all(len(ids) <= 1 for ids in fired), fired
    return [ids[0] if ids else None for ids in fired]


ID1, ID2, ID3 = "churn:accuracy-floor:000001", "churn:accuracy-floor:000002", "churn:accuracy-floor:000003"

# (case, rule overrides, accuracy per window, expected trigger id per window)
SCRIPTS = [
    ("fires on first breach", {}, [0.9, 0.7, 0.7], [None, ID1, None]),
    ("once per episode, again after recovery", {}, [0.7, 0.7, 0.9, 0.7], [ID1, None, None, ID2]),
    ("threshold itself is not a breach for <", {}, [0.8, 0.79], [None, ID1]),
    ("consecutive windows", {"consecutive": 3}, [0.7, 0.7, 0.9, 0.7, 0.7, 0.7, 0.7], [None, None, None, None, None, ID1, None]),
    ("breach_for_seconds (event time)", {"breach_for_seconds": 120}, [0.7, 0.7, 0.7, 0.7], [None, None, ID1, None]),
    ("consecutive and breach_for_seconds both", {"consecutive": 2, "breach_for_seconds": 180}, [0.7, 0.7, 0.7, 0.7], [None, None, None, ID1]),
    ("hysteresis: no re-arm inside the band", {"rearm": 0.85}, [0.7, 0.82, 0.7, 0.86, 0.7], [ID1, None, None, None, ID2]),
    ("hysteresis: re-arm exactly at the rearm level", {"rearm": 0.85}, [0.7, 0.85, 0.7], [ID1, None, ID2]),
    ("cooldown delays the next episode", {"cooldown_seconds": 240}, [0.7, 0.9, 0.7, 0.7, 0.7], [ID1, None, None, None, ID2]),
    ("cooldown over before the next breach", {"cooldown_seconds": 60}, [0.7, 0.9, 0.7], [ID1, None, ID2]),
    ("three episodes", {}, [0.7, 0.9, 0.7, 0.9, 0.7], [ID1, None, ID2, None, ID3]),
]


@pytest.mark.parametrize("case, overrides, values, expected", SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_scripted_sequences(case, overrides, values, expected):
    policy = make_policy(accuracy_floor(**overrides))
    assert ids_per_step(run(policy, [{"accuracy": v} for v in values])) == expected


def test_cooldown_suppressions_are_counted():
    policy = make_policy(accuracy_floor(cooldown_seconds=240))
    run(policy, [{"accuracy": v} for v in [0.7, 0.9, 0.7, 0.7, 0.7]])
    assert policy.suppressed["accuracy-floor"] == {"cooldown": 2, "min_samples": 0}


def test_min_samples_skips_windows_and_counts_hidden_breaches():
    policy = make_policy(accuracy_floor(min_samples=100, consecutive=2))
    steps = [{"accuracy": (0.5, 10)}, {"accuracy": (0.7, 500)}, {"accuracy": (0.5, 3)}, {"accuracy": (0.7, 500)}]
    # The low-sample windows neither fire nor break the streak of the two real breaches.
    assert ids_per_step(run(policy, steps)) == [None, None, None, ID1]
    assert policy.suppressed["accuracy-floor"]["min_samples"] == 2


def test_missing_statistic_is_unknown_not_healthy():
    policy = make_policy(accuracy_floor(rearm=0.85))
    steps = [{"accuracy": 0.7}, {}, {"f1_macro": 0.9}, {"accuracy": 0.7}, {"accuracy": 0.9}, {"accuracy": 0.7}]
    assert ids_per_step(run(policy, steps)) == [ID1, None, None, None, None, ID2]


def test_non_finite_value_is_unknown():
    policy = make_policy(accuracy_floor())
    assert ids_per_step(run(policy, [{"accuracy": float("nan")}, {"accuracy": 0.7}])) == [None, ID1]


@pytest.mark.parametrize(
    "combine, steps, expected",
    [
        ("any", [{"accuracy": 0.7, "feature.age.psi": 0.1}], ["churn:combo:000001"]),
        ("any", [{"accuracy": 0.9, "feature.age.psi": 0.3}], ["churn:combo:000001"]),
        ("all", [{"accuracy": 0.7, "feature.age.psi": 0.1}], [None]),
        ("all", [{"accuracy": 0.7, "feature.age.psi": 0.3}], ["churn:combo:000001"]),
        # "all" with one side unknown cannot decide: no trigger.
        ("all", [{"accuracy": 0.7}], [None]),
        # "any" with one side unknown still fires on the other.
        ("any", [{"feature.age.psi": 0.3}], ["churn:combo:000001"]),
    ],
)
def test_combinators(combine, steps, expected):
    policy = make_policy({
        "name": "combo",
        "combine": combine,
        "conditions": [
            {"statistic": "accuracy", "op": "<", "threshold": 0.8},
            {"statistic": "feature.age.psi", "op": ">", "threshold": 0.2},
        ],
    })
    assert ids_per_step(run(policy, steps)) == expected


def test_all_rearms_when_one_condition_recovers():
    policy = make_policy({
        "name": "combo", "combine": "all",
        "conditions": [
            {"statistic": "accuracy", "op": "<", "threshold": 0.8},
            {"statistic": "recall_macro", "op": ">", "threshold": 0.5},
        ],
    })
    both = {"accuracy": 0.7, "recall_macro": 0.9}
    steps = [both, both, {"accuracy": 0.9, "recall_macro": 0.9}, both]
    assert ids_per_step(run(policy, steps)) == ["churn:combo:000001", None, None, "churn:combo:000002"]


def test_glob_counts_drifted_features():
    policy = make_policy({
        "name": "wide-drift",
        "conditions": [{"statistic": "feature.*.psi", "op": ">", "threshold": 0.2, "at_least": 3}],
    })
    two = {"feature.a.psi": 0.3, "feature.b.psi": 0.4, "feature.c.psi": 0.1, "feature.d.ks": 0.9}
    three = {**two, "feature.c.psi": 0.25}
    events = []
    for index, step in enumerate([two, three]):
        events.append(evaluate_step(policy, index, step))
    assert events[0] == []
    (event,) = events[1]
    assert (event.metric, event.value, event.threshold) == ("feature.*.psi", 3.0, 3.0)
    assert event.evidence["conditions"][0]["matched"] == ["feature.b.psi", "feature.a.psi", "feature.c.psi"]


def test_detector_fired_condition():
    policy = make_policy({
        "name": "adwin-change", "cooldown_seconds": 0,
        "conditions": [{"statistic": "detector.adwin", "fired": True}],
    })
    quiet = Observation(value=0.01, n=500, fired=False, detector="adwin")
    change = Observation(value=0.2, n=500, fired=True, threshold=0.1, detector="adwin")
    steps = [{"detector.adwin": quiet}, {"detector.adwin": change}, {"detector.adwin": change}, {"detector.adwin": quiet}, {"detector.adwin": change}]
    fired = ids_per_step(run(policy, steps))
    assert fired == [None, "churn:adwin-change:000001", None, None, "churn:adwin-change:000002"]


def test_detector_event_reports_fired_indicator_and_detector_evidence():
    policy = make_policy({"name": "ph", "conditions": [{"statistic": "detector.page_hinkley", "fired": True}]})
    change = Observation(value=57.0, n=800, fired=True, threshold=50.0, detector="page_hinkley")
    (event,) = evaluate_step(policy, 0, {"detector.page_hinkley": change})
    assert (event.metric, event.value, event.threshold) == ("detector.page_hinkley", 1.0, 1.0)
    assert event.evidence["detector"] == "page_hinkley"
    assert event.evidence["distance"] == 57.0
    assert event.evidence["op"] == "fired"


@pytest.mark.parametrize(
    "reset, versions, expected",
    [
        (True, ["v1", "v1", "v2", "v2"], [ID1, None, ID2, None]),
        (False, ["v1", "v1", "v2", "v2"], [ID1, None, None, None]),
        # None (no version on the events) is not a change.
        (True, ["v1", None, "v1", None], [ID1, None, None, None]),
    ],
)
def test_version_change_resets_episode(reset, versions, expected):
    policy = make_policy(accuracy_floor(reset_on_version_change=reset, cooldown_seconds=3600))
    fired = run(policy, [{"accuracy": 0.7}] * 4, versions=versions)
    assert ids_per_step(fired) == expected


def test_version_change_resets_baseline():
    policy = make_policy(accuracy_floor())
    run(policy, [{"accuracy": 0.95}, {"accuracy": 0.7}], versions=["v1", "v1"])
    (event,) = evaluate_step(policy, 2, {"accuracy": 0.75}, version="v2")
    assert event.evidence["baseline"] == 0.75
    assert event.model_version == "v2"


def test_evidence_and_event_fields():
    policy = make_policy(accuracy_floor(severity="critical", min_samples=100))
    healthy = {"accuracy": 0.91}
    bad = {
        "accuracy": Observation(value=0.71, n=5000),
        **{f"feature.f{i}.ks": Observation(value=0.1 * i, n=5000, p_value=10.0 ** -i) for i in range(1, 8)},
        "feature.plan.chi2": Observation(value=3.0, n=5000),
        "prediction.psi": Observation(value=0.05, n=5000),
    }
    run(policy, [healthy])
    events = policy.evaluate(
        as_observations(bad), model_version="v1", window=window_at(1),
        at_ms=T0_MS + 2 * MINUTE_MS, evidence_extra={"segment": "eu"},
    )
    (event,) = events
    assert event.trigger_id == ID1
    assert (event.metric, event.value, event.threshold, event.severity) == ("accuracy", 0.71, 0.8, "critical")
    assert event.triggered_at == iso_from_ms(T0_MS + 2 * MINUTE_MS)
    assert event.window.offsets == {"predictions:0": [1000, 1999]}
    evidence = event.evidence
    assert evidence["baseline"] == 0.91
    assert evidence["n"] == 5000
    assert evidence["segment"] == "eu"
    assert [f["feature"] for f in evidence["top_features"]] == ["f7", "f6", "f5", "f4", "f3"]
    assert evidence["top_features"][0] == {"feature": "f7", "kind": "ks", "value": pytest.approx(0.7), "p_value": 1e-7, "n": 5000, "fired": False}


def test_baseline_is_last_healthy_value_while_armed():
    policy = make_policy(accuracy_floor(rearm=0.85))
    run(policy, [{"accuracy": 0.93}, {"accuracy": 0.9}, {"accuracy": 0.7}, {"accuracy": 0.83}])
    (event,) = evaluate_step(policy, 4, {"accuracy": 0.88}) or [None]  # re-arms, no trigger
    assert event is None
    (event,) = evaluate_step(policy, 5, {"accuracy": 0.6})
    assert event.evidence["baseline"] == 0.88


def test_events_round_trip_through_the_codec():
    policy = make_policy(accuracy_floor())
    (event,) = evaluate_step(policy, 0, {"accuracy": 0.5, "feature.age.psi": Observation(0.4, 10, p_value=float("nan"))})
    assert decode_trigger(encode_trigger(event)) == event
    json.loads(encode_trigger(event))  # strictly valid JSON: no NaN


def test_two_rules_fire_independently_with_their_own_sequences():
    policy = make_policy(
        accuracy_floor(),
        {"name": "psi", "conditions": [{"statistic": "prediction.psi", "op": ">=", "threshold": 0.25}]},
    )
    fired = run(policy, [{"accuracy": 0.7, "prediction.psi": 0.3}, {"accuracy": 0.9, "prediction.psi": 0.3}, {"accuracy": 0.7, "prediction.psi": 0.1}])
    assert fired == [[ID1, "churn:psi:000001"], [], [ID2]]


def test_a_window_given_as_a_function_is_made_only_when_a_rule_fires():
    """The Monitor hands the trigger window over as what makes it: the same events, and the
    window made at the points that fire only."""
    steps = [{"accuracy": v} for v in [0.9, 0.7, 0.7, 0.9, 0.6]]
    eager, lazy, made = make_policy(accuracy_floor()), make_policy(accuracy_floor()), []

    def make(index):
        made.append(index)
        return window_at(index)

    for index, step in enumerate(steps):
        at_ms = T0_MS + (index + 1) * MINUTE_MS
        expected = eager.evaluate(as_observations(step), model_version="v1", window=window_at(index), at_ms=at_ms)
        got = lazy.evaluate(as_observations(step), model_version="v1", window=lambda index=index: make(index),
                            at_ms=at_ms)
        assert got == expected
    assert made == [1, 4]


def test_same_inputs_give_same_ids_across_instances():
    steps = [{"accuracy": v} for v in [0.9, 0.7, 0.9, 0.7, 0.7, 0.95, 0.6]]
    first = run(make_policy(accuracy_floor(consecutive=2)), steps)
    second = run(make_policy(accuracy_floor(consecutive=2)), steps)
    assert first == second and any(first)


# -- checkpoints --------------------------------------------------------------------------

RICH_RULES = (
    accuracy_floor(consecutive=2, rearm=0.85, cooldown_seconds=240, min_samples=50),
    {"name": "drift", "breach_for_seconds": 60,
     "conditions": [{"statistic": "feature.*.psi", "op": ">", "threshold": 0.2, "at_least": 2}]},
    {"name": "adwin", "conditions": [{"statistic": "detector.adwin", "fired": True}]},
)


def rich_step(accuracy: float, n: int, drifted: int, adwin: bool) -> dict[str, Observation]:
    step = {"accuracy": Observation(accuracy, n), "detector.adwin": Observation(0.0, n, fired=adwin)}
    for i in range(4):
        step[f"feature.f{i}.psi"] = Observation(0.3 if i < drifted else 0.05, n)
    return step


step_strategy = st.builds(
    rich_step,
    accuracy=st.sampled_from([0.6, 0.75, 0.82, 0.9]),
    n=st.sampled_from([10, 1000]),
    drifted=st.integers(0, 4),
    adwin=st.booleans(),
)


def full_run(steps, versions, policy=None, start=0):
    policy = policy or make_policy(*RICH_RULES)
    fired = []
    for index in range(start, len(steps)):
        events = policy.evaluate(steps[index], model_version=versions[index], window=window_at(index), at_ms=T0_MS + index * MINUTE_MS)
        fired.append([encode_trigger(e) for e in events])
    return fired, policy


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(step_strategy, min_size=1, max_size=25),
    version_changes=st.lists(st.booleans(), min_size=25, max_size=25),
    cut=st.integers(0, 25),
)
def test_state_round_trip_at_any_point_gives_identical_triggers(steps, version_changes, cut):
    versions, current = [], 0
    for changed in version_changes[: len(steps)]:
        current += changed
        versions.append(f"v{current}")
    cut = min(cut, len(steps))
    expected, _ = full_run(steps, versions)

    head, policy = full_run(steps[:cut], versions[:cut])
    checkpoint = json.loads(json.dumps(policy.state()))  # what the engine writes to Kafka
    restored = TriggerPolicy.from_state("churn", load_rules(list(RICH_RULES), "r"), checkpoint)
    tail, restored = full_run(steps, versions, policy=restored, start=cut)

    assert head + tail == expected
    assert restored.suppressed == full_run(steps, versions)[1].suppressed


def test_state_round_trip_mid_episode_scripted():
    policy = make_policy(accuracy_floor(consecutive=3, cooldown_seconds=600))
    steps = [{"accuracy": v} for v in [0.7, 0.7, 0.7, 0.9, 0.7, 0.7, 0.7, 0.7]]
    expected = run(make_policy(accuracy_floor(consecutive=3, cooldown_seconds=600)), steps)
    head = run(policy, steps[:4])
    restored = TriggerPolicy.from_state("churn", policy.rules, msgspec.json.decode(msgspec.json.encode(policy.state())))
    tail = [[e.trigger_id for e in evaluate_step(restored, i, steps[i])] for i in range(4, len(steps))]
    assert head + tail == expected


def test_from_state_tolerates_added_and_removed_rules():
    old = make_policy(accuracy_floor())
    run(old, [{"accuracy": 0.7}])
    new_rules = load_rules([accuracy_floor(), {"name": "new", "conditions": [{"statistic": "mae", "op": ">", "threshold": 1}]}], "r")
    restored = TriggerPolicy.from_state("churn", new_rules, old.state() | {"rules": old.state()["rules"] | {"gone": {}}})
    assert run(restored, [{"accuracy": 0.9}, {"accuracy": 0.7, "mae": 2.0}]) == [[], [ID2, "churn:new:000001"]]


def test_from_state_rejects_unknown_state_version():
    with pytest.raises(ValueError, match="state version"):
        TriggerPolicy.from_state("churn", [], {"version": 99})


def test_baseline_ignores_low_sample_observations():
    policy = make_policy(accuracy_floor(min_samples=100))
    run(policy, [{"accuracy": (0.99, 5)}, {"accuracy": (0.9, 500)}, {"accuracy": (0.95, 5)}])
    (event,) = evaluate_step(policy, 3, {"accuracy": (0.7, 500)})
    assert event.evidence["baseline"] == 0.9


# -- invariants against an independent reading of the semantics -----------------------------

THRESHOLD, REARM, CONSECUTIVE, COOLDOWN_S, MIN_SAMPLES = 0.8, 0.85, 2, 300, 100


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from([0.7, 0.79, 0.8, 0.83, 0.85, 0.9]), st.sampled_from([5, 500]), st.booleans()),
        min_size=1, max_size=40),
)
def test_triggers_respect_consecutive_hysteresis_cooldown_and_versions(steps):
    """(accuracy, n, new model version?) per window: check every trigger against the rules' meaning."""
    policy = make_policy(accuracy_floor(consecutive=CONSECUTIVE, rearm=REARM, cooldown_seconds=COOLDOWN_S,
                                        min_samples=MIN_SAMPLES))
    version, fired_at = 0, []
    history = []  # (index, accuracy, judged, version) per step
    for index, (accuracy, n, bump) in enumerate(steps):
        version += bump
        events = evaluate_step(policy, index, {"accuracy": (accuracy, n)}, version=f"v{version}")
        history.append((index, accuracy, n >= MIN_SAMPLES, version))
        if events:
            fired_at.append(index)
            assert events[0].trigger_id == f"churn:accuracy-floor:{len(fired_at):06d}"

    for position, index in enumerate(fired_at):
        judged = [h for h in history[: index + 1] if h[2] and h[3] == history[index][3]]
        # The last `consecutive` judged windows of this version all breached.
        assert len(judged) >= CONSECUTIVE
        assert all(h[1] < THRESHOLD for h in judged[-CONSECUTIVE:])
        if position == 0:
            continue
        previous = fired_at[position - 1]
        if history[previous][3] != history[index][3]:
            continue  # a new version starts afresh
        between = [h for h in history[previous + 1: index] if h[2]]
        # Hysteresis: the value recovered past rearm in between.
        assert any(h[1] >= REARM for h in between)
        # Cooldown: far enough apart in event time.
        assert (index - previous) * MINUTE_MS >= COOLDOWN_S * 1000


def test_numpy_scalars_from_detectors_encode_and_checkpoint():
    import numpy as np

    policy = make_policy(accuracy_floor(), {"name": "drift", "conditions": [
        {"statistic": "feature.*.ks", "op": ">", "threshold": 0.1}]})
    healthy = {"accuracy": Observation(np.float64(0.9), np.int64(800))}
    run(policy, [healthy])
    bad = {"accuracy": Observation(np.float64(0.7), np.int64(800)),
           "feature.age.ks": Observation(np.float64(0.3), np.int64(800), fired=np.bool_(True), p_value=np.float64(1e-4))}
    events = evaluate_step(policy, 1, bad)
    assert len(events) == 2
    for event in events:
        json.loads(encode_trigger(event))
    json.dumps(policy.state())


def test_breaching_subjects_during_cooldown_read_no_p_value():
    """Within a cooldown a glob rule asks which subjects breach at every evaluation: their names
    only, so no deferred p-value is computed for it (only a trigger's evidence ranks them)."""
    policy = make_policy({"name": "drift", "cooldown_seconds": 3600,
                          "conditions": [{"statistic": "feature.*", "fired": True}]})
    read: list[str] = []

    def step(fired: list[str]) -> dict[str, Observation]:
        def p_value(name: str):
            return lambda: read.append(name) or 0.01
        return {f"feature.{f}.psi": Observation(value=0.5, n=1000, fired=f in fired, p_value=p_value(f))
                for f in "abc"}

    (first,) = policy.evaluate(step(["a"]), model_version="v1", window=window_at(0), at_ms=T0_MS)
    assert first.evidence["conditions"][0]["matched"] == ["feature.a.psi"]
    read.clear()
    assert policy.evaluate(step(["a"]), model_version="v1", window=window_at(1), at_ms=T0_MS + MINUTE_MS) == []
    assert read == []  # in cooldown, the same feature: no news, no p-value
    (second,) = policy.evaluate(step(["a", "b"]), model_version="v1", window=window_at(2), at_ms=T0_MS + 2 * MINUTE_MS)
    assert second.evidence["new_subjects"] == ["feature.b"]


@settings(max_examples=50, deadline=None)
@given(names=st.lists(st.sampled_from(["accuracy", "feature.a.psi", "feature.a.ks", "feature.b.psi", "prediction.psi",
                                       "detector.adwin", "feature.[x].psi"]), unique=True),
       pattern=st.sampled_from(["feature.*", "feature.*.psi", "*.psi", "detector.*", "feature.?.ks", "feature.[ab].*"]))
def test_matching_names_are_the_glob_matches_in_order(names, pattern):
    import fnmatch

    from retrain_trigger.policy import _matching_names
    expected = tuple(name for name in names if fnmatch.fnmatchcase(name, pattern))
    assert _matching_names(pattern, tuple(names)) == expected
    assert _matching_names(pattern, tuple(names)) == expected  # and again, from the cache


@settings(max_examples=100, deadline=None)
@given(stats=st.lists(st.tuples(st.booleans(), st.integers(0, 20)), max_size=12), min_samples=st.integers(0, 15),
       at_least=st.none() | st.integers(1, 5), pattern=st.sampled_from(["feature.*", "feature.*.psi"]))
def test_a_fired_glob_is_judged_as_each_statistic_judged_one_by_one(stats, min_samples, at_least, pattern):
    from retrain_trigger.policy import Verdict, _judge_condition, _judge_one, _matching
    (rule,) = load_rules([{"name": "drift", "conditions": [
        {"statistic": pattern, "fired": True, **({"at_least": at_least} if at_least else {})}]}], "models[0].rules")
    condition = rule.conditions[0]
    observations = {f"feature.f{i}.{'psi' if i % 2 else 'ks'}": Observation(value=0.1, n=n, fired=fired)
                    for i, (fired, n) in enumerate(stats)}
    verdicts = [_judge_one(condition, o, min_samples, False) for _, o in _matching(condition, observations)]
    breaching, unknown, needed = verdicts.count(Verdict.BREACH), verdicts.count(Verdict.UNKNOWN), at_least or 1
    expected = (Verdict.UNKNOWN if not verdicts else Verdict.BREACH if breaching >= needed
                else Verdict.OK if breaching + unknown < needed else Verdict.UNKNOWN)
    assert _judge_condition(condition, observations, min_samples, False) is expected


@settings(max_examples=100, deadline=None)
@given(stats=st.lists(st.tuples(st.booleans(), st.integers(0, 20), st.floats(0, 1)), max_size=12),
       min_samples=st.integers(0, 15), pattern=st.sampled_from(["feature.*", "feature.*.psi"]))
def test_a_fired_globs_breaching_matches_are_those_judged_breaching_one_by_one(stats, min_samples, pattern):
    from retrain_trigger.policy import Verdict, _breaching_matches, _drift_rank, _judge_one, _matching
    (rule,) = load_rules([{"name": "drift", "conditions": [{"statistic": pattern, "fired": True}]}], "models[0].rules")
    condition = rule.conditions[0]
    observations = {f"feature.f{i}.{'psi' if i % 2 else 'ks'}": Observation(value=0.1, n=n, fired=fired, p_value=p)
                    for i, (fired, n, p) in enumerate(stats)}
    expected = [(name, o) for name, o in _matching(condition, observations)
                if _judge_one(condition, o, min_samples, False) is Verdict.BREACH]
    assert _breaching_matches(condition, observations, min_samples, ranked=False) == expected
    assert _breaching_matches(condition, observations, min_samples) == sorted(expected, key=lambda m: _drift_rank(m[1]))


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(step_strategy, min_size=1, max_size=25))
def test_take_held_is_what_suppressed_grew_by_at_each_point(steps):
    """The breaches held back since the last take_held, by (rule, reason), are the growth of
    ``suppressed`` (a rearm level, min_samples and a cooldown all hold breaches back here)."""
    policy = make_policy(*RICH_RULES)
    for index, step in enumerate(steps):
        before = policy.suppressed
        policy.evaluate(step, model_version="v1", window=window_at(index), at_ms=T0_MS + index * MINUTE_MS)
        grown = {(rule, reason): count - before[rule][reason]
                 for rule, reasons in policy.suppressed.items() for reason, count in reasons.items()
                 if count != before[rule][reason]}
        assert policy.take_held() == grown
    assert policy.take_held() == {}
