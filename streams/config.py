"""The TOML config: one file for Kafka, topics, engine, metrics and the models watched.

``load_config(path)`` parses and validates it; any problem raises :class:`ConfigError` whose
message names the file, the key path and what is wrong (the CLI prints it and exits 2).
See ``driftline.example.toml`` for every key with a comment.
"""
from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any, Callable, Literal

import msgspec

from retrain_trigger.rules import RuleError, load_rules


class ConfigError(ValueError):
    """A config problem; ``str()`` is the one line the user sees."""


class Topics(msgspec.Struct, forbid_unknown_fields=True):
    predictions: str = "predictions"
    labels: str = "labels"
    triggers: str = "retrain-triggers"
    dlq: str = "driftline-dlq"
    state: str = "driftline-state"
    #: Partitions for the two input topics when driftline creates them (always the same for both).
    partitions: int = 3


class Engine(msgspec.Struct, forbid_unknown_fields=True):
    group_id: str = "driftline"
    #: Messages per consume() call.
    batch_size: int = 5000
    #: How long one consume() waits for a full batch.
    poll_timeout_ms: int = 200
    #: A transaction commits after this many input events or this many ms, whichever comes first.
    commit_every_events: int = 20000
    commit_every_ms: int = 1000
    max_message_bytes: int = 1 << 20
    #: What to do with an event whose model_id is not configured: "dlq" or "register" (defaults).
    unknown_model: Literal["dlq", "register"] = "dlq"
    #: With "register": at most this many models are added; events of further ones go to the DLQ
    #: (each model costs memory and metric series).
    max_registered_models: int = 100
    #: How long the broker may be unreachable before the engine gives up and exits non-zero.
    broker_retry_budget_seconds: float = 60.0
    transactional_id: str | None = None


class Metrics(msgspec.Struct, forbid_unknown_fields=True):
    address: str = "127.0.0.1:9464"
    #: Distinct label values kept per model before new ones are folded into "other".
    max_versions: int = 10
    max_segments: int = 20


class Window(msgspec.Struct, forbid_unknown_fields=True):
    """What performance metrics are computed over.

    ``count``: the last ``size`` labelled predictions, rules evaluated every ``evaluate_every``.
    ``tumbling`` / ``hopping``: event-time windows of ``size_seconds`` (every ``hop_seconds``),
    closed once the watermark minus ``grace_seconds`` passes their end; rules are evaluated on
    each closed window; labels for a closed window are counted as late, not merged.
    """

    kind: Literal["count", "tumbling", "hopping"] = "count"
    size: int = 1000
    size_seconds: float = 3600.0
    hop_seconds: float | None = None
    grace_seconds: float = 0.0


class Drift(msgspec.Struct, forbid_unknown_fields=True):
    """Data drift: each feature's recent window against a reference, from every prediction."""

    #: detectors for each numeric feature, each categorical feature, and the score/prediction
    numeric: list[str] = msgspec.field(default_factory=lambda: ["psi", "ks"])
    categorical: list[str] = msgspec.field(default_factory=lambda: ["chi2"])
    prediction: list[str] = msgspec.field(default_factory=lambda: ["psi"])
    #: the first N values of each feature are its reference, unless reference_file gives one
    reference_size: int = 1000
    #: JSON object feature -> list of values (key "prediction" for the score); relative to the config
    reference_file: str | None = None
    #: values of each feature in the current window
    window: int = 1000
    #: multiple-testing correction across the model's feature tests (ks, chi2)
    correction: Literal["bh", "bonferroni", "none"] = "bh"
    alpha: float = 0.01
    #: with reference_file: distance thresholds (psi, js, wasserstein) without one in params are
    #: calibrated at start so that, with no drift, a false alarm comes once per this many predictions
    ert: int | None = None
    #: extra parameters per detector kind, e.g. { psi = { threshold = 0.25, bins = 20 } }
    params: dict[str, dict[str, Any]] = {}


