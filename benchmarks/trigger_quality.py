"""Trigger-level detection quality: whole configs through the backtest on generated streams with
exact truth, beside the script a user would write by hand with river and scipy.

    python benchmarks/trigger_quality.py                    # 10 seeds x 50,000 predictions per scenario
    python benchmarks/trigger_quality.py --seeds 3 --events 20000

Each stream is one binary model (accuracy 0.90) serving one prediction per second of event time,
with 10 numeric features (standard normal) and one categorical (`plan`: basic/pro/max at
50/30/20 %), a score from three of the features, and labels about a minute late (60 +- 10 s),
3 % of them before their prediction and 5 % never. The scenarios change the stream at
prediction 25,000 (the onset):

* null: nothing changes; null+malformed: the same with 1 % of the lines of each file malformed;
* accuracy-abrupt: accuracy 0.90 -> 0.72; accuracy-gradual: the same over 10,000 predictions;
* shift-0.5sd: one numeric feature (x3) moves by half a standard deviation;
* new-category: a category never seen (`enterprise`) takes 20 % of `plan`.

Systems:

* driftline: the README's configuration (drift defaults under the false-alarm budget, ADWIN on
  the errors, three rules: accuracy < 0.85, detector.adwin fired, feature.* fired; min_samples
  500 on the performance rules, one-day cooldowns), through ``load_events`` + ``Backtest``
  exactly as ``driftline backtest`` runs it;
* driftline, budget off: the configuration of a user who set thresholds by hand (KS and
  chi-squared per feature, Benjamini-Hochberg at 0.01, judged every 50 predictions);
* hand-built: river's ADWIN on the error stream as labels join, and tumbling windows of 2,000
  predictions against the first 2,000, scipy's KS per numeric feature and chi-squared on the
  categorical, Bonferroni at 0.01; each with a one-day cooldown like the rules.

Per scenario and system: streams with a false trigger (any trigger before the onset, or in a null
stream), false triggers per 1M predictions (before the onset), detection delay in predictions
from the onset to the first trigger of the kind the scenario calls for (performance rules for
accuracy scenarios, drift rules for the others), streams where it was missed, and triggers per
episode: after the onset (one drift, one episode), the most triggers any one of those rules
published, averaged over the streams where the drift was found.
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics as stats_
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from river.drift import ADWIN  # noqa: E402
from scipy import stats  # noqa: E402

from benchmarks._common import progress, table  # noqa: E402
from streams.tools.backtest import Backtest, load_events  # noqa: E402
from streams.core.config import parse_config  # noqa: E402

T0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
STEP_MS = 1000
FEATURES = [f"x{i}" for i in range(10)]
PLANS, PLAN_P = ["basic", "pro", "max"], [0.5, 0.3, 0.2]
SCENARIOS = ("null", "null+malformed", "accuracy-abrupt", "accuracy-gradual", "shift-0.5sd", "new-category")
PERFORMANCE = ("accuracy-abrupt", "accuracy-gradual")
DAY = 86400

RULES = f"""
  [[models.rules]]
  name = "accuracy-floor"
  min_samples = 500
  cooldown_seconds = {DAY}
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.85

  [[models.rules]]
  name = "error-rate-change"
  min_samples = 500
  cooldown_seconds = {DAY}
    [[models.rules.conditions]]
    statistic = "detector.adwin"
    fired = true
"""

MODEL = """
[kafka]
"bootstrap.servers" = "127.0.0.1:9"

[[models]]
id = "churn"
evaluate_every = 50
features = {{ numeric = {numeric}, categorical = ["plan"] }}
detectors = [{{ kind = "adwin", delta = 0.002 }}]
{drift}
{rules}
  [[models.rules]]
  name = "feature-drift"
  cooldown_seconds = {day}
{drift_conditions}
"""

CONFIGS = {
    "driftline": MODEL.format(numeric=FEATURES, drift="", rules=RULES, day=DAY, drift_conditions="""
    [[models.rules.conditions]]
    statistic = "feature.*"
    fired = true
"""),
    "driftline, budget off": MODEL.format(numeric=FEATURES, rules=RULES, day=DAY, drift="""
  [models.drift]
  numeric = ["ks"]
  categorical = ["chi2"]
  false_alarm_every = 0
""", drift_conditions="""
    [[models.rules.conditions]]
    statistic = "feature.*.ks"
    fired = true
    [[models.rules.conditions]]
    statistic = "feature.*.chi2"
    fired = true
