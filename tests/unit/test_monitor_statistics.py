"""The Monitor's statistics from config: drift per feature, change detectors, event-time windows."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from streams.core.codecs import Label, Prediction
from streams.core.config import ConfigError, parse_config
from streams.core.monitor import Monitor, Source
from streams.core.statistics import ModelStatistics

T0 = 1_700_000_000_000


def config(**model):
    return parse_config({"kafka": {"bootstrap.servers": "unused:9092"},
                         "models": [{"id": "m", "label_ttl_seconds": 3600, **model}]})


DRIFT = config(
    features={"numeric": ["age", "income"], "categorical": ["plan"]},
    evaluate_every=100,
    drift={"numeric": ["ks", "psi"], "categorical": ["chi2", "psi"], "prediction": ["psi"],
           "reference_size": 500, "window": 500, "params": {"ks": {"exact": True}}},
    detectors=[{"kind": "adwin", "delta": 0.002}],
    rules=[{"name": "age-drift", "conditions": [{"statistic": "feature.age.ks", "fired": True}]},
           {"name": "any-two", "conditions": [{"statistic": "feature.*.psi", "op": ">", "threshold": 0.2,
                                                "at_least": 2}]},
           {"name": "errors", "conditions": [{"statistic": "detector.adwin", "fired": True}]}],
)


def drifting_stream(n: int, shift_at: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        shifted = i >= shift_at
        age = float(rng.normal(40 + (15 if shifted else 0), 8))
        income = float(rng.normal(50, 10))
        plan = str(rng.choice(["free", "pro", "team"], p=[0.2, 0.3, 0.5] if shifted else [0.6, 0.3, 0.1]))
        score = float(rng.uniform(0.5, 1.0) if shifted else rng.uniform(0.0, 1.0))
        correct = rng.random() < (0.55 if shifted else 0.95)
        pid = f"p{i}"
        events.append(Prediction(prediction_id=pid, model_id="m", timestamp=T0 + i * 1000, prediction=1,
                                 score=score, features={"age": age, "income": income, "plan": plan},
                                 model_version="v1"))
        events.append(Label(prediction_id=pid, model_id="m", label=1 if correct else 0, timestamp=T0 + i * 1000 + 1))
    return events


def feed(monitor, events, offset=0):
    return monitor.process((e, Source("labels" if isinstance(e, Label) else "predictions", 0, offset + k))
                           for k, e in enumerate(events))


def with_topic_offsets(events):
    """(event, Source) with each topic's own offsets, as Kafka numbers them."""
    next_offset = {"predictions": 0, "labels": 0}
    for event in events:
        topic = "labels" if isinstance(event, Label) else "predictions"
        yield event, Source(topic, 0, next_offset[topic])
        next_offset[topic] += 1


def as_json(triggers):
    return [json.loads(json.dumps(t, default=lambda s: {f: getattr(s, f) for f in s.__struct_fields__}))
            for t in triggers]


def test_drift_statistics_match_scipy_on_the_same_windows():
    monitor = Monitor(DRIFT)
    events = drifting_stream(1500, shift_at=1000)
    feed(monitor, events)
    obs = monitor.models["m"].observations()
    ages = [e.features["age"] for e in events if isinstance(e, Prediction)]
    expected = stats.ks_2samp(ages[:500], ages[1000:1500])
    assert obs["feature.age.ks"].value == pytest.approx(expected.statistic, abs=1e-12)
    assert obs["feature.age.ks"].p_value == pytest.approx(expected.pvalue, abs=1e-9)
    assert obs["feature.age.ks"].fired
    assert not obs["feature.income.ks"].fired
    assert obs["feature.plan.chi2"].fired and obs["feature.plan.chi2"].p_value < 1e-6
    assert obs["prediction.psi"].value > 0.2


def test_drift_rules_fire_once_each_with_evidence():
    triggers = feed(Monitor(DRIFT), drifting_stream(2000, shift_at=1000))
    by_rule = {t.rule: t for t in triggers}
    assert set(by_rule) == {"age-drift", "any-two", "errors"}
    assert len(triggers) == 3
    assert by_rule["age-drift"].evidence["p_value"] < 0.01
    top = {(f["feature"], f["kind"]) for f in by_rule["any-two"].evidence["top_features"]}
    assert {("age", "psi"), ("plan", "psi")} <= top
    # Drift is seen from predictions alone, after the shift and not before it.
    assert by_rule["age-drift"].triggered_at > "2023-11-14T22:30:00"