class Estimation(msgspec.Struct, forbid_unknown_fields=True):
    """Performance estimated from the scores before the labels arrive (CBPE,
    :class:`detectors.estimation.CBPE`): rules name it ``estimated.<metric>``."""

    #: predictions (labelled or not) in the estimation window; default: window.size
    window: int | None = None
    #: labelled pairs the score calibration is fitted on (the first N, then the latest N)
    reference_size: int = 1000
    #: refit the calibration after every this many further labelled pairs; 0 keeps the first fit
    refit_every: int = 0


class Features(msgspec.Struct, forbid_unknown_fields=True):
    numeric: list[str] = []
    categorical: list[str] = []


class Model(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    task: Literal["binary", "multiclass", "regression"] = "binary"
    label_ttl_seconds: float = 86400.0
    features: Features = msgspec.field(default_factory=Features)
    window: Window = msgspec.field(default_factory=Window)
    #: Rules are evaluated after every this many predictions or labelled predictions (1 = each one).
    evaluate_every: int = 50
    #: performance metrics over the window; default: accuracy (classification) or mae (regression)
    metrics: list[str] = []
    #: binary models: the positive class (``score`` is its probability)
    positive: int | str = 1
    #: multiclass models: the class order, needed for ``probabilities``-based metrics
    classes: list[int | str] = []
    drift: Drift | None = None
    #: estimated performance from the scores (binary and multiclass models), off without this table
    estimation: Estimation | None = None
    #: change detectors on the error stream (0/1 misclassified, or absolute error): [{kind=..., ...}]
    detectors: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    #: Added by the engine for an unconfigured model_id (engine.unknown_model = "register"); not a config key.
    registered: bool = False


class Config(msgspec.Struct, forbid_unknown_fields=True):
    kafka: dict[str, str | int | float | bool] = {}
    topics: Topics = msgspec.field(default_factory=Topics)
    engine: Engine = msgspec.field(default_factory=Engine)
    metrics: Metrics = msgspec.field(default_factory=Metrics)
    models: list[Model] = []
    #: The file this config came from (not a TOML key).
    source: str = "<memory>"

    def model(self, model_id: str) -> Model | None:
        return next((m for m in self.models if m.id == model_id), None)

    def model_or_register(self, model_id: str) -> Model | None:
        """The model of ``model_id``; an unconfigured one is added with the defaults when
        ``engine.unknown_model = "register"`` and fewer than ``engine.max_registered_models`` were."""
        model = self.model(model_id)
        if model is not None or self.engine.unknown_model != "register":
            return model
        if sum(m.registered for m in self.models) >= self.engine.max_registered_models:
            return None
        model = Model(id=model_id, registered=True)
        self.models.append(model)
        return model


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, str(path))


def parse_config(raw: dict[str, Any], source: str = "<memory>") -> Config:
    if "source" in raw:
        raise ConfigError(f"{source}: source: unknown key")
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_readable(str(exc))}") from None
    config.source = source
    _check(config)
    return config


def _readable(message: str) -> str:
    """msgspec says "Expected `int`, got `str` - at `$.models[0].window.size`"; put the key first."""
    match = re.match(r"(.*) - at `\$\.?(.*)`$", message)
    if not match:
        return message
    problem, where = match.groups()
    problem = problem.replace("Object contains unknown field", "unknown key")
    return f"{where or '(top level)'}: {problem[0].lower()}{problem[1:]}"


def validate_statistics(model: Model, source: str) -> list[str]:
    """Build the model's detectors once, so a bad kind or parameter fails at load time; returns
    the names of the statistics they compute."""
    from .statistics import ModelStatistics

    return ModelStatistics(model, source).statistic_names()


