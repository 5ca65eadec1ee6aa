"""The TOML config: one file for Kafka, topics, engine, metrics and the models watched.

``load_config(path)`` parses and validates it; any problem raises :class:`ConfigError` whose
message names the file, the key path and what is wrong (the CLI prints it and exits 2).
See ``driftline.example.toml`` for every key with a comment.

The schema and the checks that need nothing else are here; the checks that need the detectors
(kinds, parameters, the statistics rules may name) are in :mod:`streams.core.checks`, and the
Kafka client's check of the ``[kafka]`` settings is passed in by the CLI (``kafka_check``).
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Callable, Literal

import msgspec

from detectors import kinds
from retrain_trigger.rules import RuleError, explain_validation_error, load_rules


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
    #: Messages per consume() call at most.
    batch_size: int = 5000
    #: How long the engine waits for a message while none come in.
    poll_timeout_ms: int = 200
    #: While messages come in, how long one consume() waits to fill its batch. 0 (the default):
    #: a batch is what is fetched already, and what comes in while it is processed is the next
    #: one; a wait here holds every label back by it, more so the busier the engine (what comes
    #: in during the wait makes the next batch longer). Under a backlog the batch is full at once.
    batch_wait_ms: int = 0
    #: Each owned partition commits (its checkpoint and input offsets) at least every
    #: ``commit_every_ms``, or after its share of ``commit_every_events`` input events; the
    #: partitions' commits are staggered over the interval, one partition per transaction.
    #: The share bounds what a crash makes the next owner process again (its checkpoint is
    #: that far behind at most) under a backlog; at a live rate below the share per interval
    #: the interval decides. Each commit stalls the loop for a checkpoint of its partition,
    #: which every label that arrives meanwhile waits for.
    commit_every_events: int = 60000
    commit_every_ms: int = 1000
    #: A batch that produced a trigger commits at once (a trigger is visible to read_committed
    #: readers when its transaction commits), but not sooner than this many ms after the last
    #: commit that carried a trigger: frequent triggers do not turn every batch into a transaction.
    trigger_commit_min_interval_ms: int = 50
    max_message_bytes: int = 1 << 20
    #: What to do with an event whose model_id is not configured: "dlq" or "register" (defaults).
    unknown_model: Literal["dlq", "register"] = "dlq"
    #: With "register": at most this many models are added; events of further ones go to the DLQ
    #: (each model costs memory and metric series).
    max_registered_models: int = 100
    #: How long the broker may be unreachable before the engine gives up and exits non-zero.
    broker_retry_budget_seconds: float = 60.0
    transactional_id: str | None = None
    #: Static group membership (``group.instance.id`` from the group, host and ``--instance``): an
    #: instance that comes back within this time gets its partitions back without a rebalance; one
    #: that does not come back holds them this long.
    session_timeout_ms: int = 45000
    #: A graceful stop (SIGTERM, Ctrl-C) leaves the group at once, so the others take over its
    #: partitions now; false keeps them for a quick restart (a rolling restart, no rebalance).
    leave_group_on_stop: bool = True
    #: Event-time alignment: how long a partition pair waits for a caught-up input partition that
    #: has nothing buffered before the other's events go to the Monitor without it.
    max_idle_ms: int = 2000


class Metrics(msgspec.Struct, forbid_unknown_fields=True):
    address: str = "127.0.0.1:9464"
    #: Distinct label values kept per model before new ones are folded into "other".
    max_versions: int = 10
    max_segments: int = 20
    #: How often (ms) the gauges of the statistics (drift, performance, detectors, window and
    #: pending counts) are set from the models touched since: at most this often, and within
    #: about this long after a batch. Counters count every batch.
    refresh_ms: int = 1000
    #: Serve /metrics over HTTPS: the certificate chain and its private key, PEM files (relative
    #: paths are relative to the config file). Both or neither.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: Require HTTP basic auth: the user name, and a file whose content (trimmed) is the password,
    #: like Prometheus's own scrape ``basic_auth.password_file``. Both or neither.
    basic_auth_username: str | None = None
    basic_auth_password_file: str | None = None

    def path(self, key: str, source: str) -> Path | None:
        """The file a ``*_file`` key names, relative to the config file ``source``."""
        value = getattr(self, key)
        return None if value is None else Path(source).parent / value


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
    numeric: list[str] = msgspec.field(default_factory=lambda: [kinds.PSI, kinds.KS])
    categorical: list[str] = msgspec.field(default_factory=lambda: [kinds.CHI2])
    prediction: list[str] = msgspec.field(default_factory=lambda: [kinds.PSI])
    #: the first N values of each feature are its reference, unless reference_file gives one
    reference_size: int = 1000
    #: JSON object feature -> list of values (key "prediction" for the score); relative to the config
    reference_file: str | None = None
    #: values of each feature in the current window
    window: int = 1000
    #: the model's false-alarm budget: with no drift, all its drift statistics together alarm at
    #: most once per this many predictions on average (0 turns it off: hand-set thresholds)
    false_alarm_every: int = 1_000_000
    #: with the budget off: multiple-testing correction across the feature tests (ks, chi2) ...
    correction: Literal["bh", "bonferroni", "none"] | None = None
    #: ... at this level
    alpha: float | None = None
    #: replaced by false_alarm_every; kept only to say so at load
    ert: int | None = None

    @property
    def budgeted(self) -> bool:
        """Whether the false-alarm budget sets every threshold."""
        return self.false_alarm_every > 0

    @property
    def test_correction(self) -> str:
        return self.correction or "bh"

    @property
    def test_alpha(self) -> float:
        return 0.01 if self.alpha is None else self.alpha
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
    #: how long (event time) joined ids are remembered to recognise duplicates, at most the TTL
    dedup_seconds: float = 600.0
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


#: The Kafka client's own check of the [kafka] settings: (key, problem) for a setting it refuses,
#: else None. The core does not import the client; the CLI passes its check in.
KafkaCheck = Callable[[dict[str, Any]], "tuple[str, str] | None"]


def load_config(path: str | Path, kafka_check: KafkaCheck | None = None) -> Config:
    return parse_config(read_toml(path), str(path), kafka_check)


def read_kafka_settings(path: str | Path) -> dict[str, Any]:
    """A config file's ``[kafka]`` table as librdkafka settings, the rest neither loaded nor
    checked: what a model server hands :class:`streams.client.producer.PredictionLogger` (this
    needs only the core install; :func:`load_config` checks the models with the service extra)."""
    table = read_toml(path).get("kafka", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: kafka: expected a table of librdkafka settings")
    return dotted_keys(table)


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's tables, or a :class:`ConfigError` naming the file and what is wrong with it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: byte {exc.start} is not UTF-8 (TOML files are UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def parse_config(raw: dict[str, Any], source: str = "<memory>", kafka_check: KafkaCheck | None = None) -> Config:
    if "source" in raw:
        raise ConfigError(f"{source}: source: unknown key")
    if isinstance(raw.get("kafka"), dict):  # bootstrap.servers = … unquoted is a nested TOML table
        raw = {**raw, "kafka": dotted_keys(raw["kafka"])}
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {explain_validation_error(str(exc), Config)}") from None
    config.source = source
    _check(config, kafka_check)
    return config


def dotted_keys(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """librdkafka's keys are dotted names; unquoted in TOML, ``sasl.username = …`` nests."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(dotted_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_drift(model: Model, where: str, fail: Callable[[str, str], None]) -> None:
    drift, features = model.drift, model.features
    if drift.reference_size < 1 or drift.window < 1:
        fail(f"{where}.drift", "reference_size and window must be >= 1")
    if drift.ert is not None:
        fail(f"{where}.drift.ert", "replaced by drift.false_alarm_every (one false-alarm budget for all of "
             "the model's drift statistics, with or without a reference_file)")
    if drift.false_alarm_every < 0:
        fail(f"{where}.drift.false_alarm_every", "must be >= 0 (0 turns the false-alarm budget off)")
    if drift.budgeted:
        for key in ("alpha", "correction"):
            if getattr(drift, key) is not None:
                fail(f"{where}.drift.{key}", "the false-alarm budget (drift.false_alarm_every) sets every test's "
                     "level; remove it, or set drift.false_alarm_every = 0 to judge tests at drift.alpha")
        for kind, params in drift.params.items():
            if "threshold" in params:
                fail(f"{where}.drift.params.{kind}.threshold", "the false-alarm budget (drift.false_alarm_every) "
                     "calibrates every threshold; remove it, or set drift.false_alarm_every = 0 to set "
                     "thresholds by hand")
    else:
        if not 0 < drift.test_alpha < 1:
            fail(f"{where}.drift.alpha", "must be in (0, 1)")
        if drift.test_correction != "none":
            for test in (kinds.KS, kinds.CHI2):  # the tests: alpha decides them
                if "threshold" in drift.params.get(test, {}):
                    fail(f"{where}.drift.params.{test}.threshold", f"tests alarm at drift.alpha after the "
                         f"{drift.test_correction} correction; set drift.alpha, or drift.correction = "
                         "\"none\" to give each test its own threshold")
    for kind in ("numeric", "categorical"):
        if getattr(features, kind) and not getattr(drift, kind):
            fail(f"{where}.features.{kind}", f"features are listed but drift.{kind} is empty: nothing would "
                 f"watch them (the default is {getattr(Drift(), kind)!r})")


