"""The Prometheus exporter: every family driftline exports, in one place.

Names follow Prometheus practice: prefix ``driftline_``, base units, counters end in ``_total``,
labels bounded (``model`` from the config, ``version``/``segment`` capped, ``reason`` from
:data:`streams.core.codecs.REASONS`). The README lists every family.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import socket
import ssl
import threading
import time
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from retrain_trigger.rules import load_rules

from streams.core.config import Config, ConfigError, read_password
from streams.core.config import Metrics as MetricsSettings
from streams.runtime.pipeline import Metrics

if TYPE_CHECKING:
    from retrain_trigger.events import TriggerEvent

    from streams.core.monitor import Monitor

OTHER = "other"
log = logging.getLogger("driftline.metrics")


class BoundedLabel:
    """Keeps at most ``cap`` distinct values of a label per model; later newcomers become ``other``."""

    def __init__(self, cap: int):
        self.cap = cap
        self.seen: dict[str, set[str]] = {}

    def __call__(self, model: str, value: str | None) -> str:
        value = value or "none"
        seen = self.seen.setdefault(model, set())
        if value in seen:
            return value
        if len(seen) < self.cap:
            seen.add(value)
            return value
        return OTHER


class BatchHistogram:
    """A histogram with one label, fed a batch of values at a time; exported like a
    ``prometheus_client.Histogram`` (``_bucket``/``_sum``/``_count``, cumulative ``le``).

    For values observed once per event on the hot path: ``Histogram.observe`` costs about a
    microsecond a call, a batch here costs one ``searchsorted`` and one ``bincount``.
    """

    def __init__(self, name: str, documentation: str, label: str, buckets, registry: CollectorRegistry):
        self.name, self.documentation, self.label = name, documentation, label
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._series: dict[str, tuple[np.ndarray, list[float]]] = {}  # label value -> (counts, [sum])
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, label_value: str, values) -> None:
        with self._lock:  # the exporter's HTTP thread collects concurrently
            counts, total = self._series.setdefault(label_value, (np.zeros(len(self.bounds) + 1, np.int64), [0.0]))
            if len(values):
                values = np.asarray(values, dtype=np.float64)
                # bucket i counts values <= bounds[i]; the last one the rest (+Inf)
                counts += np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(counts))
                total[0] += float(values.sum())

    def describe(self):
        yield HistogramMetricFamily(self.name, self.documentation, labels=[self.label])

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        with self._lock:
            for label_value, (counts, total) in self._series.items():
                cumulative = np.cumsum(counts).tolist()
                buckets = [(floatToGoString(b), c) for b, c in zip(self.bounds, cumulative)]
                family.add_metric([label_value], buckets + [("+Inf", cumulative[-1])], total[0])
        yield family


class PValueGauge:
    """A gauge of p-values that may be handed over deferred (a function of no arguments, see
    :class:`detectors.base.Result`): they are computed when Prometheus scrapes, not when the
    engine sets them. An exact KS p-value costs up to 0.3 ms; computed after every batch for
    every feature they doubled the exporter's time, and only the values a scrape sees matter.
    Evaluated in the HTTP thread: a deferred p-value reads an immutable snapshot of its test."""

    def __init__(self, name: str, documentation: str, labels: list[str], registry: CollectorRegistry):
        self.name, self.documentation, self.labels = name, documentation, labels
        self._values: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def set(self, label_values: tuple[str, ...], p_value: float | Callable[[], float]) -> None:
        with self._lock:
            self._values[label_values] = p_value

    def remove_models(self, models: set[str]) -> None:
        """Drop the series of these models (``model`` is the first label)."""
        with self._lock:
            self._values = {key: value for key, value in self._values.items() if key[0] not in models}

    def describe(self):
        yield GaugeMetricFamily(self.name, self.documentation, labels=self.labels)

    def collect(self):
        with self._lock:
            values = list(self._values.items())
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for label_values, p_value in values:
            family.add_metric(list(label_values), float(p_value()) if callable(p_value) else p_value)
        yield family


def _remove_series(gauges, label: str, values: set[str]) -> None:
    """Drop each gauge's series whose ``label`` is one of ``values``."""
    if not values:
        return
    for gauge in gauges:
        for family in gauge.collect():
            for sample in family.samples:
                if sample.labels.get(label) in values:
                    gauge.remove(*sample.labels.values())  # in the order of the gauge's label names