def test_no_trigger_on_a_null_stream():
    assert feed(Monitor(DRIFT), drifting_stream(3000, shift_at=10**9, seed=3)) == []


def test_bonferroni_correction_is_stricter_than_none():
    def alarms(correction):
        cfg = config(features={"numeric": [f"f{i}" for i in range(20)]}, evaluate_every=100,
                     drift={"numeric": ["ks"], "prediction": [], "reference_size": 300, "window": 300,
                            "correction": correction, "alpha": 0.05, "false_alarm_every": 0})
        monitor = Monitor(cfg)
        rng = np.random.default_rng(1)
        events = [Prediction(prediction_id=f"p{i}", model_id="m", timestamp=T0 + i, prediction=1,
                             features={f"f{j}": float(v) for j, v in enumerate(rng.normal(size=20))})
                  for i in range(600)]
        feed(monitor, events)
        return sum(o.fired for k, o in monitor.models["m"].observations().items() if k.startswith("feature."))

    assert alarms("bonferroni") <= alarms("bh") <= alarms("none")
    assert alarms("bonferroni") == 0


def test_event_time_windows_close_with_grace_and_count_late_labels():
    cfg = config(window={"kind": "tumbling", "size_seconds": 10, "grace_seconds": 5},
                 rules=[{"name": "floor", "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.6}]}])
    monitor = Monitor(cfg)

    def pair(i, t_s, correct):
        return [Prediction(prediction_id=f"p{i}", model_id="m", timestamp=T0 + t_s * 1000, prediction=1),
                Label(prediction_id=f"p{i}", model_id="m", label=1 if correct else 0, timestamp=T0 + t_s * 1000)]

    # window [0, 10) s: 2 right, 2 wrong -> 0.5 < 0.6; it closes when the watermark passes 10 + 5 s.
    assert feed(monitor, pair(0, 1, True) + pair(1, 2, False) + pair(2, 3, True) + pair(3, 4, False)) == []
    assert feed(monitor, pair(4, 14, True)) == []          # watermark 14 - 5 = 9: still open
    triggers = feed(monitor, pair(5, 16, True))             # 16 - 5 = 11 >= 10: closes
    assert [(t.value, t.window.count) for t in triggers] == [(0.5, 4)]
    assert triggers[0].window.start.endswith("22:13:20.000Z") and triggers[0].window.end.endswith("22:13:30.000Z")
    feed(monitor, pair(6, 5, True))                         # belongs to the closed window: late
    assert monitor.models["m"].counters.late_labels == 1


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 3999), max_size=6, unique=True), split=st.integers(1, 3999))
def test_with_drift_any_batching_and_any_checkpoint_give_the_same_triggers(cuts, split):
    events = drifting_stream(2000, shift_at=1000)
    whole = as_json(feed(Monitor(DRIFT), events))
    monitor, got, start = Monitor(DRIFT), [], 0
    for cut in sorted(set(cuts) | {split}) + [len(events)]:
        got += feed(monitor, events[start:cut], offset=start)
        start = cut
        if cut == split:  # checkpoint and restore here, as the engine does on restart
            restored = Monitor(DRIFT)
            restored.restore(json.loads(json.dumps(monitor.state())))
            monitor = restored
    assert as_json(got) == whole