def listen_address_problem(address: str) -> str | None:
    """What is wrong with ``address`` as the ``host:port`` /metrics listens on, or None.

    Shared by ``metrics.address`` and ``driftline run --metrics-address``, so that the override
    is refused in one line as the config key is, not by a traceback from the socket.
    """
    match = re.fullmatch(r"[^:\s]*:(\d+)", address)
    if not match:
        return f"{address!r} is not host:port"
    if int(match.group(1)) > 65535:
        return f"{address!r}: the port must be 0..65535"
    return None


def bootstrap_servers_problem(servers: Any) -> str | None:
    """What is wrong with a Kafka address list (``host:port[,host:port...]``), or None.

    librdkafka takes any string and only fails to connect, after the broker retry budget, with
    an error that names no key; this names it at once. Shared by ``kafka.bootstrap.servers`` and
    each command's ``--bootstrap-servers``. A broker without a port is librdkafka's 9092; a
    ``PLAINTEXT://`` (any protocol) prefix and an IPv6 address in brackets are allowed.
    """
    if not isinstance(servers, str) or not servers.strip():
        return f"{servers!r} is not host:port[,host:port...]"
    for server in filter(None, re.split(r"[,\s]+", servers)):
        match = re.fullmatch(r"(?:[A-Za-z_]+://)?(\[[0-9A-Fa-f:.]+\]|[^:/\[\]@]+)(?::(\d+))?", server)
        if not match:
            return f"{server!r} is not host:port"
        if match.group(2) is not None and not 0 < int(match.group(2)) < 65536:
            return f"{server!r}: the port must be 1..65535"
    return None


