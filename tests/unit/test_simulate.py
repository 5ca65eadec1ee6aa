"""The simulator: reproducible by seed, and every injected drift kind is really in the data."""
from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest
from scipy import stats

from streams.cli.main import main as cli_main
from streams.core.codecs import InvalidEvent, decode_label, decode_prediction
from streams.tools.simulate import (ModelScenario, ScenarioError, Simulation, generate, parse_delay, parse_model_spec)


def _records(sim: Simulation):
    notes = []
    return list(generate(sim, notes)), notes


def _pairs(records, model_id: str):
    """(index, prediction event, label event or None) for one model, by prediction index."""
    preds, labels = {}, {}
    for r in records:
        if r.model_id != model_id or r.kind == "malformed":
            continue
        event = msgspec.json.decode(r.value)
        (preds if r.kind == "prediction" else labels)[event["prediction_id"]] = event
    return [(int(pid.rsplit("-", 1)[1]), p, labels.get(pid)) for pid, p in preds.items()]


def _accuracy(pairs, lo: int, hi: int) -> tuple[int, int]:
    chosen = [(p["prediction"] == lab["label"]) for i, p, lab in pairs if lo <= i < hi and lab is not None]
    return sum(chosen), len(chosen)


def test_same_seed_same_bytes_other_seed_other_bytes():
    models = [parse_model_spec("id=a,generator=agrawal,drift=abrupt"),
              parse_model_spec("id=b,generator=sea,drift=covariate")]
    sim = lambda seed: Simulation(models=models, events=600, seed=seed, malformed=0.05, label_missing=0.1)
    first, notes = _records(sim(3))
    again, _ = _records(sim(3))
    other, _ = _records(sim(4))
    assert [(r.topic, r.key, r.value) for r in first] == [(r.topic, r.key, r.value) for r in again]
    assert [r.value for r in first] != [r.value for r in other]
    assert [n.model_id for n in notes] == ["a", "b"] and notes[0].at_index == 300


def test_event_time_order_labels_after_predictions_and_valid_contract():
    sim = Simulation(models=[parse_model_spec("id=m,generator=hyperplane,learner=logistic,drift=none")],
                     events=500, label_delay="uniform:0:40")
    records, _ = _records(sim)
    times = [r.time_ms for r in records]
    assert times == sorted(times)
    seen = set()
    for r in records:
        if r.kind == "prediction":
            event = decode_prediction(r.value)
            assert 0.0 <= event.score <= 1.0 and event.model_version == "v1"
            seen.add(event.prediction_id)
        else:
            assert decode_label(r.value).prediction_id in seen


def test_abrupt_concept_drift_drops_the_frozen_models_accuracy():
    sim = Simulation(models=[parse_model_spec("id=m,generator=agrawal,drift=abrupt,at=1500")], events=3000)
    pairs = _pairs(_records(sim)[0], "m")
    right_before, n_before = _accuracy(pairs, 0, 1500)
    right_after, n_after = _accuracy(pairs, 1500, 3000)
    assert right_before / n_before > 0.9 and right_after / n_after < 0.7
    table = [[right_before, n_before - right_before], [right_after, n_after - right_after]]
    assert stats.fisher_exact(table)[1] < 1e-12


def test_gradual_concept_drift_is_gradual():
    sim = Simulation(models=[parse_model_spec("id=m,generator=sea,drift=gradual,at=2000,width=1000")], events=4000)
    pairs = _pairs(_records(sim)[0], "m")
    acc = lambda lo, hi: (lambda r, n: r / n)(*_accuracy(pairs, lo, hi))
    before, middle, after = acc(0, 1200), acc(1800, 2200), acc(3000, 4000)
    assert before > middle > after
    assert before - after > 0.1


def test_covariate_shift_moves_the_chosen_feature_by_k_sigma_and_keeps_the_concept():
    sim = Simulation(models=[parse_model_spec("id=m,generator=sea,drift=covariate,at=1000,shift=x0:-1.5")],
                     events=2000)
    records, notes = _records(sim)
    pairs = _pairs(records, "m")
    x0_before = np.array([p["features"]["x0"] for i, p, _ in pairs if i < 1000])
    x0_after = np.array([p["features"]["x0"] for i, p, _ in pairs if i >= 1000])
    x1_before = np.array([p["features"]["x1"] for i, p, _ in pairs if i < 1000])
    x1_after = np.array([p["features"]["x1"] for i, p, _ in pairs if i >= 1000])
    assert stats.ks_2samp(x0_before, x0_after).pvalue < 1e-20
    assert stats.ks_2samp(x1_before, x1_after).pvalue > 1e-3  # an unshifted feature stays put
    sigma = 10 / np.sqrt(12)  # SEA inputs are uniform on [0, 10]
    assert (x0_after.mean() - x0_before.mean()) / sigma == pytest.approx(-1.5, abs=0.15)
    # P(y|x) unchanged: SEA variant 2 says y = x0 + x1 > 7, on the shifted inputs too.
    for i, p, label in pairs:
        if label is not None and i >= 1000:
            f = p["features"]
            if abs(f["x0"] + f["x1"] - 7) > 1e-3:
                assert label["label"] == int(f["x0"] + f["x1"] > 7)
    assert notes[0].kind == "covariate" and "x0" in notes[0].detail