class Exporter(Metrics):
    """Every metric family, and what the pipeline counts (:class:`~streams.runtime.pipeline.Metrics`)."""

    def __init__(self, config: Config, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.settings, self.source = config.metrics, config.source  # where and how serve() listens
        self.version_label = BoundedLabel(config.metrics.max_versions)
        self.segment_label = BoundedLabel(config.metrics.max_segments)
        #: model id -> its ModelMonitor, for the models touched since their gauges were last set
        self._stale: dict[str, Any] = {}
        self._refreshed = -math.inf
        r = self.registry
        self.consumed = Counter("driftline_events_consumed_total", "Messages read from the input topics.",
                                ["topic"], registry=r)
        self.invalid = Counter("driftline_events_invalid_total",
                               "Messages rejected to the dead-letter topic, by reason.", ["topic", "reason"],
                               registry=r)
        self.predictions = Counter("driftline_predictions_total", "Valid prediction events, by segment "
                                   "(the event's segment map as k=v pairs; capped per model).", ["model", "segment"],
                                   registry=r)
        self.labels = Counter("driftline_labels_total", "Valid label events.", ["model"], registry=r)
        self.joined = Counter("driftline_events_joined_total", "Predictions joined with their label.",
                              ["model"], registry=r)
        self.expired = Counter("driftline_events_expired_total",
                               "Predictions (kind=prediction) or labels (kind=label) that found no partner "
                               "within the model's label TTL.", ["model", "kind"], registry=r)
        self.late = Counter("driftline_events_late_total",
                            "Labels that came after their prediction expired or their event-time window "
                            "closed; counted, never merged.", ["model"], registry=r)
        self.duplicates = Counter("driftline_events_duplicate_total", "Repeated predictions or labels, ignored.",
                                  ["model", "kind"], registry=r)
        self.label_lag = BatchHistogram("driftline_label_lag_seconds",
                                        "Event-time delay between a prediction and its label.", "model",
                                        buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400),
                                        registry=r)
        self.performance = Gauge("driftline_performance", "Current value of a performance metric over the "
                                 "model's window.", ["model", "version", "metric"], registry=r)
        self.estimated = Gauge("driftline_performance_estimated", "A performance metric of the latest predictions "
                               "estimated from their calibrated scores, before labels arrive (CBPE).",
                               ["model", "version", "metric"], registry=r)
        self.estimated_lower = Gauge("driftline_performance_estimated_lower", "Lower end of the estimate's 95 % "
                                     "band (sampling error of the window).", ["model", "version", "metric"],
                                     registry=r)
        self.estimated_upper = Gauge("driftline_performance_estimated_upper", "Upper end of the estimate's 95 % "
                                     "band (sampling error of the window).", ["model", "version", "metric"],
                                     registry=r)
        self.window_count = Gauge("driftline_window_samples", "Labelled samples in the model's window.",
                                  ["model"], registry=r)
        self.threshold = Gauge("driftline_rule_threshold", "Threshold of a rule condition, to draw beside "
                               "its statistic.", ["model", "rule", "metric"], registry=r)
        self.triggers = Counter("driftline_triggers_total", "Retrain triggers published.",
                                ["model", "rule"], registry=r)
        self.suppressed = Counter("driftline_triggers_suppressed_total",
                                  "Rule breaches that did not trigger, by reason (cooldown, min_samples).",
                                  ["model", "rule", "reason"], registry=r)
        self.feature_drift = Gauge("driftline_feature_drift", "Drift statistic of a feature's current window "
                                   "against its reference (detector: psi, ks, wasserstein, js, chi2).",
                                   ["model", "feature", "detector"], registry=r)
        self.feature_drift_p_value = PValueGauge("driftline_feature_drift_p_value", "p-value of a feature's "
                                                 "drift test (ks, chi2).", ["model", "feature", "detector"], r)
        self.feature_drift_threshold = Gauge("driftline_feature_drift_threshold", "Level above which a "
                                             "feature's drift statistic alarms.", ["model", "feature", "detector"],
                                             registry=r)
        self.feature_drift_alarm = Gauge("driftline_feature_drift_alarm", "1 while a feature's drift statistic "
                                         "is past its threshold (after multiple-testing correction).",
                                         ["model", "feature", "detector"], registry=r)
        self.prediction_drift = Gauge("driftline_prediction_drift", "Drift statistic of the prediction/score "
                                      "distribution against its reference.", ["model", "detector"], registry=r)
        self.prediction_drift_p_value = PValueGauge("driftline_prediction_drift_p_value", "p-value of the "
                                                    "prediction drift test (ks, chi2).", ["model", "detector"], r)
        self.prediction_drift_threshold = Gauge("driftline_prediction_drift_threshold", "Level at which the "
                                                "prediction drift statistic alarms.", ["model", "detector"],
                                                registry=r)
        self.prediction_drift_alarm = Gauge("driftline_prediction_drift_alarm", "1 while the prediction drift "
                                            "statistic is past its threshold.", ["model", "detector"], registry=r)
        self.change_statistic = Gauge("driftline_change_detector_statistic", "A change detector's running "
                                      "statistic on the error stream.", ["model", "detector"], registry=r)
        self.change_threshold = Gauge("driftline_change_detector_threshold", "The level a change detector's "
                                      "statistic signals at, where it has one.", ["model", "detector"], registry=r)
        self.change_fired = Gauge("driftline_change_detector_fired", "1 when a change detector signalled since "
                                  "the last evaluation point.", ["model", "detector"], registry=r)
        self.change_detections = Counter("driftline_change_detections_total", "Changes a detector signalled "
                                         "on the error stream.", ["model", "detector"], registry=r)
        self.pending = Gauge("driftline_pending_predictions", "Predictions waiting for their label.",
                             ["model"], registry=r)
        self.consumer_lag = Gauge("driftline_consumer_lag_messages",
                                  "Messages between the engine's position and the end of an input partition.",
                                  ["topic", "partition"], registry=r)
        self.commit_seconds = Histogram("driftline_transaction_commit_seconds",
                                        "Time to commit one transaction (outputs + offsets + state).",
                                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                                        registry=r)
        self.checkpoint_bytes = Gauge("driftline_checkpoint_bytes",
                                      "Size of the partition's current checkpoint (latest state of each model).",
                                      ["partition"], registry=r)
        self.up = Gauge("driftline_engine_up", "1 while the engine is consuming.", registry=r)
        for model in config.models:
            for rule in load_rules(model.rules, where=f"models[{model.id}].rules"):
                for cond in rule.conditions:
                    if cond.threshold is not None:
                        self.threshold.labels(model.id, rule.name, cond.statistic).set(cond.threshold)

    def count_consumed(self, topic: str, count: int) -> None:
        self.consumed.labels(topic).inc(count)

    def count_rejected(self, topic: str, reason: str) -> None:
        self.invalid.labels(topic, reason).inc()

    def count_trigger(self, trigger: "TriggerEvent") -> None:
        self.triggers.labels(trigger.model_id, trigger.rule).inc()

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(lag)

    def set_checkpoint_bytes(self, partition: int, size: int) -> None:
        self.checkpoint_bytes.labels(str(partition)).set(size)

    def observe(self, monitor: "Monitor") -> None:
        """Fold the counters a Monitor drains into the metrics; the gauges of the models it
        touched or restored since its last drain (the others' have not changed) are set by the
        next :meth:`refresh`."""
        e = self
        for model_id, c, m in monitor.drain_counters():
            for segment, count in c.segments.items():
                e.predictions.labels(model_id, e.segment_label(model_id, segment)).inc(count)
            e.labels.labels(model_id).inc(c.labels)
            e.joined.labels(model_id).inc(c.joined)
            e.expired.labels(model_id, "prediction").inc(c.expired_predictions)
            e.expired.labels(model_id, "label").inc(c.expired_labels)
            e.late.labels(model_id).inc(c.late_labels)
            e.duplicates.labels(model_id, "prediction").inc(c.duplicate_predictions)
            e.duplicates.labels(model_id, "label").inc(c.duplicate_labels)
            e.label_lag.observe_many(model_id, c.label_lags)
            for kind, count in c.change_detections.items():
                e.change_detections.labels(model_id, kind).inc(count)
            for (rule, reason), count in c.suppressed.items():
                e.suppressed.labels(model_id, rule, reason).inc(count)
            self._stale[model_id] = m
        self.refresh()

    def forget(self, models: Iterable[str], partitions: Iterable[int] = ()) -> None:
        """Drop the gauges of these models and input partitions (their checkpoint size and
        consumer lag): the partitions went to another engine, which exports them from now on; a
        stale copy beside its series would be summed or picked by a dashboard or ``driftline
        status``. Counters stay (each engine counts what it saw)."""
        _remove_series((self.checkpoint_bytes, self.consumer_lag), "partition", {str(p) for p in partitions})
        models = set(models)
        if not models:
            return
        for model_id in models:
            self._stale.pop(model_id, None)
        _remove_series((self.performance, self.estimated, self.estimated_lower, self.estimated_upper,
                        self.window_count, self.feature_drift, self.feature_drift_threshold, self.feature_drift_alarm,
                        self.prediction_drift, self.prediction_drift_threshold, self.prediction_drift_alarm,
                        self.change_statistic, self.change_threshold, self.change_fired, self.pending), "model", models)
        self.feature_drift_p_value.remove_models(models)
        self.prediction_drift_p_value.remove_models(models)

    def refresh(self) -> None:
        """Set the gauges of the models touched since their last refresh, at most once per
        ``metrics.refresh_ms``. Setting them reads every statistic of a model at its latest
        point, which the rules read only at their evaluation points: after every batch it cost
        the engine as much as the rules themselves when batches are small (a quiet stream),
        and a scrape reads the gauges every few seconds at most. The engines call this between
        batches too, so the last batch's values are set when a stream goes quiet."""
        if not self._stale or time.monotonic() - self._refreshed < self.settings.refresh_ms / 1000:
            return
        stale = self._stale
        while stale:  # a model leaves the stale ones once its gauges are set
            model_id, m = next(iter(stale.items()))
            self._observe_statistics(model_id, m)
            self.window_count.labels(model_id).set(m.stats.window_samples())
            self.pending.labels(model_id).set(len(m.join.pending))
            del stale[model_id]
        self._refreshed = time.monotonic()

    def _observe_statistics(self, model_id: str, m) -> None:
        version = self.version_label(model_id, m.version)
        for name, obs in m.observations().items():
            family, _, rest = name.partition(".")
            if family == "feature":
                feature, kind = rest.rsplit(".", 1)
                _set_drift(obs, (model_id, feature, kind), self.feature_drift, self.feature_drift_p_value,
                           self.feature_drift_threshold, self.feature_drift_alarm)
            elif family == "prediction":
                _set_drift(obs, (model_id, rest), self.prediction_drift, self.prediction_drift_p_value,
                           self.prediction_drift_threshold, self.prediction_drift_alarm)
            elif family == "detector":
                self.change_statistic.labels(model_id, rest).set(obs.value)
                if obs.threshold is not None:
                    self.change_threshold.labels(model_id, rest).set(obs.threshold)
                self.change_fired.labels(model_id, rest).set(1 if obs.fired else 0)
            elif family == "estimated":
                continue  # with its band, below
            else:
                self.performance.labels(model_id, version, name).set(obs.value)
        self._observe_estimated(model_id, version, m.stats.estimated())

    def _observe_estimated(self, model_id: str, version: str, estimates: dict) -> None:
        """Each estimated metric and its band, once there is an estimate (the calibration fitted)."""
        for metric, estimate in estimates.items():
            if not estimate.n:
                continue
            labels = (model_id, version, metric)
            self.estimated.labels(*labels).set(estimate.value)
            if math.isfinite(estimate.stderr):
                self.estimated_lower.labels(*labels).set(estimate.lower)
                self.estimated_upper.labels(*labels).set(estimate.upper)

    def serve(self, address: str) -> "MetricsServer":
        """Serve ``/metrics`` at ``address`` (host:port) in a daemon thread, with the config's TLS
        and basic auth; a ``metrics.*`` setting that cannot be used raises ``ConfigError``."""
        server = MetricsServer(make_wsgi_app(self.registry), address, self.settings, self.source)
        server.start()
        return server