# Only the accuracy rule reads a statistic at its evaluation points: the drift and change
# detectors are fed lazily (when a trigger's evidence or the end of a batch reads them), so
# their values must still not depend on where the batches were cut.
ACCURACY_ONLY = config(
    features={"numeric": ["age", "income"], "categorical": ["plan"]},
    evaluate_every=50,
    drift={"numeric": ["ks", "psi"], "categorical": ["chi2"], "prediction": ["psi"],
           "reference_size": 300, "window": 300},
    detectors=[{"kind": "adwin"}, {"kind": "page_hinkley"}],
    rules=[{"name": "floor", "min_samples": 100, "cooldown_seconds": 60,
            "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.8}]}],
)


@given(cuts=st.lists(st.integers(1, 2399), max_size=8, unique=True))
@settings(max_examples=30, deadline=None)
def test_lazy_detectors_give_the_same_evidence_and_statistics_for_any_batching(cuts):
    events = drifting_stream(1200, shift_at=600, seed=3)
    whole_monitor = Monitor(ACCURACY_ONLY)
    whole = as_json(feed(whole_monitor, events))
    assert whole and all(t["evidence"]["top_features"] for t in whole)
    monitor, got, start = Monitor(ACCURACY_ONLY), [], 0
    for cut in sorted(cuts) + [len(events)]:
        got += feed(monitor, events[start:cut], offset=start)
        start = cut
    assert as_json(got) == whole
    assert dict(monitor.models["m"].observations()) == dict(whole_monitor.models["m"].observations())
    assert monitor.models["m"].counters.change_detections == whole_monitor.models["m"].counters.change_detections


@pytest.mark.parametrize("model, message", [
    ({"metrics": ["rmse"]}, "models[0]: metrics[0]: 'rmse' is not a binary metric"),
    ({"detectors": [{"kind": "psi"}]}, "models[0]: detectors[0].kind: 'psi' is not a change detector"),
    ({"detectors": [{"kind": "adwin", "delta": "x"}]}, "models[0]: detectors[0]: adwin:"),
    ({"features": {"numeric": ["a"]}, "drift": {"numeric": ["adwin"]}},
     "models[0]: drift.numeric: 'adwin' is not a drift statistic"),
    ({"features": {"categorical": ["a"]}, "drift": {"categorical": ["ks"]}}, "models[0]: drift.categorical: ks"),
    ({"drift": {"false_alarm_every": 0, "alpha": 2}}, "models[0].drift.alpha: must be in (0, 1)"),
    ({"drift": {"reference_file": "nope.json"}}, "models[0].drift.reference_file: "),
    ({"window": {"kind": "hopping", "hop_seconds": 0}}, "models[0].window.hop_seconds"),
])
def test_bad_statistics_config_names_the_key(model, message):
    with pytest.raises(ConfigError) as info:
        parse_config({"kafka": {"bootstrap.servers": "b:1"}, "models": [{"id": "m", **model}]}, "c.toml")
    assert message in str(info.value), str(info.value)


def test_reference_file_fixes_the_reference(tmp_path):
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({"age": list(np.random.default_rng(0).normal(40, 8, 1000))}))
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text('[kafka]\n"bootstrap.servers" = "b:1"\n[[models]]\nid = "m"\n'
                        'features = { numeric = ["age"] }\n'
                        'drift = { numeric = ["ks"], prediction = [], reference_file = "reference.json", window = 200 }\n')
    from streams.core.config import load_config

    monitor = Monitor(load_config(cfg_path))
    events = [Prediction(prediction_id=f"p{i}", model_id="m", timestamp=T0 + i, prediction=1,
                         features={"age": 70.0 + i % 5}) for i in range(200)]
    feed(monitor, events)
    assert monitor.models["m"].observations()["feature.age.ks"].fired  # no "first N" warm-up needed


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_any_interleaving_of_predictions_and_labels_gives_the_same_triggers(seed):
    """Kafka interleaves the two input topics as it likes: drift rules follow the predictions'
    order, the other rules the labelled pairs' order (pairs join in the order both topics
    share), so any merge of the two ordered streams gives the same triggers."""
    events = drifting_stream(2000, shift_at=1000)
    predictions = [e for e in events if isinstance(e, Prediction)]
    labels = [e for e in events if isinstance(e, Label)]
    rng = np.random.default_rng(seed)
    take_label = rng.permutation([True] * len(labels) + [False] * len(predictions))
    merged, p, q = [], iter(predictions), iter(labels)
    for is_label in take_label:
        merged.append(next(q) if is_label else next(p))
    whole = as_json(Monitor(DRIFT).process(with_topic_offsets(events)))
    shuffled = as_json(Monitor(DRIFT).process(with_topic_offsets(merged)))
    assert {t["rule"] for t in whole} == {"age-drift", "any-two", "errors"}
    # The decision and its window are the same; the evidence of a label-clock trigger lists the
    # drift of the moment as context, which does depend on the interleaving.
    decision = ("trigger_id", "rule", "metric", "value", "threshold", "triggered_at", "model_version")
    key = lambda ts: sorted(([t[k] for k in decision], t["window"]) for t in ts)  # noqa: E731
    assert key(shuffled) == key(whole)


BINNED = config(
    features={"numeric": ["age", "income"], "categorical": ["plan"]},
    evaluate_every=100,
    drift={"numeric": ["ks", "psi", "wasserstein"], "categorical": ["chi2", "psi"], "prediction": ["psi"],
           "reference_size": 300, "window": 400},
    rules=[{"name": "any-two", "conditions": [{"statistic": "feature.*.psi", "op": ">", "threshold": 0.2,
                                                "at_least": 2}]}],
)


@given(cuts=st.lists(st.integers(1, 1999), max_size=8, unique=True))
@settings(max_examples=25, deadline=None)
def test_timeline_values_are_the_observations_statistics_and_counts(cuts):
    """``values`` (the backtest's timeline) measures the drift detectors without judging them
    when no rule has read them since their last update; each value and count is still the one
    :meth:`observations` reports, at every point, between evaluation points or on one."""
    events = drifting_stream(1000, shift_at=500, seed=5)
    monitor, start = Monitor(BINNED), 0
    for cut in sorted(cuts) + [len(events)]:
        feed(monitor, events[start:cut], offset=start)
        start = cut
        stats_ = monitor.models["m"].stats
        values = stats_.values()
        expected = {name: (o.value, o.n) for name, o in stats_.observations().items()}
        assert repr(values) == repr(expected)  # repr: nan equals nan


BATCHED = config(
    features={"numeric": ["a", "b", "c"], "categorical": ["plan"]},
    evaluate_every=10,
    drift={"numeric": ["psi", "ks"], "categorical": ["chi2", "psi"], "prediction": ["psi"],
           "reference_size": 40, "window": 60},
    rules=[{"name": "drift", "conditions": [{"statistic": "feature.*", "fired": True}]}],
)


#: BATCHED with the budget off: the feature tests' alarms go through a BH correction
BATCHED_CORRECTED = config(
    features={"numeric": ["a", "b", "c"], "categorical": ["plan"]},
    evaluate_every=10,
    drift={"numeric": ["psi", "ks"], "categorical": ["chi2", "psi"], "prediction": ["psi"],
           "reference_size": 40, "window": 60, "false_alarm_every": 0, "correction": "bh", "alpha": 0.2},
    rules=[{"name": "drift", "conditions": [{"statistic": "feature.*", "fired": True}]}],
)


def read_drift(stats):
    """Every drift observation, all fields (p-values computed), as text: nan equals nan."""
    return repr({name: observation for name, observation in stats.drift_observations().items()})


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(0, 80), min_size=1, max_size=6),
       holes=st.sampled_from([0.0, 0.01, 0.2]), restore_after=st.integers(0, 6),
       corrected=st.booleans())
