"""The backtest's ``report.html``: per model, each statistic over event time with rule
thresholds, trigger marks and (when the simulator's ``scenario.json`` is found) the injected
drifts; PNGs embedded."""
from __future__ import annotations

import base64
import fnmatch
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from retrain_trigger.rules import load_rules

from .config import Config

if TYPE_CHECKING:
    from .backtest import BacktestResult

__all__ = ["write_report"]


# -- the report ----------------------------------------------------------------------------------------
def _thresholds(config: Config) -> dict[str, list[tuple[str, str, float]]]:
    """model → [(statistic pattern, rule name, threshold)]."""
    out: dict[str, list[tuple[str, str, float]]] = {}
    for model in config.models:
        for rule in load_rules(model.rules, where=f"models[{model.id}].rules"):
            for cond in rule.conditions:
                if cond.threshold is not None:
                    out.setdefault(model.id, []).append((cond.statistic, rule.name, cond.threshold))
    return out


def _group(statistic: str) -> str:
    """Statistics drawn on one panel: performance together, drift per kind, each detector."""
    parts = statistic.split(".")
    if parts[0] == "feature" and len(parts) >= 3:
        return f"feature drift: {parts[-1]}"
    if parts[0] in ("prediction", "detector"):
        return statistic
    return statistic


def _parse_ms(text: str) -> int:
    from .codecs import parse_timestamp

    return parse_timestamp(text)


def write_report(config: Config, result: BacktestResult, path: Path, scenario: str | Path | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from datetime import datetime, timezone

    def when(ms: int):
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)

    drifts = []
    if scenario is not None and Path(scenario).exists():
        drifts = json.loads(Path(scenario).read_text()).get("drifts", [])
    thresholds = _thresholds(config)
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for at_ms, _, model, name, value, _n in result.timeline:
        series.setdefault(model, {}).setdefault(name, []).append((at_ms, value))
    sections = []
    for model in sorted(set(series) | {t.model_id for t in result.triggers}):
        stats = series.get(model, {})
        groups: dict[str, list[str]] = {}
        for name in sorted(stats):
            groups.setdefault(_group(name), []).append(name)
        triggers = [t for t in result.triggers if t.model_id == model]
        image = ""
        if groups:
            fig, axes = plt.subplots(len(groups), 1, figsize=(10, 2.6 * len(groups)), sharex=True, squeeze=False)
            for ax, (title, names) in zip(axes[:, 0], groups.items()):
                # every statistic is drawn; with many, only the 8 that rose highest get a legend entry
                top = set(sorted(names, key=lambda n: max(v for _, v in stats[n]), reverse=True)[:8])
                for name in names:
                    points = stats[name]
                    strong = len(names) == 1 or name in top
                    ax.plot([when(t) for t, _ in points], [v for _, v in points], lw=1.2 if strong else 0.7,
                            label=name if strong and len(names) > 1 else None, alpha=1.0 if strong else 0.5)
                for pattern, rule, threshold in thresholds.get(model, []):
                    if any(fnmatch.fnmatchcase(name, pattern) for name in names):
                        ax.axhline(threshold, color="tab:red", ls="--", lw=1)
                        ax.annotate(f"{rule} {threshold:g}", xy=(0.005, threshold), xycoords=("axes fraction", "data"),
                                    color="tab:red", fontsize=8, va="bottom")
                for t in triggers:
                    at = when(_parse_ms(t.triggered_at))
                    if t.metric in names:  # the statistic itself: mark its value
                        ax.plot([at], [t.value], marker="v", color="tab:red", ms=9)
                    elif any(fnmatch.fnmatchcase(n, t.metric) for n in names):  # a glob / fired rule
                        ax.plot([at], [0.97], marker="v", color="tab:red", ms=9, transform=ax.get_xaxis_transform())
                    ax.axvline(at, color="tab:red", lw=0.8, alpha=0.5)
                for d in drifts:
                    if d.get("model_id") == model and d.get("at_time"):
                        ax.axvline(when(_parse_ms(d["at_time"])), color="tab:purple", ls=":", lw=1.5)
                ax.set_title(title, fontsize=10, loc="left")
                ax.grid(alpha=0.3)
                if len(names) > 1:
                    ax.legend(fontsize=7, loc="best")
            axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
            fig.suptitle(f"{model}: red ▼ trigger, red dashes threshold, purple dots injected drift", fontsize=10)
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=90)
            plt.close(fig)
            image = f'<img alt="{html.escape(model)}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
        rows = "".join(
            f"<tr><td>{html.escape(t.trigger_id)}</td><td>{html.escape(t.triggered_at)}</td><td>{html.escape(t.metric)}</td>"
            f"<td>{t.value:.4g}</td><td>{t.threshold:g}</td><td>{t.window.count}</td>"
            f"<td><code>{html.escape(json.dumps(t.evidence, default=str)[:300])}</code></td></tr>" for t in triggers)
        totals = result.totals.get(model, {})
        counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in totals.items() if v)
        drift_text = "".join(f"<li>{html.escape(d['kind'])} at {html.escape(str(d.get('at_time')))}: "
                             f"{html.escape(d['detail'])}</li>" for d in drifts if d.get("model_id") == model)
        sections.append(
            f"<h2>{html.escape(model)}</h2><p>{html.escape(counts)}</p>"
            + (f"<p>Injected drift:</p><ul>{drift_text}</ul>" if drift_text else "")
            + image
            + (f"<table><tr><th>trigger</th><th>at</th><th>metric</th><th>value</th><th>threshold</th><th>window</th>"
               f"<th>evidence</th></tr>{rows}</table>" if triggers else "<p>No trigger.</p>"))
    summary = result.summary()
    invalid = ", ".join(f"{k} {v}" for k, v in summary["invalid"].items()) or "none"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>driftline backtest</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}img{{max-width:100%}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}</style>
</head><body><h1>driftline backtest</h1>
<p>Config <code>{html.escape(config.source)}</code>: {summary['lines']} lines, {summary['events']} valid events,
invalid: {html.escape(invalid)}; {summary['triggers']} triggers.</p>
{''.join(sections)}
</body></html>
"""
    path.write_text(page)