"""),
}


@dataclass
class Stream:
    """One generated stream: its files' lines and what is true about it."""

    predictions: list[bytes]
    labels: list[bytes]
    onset: int | None  # the prediction index where the scenario changes the stream
    events: int
    # for the hand-built baseline: the parsed columns
    features: np.ndarray = field(repr=False, default=None)
    plan: np.ndarray = field(repr=False, default=None)
    errors_by_label_time: list[tuple[int, int]] = field(repr=False, default_factory=list)


def generate(scenario: str, seed: int, events: int) -> Stream:
    rng = np.random.default_rng(seed)
    onset = events // 2
    x = rng.normal(size=(events, len(FEATURES)))
    plan_p = np.tile(PLAN_P, (events, 1))
    plans = np.array(PLANS + ["enterprise"])
    plan_p = np.hstack((plan_p, np.zeros((events, 1))))
    accuracy = np.full(events, 0.90)
    if scenario == "accuracy-abrupt":
        accuracy[onset:] = 0.72
    elif scenario == "accuracy-gradual":
        ramp = np.clip((np.arange(events) - onset) / 10_000, 0, 1)
        accuracy = 0.90 - 0.18 * ramp
    elif scenario == "shift-0.5sd":
        x[onset:, 3] += 0.5
    elif scenario == "new-category":
        plan_p[onset:] = [0.4, 0.24, 0.16, 0.2]
    plan = plans[(plan_p.cumsum(axis=1) > rng.random((events, 1))).argmax(axis=1)]
    score = 1 / (1 + np.exp(-(0.8 * x[:, 0] - 0.6 * x[:, 1] + 0.4 * x[:, 2] + rng.normal(0, 0.5, events))))
    predicted = (score > 0.5).astype(int)
    correct = rng.random(events) < accuracy
    truth = np.where(correct, predicted, 1 - predicted)
    times = T0 + np.arange(events) * STEP_MS
    delay = np.clip(rng.normal(60_000, 10_000, events), 5_000, 120_000).astype(np.int64)
    early = rng.random(events) < 0.03
    delay[early] = -rng.integers(1_000, 10_000, early.sum())
    labelled = rng.random(events) >= 0.05
    predictions = [orjson.dumps({
        "prediction_id": f"p{i}", "model_id": "churn", "timestamp": int(times[i]),
        "features": {**dict(zip(FEATURES, np.round(x[i], 5).tolist())), "plan": str(plan[i])},
        "prediction": int(predicted[i]), "score": round(float(score[i]), 5)}) for i in range(events)]
    label_times = times + delay
    order = [i for i in np.argsort(label_times, kind="stable").tolist() if labelled[i]]
    labels = [orjson.dumps({"prediction_id": f"p{i}", "model_id": "churn", "timestamp": int(label_times[i]),
                            "label": int(truth[i])}) for i in order]
    stream = Stream(predictions, labels, None if scenario.startswith("null") else onset, events, x, plan,
                    [(int(label_times[i]), int(not correct[i])) for i in order])
    if scenario == "null+malformed":
        stream.predictions = _malformed(stream.predictions, rng)
        stream.labels = _malformed(stream.labels, rng)
    return stream