def _check(config: Config, kafka_check: KafkaCheck | None) -> None:
    src = config.source

    def fail(where: str, problem: str) -> None:
        raise ConfigError(f"{src}: {where}: {problem}")

    if "bootstrap.servers" not in config.kafka:
        fail("kafka.bootstrap.servers", "missing; set it to the broker address, e.g. \"127.0.0.1:9092\"")
    if problem := bootstrap_servers_problem(config.kafka["bootstrap.servers"]):
        fail("kafka.bootstrap.servers", problem)
    problem = kafka_check(config.kafka) if kafka_check else None
    if problem:
        fail(*problem)
    if config.topics.partitions < 1:
        fail("topics.partitions", "must be >= 1")
    if config.engine.max_registered_models < 0:
        fail("engine.max_registered_models", "must be >= 0")
    for key in ("max_idle_ms", "batch_wait_ms", "trigger_commit_min_interval_ms"):
        if getattr(config.engine, key) < 0:
            fail(f"engine.{key}", "must be >= 0")
    for key in ("batch_size", "poll_timeout_ms", "commit_every_events", "commit_every_ms", "max_message_bytes",
                "session_timeout_ms"):
        if getattr(config.engine, key) < 1:
            fail(f"engine.{key}", "must be >= 1")
    if config.metrics.refresh_ms < 0:
        fail("metrics.refresh_ms", "must be >= 0")
    if problem := listen_address_problem(config.metrics.address):
        fail("metrics.address", problem)
    if not config.models and config.engine.unknown_model != "register":
        fail("models", "none configured; add a [[models]] table, or set engine.unknown_model = \"register\" "
                       "to monitor every model_id with the defaults")
    topics: dict[str, str] = {}
    for key in ("predictions", "labels", "triggers", "dlq", "state"):
        name = getattr(config.topics, key)
        if not name:
            fail(f"topics.{key}", "must be a non-empty topic name")
        if name in topics:
            fail(f"topics.{key}", f"{name!r} is topics.{topics[name]} as well; each topic has one role")
        topics[name] = key
    _check_metrics_files(config.metrics, fail, src)
    # The checks that build the models' detectors (numpy, scipy) are imported here, not at the
    # top: the trigger listener reads a config's [kafka] table with this module, in an install
    # without the service's numerics.
    from streams.core.checks import check_condition, computed_statistics

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
        both = sorted(set(model.features.numeric) & set(model.features.categorical))
        if both:
            fail(f"{where}.features", f"{', '.join(map(repr, both))} listed as both numeric and categorical")
        if model.window.size < 1:
            fail(f"{where}.window.size", "must be >= 1")
        if model.window.size_seconds <= 0 or model.window.grace_seconds < 0:
            fail(f"{where}.window", "size_seconds must be > 0 and grace_seconds >= 0")
        if model.window.hop_seconds is not None and not 0 < model.window.hop_seconds <= model.window.size_seconds:
            fail(f"{where}.window.hop_seconds", "must be > 0 and <= size_seconds")
        if model.drift is None and (model.features.numeric or model.features.categorical):
            model.drift = Drift()  # listed features are watched with the documented defaults
        if model.drift is not None:
            _check_drift(model, where, fail)
            if model.drift.reference_file is not None:
                reference = Path(config.source).parent / model.drift.reference_file
                if not reference.is_file():
                    fail(f"{where}.drift.reference_file", f"{reference} does not exist")
        if model.estimation is not None:
            _check_estimation(model, where, fail)
        try:
            computed = computed_statistics(model, config.source)
        except ValueError as exc:
            fail(where, str(exc))
        if model.evaluate_every < 1:
            fail(f"{where}.evaluate_every", "must be >= 1")
        if model.label_ttl_seconds <= 0:
            fail(f"{where}.label_ttl_seconds", "must be > 0")
        if model.dedup_seconds <= 0:
            fail(f"{where}.dedup_seconds", "must be > 0")
        try:
            rules = load_rules(model.rules, where=f"{where}.rules")
        except RuleError as exc:
            raise ConfigError(f"{src}: {exc}") from None
        for r, rule in enumerate(rules):
            for c, condition in enumerate(rule.conditions):
                check_condition(condition, computed, f"{where}.rules[{r}].conditions[{c}]", fail, src)


