"""``driftline status``, ``driftline reference`` and ``driftline init`` (registered by streams/cli/main.py).

* ``status``: a running engine's models, windows, drift alarms and rules, read from its ``/metrics``
  (what Prometheus would scrape), as tables or ``--json``;
* ``reference``: a ``drift.reference_file`` (feature -> list of values, ``prediction`` for what the
  prediction drift watches) from a history of predictions;
* ``init``: a commented config scaffolded from a sample of events (models, features and their
  kinds, one rule per model), checked as ``check-config`` would before it is written.

Errors a user can cause print one line and exit 2 (a file or option) or 1 (an engine that does not
answer).
"""
from __future__ import annotations

import argparse
import base64
import fnmatch
import json
import math
import os
import ssl
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from streams.cli.common import EXIT_RUNTIME, CommandError, UsageError, checked_bootstrap, librdkafka_problem, load_config

__all__ = ["register", "read_status", "parse_status", "build_reference", "scaffold_config"]


def register(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="a running engine's models, drift alarms and rules, from its /metrics",
                            description="Read a running engine's /metrics and print its models (counts, window, "
                                        "performance), the drift statistics in alarm and each rule's state.")
    status.add_argument("--url", help="the engine's metrics: host:port or http://host:port/metrics "
                                     "(default: metrics.address of --config, else 127.0.0.1:9464)")
    status.add_argument("--config", "-c", help="the engine's config: its metrics.address (unless --url), TLS and "
                                                "basic auth, and each rule's op, so that each rule gets a state")
    status.add_argument("--all", action="store_true", help="every drift statistic, not only those in alarm")
    status.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for /metrics (default 5)")
    status.add_argument("--cacert", help="a PEM file of the CA certificate(s) to trust for https, besides the "
                                         "system's (default with --config and metrics TLS: the config's own "
                                         "certificate)")
    status.add_argument("--server-name", help="with --cacert: the name the certificate must hold (default: the "
                                              "URL's host), like Prometheus's tls_config.server_name")
    status.add_argument("--user", help="HTTP basic auth user (default: metrics.basic_auth_username of --config)")
    status.add_argument("--password-file", help="a file holding the basic auth password (trimmed; default: "
                                                "metrics.basic_auth_password_file of --config)")
    status.set_defaults(func=_status)

    ref = sub.add_parser("reference", help="build a drift reference_file from a history of predictions",
                         description="Write a drift.reference_file: a JSON object of feature -> list of values "
                                     "(and `prediction`: the score of a binary model, the class or value "
                                     "otherwise) taken from a history of one model's predictions.")
    ref.add_argument("--config", "-c", required=True, help="the driftline config (the model's features)")
    ref.add_argument("--model", "-m", help="the model id (needed when the config has several)")
    ref.add_argument("--predictions", "-p", required=True, help="predictions, one JSON event per line")
    ref.add_argument("--out", "-o", required=True, help="the JSON file to write")
    ref.add_argument("--size", "-n", type=int, default=None,
                     help="predictions to take (default: the model's drift.reference_size; 0: all)")
    ref.add_argument("--last", action="store_true", help="take the latest predictions (default: the earliest)")
    ref.add_argument("--since", help="only predictions at or after this event time (ISO-8601 or epoch ms)")
    ref.add_argument("--until", help="only predictions before this event time (ISO-8601 or epoch ms)")
    ref.set_defaults(func=_reference)

    init = sub.add_parser("init", help="scaffold a commented config from a sample of events",
                          description="Read a sample of prediction (and optionally label) events, one JSON "
                                      "object per line, and write a commented config: one model per model_id, "
                                      "its features and their kinds, drift settings and one rule per model.")
    init.add_argument("--events", "-e", required=True, help="a sample of events, one JSON object per line")
    init.add_argument("--out", "-o", help="the config file to write (default: standard output)")
    init.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    init.add_argument("--bootstrap-servers",
                      help="kafka bootstrap.servers (default: $KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092)")
    init.add_argument("--max-lines", type=int, default=100_000, help="lines of the sample read (default 100000)")
    init.set_defaults(func=_init)