def _malformed(lines: list[bytes], rng: np.random.Generator) -> list[bytes]:
    """1 % of the lines broken in the ways producers break them."""
    out = list(lines)
    for i in np.flatnonzero(rng.random(len(lines)) < 0.01).tolist():
        kind = i % 4
        if kind == 0:
            out[i] = lines[i][: len(lines[i]) // 2]  # truncated
        elif kind == 1:
            out[i] = lines[i].replace(b'"model_id":"churn",', b"")  # a required field missing
        elif kind == 2:
            out[i] = lines[i].replace(b'"timestamp":', b'"timestamp":"yesterday","t":')  # a bad timestamp
        else:
            out[i] = b"not json at all"
    return out


# -- the systems ---------------------------------------------------------------------------------

def run_driftline(config_text: str, stream: Stream, workdir: Path) -> list[tuple[int, str]]:
    """(triggered_at in ms, rule) of each trigger, from the backtest of the stream's files."""
    config = parse_config(tomllib.loads(config_text), str(workdir / "driftline.toml"))
    (workdir / "predictions.jsonl").write_bytes(b"\n".join(stream.predictions) + b"\n")
    (workdir / "labels.jsonl").write_bytes(b"\n".join(stream.labels) + b"\n")
    loaded = load_events(config, workdir / "predictions.jsonl", workdir / "labels.jsonl")
    result = Backtest(config, every=5000, timeline=False).run(loaded.events)
    return [(_ms(t.triggered_at), t.rule) for t in result.triggers]


def run_hand_built(stream: Stream, window: int = 2000, alpha: float = 0.01) -> list[tuple[int, str]]:
    """What a user writes in an afternoon: river's ADWIN on the joined error stream, scipy's KS and
    chi-squared on tumbling windows against the first one, Bonferroni; one-day cooldowns."""
    triggers: list[tuple[int, str]] = []
    cooldown: dict[str, int] = {}

    def trigger(at_ms: int, rule: str) -> None:
        if at_ms >= cooldown.get(rule, -1):
            triggers.append((at_ms, rule))
            cooldown[rule] = at_ms + DAY * 1000

    adwin = ADWIN(delta=0.002)
    for at_ms, error in stream.errors_by_label_time:
        adwin.update(error)
        if adwin.drift_detected:
            trigger(at_ms, "error-rate-change")
    reference, reference_plan = stream.features[:window], stream.plan[:window]
    tests = len(FEATURES) + 1
    for start in range(window, stream.events - window + 1, window):
        current, current_plan = stream.features[start:start + window], stream.plan[start:start + window]
        p_values = [stats.ks_2samp(reference[:, j], current[:, j]).pvalue for j in range(len(FEATURES))]
        categories = sorted(set(reference_plan) | set(current_plan))
        counts = [[int((sample == c).sum()) for c in categories] for sample in (reference_plan, current_plan)]
        p_values.append(stats.chi2_contingency(counts, correction=False).pvalue)
        if min(p_values) < alpha / tests:
            trigger(T0 + (start + window - 1) * STEP_MS, "feature-drift")
    return sorted(triggers)


# -- scoring -------------------------------------------------------------------------------------

def _ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def score(scenario: str, stream: Stream, triggers: list[tuple[int, str]]) -> dict:
    onset_ms = T0 + (stream.onset if stream.onset is not None else stream.events) * STEP_MS
    false = [t for t in triggers if t[0] < onset_ms]
    wanted = ("accuracy-floor", "error-rate-change") if scenario in PERFORMANCE else ("feature-drift",)
    after = [t for t in triggers if t[0] >= onset_ms and t[1] in wanted]
    delay = (after[0][0] - onset_ms) / STEP_MS if after and stream.onset is not None else None
    watched = stream.onset if stream.onset is not None else stream.events
    per_rule = [sum(1 for t in after if t[1] == rule) for rule in wanted]
    return {"false": len(false), "watched": watched, "delay": delay, "after": max(per_rule)}


def summarize(scores: list[dict], drifted: bool) -> list[str]:
    false_streams = sum(1 for s in scores if s["false"])
    per_million = sum(s["false"] for s in scores) / sum(s["watched"] for s in scores) * 1e6
    row = [f"{false_streams}/{len(scores)}", f"{per_million:.1f}"]
    if not drifted:
        return row + ["-", "-", "-"]
    delays = [s["delay"] for s in scores if s["delay"] is not None]
    found = len(delays)
    delay = f"{stats_.median(delays):.0f} (max {max(delays):.0f})" if delays else "-"
    per_episode = f"{stats_.mean(s['after'] for s in scores if s['delay'] is not None):.1f}" if delays else "-"
    return row + [delay, f"{len(scores) - found}/{len(scores)}", per_episode]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--events", type=int, default=50_000, help="predictions per stream")
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=SCENARIOS)
    args = parser.parse_args()
    systems = [*CONFIGS, "hand-built (river + scipy)"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios:
            scores: dict[str, list[dict]] = {system: [] for system in systems}
            for seed in range(args.seeds):
                progress(f"{scenario}: seed {seed}")
                stream = generate(scenario, seed, args.events)
                for system in systems:
                    if system in CONFIGS:
                        triggers = run_driftline(CONFIGS[system], stream, Path(tmp))
                    else:
                        triggers = run_hand_built(stream)
                    scores[system].append(score(scenario, stream, triggers))
            for system in systems:
                rows.append([scenario, system, *summarize(scores[system], not scenario.startswith("null"))])
    print(f"{args.seeds} seeds x {args.events:,} predictions per scenario, onset at prediction {args.events // 2:,}")
    print(table(["scenario", "system", "streams with a false trigger", "false triggers / 1M predictions",
                 "delay, predictions: median (max)", "missed", "triggers per episode"], rows))


if __name__ == "__main__":
    main()
