"""Render ``docs/dashboard.png`` from a live run: the Grafana dashboard's own queries, asked of a
real Prometheus, drawn with matplotlib in the dashboard's layout.

Grafana's image renderer is not available on these machines, so this is *not* a Grafana
screenshot: every panel's PromQL comes from ``deploy/grafana/dashboards/driftline.json``
(variables: model = All, version = All, segment = All), Prometheus answers ``/api/v1/query_range``
and matplotlib draws the result where Grafana would put the panel.

    python deploy/dashboard_png.py                 # about 3 minutes; writes docs/dashboard.png
    python deploy/dashboard_png.py --seconds 240 --out /tmp/d.png

The live run: a real Kafka broker (``KAFKA_BOOTSTRAP_SERVERS``, else the local launcher),
``driftline run`` with the models of ``deploy/driftline/driftline.toml``, ``driftline simulate``
feeding it (loans: abrupt concept drift, sensors: covariate drift, both at prediction
``--drift-at``), and Debian's ``prometheus`` scraping every second with the alert rules loaded.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.live import ALERTS, DASHBOARD, PrometheusServer, rules_with_short_for, substitute  # noqa: E402
from tests.integration.harness import Deployment  # noqa: E402

VARIABLES = {"datasource": "prometheus", "model": ".*", "version": ".*", "segment": ".*",
             "__rate_interval": "15s", "__range": "5m", "__interval": "5s"}


def compose_models() -> str:
    text = (REPO / "deploy" / "driftline" / "driftline.toml").read_text()
    return text[text.index("[[models]]"):]


def broker() -> tuple[str, bool]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        return configured, False
    from streams.tools import kafka_local

    already = kafka_local.running()
    return (already or kafka_local.up()), not already


def live_run(seconds: float, drift_at: int, rate: float, tmp: Path):
    bootstrap, started_broker = broker()
    d = Deployment(bootstrap, uuid.uuid4().hex[:10], tmp, compose_models())
    prom = PrometheusServer(tmp, [f"127.0.0.1:{d.metrics_port}"],
                            rules=rules_with_short_for(ALERTS, tmp / "alerts.yml", "30s"))
    sim = None
    try:
        d.start()
        prom.start()
        start = time.time()
        sim = subprocess.Popen(
            [sys.executable, "-m", "streams.cli.main", "simulate", "--config", str(d.config_path), "--start", "now",
             "--duration", str(seconds), "--rate", str(rate), "--label-delay", "exp:30", "--malformed", "0.005",
             "--model", f"id=loans,generator=agrawal,learner=hoeffding,drift=abrupt,at={drift_at}",
             "--model", f"id=sensors,generator=sea,learner=hoeffding,drift=covariate,shift=x0:-1|x1:-1,at={drift_at}",
             "--no-progress"], cwd=REPO, stdout=open(tmp / "simulate.log", "wb"), stderr=subprocess.STDOUT)
        while sim.poll() is None:
            elapsed = time.time() - start
            print(f"\rlive run: {elapsed:5.0f}/{seconds:.0f} s", end="", file=sys.stderr, flush=True)
            time.sleep(2)
        print(file=sys.stderr)
        if sim.returncode != 0:
            raise SystemExit(f"driftline simulate exited {sim.returncode}: {(tmp / 'simulate.log').read_text()[-2000:]}")
        time.sleep(5)  # the last transactions and scrapes
        end = time.time()
        return fetch(prom, start, end)
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
        prom.stop()
        d.stop_all()
        if started_broker:
            from streams.tools import kafka_local

            kafka_local.down()


def fetch(prom: PrometheusServer, start: float, end: float) -> dict:
    import json

    dashboard = json.loads(DASHBOARD.read_text())
    step = max(1.0, (end - start) / 300)
    data = {"start": start, "end": end, "panels": [], "annotations": [], "alerts": prom.alerts()}
    for panel in dashboard["panels"]:
        entry = {"panel": panel, "series": []}
        for t in panel.get("targets", []):
            expr = substitute(t["expr"], VARIABLES)
            if t.get("instant"):
                result = prom.query(expr, at=end)
                entry["series"] += [(t, r["metric"], [(end, float(r["value"][1]))]) for r in result]
            else:
                result = prom.query_range(expr, start, end, step)
                entry["series"] += [(t, r["metric"], [(float(ts), float(v)) for ts, v in r["values"]])
                                    for r in result]
        data["panels"].append(entry)
    for a in dashboard["annotations"]["list"]:
        if "expr" in a:
            result = prom.query_range(substitute(a["expr"], VARIABLES), start, end, step)
            for r in result:
                first = float(r["values"][0][0])
                data["annotations"].append((first, f"{r['metric'].get('model')} {r['metric'].get('rule')}"))
    return data


def legend(template: str, metric: dict) -> str:
    if not template or template == "__auto":
        return ",".join(f"{k}={v}" for k, v in metric.items() if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), template)


def draw(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    panels = data["panels"]
    rows = max(p["panel"]["gridPos"]["y"] + p["panel"]["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(24, rows * 0.42 + 1.2), dpi=80)
    grid = GridSpec(rows, 24, figure=fig, hspace=1.6, wspace=1.2, top=1 - 1.0 / (rows * 0.42 + 1.2),
                    bottom=0.02, left=0.03, right=0.99)
    started = datetime.fromtimestamp(data["start"], timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fig.suptitle("driftline dashboard, drawn with matplotlib from Prometheus's HTTP API (not a Grafana screenshot): "
                 f"the PromQL of deploy/grafana/dashboards/driftline.json over a live run started {started} "
                 "(driftline simulate -> Kafka -> driftline run -> Prometheus)", fontsize=12, y=0.998)
    triggers = data["annotations"]
    to_dt = lambda ts: datetime.fromtimestamp(ts, timezone.utc)  # noqa: E731
    for entry in panels:
        panel, series = entry["panel"], entry["series"]
        g = panel["gridPos"]
        if panel["type"] == "row":
            ax = fig.add_subplot(grid[g["y"]:g["y"] + 1, :])
            ax.axis("off")
            ax.text(0, 0.2, panel["title"], fontsize=13, fontweight="bold", transform=ax.transAxes)
            continue
        ax = fig.add_subplot(grid[g["y"]:g["y"] + g["h"] - 1, g["x"]:g["x"] + g["w"]])
        ax.set_title(panel["title"], fontsize=9, loc="left")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        if panel["type"] == "stat":
            values = [v for _, _, pts in series for _, v in pts if math.isfinite(v)]
            ax.axis("off")
            text = "no data" if not values else "  ".join(_fmt(v, unit) for v in values[:3])
            ax.text(0.5, 0.45, text, fontsize=20 if len(values) < 2 else 13, ha="center", va="center",
                    transform=ax.transAxes, fontweight="bold")
            continue
        if panel["type"] == "table":
            ax.axis("off")
            rows_by_key: dict = {}
            columns = {"A": "statistic", "B": "threshold", "C": "p-value", "D": "alarm"}
            for t, metric, pts in series:
                key = (metric.get("model"), metric.get("feature"), metric.get("detector"))
                rows_by_key.setdefault(key, {})[columns[t["refId"]]] = pts[-1][1]
            table_rows = sorted(rows_by_key.items(), key=lambda kv: (-kv[1].get("alarm", 0), kv[0]))[:14]
            cells = [[*map(str, k)] + [_fmt(v.get(c), "") for c in columns.values()] for k, v in table_rows]
            if cells:
                table = ax.table(cellText=cells, colLabels=["model", "feature", "detector", *columns.values()],
                                 loc="upper center", cellLoc="left")
                table.auto_set_font_size(False)
                table.set_fontsize(7)
                for i, (_, v) in enumerate(table_rows, start=1):
                    if v.get("alarm") == 1:
                        table[i, 6].set_facecolor("#f4a6a6")
            continue
        for t, metric, pts in series:
            xs = [to_dt(ts) for ts, _ in pts]
            ys = [v for _, v in pts]
            label = legend(t.get("legendFormat", ""), metric)
            threshold = label.startswith("threshold") or label == "alarm level"
            style = dict(color="red", linestyle="--", linewidth=1.5) if threshold else dict(linewidth=1)
            if panel["type"] == "state-timeline":
                ax.step(xs, ys, where="post", label=label, linewidth=1.2)
            else:
                ax.plot(xs, ys, label=label, **style)
        for ts, text in triggers:
            ax.axvline(to_dt(ts), color="red", alpha=0.35, linewidth=1)
        if not series:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xlim(to_dt(data["start"]), to_dt(data["end"]))  # one time range, as in Grafana
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.tick_params(labelsize=7)
        if unit in ("s", "bytes", "ops"):
            ax.set_ylabel({"s": "seconds", "bytes": "bytes", "ops": "per second"}[unit], fontsize=7)
        if series:
            ax.legend(fontsize=6, loc="upper left", ncol=2 if len(series) > 6 else 1, framealpha=0.6)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out} ({len(panels)} panels, {len(triggers)} trigger annotations)")


def _fmt(v, unit: str) -> str:
    if v is None:
        return "-"
    if not math.isfinite(v):
        return str(v)
    if unit == "s":
        return f"{v:.1f} s"
    if unit == "ops":
        return f"{v:.0f}/s"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180, help="length of the live run (default 180)")
    parser.add_argument("--rate", type=float, default=400, help="simulator messages per second (default 400)")
    parser.add_argument("--drift-at", type=int, default=9000,
                        help="prediction index where both models drift (default 9000, about midway)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="driftline-dashboard-") as tmp:
        data = live_run(args.seconds, args.drift_at, args.rate, Path(tmp))
    firing = sorted({a["labels"]["alertname"] for a in data["alerts"] if a["state"] == "firing"})
    print(f"alerts firing at the end: {', '.join(firing) or 'none'}")
    draw(data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