def test_new_category_appears_only_after_the_drift():
    sim = Simulation(models=[parse_model_spec("id=m,generator=stagger,drift=new_category,at=1000,share=0.3")],
                     events=2000)
    pairs = _pairs(_records(sim)[0], "m")
    before = [p["features"]["channel"] for i, p, _ in pairs if i < 1000]
    after = [p["features"]["channel"] for i, p, _ in pairs if i >= 1000]
    assert "partner" not in before
    share = after.count("partner") / len(after)
    assert stats.binomtest(after.count("partner"), len(after), 0.3).pvalue > 1e-3, share
    assert set(before) == {"web", "app", "store"}


@pytest.mark.parametrize("spec,dist", [("exp:30", stats.expon(scale=30)), ("uniform:5:60", stats.uniform(5, 55))])
def test_label_delays_follow_the_configured_distribution(spec, dist):
    sim = Simulation(models=[ModelScenario(model_id="m", generator="sea", drift="none", train=200)],
                     events=1500, label_delay=spec, interval_ms=1000)
    records, _ = _records(sim)
    pred_ts = {}
    delays = []
    for r in records:
        event = msgspec.json.decode(r.value)
        if r.kind == "prediction":
            pred_ts[event["prediction_id"]] = event["timestamp"]
        else:
            delays.append((event["timestamp"] - pred_ts[event["prediction_id"]]) / 1000)
    assert stats.kstest(delays, dist.cdf).pvalue > 1e-3


def test_missing_labels_and_malformed_messages_in_the_configured_fractions():
    sim = Simulation(models=[ModelScenario(model_id="m", generator="sea", drift="none", train=200)],
                     events=4000, label_missing=0.2, malformed=0.05)
    records, _ = _records(sim)
    kinds = [r.kind for r in records]
    assert stats.binomtest(4000 - kinds.count("label"), 4000, 0.2).pvalue > 1e-3
    assert stats.binomtest(kinds.count("malformed"), 4000, 0.05).pvalue > 1e-3
    for r in records:
        if r.kind == "malformed":
            decode = decode_prediction if r.topic == "predictions" else decode_label
            with pytest.raises(InvalidEvent):
                decode(r.value)
            assert b"\n" not in r.value


def test_bad_specs_name_the_problem():
    with pytest.raises(ScenarioError, match="generator must be one of"):
        parse_model_spec("id=a,generator=mnist")
    with pytest.raises(ScenarioError, match="unknown key 'colour'"):
        parse_model_spec("id=a,colour=red")
    with pytest.raises(ScenarioError, match="STAGGER has none"):
        parse_model_spec("id=a,generator=stagger,drift=covariate")
    with pytest.raises(ScenarioError, match="label delay"):
        parse_delay("weibull:3")
    notes = []
    list(generate(Simulation(models=[parse_model_spec("id=a,generator=sea,at=500,train=10")], events=100), notes))
    assert "NOT REACHED in this run of 100 predictions" in notes[0].detail


def test_cli_writes_files_and_a_drift_summary(tmp_path, capsys):
    out = tmp_path / "sim"
    code = cli_main(["simulate", "--out", str(out), "--events", "400", "--no-progress", "--seed", "1",
                     "--model", "id=a,generator=sea,drift=abrupt,at=100", "--malformed", "0.05"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "a: abrupt drift at prediction 100" in printed
    assert len((out / "predictions.jsonl").read_bytes().splitlines()) >= 400
    scenario = json.loads((out / "scenario.json").read_text())
    assert scenario["drifts"][0]["at_index"] == 100 and scenario["seed"] == 1


def test_cli_without_a_destination_says_what_to_do(capsys, monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert cli_main(["simulate", "--events", "10"]) == 2
    assert "pass --bootstrap-servers, --config or --out DIR" in capsys.readouterr().err
    assert cli_main(["simulate", "--out", "x", "--model", "id=a,generator=nope"]) == 2


def test_rate_and_duration_limit_what_is_emitted(tmp_path):
    from streams.tools.simulate import FileSink, run

    sim = Simulation(models=[ModelScenario(model_id="m", generator="sea", drift="none", train=100)], events=None)
    summary = run(sim, [FileSink(tmp_path)], rate=400, duration=0.5, progress=False)
    emitted = summary.predictions + summary.labels + summary.malformed
    assert 120 <= emitted <= 205  # 400/s for 0.5 s
    assert 0.45 <= summary.seconds < 1.5
    assert len((tmp_path / "predictions.jsonl").read_bytes().splitlines()) == summary.predictions


def test_start_now_with_a_rate_keeps_event_time_in_step_with_the_wall_clock(tmp_path):
    import time

    before = time.time() * 1000
    assert cli_main(["simulate", "--out", str(tmp_path), "--events", "50", "--no-progress", "--start", "now",
                     "--rate", "1000", "--label-delay", "const:0",
                     "--model", "id=a,generator=sea,drift=none,train=50",
                     "--model", "id=b,generator=sea,drift=none,train=50"]) == 0
    stamps = sorted({json.loads(line)["timestamp"] for line in (tmp_path / "predictions.jsonl").read_text().splitlines()})
    assert stamps[1] - stamps[0] == 4  # 2 models x 2 messages per prediction at 1000 messages/s
    assert before - 1000 <= stamps[0] <= time.time() * 1000