def test_a_batch_read_at_its_points_equals_feeding_it_point_by_point(seed, sizes, holes, restore_after, corrected):
    """The statistics of a batch handed over whole with its evaluation points (the numeric
    detectors measured at all of them together) equal, at every point and at positions read
    though not planned, those of the batch fed point by point; and the state after it is the
    same; so are the timeline's values read there. Windows slide across batch borders,
    references fill mid-batch, some features or scores are missing, nan or None (those batches
    go part by part, or the prediction alone), categorical features go part by part always, the
    statistics are restored mid-stream, and the feature tests alarm under the budget or after a
    multiple-testing correction."""
    rng = np.random.default_rng(seed)
    model = (BATCHED_CORRECTED if corrected else BATCHED).models[0]
    batched, by_point = ModelStatistics(model), ModelStatistics(model)
    for b, size in enumerate(sizes):
        values = rng.normal(0.4 * b, 1.0, size=(size, 3))
        rows = [{"a": float(x), "b": float(y), "c": int(10 * z), "plan": str(rng.choice(["free", "pro", "team"]))}
                for x, y, z in values]
        for row in rows:
            if rng.random() < holes:
                row[str(rng.choice(["a", "b", "c", "plan"]))] = rng.choice([None, float("nan"), "x"])
            if rng.random() < holes:
                del row[str(rng.choice(["a", "c"]))]
        scores = [None if rng.random() < holes else score for score in rng.uniform(0, 1, size).tolist()]
        points = sorted(set(rng.integers(1, size + 1, rng.integers(0, 6)).tolist())) if size else []
        unplanned = sorted(set(rng.integers(1, size + 1, rng.integers(0, 3)).tolist()) - set(points)) if size else []
        reads = sorted(points + unplanned)
        expected, start = [], 0
        for read in reads:
            by_point.update_predictions(rows[start:read], scores[start:read])
            expected.append((read_drift(by_point), repr(by_point.values())))
            start = read
        by_point.update_predictions(rows[start:], scores[start:])
        by_point.catch_up()
        batched.update_predictions(rows, scores, points)
        got = []
        for read in reads:
            batched.seek(read)
            got.append((read_drift(batched), repr(batched.values())))
        batched.catch_up()
        assert got == expected
        assert json.dumps(batched.state()) == json.dumps(by_point.state())
        assert batched.values() == by_point.values() or repr(batched.values()) == repr(by_point.values())
        if b == restore_after:
            batched = ModelStatistics(model)
            batched.restore(json.loads(json.dumps(by_point.state())))