# -- status ----------------------------------------------------------------------------------------
def metrics_url(address: str, https: bool = False) -> str:
    """``host:port`` or a URL → the URL of the metrics page (``https`` when a bare ``host:port``
    is served over TLS)."""
    if "://" in address:
        return address if urllib.parse.urlsplit(address).path not in ("", "/") else address.rstrip("/") + "/metrics"
    return f"{'https' if https else 'http'}://{address}/metrics"


def pinned_context(cert_file: str | Path) -> ssl.SSLContext:
    """A TLS client context that trusts exactly the first certificate of ``cert_file`` (the
    metrics endpoint's own, from its config), self-signed or not.

    The host name is not checked: a configured address is often a wildcard or an IP the
    certificate does not name, and a server can only present this certificate with its key.
    Intermediate certificates after the first are not trusted, so no other certificate they
    signed is accepted.
    """
    text = Path(cert_file).read_text(encoding="ascii")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    if start < 0 or text.find(end, start) < 0:
        raise ValueError("no PEM certificate in it")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=text[start:text.index(end, start) + len(end)] + "\n")
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the trust anchor
    return context


class _NamedContext(ssl.SSLContext):
    """A client context that checks the server's certificate against ``server_name`` (when
    given) instead of the host it connects to, as Prometheus's ``tls_config.server_name``."""

    def __new__(cls, protocol: int, server_name: str | None = None):
        context = super().__new__(cls, protocol)
        context.server_name = server_name
        return context

    def __init__(self, protocol: int, server_name: str | None = None):
        super().__init__()

    def wrap_socket(self, sock, *args, server_hostname=None, **kwargs):
        return super().wrap_socket(sock, *args, server_hostname=self.server_name or server_hostname, **kwargs)


def read_status(url: str, timeout: float = 5.0, context: ssl.SSLContext | None = None,
                auth: tuple[str, str] | None = None) -> str:
    """The text of a metrics page; :class:`CommandError` (exit 1) naming the address if it does not answer.

    Parameters
    ----------
    url : str
        The metrics page.
    timeout : float
        Seconds to wait for it.
    context : ssl.SSLContext, optional
        For ``https``: the certificates trusted (default: the system's).
    auth : (str, str), optional
        HTTP basic auth user and password.
    """
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        hint = {401: ": check the user and password (--user, --password-file)"}.get(exc.code, "")
        raise CommandError(f"{url}: HTTP {exc.code} {exc.reason}{hint}", EXIT_RUNTIME) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        # a TLS endpoint drops a plain HTTP request without an answer
        hint = ("; if it serves HTTPS, use --url https://… or --config"
                if isinstance(reason, ConnectionResetError) and url.startswith("http:") else "")
        raise CommandError(f"{url}: no metrics ({reason}); is `driftline run` serving there?{hint}",
                           EXIT_RUNTIME) from None


_OPS = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}