def _set_drift(obs, labels: tuple[str, ...], statistic: Gauge, p_value: PValueGauge, threshold: Gauge,
               alarm: Gauge) -> None:
    """A drift observation's four gauges (feature or prediction drift): statistic, p-value and
    threshold where the detector has them, and the alarm. The p-value is computed at scrape."""
    statistic.labels(*labels).set(obs.value)
    deferred = obs.deferred_p_value()
    if deferred is not None:
        p_value.set(labels, deferred)
    if obs.threshold is not None:
        threshold.labels(*labels).set(obs.threshold)
    alarm.labels(*labels).set(1 if obs.fired else 0)


class MetricsServer:
    """``/metrics`` over HTTP, or HTTPS with ``metrics.tls_cert_file``/``tls_key_file``, behind
    HTTP basic auth with ``metrics.basic_auth_username``/``basic_auth_password_file``.

    prometheus-client's ``start_http_server`` takes a certificate but has no basic auth, and
    wraps the listening socket, so the TLS handshake runs in its one accepting thread, where a
    client that connects and sends nothing stalls every scrape. Here each connection is wrapped
    and handshaken in its own thread, with a timeout.

    Parameters
    ----------
    app
        The WSGI app that renders the metrics (``prometheus_client.make_wsgi_app``).
    address
        ``host:port`` to bind; port 0 picks a free one (see :attr:`url`).
    settings, source
        The config's ``[metrics]`` table and the config file its relative paths start from.
    """

    #: seconds a connection may take for its TLS handshake and each read
    TIMEOUT = 10.0

    def __init__(self, app, address: str, settings: MetricsSettings, source: str):
        host, port = address.rsplit(":", 1)
        self.tls = _tls_context(settings, source)
        if settings.basic_auth_username is not None:
            password = read_password(settings.path("basic_auth_password_file", source))
            app = BasicAuth(app, settings.basic_auth_username, password)
            if self.tls is None:
                log.warning("metrics: basic auth without TLS sends the password in the clear; set "
                            "metrics.tls_cert_file and metrics.tls_key_file")
        try:
            self.httpd = _Server((host or "0.0.0.0", int(port)), _QuietHandler, tls=self.tls)
        except OSError as exc:
            raise ConfigError(f"metrics.address: cannot listen on {address}: {exc.strerror or exc}") from None
        self.httpd.set_app(app)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="driftline-metrics", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}/metrics"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _tls_context(settings: MetricsSettings, source: str) -> ssl.SSLContext | None:
    if settings.tls_cert_file is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    cert, key = settings.path("tls_cert_file", source), settings.path("tls_key_file", source)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"metrics.tls_cert_file, metrics.tls_key_file: cannot load {cert} with {key}: "
                          f"{getattr(exc, 'reason', None) or exc}") from None
    return context