def test_the_prediction_drift_is_measured_with_the_features_inside_a_batch():
    """Read at the points of a batch of finite numeric features and scores, the prediction drift
    detector is measured with the numeric feature detectors (fed nothing until the batch's end),
    and reads as the detector fed up to each point does; so does every statistic of the
    timeline, there and at the batch's end."""
    model = NUMERIC[False].models[0]
    batched, by_point = ModelStatistics(model), ModelStatistics(model)
    rng = np.random.default_rng(3)
    for b in range(4):
        rows = [{"a": float(x), "b": float(y), "c": float(z)} for x, y, z in rng.normal(0.5 * b, 1.0, size=(50, 3))]
        scores = rng.uniform(0.1 * b, 1.0, 50).tolist()
        batched.update_predictions(rows, scores, [10, 30])
        detector = batched.prediction_drift["psi"]
        fed = np.asarray(detector.current_counts()).tolist() if b >= 1 else None
        start = 0
        for point in (10, 30):
            batched.seek(point)
            by_point.update_predictions(rows[start:point], scores[start:point])
            start = point
            assert repr(batched.values()) == repr(by_point.values())
            assert read_drift(batched) == read_drift(by_point)
            if b >= 1:  # reference complete: the Foresight measures it
                assert np.asarray(detector.current_counts()).tolist() == fed
        batched.catch_up()
        by_point.update_predictions(rows[start:], scores[start:])
        by_point.catch_up()
        assert json.dumps(batched.state()) == json.dumps(by_point.state())
        assert repr(batched.values()) == repr(by_point.values())  # at the end: as the Foresight measured it


def test_batches_read_at_points_or_fed_whole_keep_one_detector_layout():
    """A batch read at its points (a Foresight measures it) and one fed whole lay the numeric
    feature and prediction drift detectors out alike: the layout kept from one batch to the
    next is not made again as batches of both sorts alternate."""
    stats = ModelStatistics(NUMERIC[False].models[0])
    rng = np.random.default_rng(4)
    layouts = []
    for b in range(6):
        rows = [{"a": float(x), "b": float(y), "c": float(z)} for x, y, z in rng.normal(0.0, 1.0, size=(50, 3))]
        points = [10, 30] if b % 2 else []
        stats.update_predictions(rows, rng.uniform(0, 1, 50).tolist(), points)
        for point in points:
            stats.seek(point)
            read_drift(stats)
        stats.catch_up()
        layouts.append(stats._numeric_plan()[2][0]._foresight_layout)
    assert layouts[2] is not None and all(layout is layouts[2] for layout in layouts[2:])


def fired_of(observations, names, min_samples):
    """What a rule on ``fired`` reads of the named observations: (how many fired with at least
    ``min_samples`` samples, how many have fewer), and the names of those that fired."""
    read = [observations[name] for name in names]
    fired = [name for name, o in zip(names, read) if o.n >= min_samples and o.fired]
    return (len(fired), sum(o.n < min_samples for o in read)), fired


#: numeric features only: every feature group can be measured by a Foresight (with a
#: correction, the tests' group cannot)
NUMERIC = {corrected: config(features={"numeric": ["a", "b", "c"]}, evaluate_every=10,
                             drift={"numeric": ["psi", "ks"], "prediction": ["psi"], "reference_size": 40,
                                    "window": 60, "params": {"psi": {"min_samples": 30}},
                                    **({"false_alarm_every": 0, "correction": "bh", "alpha": 0.2} if corrected
                                       else {})})
           for corrected in (False, True)}


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(0, 80), min_size=1, max_size=5),
       corrected=st.booleans(), numeric=st.booleans(), min_samples=st.sampled_from([0, 45, 60]),
       holes=st.sampled_from([0.0, 0.05]))