def parse_status(text: str, rule_ops: dict[tuple[str, str, str], tuple[str, int]] | None = None,
                 every_drift: bool = False) -> dict[str, Any]:
    """The status of an engine from the text of its metrics page.

    Parameters
    ----------
    text : str
        Prometheus text exposition, as the engine's exporter serves it.
    rule_ops : dict, optional
        (model, rule, statistic) -> (op, at_least) from the config, op ``fired`` for a condition
        on a detector firing; with it each rule condition whose statistics the page holds gets a
        state (``breach`` or ``ok``; a glob breaches when at least ``at_least`` of the statistics
        it matches do, and its value is how many do).
    every_drift : bool
        Every drift statistic, not only those in alarm.
    """
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name].append((s.labels, s.value))

    def total(name: str, **match) -> float:
        return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == w for k, w in match.items()))

    def suppressed_of(mid: str, rule: str) -> dict[str, int]:
        """The rule's suppressed triggers by reason (summed over the workers of ``run --workers``)."""
        out: dict[str, int] = {}
        for labels, v in samples.get("driftline_triggers_suppressed_total", []):
            if labels.get("model") == mid and labels.get("rule") == rule and v:
                out[labels["reason"]] = out.get(labels["reason"], 0) + int(v)
        return out

    models: dict[str, dict[str, Any]] = {}

    def model(mid: str) -> dict[str, Any]:
        return models.setdefault(mid, {"predictions": 0, "labels": 0, "joined": 0, "pending": 0,
                                       "window_samples": 0, "performance": {}, "triggers": 0,
                                       "drift_alarms": 0, "drift_statistics": 0})

    for name, key in (("driftline_predictions_total", "predictions"), ("driftline_labels_total", "labels"),
                      ("driftline_events_joined_total", "joined"), ("driftline_pending_predictions", "pending"),
                      ("driftline_window_samples", "window_samples"), ("driftline_triggers_total", "triggers")):
        for labels, value in samples.get(name, []):
            if "model" in labels:
                model(labels["model"])[key] += int(value)
    for labels, value in samples.get("driftline_performance", []):
        model(labels["model"])["performance"][labels["metric"]] = value

    drift = []
    for prefix, subject in (("driftline_feature_drift", "feature"), ("driftline_prediction_drift", None)):
        extra = {(tuple(sorted(l.items())), suffix): v for suffix in ("_p_value", "_threshold", "_alarm")
                 for l, v in samples.get(prefix + suffix, [])}
        for labels, value in samples.get(prefix, []):
            key = tuple(sorted(labels.items()))
            alarm = extra.get((key, "_alarm"), 0.0) >= 1
            row = {"model": labels["model"], "feature": labels.get("feature") if subject else "(prediction)",
                   "detector": labels["detector"], "statistic": value,
                   "threshold": extra.get((key, "_threshold")), "p_value": extra.get((key, "_p_value")),
                   "alarm": alarm}
            m = model(labels["model"])
            m["drift_statistics"] += 1
            m["drift_alarms"] += alarm
            if alarm or every_drift:
                drift.append(row)
    drift.sort(key=lambda r: (r["model"], not r["alarm"], r["feature"], r["detector"]))

    # A rule's statistic: a performance metric, a change detector or one drift statistic.
    values: dict[tuple[str, str], float] = {}
    for mid, m in models.items():
        values.update({(mid, metric): v for metric, v in m["performance"].items()})
    for labels, v in samples.get("driftline_change_detector_statistic", []):
        values[labels["model"], f"detector.{labels['detector']}"] = v
    for labels, v in samples.get("driftline_feature_drift", []):
        values[labels["model"], f"feature.{labels['feature']}.{labels['detector']}"] = v
    for labels, v in samples.get("driftline_prediction_drift", []):
        values[labels["model"], f"prediction.{labels['detector']}"] = v
    rules = []
    listed: set[tuple[str, str, str]] = set()
    for labels, threshold in samples.get("driftline_rule_threshold", []):
        mid, rule, metric = labels["model"], labels["rule"], labels["metric"]
        if (mid, rule, metric) in listed:  # every worker of `run --workers` exports the configured rules
            continue
        listed.add((mid, rule, metric))
        op, at_least = (rule_ops or {}).get((mid, rule, metric), (None, 1))
        if any(ch in metric for ch in "*?["):
            matched = [v for (m_id, name), v in values.items() if m_id == mid and fnmatch.fnmatchcase(name, metric)
                       and not math.isnan(v)]
            value = float(sum(_OPS[op](float(v), float(threshold)) for v in matched)) if op and matched else None
            breach = value is not None and value >= at_least
        else:
            value = values.get((mid, metric))
            breach = value is not None and op is not None and _OPS[op](float(value), float(threshold))
        state = "unknown"
        if value is not None and op is not None and not math.isnan(value):
            state = "breach" if breach else "ok"
        suppressed = suppressed_of(mid, rule)
        rules.append({"model": mid, "rule": rule, "statistic": metric, "op": op, "threshold": threshold,
                      "value": value, "state": state,
                      "triggers": int(total("driftline_triggers_total", model=mid, rule=rule)),
                      "suppressed": suppressed})
        model(mid)
    # Conditions on a detector firing (``fired = true``) have no threshold gauge: the config names
    # them, and the alarm gauges say whether each statistic fired at the last evaluation.
    fired: dict[tuple[str, str], float] = {}
    for name, form in (("driftline_feature_drift_alarm", "feature.{feature}.{detector}"),
                       ("driftline_prediction_drift_alarm", "prediction.{detector}"),
                       ("driftline_change_detector_fired", "detector.{detector}")):
        for labels, v in samples.get(name, []):
            fired[labels["model"], form.format(**labels)] = v
    for (mid, rule, metric), (op, at_least) in sorted((rule_ops or {}).items()):
        if op != "fired":
            continue
        matched = [v for (m_id, name), v in fired.items() if m_id == mid and fnmatch.fnmatchcase(name, metric)]
        value = float(sum(v >= 1 for v in matched)) if matched else None
        suppressed = suppressed_of(mid, rule)
        rules.append({"model": mid, "rule": rule, "statistic": metric, "op": "fired", "threshold": None,
                      "value": value, "state": "unknown" if value is None else "breach" if value >= at_least else "ok",
                      "triggers": int(total("driftline_triggers_total", model=mid, rule=rule)),
                      "suppressed": suppressed})
        model(mid)
    rules.sort(key=lambda r: (r["model"], r["rule"], r["statistic"]))
    up = samples.get("driftline_engine_up")
    return {
        "engine": {"up": bool(up) and all(v >= 1 for _, v in up),
                   "events_consumed": int(total("driftline_events_consumed_total")),
                   "events_invalid": int(total("driftline_events_invalid_total")),
                   "consumer_lag": int(total("driftline_consumer_lag_messages"))},
        "models": [{"model": mid, **m} for mid, m in sorted(models.items())],
        "drift": drift, "rules": rules,
    }


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def format_status(status: dict[str, Any], url: str, every_drift: bool) -> str:
    e = status["engine"]
    out = [f"engine at {url}: {'up' if e['up'] else 'DOWN'}, {e['events_consumed']} events consumed, "
           f"{e['events_invalid']} invalid, consumer lag {e['consumer_lag']}", ""]
    out.append(_table(["model", "predictions", "labels", "joined", "pending", "window", "performance",
                       "drift alarms", "triggers"],
                      [[m["model"], m["predictions"], m["labels"], m["joined"], m["pending"], m["window_samples"],
                        m["performance"], f"{m['drift_alarms']}/{m['drift_statistics']}", m["triggers"]]
                       for m in status["models"]]))
    out.append("")
    title = "drift statistics" if every_drift else "drift statistics in alarm (--all for every one)"
    if status["drift"]:
        out.append(title + ":")
        out.append(_table(["model", "feature", "detector", "statistic", "threshold", "p-value", "alarm"],
                          [[r["model"], r["feature"], r["detector"], r["statistic"], r["threshold"], r["p_value"],
                            r["alarm"]] for r in status["drift"]]))
    else:
        out.append(f"{title}: none")
    out.append("")
    if status["rules"]:
        out.append("rules" + ("" if any(r["op"] for r in status["rules"]) else " (--config gives each a state)") + ":")
        out.append(_table(["model", "rule", "statistic", "op", "threshold", "value", "state", "triggers", "suppressed"],
                          [[r["model"], r["rule"], r["statistic"], r["op"], r["threshold"], r["value"], r["state"],
                            r["triggers"], r["suppressed"]] for r in status["rules"]]))
    else:
        out.append("rules: none")
    return "\n".join(out)