class BasicAuth:
    """A WSGI app that answers 401 unless the request carries the user and password.

    Both are compared in constant time (``hmac.compare_digest``), each on its own, so a wrong
    guess's timing says neither how much of it matched nor which part was wrong.
    """

    def __init__(self, app, username: str, password: str):
        self.app = app
        self.username, self.password = username.encode(), password.encode()

    def __call__(self, environ, start_response):
        if self.allowed(environ.get("HTTP_AUTHORIZATION", "")):
            return self.app(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="driftline", charset="UTF-8"'),
                                            ("Content-Type", "text/plain; charset=utf-8")])
        return [b"401 Unauthorized: basic auth required\n"]

    def allowed(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        user_ok = hmac.compare_digest(user, self.username)
        password_ok = hmac.compare_digest(password, self.password)
        return bool(sep) and user_ok and password_ok


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on stderr."""

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        log.debug("metrics: %s " + format, self.address_string(), *args)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, tls: ssl.SSLContext | None):
        self.tls = tls
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        # In the connection's own thread (ThreadingMixIn), so a slow handshake stalls nobody else.
        request.settimeout(MetricsServer.TIMEOUT)
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        with self.tls.wrap_socket(request, server_side=True) as wrapped:  # the handshake, here
            super().finish_request(wrapped, client_address)

    def shutdown_request(self, request):
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        request.close()

    def handle_error(self, request, client_address):
        # A client that speaks plain HTTP to the HTTPS port, or hangs up: not the server's fault.
        log.debug("metrics: connection from %s failed", client_address, exc_info=True)
