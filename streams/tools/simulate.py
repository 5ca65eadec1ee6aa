"""Realistic prediction and label streams with drift injected where you say, for demos and backtests.

Each simulated model is a real river model (a Hoeffding tree or a logistic regression) trained
online on the stream's concept *before* the drift and frozen afterwards, scoring a synthetic
stream from river's generators (Agrawal, SEA, Hyperplane, STAGGER). At ``drift_at`` (the index of
a model's prediction) the scenario injects one of:

* ``abrupt`` / ``gradual`` concept drift from concept A to concept B, mixed as river's
  ``ConceptDriftStream`` does (a step for abrupt, a sigmoid ``width`` events wide for gradual);
* ``covariate``: numeric features shifted by ``k·σ`` (σ measured on the training sample); the
  label is recomputed with the *same* concept on the shifted inputs, so P(y|x) is unchanged;
* ``new_category``: a category never seen before (``partner``) appears in a categorical
  feature (``channel``) for a share of the events;
* ``none``: no drift (a control).

Labels arrive after a delay drawn from a distribution (``exp:60`` seconds …), a fraction never
arrives, and a fraction of extra malformed messages is mixed in (they should end up in the
DLQ). Events are emitted in event-time order: a label is emitted once the clock reaches its
timestamp. The same seed gives the same bytes.
"""
from __future__ import annotations

import heapq
import itertools
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import msgspec
import numpy as np

__all__ = ["ModelScenario", "Simulation", "Record", "generate", "run", "FileSink", "KafkaSink",
           "parse_model_spec", "parse_delay", "Progress", "DEFAULT_START_MS"]

#: 2026-01-01T00:00:00Z: a fixed default start, so a seed alone fixes every byte.
DEFAULT_START_MS = 1_767_225_600_000

GENERATORS = ("agrawal", "sea", "hyperplane", "stagger")
LEARNERS = ("hoeffding", "logistic")
DRIFTS = ("none", "abrupt", "gradual", "covariate", "new_category")
#: Default concepts (before, after) for concept drift.
CONCEPTS = {"agrawal": (0, 2), "sea": (2, 3), "stagger": (0, 2), "hyperplane": (0, 1)}
#: Default features shifted by covariate drift (signed multiples of σ come from shift_sigma).
SHIFT_DEFAULT = {"agrawal": ("salary",), "sea": ("x0", "x1"), "hyperplane": ("x0", "x1")}
CHANNELS = (("web", 0.5), ("app", 0.3), ("store", 0.2))
_SEA_THRESHOLD = {0: 8.0, 1: 9.0, 2: 7.0, 3: 9.5}
_AGRAWAL_CATEGORICAL = ("elevel", "car", "zipcode")
_STAGGER_NAMES = {"size": ("small", "medium", "large"), "color": ("red", "blue", "green"),
                  "shape": ("circle", "square", "triangle")}


class ScenarioError(ValueError):
    """A bad scenario spec; the message names the field."""


class SimulationInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run`: the sinks were closed; ``summary`` counts what was emitted."""

    def __init__(self, summary: "Summary"):
        super().__init__()
        self.summary = summary


@dataclass
class ModelScenario:
    """One simulated model. ``drift_at`` is the index of the model's prediction where drift starts
    (default: half of ``Simulation.events``)."""

    model_id: str = "model"
    generator: str = "agrawal"
    learner: str = "hoeffding"
    drift: str = "abrupt"
    drift_at: int | None = None
    #: gradual drift: events over which concept B takes over (ConceptDriftStream width)
    width: int = 1000
    #: concept drift: (before, after) — Agrawal/STAGGER function, SEA variant, Hyperplane seed offset
    concept_before: int | None = None
    concept_after: int | None = None
    #: covariate drift: features shifted, by shift_sigma standard deviations (negative: down)
    shift_features: tuple[str, ...] = ()
    shift_sigma: float = 2.0
    #: new_category drift: the feature, the new value and the share of events that get it
    category_feature: str = "channel"
    new_category: str = "partner"
    new_category_share: float = 0.3
    #: events the model learns from (online, test-then-train) before it is deployed
    train: int = 3000
    model_version: str = "v1"


@dataclass
class Simulation:
    models: list[ModelScenario]
    #: predictions per model (None: until ``duration`` or forever)
    events: int | None = 10_000
    seed: int = 0
    start_ms: int = DEFAULT_START_MS
    #: event time between two predictions of one model
    interval_ms: int = 1000
    #: label delay in seconds: const:S, exp:MEAN, uniform:A:B, lognormal:MEDIAN:SIGMA, batch:PERIOD
    label_delay: str = "exp:30"
    #: fraction of predictions whose label never arrives
    label_missing: float = 0.0
    #: extra malformed messages, as a fraction of predictions
    malformed: float = 0.0
    predictions_topic: str = "predictions"
    labels_topic: str = "labels"


@dataclass(slots=True)
class Record:
    """One message to emit: ``kind`` is prediction, label or malformed; ``topic`` is
    ``predictions`` or ``labels`` (the role, not the topic name); ``time_ms`` its event time."""

    kind: str
    topic: str
    key: str
    value: bytes
    time_ms: int
    model_id: str
    index: int


@dataclass
class DriftNote:
    model_id: str
    kind: str
    at_index: int | None
    at_time: str | None
    detail: str


# -- specs ---------------------------------------------------------------------------------------
def parse_model_spec(spec: str) -> ModelScenario:
    """``id=loans,generator=agrawal,drift=abrupt,at=5000,shift=x0:-1|x1:-1`` → ModelScenario."""
    scenario = ModelScenario()
    names = {f.name for f in fields(ModelScenario)}
    aliases = {"id": "model_id", "at": "drift_at", "gen": "generator", "version": "model_version",
               "shift": "shift_features", "sigma": "shift_sigma", "share": "new_category_share",
               "feature": "category_feature", "category": "new_category", "concept": "concept"}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise ScenarioError(f"--model {spec!r}: {part!r} is not key=value")
        key, value = (s.strip() for s in part.split("=", 1))
        key = aliases.get(key, key)
        if key == "concept":
            try:
                before, after = value.split(">")
                scenario.concept_before, scenario.concept_after = int(before), int(after)
            except ValueError:
                raise ScenarioError(f"--model {spec!r}: concept must look like 0>2") from None
            continue
        if key not in names:
            raise ScenarioError(f"--model {spec!r}: unknown key {key!r} (keys: {', '.join(sorted(aliases))}, "
                                f"{', '.join(sorted(names - set(aliases.values())))})")
        if key == "shift_features":
            scenario.shift_features = tuple(v for v in value.split("|") if v)
            continue
        kind = type(getattr(ModelScenario(), key))
        try:
            if key in ("drift_at", "concept_before", "concept_after"):
                setattr(scenario, key, int(value))
            elif kind in (int, float):
                setattr(scenario, key, kind(value))
            else:
                setattr(scenario, key, value)
        except ValueError:
            raise ScenarioError(f"--model {spec!r}: {key} must be a number, got {value!r}") from None
    check_scenario(scenario)
    return scenario


def check_scenario(s: ModelScenario) -> None:
    where = f"model {s.model_id!r}"
    if s.generator not in GENERATORS:
        raise ScenarioError(f"{where}: generator must be one of {', '.join(GENERATORS)}, got {s.generator!r}")
    if s.learner not in LEARNERS:
        raise ScenarioError(f"{where}: learner must be one of {', '.join(LEARNERS)}, got {s.learner!r}")
    if s.drift not in DRIFTS:
        raise ScenarioError(f"{where}: drift must be one of {', '.join(DRIFTS)}, got {s.drift!r}")
    if s.drift == "covariate" and s.generator == "stagger":
        raise ScenarioError(f"{where}: covariate drift needs numeric features; STAGGER has none")
    if not 0 <= s.new_category_share <= 1:
        raise ScenarioError(f"{where}: new_category_share must be in [0, 1]")
    if s.width < 1 or s.train < 0:
        raise ScenarioError(f"{where}: width must be >= 1 and train >= 0")


def check_simulation(sim: Simulation) -> None:
    """Everything about a simulation that can be wrong, checked before a message is emitted."""
    parse_delay(sim.label_delay)
    if sim.events is not None and sim.events < 1:
        raise ScenarioError(f"--events must be >= 1, got {sim.events}")
    if sim.interval_ms < 1:
        raise ScenarioError(f"--interval-ms must be >= 1, got {sim.interval_ms}")
    for name in ("label_missing", "malformed"):
        if not 0 <= getattr(sim, name) <= 1:
            raise ScenarioError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(sim, name)}")
    seen: set[str] = set()
    for s in sim.models:
        if s.model_id in seen:
            raise ScenarioError(f"--model id={s.model_id}: given twice; each simulated model needs its own id")
        seen.add(s.model_id)
        check_scenario(s)
        if s.drift_at is not None and s.drift_at < 0:
            raise ScenarioError(f"model {s.model_id!r}: at must be >= 0")
        if s.drift == "covariate":
            _check_shift(s)


def _check_shift(s: ModelScenario) -> None:
    """The features a covariate drift shifts exist and are numbers (as :class:`ModelStream` reads them)."""
    if s.train < 1:
        raise ScenarioError(f"model {s.model_id!r}: covariate drift needs train >= 1 (shifts are in standard "
                            "deviations of the training sample)")
    x, _ = next(iter(_generator(s.generator, CONCEPTS[s.generator][0], 0)))
    sample = _model_input(s.generator, x)
    numeric = [k for k, v in sample.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for spec in s.shift_features or SHIFT_DEFAULT[s.generator]:
        name, _, k = spec.partition(":")
        if name not in numeric:
            raise ScenarioError(f"model {s.model_id!r}: cannot shift {name!r}; the numeric features of "
                                f"{s.generator} are {', '.join(numeric)}")
        try:
            float(k or 0)
        except ValueError:
            raise ScenarioError(f"model {s.model_id!r}: shift {spec!r}: the shift must be a number of "
                                "standard deviations") from None


def parse_delay(spec: str):
    """A label-delay distribution → ``f(rng: np.random.Generator, prediction_ms) -> seconds``.

    ``const:S``, ``exp:MEAN``, ``uniform:A:B``, ``lognormal:MEDIAN:SIGMA`` (seconds), or
    ``batch:P``: labels land in batches every P seconds of event time (a periodic ETL job), each
    at the first multiple of P after its prediction."""
    name, _, args = spec.partition(":")
    try:
        params = [float(a) for a in args.split(":")] if args else []
    except ValueError:
        raise ScenarioError(f"label delay {spec!r}: parameters must be numbers") from None
    shapes = {"const": 1, "exp": 1, "uniform": 2, "lognormal": 2, "batch": 1}
    if name not in shapes or len(params) != shapes[name] or any(p < 0 for p in params) \
            or (name == "batch" and params[0] <= 0):
        raise ScenarioError(f"label delay {spec!r}: use const:S, exp:MEAN, uniform:A:B, lognormal:MEDIAN:SIGMA "
                            "or batch:PERIOD (seconds, >= 0)")
    if name == "const":
        return lambda rng, ts: params[0]
    if name == "exp":
        return lambda rng, ts: float(rng.exponential(params[0])) if params[0] > 0 else 0.0
    if name == "uniform":
        lo, hi = sorted(params)
        return lambda rng, ts: float(rng.uniform(lo, hi))
    if name == "batch":
        period_ms = int(params[0] * 1000)
        return lambda rng, ts: ((ts // period_ms + 1) * period_ms - ts) / 1000
    median, sigma = params
    return lambda rng, ts: float(rng.lognormal(math.log(max(median, 1e-9)), sigma))


# -- one model's stream ----------------------------------------------------------------------------
def _generator(name: str, concept: int, seed: int):
    from river.datasets import synth

    if name == "agrawal":
        return synth.Agrawal(classification_function=concept, seed=seed)
    if name == "sea":
        return synth.SEA(variant=concept, seed=seed)
    if name == "stagger":
        return synth.STAGGER(classification_function=concept, seed=seed)
    return synth.Hyperplane(seed=seed + 7919 * concept, n_features=10, noise_percentage=0.02)


def _learner(name: str):
    from river import linear_model, preprocessing, tree

    if name == "hoeffding":
        return tree.HoeffdingTreeClassifier(grace_period=100)
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def _model_input(generator: str, x: dict) -> dict:
    """What the model sees: string feature names, numbers (SEA/Hyperplane keys are ints)."""
    if generator in ("sea", "hyperplane"):
        return {f"x{k}": v for k, v in x.items()}
    return x


def _event_features(generator: str, x: dict) -> dict:
    """What the prediction event carries: categorical features as strings."""
    if generator == "agrawal":
        return {k: (str(v) if k in _AGRAWAL_CATEGORICAL else round(float(v), 4)) for k, v in x.items()}
    if generator == "stagger":
        return {k: _STAGGER_NAMES[k][v] for k, v in x.items()}
    return {k: round(float(v), 6) for k, v in x.items()}


def _mix(first, second, position: int, width: int, rng: random.Random):
    """river's ConceptDriftStream, on iterators already in use: event t (from 1) comes from
    ``second`` with probability sigmoid(4 (t - position) / width); width 1 is abrupt."""
    for t in itertools.count(1):
        if width <= 1:  # abrupt: exactly from event index ``position`` (t = position + 1) on
            p = 1.0 if t > position else 0.0
        else:
            v = -4.0 * (t - position) / width
            p = 0.0 if v > 700 else 1.0 / (1.0 + math.exp(v))
        yield next(second) if rng.random() < p else next(first)


class _Labeler:
    """The concept as a function of (possibly shifted) inputs, for covariate drift."""

    def __init__(self, generator: str, concept: int, gen):
        self.generator, self.concept, self.gen = generator, concept, gen

    def __call__(self, x: dict) -> int:
        if self.generator == "agrawal":
            fn = self.gen._classification_functions[self.concept]
            return int(fn(*(x[n] for n in self.gen.feature_names)))
        if self.generator == "sea":
            return int(x["x0"] + x["x1"] > _SEA_THRESHOLD[self.concept])
        weights = self.gen._weights  # Hyperplane: y = 1 iff w·x >= Σw / 2
        return int(sum(w * x[f"x{i}"] for i, w in enumerate(weights)) >= 0.5 * sum(weights))


class ModelStream:
    """Yields (index, features for the event, prediction, score, label) for one model."""

    def __init__(self, scenario: ModelScenario, seed: int, events: int | None):
        self.s = s = scenario
        self.rng = random.Random(seed)
        self.drift_at = s.drift_at if s.drift_at is not None else (events // 2 if events else 5000)
        if self.drift_at < 0:
            raise ScenarioError(f"model {s.model_id!r}: at must be >= 0")
        self.events = events
        before, after = CONCEPTS[s.generator]
        before = before if s.concept_before is None else s.concept_before
        after = after if s.concept_after is None else s.concept_after
        self.before, self.after = before, after
        # The model learns online (learn_one) from the first ``train`` events of concept A, then is
        # deployed, frozen; the stream it scores continues the same generator.
        self.model = _learner(s.learner)
        self.base = _generator(s.generator, before, seed + 2)
        first = iter(self.base)
        train_sample = []
        for x, y in itertools.islice(first, s.train):
            xi = _model_input(s.generator, x)
            self.model.learn_one(xi, int(y))
            train_sample.append(xi)
        if s.drift in ("abrupt", "gradual"):
            second = iter(_generator(s.generator, after, seed + 3))
            width = 1 if s.drift == "abrupt" else s.width
            stream = _mix(first, second, self.drift_at, width, random.Random(seed + 4))
        else:
            stream = first
        self.iterator = stream
        self.shift: dict[str, float] = {}
        if s.drift == "covariate":
            names = s.shift_features or SHIFT_DEFAULT[s.generator]
            for spec in names:
                name, _, k = spec.partition(":")
                if not train_sample or name not in train_sample[0]:
                    raise ScenarioError(f"model {s.model_id!r}: cannot shift {name!r}; numeric features are "
                                        f"{', '.join(k for k, v in (train_sample[0] if train_sample else {}).items())}")
                sigma = float(np.std([row[name] for row in train_sample])) if len(train_sample) > 1 else 1.0
                self.shift[name] = (float(k) if k else s.shift_sigma) * sigma
            self.labeler = _Labeler(s.generator, before, self.base)

    def note(self, start_ms: int, interval_ms: int) -> DriftNote | None:
        note = self._note(start_ms, interval_ms)
        if note.at_index is not None and self.events is not None and note.at_index >= self.events:
            note.detail += f" — NOT REACHED in this run of {self.events} predictions"
        return note

    def _note(self, start_ms: int, interval_ms: int) -> DriftNote:
        from streams.core.codecs import format_timestamp

        s = self.s
        at = self.drift_at
        when = format_timestamp(start_ms + at * interval_ms)
        if s.drift == "none":
            return DriftNote(s.model_id, "none", None, None, "no drift (control)")
        if s.drift == "abrupt":
            return DriftNote(s.model_id, "abrupt", at, when, f"{s.generator} concept {self.before} -> {self.after}")
        if s.drift == "gradual":
            return DriftNote(s.model_id, "gradual", at, when, f"{s.generator} concept {self.before} -> {self.after} "
                             f"over ~{s.width} events (centre at {at})")
        if s.drift == "covariate":
            shifts = ", ".join(f"{k} {'+' if v >= 0 else ''}{v:.4g}" for k, v in self.shift.items())
            return DriftNote(s.model_id, "covariate", at, when, f"features shifted: {shifts} "
                             f"(concept {self.before} unchanged, labels recomputed)")
        return DriftNote(s.model_id, "new_category", at, when,
                         f"{s.category_feature}={s.new_category!r} in {s.new_category_share:.0%} of events")

    def __iter__(self) -> Iterator[tuple[int, dict, Any, float | None, int]]:
        s = self.s
        rng = self.rng
        for i in itertools.count():
            x, y = next(self.iterator)
            xi = _model_input(s.generator, x)
            y = int(y)
            drifted = i >= self.drift_at
            if self.shift and drifted:
                xi = dict(xi)
                for name, delta in self.shift.items():
                    xi[name] = xi[name] + delta
                y = self.labeler(xi)
            features = _event_features(s.generator, xi)
            if s.drift == "new_category" and drifted and rng.random() < s.new_category_share:
                channel = s.new_category
            else:
                u, channel = rng.random(), CHANNELS[-1][0]
                for name, p in CHANNELS:
                    if u < p:
                        channel = name
                        break
                    u -= p
            features[s.category_feature] = channel
            proba = self.model.predict_proba_one(xi)
            prediction = max(proba, key=proba.get) if proba else 0
            score = float(proba.get(1, 0.0)) if proba else None
            yield i, features, int(prediction), score, y


# -- the merged stream ------------------------------------------------------------------------------
_encoder = msgspec.json.Encoder()


def _malformed(rng: random.Random, model_id: str, ts: int, i: int) -> tuple[str, bytes]:
    """A bad message of one of several kinds (never containing a newline)."""
    kind = rng.randrange(7)
    good = {"prediction_id": f"{model_id}-bad-{i}", "model_id": model_id, "timestamp": ts, "prediction": 1}
    if kind == 0:
        return "predictions", _encoder.encode(good)[:-7]                      # invalid_json (truncated)
    if kind == 1:
        return "predictions", _encoder.encode({k: v for k, v in good.items() if k != "prediction"})  # missing_field
    if kind == 2:
        return "predictions", _encoder.encode({**good, "prediction": [1, 2]})  # wrong_type
    if kind == 3:
        return "predictions", _encoder.encode({**good, "timestamp": "2026-01-01T00:00:00"})  # bad_timestamp (no zone)
    if kind == 4:
        return "predictions", _encoder.encode({**good, "score": 1.7})          # out_of_range
    if kind == 5:
        return "labels", _encoder.encode({"prediction_id": "", "model_id": model_id, "label": 1, "timestamp": ts})
    return "labels", b'{"prediction_id": "x", "model_id": "' + model_id.encode() + b'", "label": NaN}'  # non_finite


def _derive_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] >> 1)


def generate(sim: Simulation, notes: list[DriftNote] | None = None) -> Iterator[Record]:
    """Every message of the simulation, in event-time order (labels when their time comes)."""
    delay = parse_delay(sim.label_delay)
    check_simulation(sim)
    streams = []
    for index, scenario in enumerate(sim.models):
        seed = _derive_seed(sim.seed, index)
        stream = ModelStream(scenario, seed, sim.events)
        if notes is not None:
            note = stream.note(sim.start_ms, sim.interval_ms)
            if note:
                notes.append(note)
        streams.append((scenario, iter(stream), np.random.default_rng(seed + 5), random.Random(seed + 6)))
    pending: list[tuple[int, int, Record]] = []  # (time, sequence, label record)
    sequence = itertools.count()
    total = sim.events
    for i in itertools.count():
        if total is not None and i >= total:
            break
        ts = sim.start_ms + i * sim.interval_ms
        while pending and pending[0][0] <= ts:
            yield heapq.heappop(pending)[2]
        for scenario, stream, np_rng, rng in streams:
            index, features, prediction, score, label = next(stream)
            mid = scenario.model_id
            pid = f"{mid}-{sim.seed}-{index:07d}"
            event: dict[str, Any] = {"prediction_id": pid, "model_id": mid, "model_version": scenario.model_version,
                                     "timestamp": ts, "features": features, "prediction": prediction}
            if score is not None:
                event["score"] = round(score, 6)
            yield Record("prediction", "predictions", mid, _encoder.encode(event), ts, mid, index)
            if rng.random() >= sim.label_missing:
                label_ts = ts + int(round(delay(np_rng, ts) * 1000))
                value = _encoder.encode({"prediction_id": pid, "model_id": mid, "label": label, "timestamp": label_ts})
                heapq.heappush(pending, (label_ts, next(sequence), Record("label", "labels", mid, value, label_ts,
                                                                           mid, index)))
            if sim.malformed and rng.random() < sim.malformed:
                topic, value = _malformed(rng, mid, ts, index)
                yield Record("malformed", topic, mid, value, ts, mid, index)
    while pending:
        yield heapq.heappop(pending)[2]


# -- sinks -------------------------------------------------------------------------------------------
class FileSink:
    """``predictions.jsonl`` and ``labels.jsonl`` in a directory, one message per line; with
    ``merged``, also ``events.jsonl``: every message in emission (event-time) order."""

    def __init__(self, directory: str | Path, merged: bool = False):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.files = {"predictions": open(self.dir / "predictions.jsonl", "wb"),
                      "labels": open(self.dir / "labels.jsonl", "wb")}
        self.merged = open(self.dir / "events.jsonl", "wb") if merged else None

    def emit(self, record: Record) -> None:
        f = self.files[record.topic]
        f.write(record.value)
        f.write(b"\n")
        if self.merged is not None:
            self.merged.write(record.value)
            self.merged.write(b"\n")

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        if self.merged is not None:
            self.merged.close()


class KafkaSink:
    """Produces through :class:`streams.client.producer.PredictionLogger` (key model_id, murmur2_random)."""

    def __init__(self, kafka: str | dict, predictions_topic: str, labels_topic: str, logger=None):
        from streams.client.producer import PredictionLogger

        self.topics = {"predictions": predictions_topic, "labels": labels_topic}
        self.max_queued = 200_000
        self.logger = logger or PredictionLogger(kafka, predictions_topic, labels_topic, prometheus=False,
                                                 max_buffered=2 * self.max_queued, linger_ms=5)

    def emit(self, record: Record) -> None:
        # A simulator is not a serving path: when the queue is full, wait for room, never drop.
        while self.logger.queued >= self.max_queued:
            time.sleep(0.005)
        # The records are already encoded per the contract (the same bytes --out writes).
        self.logger.produce_raw(self.topics[record.topic], record.key, record.value)

    def close(self) -> None:
        self.logger.close(30)


class Progress:
    """A progress bar on stderr, drawn by tqdm: redrawn in place on a terminal, a line every
    few seconds otherwise (a log file gets a readable trace, not a stream of carriage returns).

    Parameters
    ----------
    total : int or None
        Expected count (None: a counter with a rate, no bar).
    label : str
        The line's prefix (``simulate``, ``backtest``).
    stream : file, optional
        Where to draw (default: stderr).
    enabled : bool
        False draws nothing.
    """

    def __init__(self, total: int | None, label: str, stream=None, enabled: bool = True):
        from tqdm import tqdm

        stream = stream or sys.stderr
        tty = hasattr(stream, "isatty") and stream.isatty()
        self.done = 0
        self.bar = tqdm(total=total, desc=label, file=stream, disable=not enabled, unit=" events",
                        unit_scale=True, dynamic_ncols=tty, ascii=not tty, mininterval=0.2 if tty else 5.0,
                        leave=True, smoothing=0.1)

    def update(self, done: int, force: bool = False) -> None:
        """``done`` is the count so far (not an increment)."""
        self.bar.update(done - self.done)
        self.done = done
        if force:
            self.bar.refresh()

    def close(self, done: int) -> None:
        self.update(done)
        self.bar.close()


@dataclass
class Summary:
    predictions: int = 0
    labels: int = 0
    malformed: int = 0
    seconds: float = 0.0
    drifts: list[DriftNote] = field(default_factory=list)
    #: stopped by Ctrl-C before the end (see :class:`SimulationInterrupted`)
    interrupted: bool = False

    def as_dict(self) -> dict:
        return {"predictions": self.predictions, "labels": self.labels, "malformed": self.malformed,
                "seconds": round(self.seconds, 3), "drifts": [asdict(d) for d in self.drifts]}

    def lines(self) -> list[str]:
        out = [f"simulated {self.predictions} predictions, {self.labels} labels, {self.malformed} malformed "
               f"messages in {self.seconds:.1f}s"]
        for d in self.drifts:
            where = f"at prediction {d.at_index} ({d.at_time})" if d.at_index is not None else ""
            out.append(f"  {d.model_id}: {d.kind} drift {where}: {d.detail}")
        return out


def run(sim: Simulation, sinks: list, rate: float | None = None, duration: float | None = None,
        progress: bool = True, on_record=None) -> Summary:
    """Emit the simulation to ``sinks``; ``rate`` limits messages per second (all kinds),
    ``duration`` stops after that many wall-clock seconds. Returns the counts and drift notes."""
    summary = Summary()
    expected = None
    if sim.events is not None:
        expected = int(sim.events * len(sim.models) * (2 - sim.label_missing + sim.malformed))
    bar = Progress(expected, "simulate", enabled=progress)
    started = time.monotonic()
    n = 0
    try:
        for record in generate(sim, summary.drifts):
            if rate:
                ahead = n / rate - (time.monotonic() - started)
                if ahead > 0.002:
                    time.sleep(ahead)
            if duration is not None and time.monotonic() - started >= duration:
                break
            for sink in sinks:
                sink.emit(record)
            if record.kind == "prediction":
                summary.predictions += 1
            elif record.kind == "label":
                summary.labels += 1
            else:
                summary.malformed += 1
            n += 1
            if on_record is not None:
                on_record(record)
            if n % 256 == 0:
                bar.update(n)
    except KeyboardInterrupt:
        summary.interrupted = True
        raise SimulationInterrupted(summary) from None
    finally:
        for sink in sinks:
            sink.close()
        summary.seconds = time.monotonic() - started
        bar.close(n)
    return summary