def _rule_ops(config) -> dict[tuple[str, str, str], str]:
    from retrain_trigger.rules import load_rules

    ops = {}
    for model in config.models:
        for rule in load_rules(model.rules, where=f"models[{model.id}].rules"):
            for cond in rule.conditions:
                if cond.threshold is not None and cond.op:
                    ops[model.id, rule.name, cond.statistic] = (cond.op, cond.at_least or 1)
                elif cond.fired:
                    ops[model.id, rule.name, cond.statistic] = ("fired", cond.at_least or 1)
    return ops


def _status(args: argparse.Namespace) -> int:
    ops, settings, source = None, None, None
    address = args.url or "127.0.0.1:9464"
    if args.config:
        config = load_config(args.config)
        address, ops = args.url or config.metrics.address, _rule_ops(config)
        settings, source = config.metrics, config.source
    tls = settings is not None and settings.tls_cert_file is not None
    url = metrics_url(address, https=tls)
    context, auth = _status_access(args, settings, source, tls)
    status = parse_status(read_status(url, args.timeout, context, auth), ops, args.all)
    if args.json:
        print(json.dumps({"url": url, **status}, indent=2, default=str))
    else:
        print(format_status(status, url, args.all))
    return 0


def _status_access(args: argparse.Namespace, settings, source: str | None, tls: bool
                   ) -> tuple[ssl.SSLContext | None, tuple[str, str] | None]:
    """The TLS context and basic auth credentials to read /metrics with: the options', else
    those the config serves it with."""
    from streams.core.config import read_password

    def password(path, option: str) -> str:
        try:
            value = read_password(Path(path))
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{option} {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
        if not value:
            raise UsageError(f"{option} {path}: is empty")
        return value

    context = None
    try:
        if args.cacert:
            context = _NamedContext(ssl.PROTOCOL_TLS_CLIENT, args.server_name)
            context.load_default_certs()
            context.load_verify_locations(cafile=args.cacert)
        elif tls:
            context = pinned_context(settings.path("tls_cert_file", source))
    except (OSError, ssl.SSLError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        where = (f"--cacert {args.cacert}" if args.cacert
                 else f"metrics.tls_cert_file {settings.path('tls_cert_file', source)}")
        raise UsageError(f"{where}: cannot load a certificate ({getattr(exc, 'strerror', None) or exc})") from None
    if args.server_name and not args.cacert:
        raise UsageError("--server-name goes with --cacert (with --config alone the certificate is pinned)")
    user, path, option = args.user, args.password_file, "--password-file"
    if settings is not None and settings.basic_auth_username is not None:
        user = user or settings.basic_auth_username
        if path is None:
            path, option = settings.path("basic_auth_password_file", source), "metrics.basic_auth_password_file"
    if user is None and path is None:
        return context, None
    if user is None or path is None:
        raise UsageError("--user and --password-file go together")
    return context, (user, password(path, option))


# -- reference -------------------------------------------------------------------------------------
def _time(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    from streams.core.codecs import parse_timestamp

    try:
        return parse_timestamp(int(text) if text.lstrip("-").isdigit() else text)
    except (ValueError, TypeError):
        raise UsageError(f"{option} {text!r}: expected ISO-8601 with a zone or epoch milliseconds") from None


def build_reference(config, model_id: str | None, predictions: str | Path, size: int | None = None,
                    last: bool = False, since: int | None = None, until: int | None = None
                    ) -> tuple[dict[str, list], dict[str, Any]]:
    """A reference (feature -> values, ``prediction`` -> watched prediction values) from one
    model's predictions in a file, decoded and validated as the engine would; and what was taken
    (count, time range, invalid lines, features without a value)."""
    from streams.tools.backtest import BacktestError, load_events
    from streams.core.codecs import Prediction, format_timestamp

    ids = [m.id for m in config.models]
    if model_id is None:
        if len(ids) != 1:
            raise UsageError(f"{config.source}: {len(ids)} models ({', '.join(ids)}): name one with --model")
        model_id = ids[0]
    model = next((m for m in config.models if m.id == model_id), None)
    if model is None:
        raise UsageError(f"--model {model_id!r}: not in {config.source} (models: {', '.join(ids)})")
    if size is not None and size < 0:
        raise UsageError(f"--size {size}: expected 0 (all) or more")
    if size is None:
        size = model.drift.reference_size if model.drift is not None else 1000
    try:
        loaded = load_events(config, predictions=predictions)
    except BacktestError as exc:
        raise UsageError(str(exc)) from None
    except (IsADirectoryError, PermissionError) as exc:
        raise UsageError(f"{predictions}: {exc.strerror}") from None
    events = [e for e, _ in loaded.events if isinstance(e, Prediction) and e.model_id == model_id
              and (since is None or e.timestamp >= since) and (until is None or e.timestamp < until)]
    if size:
        events = events[-size:] if last else events[:size]
    if not events:
        raise UsageError(f"{predictions}: no valid prediction of model {model_id!r}"
                        + (" in the time range" if since is not None or until is not None else ""))
    numeric = set(model.features.numeric)
    reference: dict[str, list] = {}
    for feature in [*model.features.numeric, *model.features.categorical]:
        values = [e.features.get(feature) for e in events]
        if feature in numeric:
            values = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                      and math.isfinite(v)]
        else:
            values = [v for v in values if v is not None]
        if values:
            reference[feature] = values
    watched = [e.score if model.task == "binary" else e.prediction for e in events]
    watched = [v for v in watched if v is not None]
    if watched:
        reference["prediction"] = watched
    missing = [f for f in [*model.features.numeric, *model.features.categorical] if f not in reference]
    info = {"model": model_id, "predictions": len(events), "from": format_timestamp(events[0].timestamp),
            "to": format_timestamp(events[-1].timestamp), "missing": missing,
            "invalid": sum(loaded.invalid.values())}
    return reference, info


def _reference(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    reference, info = build_reference(config, args.model, args.predictions, args.size, args.last,
                                      _time(args.since, "--since"), _time(args.until, "--until"))
    out = Path(args.out)
    try:
        out.write_text(json.dumps(reference) + "\n")
    except OSError as exc:
        raise UsageError(f"{out}: cannot write ({exc.strerror})") from None
    print(f"wrote {out}: {info['predictions']} predictions of {info['model']} from {info['from']} to "
          f"{info['to']}, {len(reference)} keys ({', '.join(reference)})")
    if info["missing"]:
        print(f"driftline: no value of {', '.join(info['missing'])} in those predictions: "
              "their reference will be their first values in the stream", file=sys.stderr)
    if info["invalid"]:
        print(f"driftline: {info['invalid']} invalid lines skipped", file=sys.stderr)
    print(f'use it: [models.drift] reference_file = "{os.path.relpath(out.resolve(), Path(args.config).resolve().parent)}"'
          " (relative to the config)")
    return 0


# -- init ------------------------------------------------------------------------------------------
@dataclass
class _ModelSample:
    predictions: int = 0
    numeric: Counter = field(default_factory=Counter)
    categorical: Counter = field(default_factory=Counter)
    predicted: Counter = field(default_factory=Counter)
    float_predictions: int = 0
    scores: int = 0
    probabilities: set = field(default_factory=set)
    segments: int = 0
    versions: set = field(default_factory=set)
    pending: dict = field(default_factory=dict)
    labelled: int = 0
    correct: int = 0
    abs_error: float = 0.0


def _sample(path: str | Path, max_lines: int) -> tuple[dict[str, _ModelSample], int, int]:
    models: dict[str, _ModelSample] = {}
    lines = skipped = 0
    labels: list[dict] = []
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    with file:
        for line in file:
            if lines >= max_lines:
                break
            lines += 1
            try:
                event = msgspec.json.decode(line.strip() or b"null")
            except msgspec.DecodeError:
                skipped += 1
                continue
            if not isinstance(event, dict) or not isinstance(event.get("model_id"), str):
                skipped += 1
                continue
            if "label" in event:
                labels.append(event)
                continue
            if "prediction" not in event:
                skipped += 1
                continue
            m = models.setdefault(event["model_id"], _ModelSample())
            m.predictions += 1
            for name, value in (event.get("features") or {}).items():
                if isinstance(value, bool) or isinstance(value, str):
                    m.categorical[name] += 1
                elif isinstance(value, (int, float)):
                    m.numeric[name] += 1
            p = event["prediction"]
            if isinstance(p, float) and not p.is_integer():
                m.float_predictions += 1
            if isinstance(p, (int, float, str)) and not isinstance(p, bool):
                m.predicted[p] += 1
            m.scores += event.get("score") is not None
            m.probabilities.update(event.get("probabilities") or {})
            m.segments += bool(event.get("segment"))
            if event.get("model_version"):
                m.versions.add(event["model_version"])
            if "prediction_id" in event:
                m.pending[event["prediction_id"]] = p
    for label in labels:
        m = models.get(label["model_id"])
        if m is None or label.get("prediction_id") not in m.pending:
            continue
        predicted, truth = m.pending[label["prediction_id"]], label["label"]
        m.labelled += 1
        m.correct += predicted == truth
        if isinstance(predicted, (int, float)) and isinstance(truth, (int, float)):
            m.abs_error += abs(predicted - truth)
    return models, lines, skipped


def _toml(value: Any) -> str:
    return json.dumps(value)  # a JSON string or list of strings is a TOML one


def scaffold_config(sample: dict[str, _ModelSample], source: str, bootstrap: str) -> str:
    """The text of a commented config for the models of a sample."""
    out = [f"# driftline config scaffolded by `driftline init` from {source}.",
           "# Check it with:  driftline check-config <this file>   (every key: driftline.example.toml)", "",
           "[kafka]", f'"bootstrap.servers" = {_toml(bootstrap)}', "",
           "[topics]", 'predictions = "predictions"', 'labels = "labels"', 'triggers = "retrain-triggers"', ""]
    for model_id, m in sorted(sample.items()):
        # a feature is numeric when every value seen was a number; any string or boolean makes it categorical
        categorical = sorted(f for f in m.categorical)
        numeric = sorted(f for f in m.numeric if f not in m.categorical)
        if m.float_predictions:
            task = "regression"
        elif m.probabilities or len(m.predicted) > 2:
            task = "multiclass"
        else:
            task = "binary"
        out += ["[[models]]", f"id = {_toml(model_id)}",
                f"task = {_toml(task)}"
                + {"regression": "   # predictions with a fraction were seen",
                   "multiclass": f"   # {len(m.predicted)} classes were predicted",
                   "binary": "   # at most two classes were predicted"}[task]]
        if task == "multiclass" and m.probabilities:
            out.append(f"classes = {_toml(sorted(m.probabilities))}   # the keys of `probabilities`")
        partial = [f for f in numeric + categorical if (m.numeric[f] + m.categorical[f]) < m.predictions]
        out += [f"# {m.predictions} predictions in the sample" + (f"; versions {', '.join(sorted(m.versions))}"
                                                                    if m.versions else ""),
                "# numeric: only numbers were seen; categorical: strings or booleans. A number that names a",
                "# category (a code) belongs in categorical.",
                f"features = {{ numeric = {_toml(numeric)}, categorical = {_toml(categorical)} }}"]
        if partial:
            out.append(f"# missing in some predictions: {', '.join(partial)}")
        out += ["window = { kind = \"count\", size = 1000 }   # performance over the last 1000 labelled predictions",
                "evaluate_every = 50                        # rules are judged every 50 predictions / pairs",
                "label_ttl_seconds = 86400                  # a prediction waits a day for its label"]
        if task == "binary" and m.scores < m.predictions:
            out.append("# note: some predictions carry no `score`; the prediction drift watches the score")
        out += ["", "  [models.drift]                            # drift of every prediction's features, no labels needed",
                '  numeric = ["psi", "ks"]' if numeric else "  numeric = []",
                '  categorical = ["chi2"]' if categorical else "  categorical = []",
                '  prediction = ["psi"]' if task != "multiclass" else '  prediction = ["chi2"]',
                "  reference_size = 1000                     # the first 1000 values of each are the reference,",
                '  # reference_file = "reference.json"       # or a file: driftline reference --config ... --out reference.json',
                "  # the alarm levels of the statistics: see [models.drift] in driftline.example.toml", ""]
        out += _rule(task, m)
        out.append("")
    return "\n".join(out)


def _rule(task: str, m: _ModelSample) -> list[str]:
    """One rule: a floor on accuracy (classification) or a ceiling on the mean absolute error
    (regression) placed from the sample's own labels when it has them; drift of the predictions
    when a regression sample has none."""
    head = ["  [[models.rules]]"]
    if task != "regression":
        if m.labelled >= 50:
            accuracy = m.correct / m.labelled
            threshold = max(0.05, math.floor((accuracy - 0.05) * 100) / 100)
            why = f"the sample's accuracy {accuracy:.3f} over {m.labelled} labelled predictions, less 0.05"
        else:
            threshold, why = 0.8, "no labels in the sample: set the floor your model must keep"
        return head + ['  name = "accuracy-floor"', "  min_samples = 500                          # judge a window of 500 labelled predictions or more",
                       "  cooldown_seconds = 3600", "    [[models.rules.conditions]]", '    statistic = "accuracy"',
                       '    op = "<"', f"    threshold = {threshold:g}                          # {why}"]
    if m.labelled >= 50:
        mae = m.abs_error / m.labelled
        threshold = float(f"{max(mae * 1.5, 1e-9):.3g}")
        return head + ['  name = "error-ceiling"', "  min_samples = 500", "  cooldown_seconds = 3600",
                       "    [[models.rules.conditions]]", '    statistic = "mae"', '    op = ">"',
                       f"    threshold = {threshold:g}   # 1.5 x the sample's mean absolute error {mae:.4g} "
                       f"over {m.labelled} labelled predictions"]
    return head + ['  name = "prediction-drift"', "  min_samples = 500", "  cooldown_seconds = 3600",
                   "    [[models.rules.conditions]]", '    statistic = "prediction.psi"', '    op = ">"',
                   "    threshold = 0.2                          # no labels in the sample: watch the predictions' drift"]


def _init(args: argparse.Namespace) -> int:
    from streams.core.config import ConfigError, parse_config

    if args.max_lines < 1:
        raise UsageError(f"--max-lines {args.max_lines}: expected 1 or more")
    sample, lines, skipped = _sample(args.events, args.max_lines)
    if not sample:
        raise UsageError(f"{args.events}: no prediction event in {lines} lines (one JSON object per line, "
                        "with model_id and prediction)")
    if args.bootstrap_servers:
        bootstrap = checked_bootstrap(args.bootstrap_servers)
    elif os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        bootstrap = checked_bootstrap(os.environ["KAFKA_BOOTSTRAP_SERVERS"], "$KAFKA_BOOTSTRAP_SERVERS")
    else:
        bootstrap = "127.0.0.1:9092"
    text = scaffold_config(sample, Path(args.events).name, bootstrap)
    where = args.out or "<init>"
    try:  # what check-config would say, before anything is written
        parse_config(tomllib.loads(text), where, kafka_check=librdkafka_problem)
    except (ConfigError, tomllib.TOMLDecodeError) as exc:
        raise CommandError(f"the scaffolded config does not check ({exc}); please report it", EXIT_RUNTIME) from None
    if args.out is None:
        sys.stdout.write(text)
    else:
        out = Path(args.out)
        if out.exists() and not args.force:
            raise UsageError(f"{out}: exists (--force overwrites it)")
        try:
            out.write_text(text)
        except OSError as exc:
            raise UsageError(f"{out}: cannot write ({exc.strerror})") from None
        print(f"wrote {out}: {len(sample)} models ({', '.join(sorted(sample))}) from {lines} lines"
              + (f", {skipped} skipped" if skipped else "") + f"; check it with: driftline check-config {out}")
    return 0