def test_fired_counts_and_names_are_those_the_observations_give(seed, sizes, corrected, numeric, min_samples, holes):
    """What the drift observations answer of whether statistics fired without making them (a
    rule on ``feature.*`` fired, at every evaluation point) is what the observations say, for
    whole groups, parts of groups and groups mixed with others; and reading it leaves the
    statistics as reading the observations does."""
    rng = np.random.default_rng(seed)
    model = (NUMERIC[corrected] if numeric else BATCHED_CORRECTED if corrected else BATCHED).models[0]
    fast, slow = ModelStatistics(model), ModelStatistics(model)
    names = list(slow.drift_observations())
    features = tuple(name for name in names if name.startswith("feature."))
    name_sets = [features, tuple(n for n in features if n.endswith(".psi")),
                 tuple(n for n in features if n.endswith(".ks")), features[:2], (*features, "prediction.psi"),
                 tuple(n for n in features if n.startswith(("feature.a.", "feature.b.", "feature.c.")))]
    for b, size in enumerate(sizes):
        values = rng.normal(0.5 * b, 1.0, size=(size, 3))
        rows = [{"a": float(x), "b": float(y), "c": int(10 * z), "plan": str(rng.choice(["free", "pro"]))}
                for x, y, z in values]
        for row in rows:
            if rng.random() < holes:
                row["a"] = None
        scores = rng.uniform(0, 1, size).tolist()
        points = sorted(set(rng.integers(1, size + 1, rng.integers(0, 6)).tolist())) if size else []
        fast.update_predictions(rows, scores, points)
        slow.update_predictions(rows, scores, points)
        for point in points:
            fast.seek(point)
            slow.seek(point)
            quick, read = fast.drift_observations(), slow.drift_observations()
            for names in name_sets:
                counted, named = quick.fired_counts(names, min_samples), quick.fired_names(names, min_samples)
                expected_counts, expected_names = fired_of(read, names, min_samples)
                assert counted is None or counted == expected_counts
                assert named is None or named == expected_names
            assert repr(dict(quick.items())) == repr(dict(read.items()))
        fast.catch_up()
        slow.catch_up()
        assert json.dumps(fast.state()) == json.dumps(slow.state())


def test_a_feature_glob_fired_reads_no_observation_where_a_foresight_measures():
    """At the evaluation points of a batch of numeric features, a rule on ``feature.*`` fired is
    judged without making an observation (no group loaded), and fires as one reading them."""
    from retrain_trigger.policy import TriggerPolicy
    from retrain_trigger.rules import load_rules
    model = config(features={"numeric": ["a", "b"]}, evaluate_every=10,
                   drift={"numeric": ["psi", "ks"], "prediction": [], "reference_size": 40, "window": 100},
                   rules=[{"name": "drift", "conditions": [{"statistic": "feature.*", "fired": True}]}]).models[0]
    rules = load_rules(model.rules, "rules")
    stats, policies = ModelStatistics(model), (TriggerPolicy("m", rules), TriggerPolicy("m", rules))
    rng = np.random.default_rng(5)
    triggers: tuple[list, list] = ([], [])
    for b in range(9):
        rows = [{"a": float(x), "b": float(y)} for x, y in rng.normal(2.0 * (b >= 5), 1.0, size=(30, 2))]
        stats.update_predictions(rows, [None] * 30, [10, 20])
        for point in (10, 20):
            stats.seek(point)
            quick = stats.drift_observations()
            triggers[0].extend(policies[0].evaluate(quick, model_version=None, window=lambda: None,
                                                    at_ms=b * 100 + point))
            if b >= 2 and not triggers[0]:  # references complete: a Foresight measured, no evidence read
                assert not quick._loaded
            read = dict(stats.drift_observations().items())
            triggers[1].extend(policies[1].evaluate(read, model_version=None, window=lambda: None,
                                                    at_ms=b * 100 + point))
        stats.catch_up()
    assert triggers[0] and as_json(triggers[0]) == as_json(triggers[1])
    assert policies[0].state() == policies[1].state()



def test_a_read_between_batches_leaves_the_next_batch_its_foresight():
    """Every statistic read with nothing queued (the exporter refreshing its gauges between
    batches) does not keep the next batch from its Foresight: its points are judged without
    making an observation, as when nothing was read between."""
    model = config(features={"numeric": ["a", "b"]}, evaluate_every=10,
                   drift={"numeric": ["psi", "ks"], "prediction": [], "reference_size": 40, "window": 100}).models[0]
    stats = ModelStatistics(model)
    names = tuple(name for name in stats.drift_observations() if name.startswith("feature."))
    rng = np.random.default_rng(3)
    for b in range(6):
        dict(stats.observations().items())  # what the exporter reads between batches
        rows = [{"a": float(x), "b": float(y)} for x, y in rng.normal(0.0, 1.0, size=(30, 2))]
        stats.update_predictions(rows, [None] * 30, [10, 20])
        stats.seek(10)
        quick = stats.drift_observations()
        counted = quick.fired_counts(names, 0)
        if b >= 2:  # references complete
            assert counted is not None and not quick._loaded
        stats.catch_up()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), min_samples=st.sampled_from([0, 45, 57, 58]), corrected=st.booleans(),
       glob=st.sampled_from(["feature.*", "feature.a.*", "feature.*.psi", "feature.*.*", "feature.?.ks",
                             "feature.[ab].psi", "prediction.*"]))
