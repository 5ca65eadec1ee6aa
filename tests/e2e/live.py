"""A live driftline + Prometheus run, shared by the e2e test and ``deploy/dashboard_png.py``.

- :class:`PrometheusServer` runs Debian's ``prometheus`` binary on a free loopback port with its own
  temporary storage, scraping one driftline engine every second with the alert rules loaded.
- :class:`DriftingStream` produces a model's predictions and labels in a background thread: a
  reference phase, then covariate drift (feature ``x`` shifts, ``plan`` changes mix) with falling
  accuracy, plus a trickle of malformed messages for the dead-letter panels.
- :func:`dashboard_queries` lists every query of the Grafana dashboard, with the template
  variables substituted the way Grafana would.
"""
from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from streams.core.codecs import Label, Prediction
from streams.tools.kafka_local import _free_port

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "driftline.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"

#: The model the live run watches: accuracy rule, drift on a numeric and a categorical feature,
#: a change detector on the error stream. Small windows so that drift shows within seconds.
MODEL_ID = "churn"
MODEL_CONFIG = f"""
[[models]]
id = "{MODEL_ID}"
task = "binary"
features = {{ numeric = ["x"], categorical = ["plan"] }}
window = {{ kind = "count", size = 400 }}
evaluate_every = 50
drift = {{ numeric = ["psi", "ks"], categorical = ["chi2"], prediction = ["psi"], reference_size = 2000, window = 1000 }}
detectors = [{{ kind = "adwin" }}, {{ kind = "page_hinkley" }}]
estimation = {{ reference_size = 500 }}

  [[models.rules]]
  name = "accuracy-floor"
  min_samples = 400
  consecutive = 1
  cooldown_seconds = 3600
    [[models.rules.conditions]]
    statistic = "accuracy"
    op = "<"
    threshold = 0.8
    rearm = 0.85
"""


# -- Prometheus --------------------------------------------------------------------------------
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if not path:
        raise RuntimeError("the prometheus binary is missing: apt-get install prometheus (make test does)")
    return path


def rules_with_short_for(src: Path, dst: Path, for_: str = "2s") -> Path:
    """The committed alert rules, every expression unchanged, every ``for:`` shortened so that a
    two-minute test can see an alert fire (promtool test rules checks the real durations)."""
    text = re.sub(r"^(\s*)for: \S+$", rf"\1for: {for_}", src.read_text(), flags=re.M)
    dst.write_text(text)
    return dst