def _check_metrics_files(metrics: Metrics, fail, source: str) -> None:
    """TLS and basic auth come in pairs of keys, and their files must be there; the password
    file must not be empty (an empty password would let anyone in who knows the user name)."""
    for first, second in (("tls_cert_file", "tls_key_file"), ("basic_auth_username", "basic_auth_password_file")):
        if (getattr(metrics, first) is None) != (getattr(metrics, second) is None):
            fail(f"metrics.{first}", f"set both metrics.{first} and metrics.{second}, or neither")
    if metrics.basic_auth_username is not None and (not metrics.basic_auth_username
                                                    or ":" in metrics.basic_auth_username):
        fail("metrics.basic_auth_username", "must be non-empty and without ':' (basic auth separates user and "
             "password by it)")
    for key in ("tls_cert_file", "tls_key_file", "basic_auth_password_file"):
        path = metrics.path(key, source)
        if path is not None and not path.is_file():
            fail(f"metrics.{key}", f"{path} does not exist")
    if metrics.basic_auth_password_file is not None:
        try:
            password = read_password(metrics.path("basic_auth_password_file", source))
        except (OSError, UnicodeDecodeError) as exc:
            fail("metrics.basic_auth_password_file", f"cannot read it: {exc}")
        if not password:
            fail("metrics.basic_auth_password_file", "is empty")


def read_password(path: Path) -> str:
    """A password file's content without surrounding whitespace (a trailing newline, as editors
    and ``echo`` leave it), as Prometheus reads its ``password_file``."""
    return path.read_text(encoding="utf-8").strip()


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