def test_a_fired_glob_rule_triggers_as_on_the_observations_read(seed, min_samples, corrected, glob):
    """A rule on a glob fired, over the model's observations and its drift observations (whole
    groups, parts of one, other groups; min_samples 0, below and above the windows' n; tests
    corrected or not), gives the triggers and rule state it gives over the observations read."""
    from retrain_trigger.policy import TriggerPolicy
    from retrain_trigger.rules import load_rules
    model = config(features={"numeric": ["a", "b"]}, evaluate_every=10,
                   drift={"numeric": ["psi", "ks"], "prediction": ["psi"], "reference_size": 40, "window": 60,
                          "params": {"psi": {"min_samples": 30}, "ks": {"min_samples": 30}},
                          **({"false_alarm_every": 0, "correction": "bh", "alpha": 0.2} if corrected else {})},
                   rules=[{"name": "r", "min_samples": min_samples,
                           "conditions": [{"statistic": glob, "fired": True}]}]).models[0]
    rules = load_rules(model.rules, "rules")
    stats, policies = ModelStatistics(model), (TriggerPolicy("m", rules), TriggerPolicy("m", rules))
    rng = np.random.default_rng(seed)
    triggers: tuple[list, list] = ([], [])
    for b in range(8):
        rows = [{"a": float(x), "b": float(y)}
                for x, y in rng.normal(3.0 * (b >= 4) * rng.random(), 1.0, size=(30, 2))]
        stats.update_predictions(rows, rng.uniform(0, 1, 30).tolist(), [10, 20, 30])
        for point in (10, 20, 30):
            stats.seek(point)
            for observe in (stats.observations, stats.drift_observations):
                for policy, found, observations in zip(policies, triggers, (observe(), dict(observe().items()))):
                    found.extend(policy.evaluate(observations, model_version=None, window=lambda: None,
                                                 at_ms=b * 100 + point))
        stats.catch_up()
    assert as_json(triggers[0]) == as_json(triggers[1])
    assert policies[0].state() == policies[1].state()


PAIRS = {
    "ids": config(metrics=["accuracy", "f1_macro"], window={"kind": "count", "size": 40},
                  detectors=[{"kind": "adwin"}]),
    "scored": config(metrics=["accuracy", "log_loss"], window={"kind": "count", "size": 40}),
    "accuracy": config(metrics=["accuracy"], window={"kind": "count", "size": 40}, detectors=[{"kind": "adwin"}]),
}


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(sorted(PAIRS)),
       labels=st.sampled_from([[1, 0], [7, 2, 0, 1, 2**40], ["b", "a"]]),
       segments=st.lists(st.integers(1, 30), min_size=1, max_size=12), restore_after=st.integers(0, 12))
def test_pairs_read_at_some_points_equal_pairs_fed_segment_by_segment(seed, kind, labels, segments, restore_after):
    """Labelled pairs queued for the metrics and fed when read (together when their class ids
    are all known), or told ahead for a batch of segments (pairs_ahead), give, at every read,
    the performance of statistics fed each segment on its own, and the same state after every
    batch; new labels arrive mid-stream (coded by segment), windows wrap, and the statistics are
    restored mid-stream."""
    rng = np.random.default_rng(seed)
    model = PAIRS[kind].models[0]
    queued, by_segment = ModelStatistics(model), ModelStatistics(model)
    pairs = []
    for index, size in enumerate(segments):
        # more labels later on, out of order, each first predicted then true
        known = labels[: 1 + index * len(labels) // len(segments)]
        new = labels[min(len(known), len(labels) - 1)]
        y_true = [known[i] for i in rng.integers(0, len(known), size)]
        y_pred = [new] + [known[i] if rng.random() < 0.7 else new for i in rng.integers(0, len(known), size - 1)]
        pairs.append((y_true, y_pred))
    ends = {index for index in range(len(segments)) if index == restore_after or rng.random() < 0.3}
    for index, (size, (y_true, y_pred)) in enumerate(zip(segments, pairs)):
        if (index == 0 or index - 1 in ends) and rng.random() < 0.7:  # a batch starts: told ahead
            batch = pairs[index:min([end for end in ends if end >= index], default=len(pairs) - 1) + 1]
            queued.pairs_ahead([t for y, _ in batch for t in y], [p for _, y in batch for p in y])
        scores = rng.uniform(0, 1, size).tolist()
        times = [T0 + 1000 * (index * 100 + i) for i in range(size)]
        by_segment.update_pairs(y_true, y_pred, scores, times)
        expected = by_segment.performance()
        queued.update_pairs(y_true, y_pred, scores, times)
        if rng.random() < 0.5:
            assert repr(queued.performance()) == repr(expected)
        if index in ends:  # the end of a batch: a checkpoint
            by_segment.catch_up()
            queued.catch_up()
            assert json.dumps(queued.state()) == json.dumps(by_segment.state())
        if index == restore_after:
            queued = ModelStatistics(model)
            queued.restore(json.loads(json.dumps(by_segment.state())))
    by_segment.catch_up()
    queued.catch_up()
    assert repr(queued.performance()) == repr(by_segment.performance())
    assert json.dumps(queued.state()) == json.dumps(by_segment.state())


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       batches=st.lists(st.lists(st.integers(1, 25), min_size=1, max_size=6), min_size=1, max_size=6),
       new_label=st.sampled_from([None, 2, True]))