class PrometheusServer:
    def __init__(self, tmp: Path, targets: list[str], rules: Path | None = None, interval: str = "1s"):
        self.tmp = tmp
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp / "prometheus.yml"
        rule_files = f"rule_files: [{json.dumps(str(rules))}]\n" if rules else ""
        self.config.write_text(
            f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n"
            f"  evaluation_interval: {interval}\n{rule_files}"
            f"scrape_configs:\n  - job_name: driftline\n    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> "PrometheusServer":
        storage = self.tmp / "prometheus-data"
        storage.mkdir(exist_ok=True)
        self.log = open(self.tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={self.config}", f"--storage.tsdb.path={storage}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d",
             "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.tmp)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}: {self.logs()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready in {timeout}s: {self.logs()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc:
            self.log.close()

    def logs(self) -> str:
        path = self.tmp / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", **params)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict]:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step)["result"]

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]

    def firing(self, name: str) -> list[dict]:
        return [a for a in self.alerts() if a["labels"].get("alertname") == name and a["state"] == "firing"]

    def targets_up(self) -> bool:
        return any(t["health"] == "up" for t in self.api("targets")["activeTargets"])


def finite_values(result: list[dict]) -> list[float]:
    """Every finite sample value of an instant-vector or matrix result."""
    values = []
    for series in result:
        points = series.get("values") or [series.get("value")]
        for _, v in points:
            f = float(v)
            if math.isfinite(f):
                values.append(f)
    return values


# -- the dashboard's queries ---------------------------------------------------------------
@dataclass
class DashboardQuery:
    panel: str
    ref: str
    expr: str          # with template variables substituted
    raw: str           # as in the dashboard
    kind: str          # "panel", "annotation" or "variable"


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace ``$name`` and ``${name}`` the way Grafana's template service does (longest first)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    if "$" in expr:
        raise ValueError(f"unsubstituted variable in {expr!r}")
    return expr


def dashboard_queries(variables: dict[str, str], path: Path = DASHBOARD) -> list[DashboardQuery]:
    dashboard = json.loads(path.read_text())
    out: list[DashboardQuery] = []

    def walk(panels):
        for panel in panels:
            walk(panel.get("panels", []))
            for t in panel.get("targets", []):
                out.append(DashboardQuery(panel["title"], t["refId"], substitute(t["expr"], variables), t["expr"],
                                          "panel"))

    walk(dashboard["panels"])
    for a in dashboard["annotations"]["list"]:
        if "expr" in a:
            out.append(DashboardQuery(a["name"], "annotation", substitute(a["expr"], variables), a["expr"],
                                      "annotation"))
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            out.append(DashboardQuery(f"variable {v['name']}", v["name"], substitute(v["definition"], variables),
                                      v["definition"], "variable"))
    return out


def label_values(prom: PrometheusServer, definition: str) -> list[str]:
    """Grafana's ``label_values(selector, label)`` through the HTTP API, as Grafana asks it."""
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", definition.strip())
    if not match:
        raise ValueError(f"not a label_values() query: {definition}")
    selector, label = match.groups()
    return prom.api(f"label/{label}/values", **{"match[]": selector})


# -- traffic -------------------------------------------------------------------------------
class DriftingStream(threading.Thread):
    """Predictions and labels of :data:`MODEL_ID` at about ``rate`` pairs per second of wall time.

    The first ``cold_start`` pairs are right only half the time (a model served before warm-up):
    the accuracy rule breaches while its window is under ``min_samples``, which the engine counts
    in ``driftline_triggers_suppressed_total{reason="min_samples"}``; by the time the window is
    full, accuracy is back above the threshold.
    Before ``drift_after`` seconds: x ~ N(0, 1), plan mostly basic, the model right 92% of the time.
    After: x ~ N(1.5, 1), plan mostly pro/enterprise, the model right 55% of the time. Event time
    advances 1 s per pair; labels arrive 0.5 s to a few minutes of event time after their
    prediction. About 1% of messages are malformed (dead-letter panels).
    """

    def __init__(self, deployment, drift_after: float, rate: float = 300, seed: int = 7,
                 start_ms: int = 1_790_000_000_000, cold_start: int = 60):
        super().__init__(daemon=True, name="drifting-stream")
        self.d = deployment
        self.drift_after = drift_after
        self.rate = rate
        self.rng = random.Random(seed)
        self.start_ms = start_ms
        self.cold_start = cold_start
        self.stop_event = threading.Event()
        self.sent = 0
        self.drift_started_at: float | None = None
        self.error: BaseException | None = None

    def pair(self, i: int, drifted: bool) -> tuple[Prediction, Label]:
        rng = self.rng
        x = rng.gauss(1.5 if drifted else 0.0, 1.0)
        plans, weights = (["basic", "pro", "enterprise"], [0.2, 0.5, 0.3] if drifted else [0.7, 0.25, 0.05])
        plan = rng.choices(plans, weights)[0]
        score = 1 / (1 + math.exp(-2 * x))
        prediction = int(score >= 0.5)
        right = rng.random() < (0.55 if drifted else 0.5 if i < self.cold_start else 0.92)
        ts = self.start_ms + i * 1000
        pid = f"{MODEL_ID}-{i:08d}"
        region = rng.choice(["eu", "us"])
        p = Prediction(prediction_id=pid, model_id=MODEL_ID, timestamp=ts, prediction=prediction,
                       features={"x": round(x, 4), "plan": plan}, model_version="2026-11-01",
                       score=round(score, 4), segment={"region": region})
        delay = int(500 + rng.expovariate(1 / 30_000))
        label = Label(prediction_id=pid, model_id=MODEL_ID, label=prediction if right else 1 - prediction,
                      timestamp=ts + delay)
        return p, label

    def run(self) -> None:
        try:
            producer = self.d.producer()
            started = time.monotonic()
            batch = max(1, int(self.rate / 10))
            i = 0
            while not self.stop_event.is_set():
                drifted = time.monotonic() - started >= self.drift_after
                if drifted and self.drift_started_at is None:
                    self.drift_started_at = time.time()
                events: list = []
                for _ in range(batch):
                    events.extend(self.pair(i, drifted))
                    i += 1
                if i % 200 < batch:
                    events.append(("predictions", MODEL_ID, b"{not json"))
                    events.append(("labels", MODEL_ID, b'{"model_id": "churn", "label": 1}'))
                    events.append(("predictions", "nobody", json.dumps(
                        {"prediction_id": f"u{i}", "model_id": "nobody", "timestamp": 0, "prediction": 1}).encode()))
                self.d.send(events, producer)
                self.sent = i
                time.sleep(max(0.0, started + i / self.rate - time.monotonic()))
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def stop(self) -> None:
        self.stop_event.set()
        self.join(30)