def _check(config: Config) -> None:
    src = config.source

    def fail(where: str, problem: str) -> None:
        raise ConfigError(f"{src}: {where}: {problem}")

    if "bootstrap.servers" not in config.kafka:
        fail("kafka.bootstrap.servers", "missing; set it to the broker address, e.g. \"127.0.0.1:9092\"")
    if config.topics.partitions < 1:
        fail("topics.partitions", "must be >= 1")
    if config.engine.max_registered_models < 0:
        fail("engine.max_registered_models", "must be >= 0")
    for key in ("batch_size", "poll_timeout_ms", "commit_every_events", "commit_every_ms", "max_message_bytes"):
        if getattr(config.engine, key) < 1:
            fail(f"engine.{key}", "must be >= 1")
    if not re.fullmatch(r"[^:\s]*:\d+", config.metrics.address):
        fail("metrics.address", f"{config.metrics.address!r} is not host:port")
    seen: set[str] = set()
    for i, model in enumerate(config.models):
        where = f"models[{i}]"
        if not model.id:
            fail(f"{where}.id", "must be a non-empty string")
        if model.registered:
            fail(f"{where}.registered", "is set by the engine for models it registers, not in the config")
        if model.id in seen:
            fail(f"{where}.id", f"{model.id!r} is configured twice")
        seen.add(model.id)
        if model.window.size < 1:
            fail(f"{where}.window.size", "must be >= 1")
        if model.window.size_seconds <= 0 or model.window.grace_seconds < 0:
            fail(f"{where}.window", "size_seconds must be > 0 and grace_seconds >= 0")
        if model.window.hop_seconds is not None and not 0 < model.window.hop_seconds <= model.window.size_seconds:
            fail(f"{where}.window.hop_seconds", "must be > 0 and <= size_seconds")
        if model.drift is not None:
            if model.drift.reference_size < 1 or model.drift.window < 1:
                fail(f"{where}.drift", "reference_size and window must be >= 1")
            if not 0 < model.drift.alpha < 1:
                fail(f"{where}.drift.alpha", "must be in (0, 1)")
            if model.drift.ert is not None and (model.drift.ert < 1 or model.drift.reference_file is None):
                fail(f"{where}.drift.ert", "must be >= 1 and needs drift.reference_file (the calibration "
                     "simulates drift-free streams from the reference sample)")
            if model.drift.correction != "none":
                for test in ("ks", "chi2"):
                    if "threshold" in model.drift.params.get(test, {}):
                        fail(f"{where}.drift.params.{test}.threshold", f"tests alarm at drift.alpha after the "
                             f"{model.drift.correction} correction; set drift.alpha, or drift.correction = "
                             "\"none\" to give each test its own threshold")
            if model.drift.reference_file is not None:
                reference = Path(config.source).parent / model.drift.reference_file
                if not reference.is_file():
                    fail(f"{where}.drift.reference_file", f"{reference} does not exist")
        if model.estimation is not None:
            _check_estimation(model, where, fail)
        try:
            computed = validate_statistics(model, config.source)
        except ValueError as exc:
            fail(where, str(exc))
        if model.evaluate_every < 1:
            fail(f"{where}.evaluate_every", "must be >= 1")
        if model.label_ttl_seconds <= 0:
            fail(f"{where}.label_ttl_seconds", "must be > 0")
        try:
            rules = load_rules(model.rules, where=f"{where}.rules")
        except RuleError as exc:
            raise ConfigError(f"{src}: {exc}") from None
        for r, rule in enumerate(rules):
            for c, condition in enumerate(rule.conditions):
                if not any(fnmatch.fnmatchcase(name, condition.statistic) for name in computed):
                    fail(f"{where}.rules[{r}].conditions[{c}].statistic",
                         f"{condition.statistic!r} is not computed for this model; it computes "
                         f"{', '.join(computed)} (add the metric, feature or detector first)")


def _check_estimation(model: Model, where: str, fail: Callable[[str, str], None]) -> None:
    estimation = model.estimation
    if model.task == "regression":
        fail(f"{where}.estimation", "estimates classification metrics from scores; not for a regression model")
    if model.task == "multiclass" and len(model.classes) < 2:
        fail(f"{where}.classes", "estimation of a multiclass model needs classes (the order of probabilities)")
    if estimation.window is not None and estimation.window < 1:
        fail(f"{where}.estimation.window", "must be >= 1")
    if estimation.reference_size < 2:
        fail(f"{where}.estimation.reference_size", "must be >= 2")
    if estimation.refit_every < 0:
        fail(f"{where}.estimation.refit_every", "must be >= 0 (0: never refit)")