def test_accuracy_told_ahead_of_a_batch_is_accuracy_fed_segment_by_segment(seed, batches, new_label):
    """The accuracy read after each segment of a batch told ahead (the Monitor's usual batch:
    class ids known, a wrapping window) is that of statistics fed segment by segment, and so
    is the state after the batch; a label not coded yet (or a bool) in a batch reads it the
    usual way."""
    rng = np.random.default_rng(seed)
    model = PAIRS["accuracy"].models[0]
    ahead, by_segment = ModelStatistics(model), ModelStatistics(model)
    for stats in (ahead, by_segment):  # both class ids coded
        stats.update_pairs([0, 1], [1, 0], None, [T0, T0])
        stats.catch_up()
    for b, sizes in enumerate(batches):
        parts = [([int(v) for v in rng.integers(0, 2, size)], [int(v) for v in rng.integers(0, 2, size)])
                 for size in sizes]
        if new_label is not None and b == len(batches) // 2:
            parts[-1][1][-1] = new_label
        ahead.pairs_ahead([t for y, _ in parts for t in y], [p for _, y in parts for p in y])
        for y_true, y_pred in parts:
            for stats in (ahead, by_segment):
                stats.update_pairs(y_true, y_pred, None, [T0] * len(y_true))
            assert repr(ahead.performance()) == repr(by_segment.performance())
        ahead.catch_up()
        by_segment.catch_up()
        assert json.dumps(ahead.state()) == json.dumps(by_segment.state())


@settings(max_examples=100, deadline=None)
@given(names=st.lists(st.sampled_from(["accuracy", "feature.a.psi", "feature.b.psi", "feature.a.ks", "detector.adwin",
                                       "missing"]), max_size=8),
       read_first=st.lists(st.sampled_from(["accuracy", "feature.a.psi", "feature.a.ks", "detector.adwin"]), max_size=2))
def test_observations_values_of_are_the_items_read_one_by_one_with_the_same_groups_loaded(names, read_first):
    from retrain_trigger.policy import Observation
    from streams.core.statistics import _Observations
    groups = {"feature.a.psi": "psi", "feature.b.psi": "psi", "feature.a.ks": "tests", "detector.adwin": "detector"}

    def made(read):
        loaded = []

        def load(group):
            loaded.append(group)
            return {name: Observation(value=float(len(loaded)), n=1, detector=group)
                    for name, g in groups.items() if g == group}
        observations = _Observations({"accuracy": Observation(value=0.9, n=10)}, groups, load)
        for name in read:
            observations[name]
        return observations, loaded

    one_by_one, loaded_one_by_one = made(read_first)
    together, loaded_together = made(read_first)
    try:
        expected = [one_by_one[name] for name in names]
    except KeyError:
        with pytest.raises(KeyError):
            together.values_of(names)
        return
    assert together.values_of(names) == expected
    assert loaded_together == loaded_one_by_one  # the same groups, in the same order


@pytest.mark.parametrize("model_config", [DRIFT, BATCHED, BATCHED_CORRECTED])
def test_observations_names_are_their_keys_in_order_after_a_restore_too(model_config):
    """A rule's glob matches ``names`` where the mapping offers them: they are ``tuple(obs)``."""
    model = model_config.models[0]
    stats_ = ModelStatistics(model)
    for observations in (stats_.observations(), stats_.drift_observations()):
        assert observations.names == tuple(observations)
    restored = ModelStatistics(model)
    restored.restore(json.loads(json.dumps(stats_.state())))
    for observations in (restored.observations(), restored.drift_observations()):
        assert observations.names == tuple(observations)
