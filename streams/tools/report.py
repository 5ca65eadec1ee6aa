"""The backtest's ``report.html``: one section per configured model, readable without the config.

Each section holds, over event time:

* performance: every window statistic with its rule thresholds and the triggers marked (▼);
* drift: every feature and prediction drift statistic scaled to its own alarm level, so that one
  axis serves all of them and 1 means "alarm": a distance (psi, js, wasserstein) as
  ``statistic / threshold``; a test (ks, chi2) as ``-log10(p) / -log10(level)``, the level
  being the test's own (a false-alarm budget's share, or a hand-set threshold) or, where the
  model corrects across its feature tests, alpha before the correction (the alarm marks apply it,
  as the Monitor does). Points before a detector holds ``min_samples`` values are not drawn (a window of a
  few dozen values swings far and would set the axis). Up to 8 series are drawn as lines; with
  more, every feature is a row of a heat map (sorted by its highest value) and the 8 highest are
  drawn as lines;
* the reference and current distribution of each feature that drifted at each trigger, on the
  detector's own bins;
* traffic: predictions and labels per sample, label coverage (joined / predictions so far) and
  label lag (median, 95th percentile);
* the triggers, each with its whole evidence.

Rejected lines have no event time (their timestamp is not trusted), so they are counted by reason
in the page header rather than drawn over time.

:class:`ReportRecorder` gathers, while the backtest runs, what the timeline does not hold
(traffic per sample, label lags, what a test's p-value needs, the distributions at triggers);
:func:`write_report` draws it.
"""
from __future__ import annotations

import base64
import fnmatch
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrain_trigger.rules import load_rules

from streams.core.config import Config

if TYPE_CHECKING:
    from retrain_trigger.events import TriggerEvent

    from streams.tools.backtest import BacktestResult
    from streams.core.monitor import ModelCounters, Monitor

__all__ = ["ReportRecorder", "write_report"]

#: drift series drawn as lines; the rest only in the heat map
TOP_LINES = 8
#: the scaled drift axis and the heat map's colours stop here (a value past it is drawn at it)
SCALE_CAP = 4.0


@dataclass
class Traffic:
    """One model's traffic between two samples."""

    at_ms: list[int] = field(default_factory=list)
    predictions: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    joined: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    lag_p50: list[float] = field(default_factory=list)
    lag_p95: list[float] = field(default_factory=list)


@dataclass
class Snapshot:
    """A drift detector's reference and current counts on its bins, at a trigger."""

    trigger_id: str
    feature: str
    kind: str
    at_ms: int
    events: int
    labels: list[str]
    reference: np.ndarray
    current: np.ndarray


@dataclass
class DriftInfo:
    """What scaling one drift statistic needs: its alarm level and its warm-up."""

    is_test: bool
    threshold: float | None
    min_samples: int


class ReportRecorder:
    """Called by :class:`streams.tools.backtest.Backtest` after each chunk, before it drains the
    Monitor's counters: keeps what the report draws besides the timeline. At a mark inside a
    flush (a chunk's end there), the backtest asks it for each model's :meth:`sample` and each
    trigger's :meth:`snapshots_of` instead.

    Parameters
    ----------
    config : Config
        The backtest's config (models, drift settings).
    """

    def __init__(self, config: Config):
        self.config = config
        self.traffic: dict[str, Traffic] = {}
        #: (model, statistic name, events) -> (reference size, degrees of freedom) of a test
        self.test_sizes: dict[tuple[str, str, int], tuple[float, int]] = {}
        self.snapshots: list[Snapshot] = []
        #: model -> drift statistic -> its alarm level and warm-up, and model -> its tests' family,
        #: as the replay ends (a threshold calibrated from a stream's reference is known by then)
        self.drift: dict[str, dict[str, DriftInfo]] = {}
        self.alpha: dict[str, tuple[float, str]] = {}
        self.monitor: "Monitor | None" = None

    def __call__(self, monitor: "Monitor", at_ms: int, events: int, triggers: list["TriggerEvent"]) -> None:
        self.monitor = monitor
        for model_id, m in monitor.models.items():
            self.sample(model_id, m.stats, m.counters, at_ms, events)
        for trigger in triggers:
            m = monitor.models.get(trigger.model_id)
            if m is not None:
                self.snapshots.extend(self.snapshots_of(trigger, m.stats, at_ms, events))

    def sample(self, model_id: str, stats, counters: ModelCounters, at_ms: int, events: int) -> None:
        """One model's traffic (``counters``: what happened since the last sample) and its tests'
        sizes, ``stats`` read where the sample is."""
        c = counters
        traffic = self.traffic.setdefault(model_id, Traffic())
        traffic.at_ms.append(at_ms)
        traffic.predictions.append(c.predictions)
        traffic.labels.append(c.labels)
        traffic.joined.append(c.joined)
        traffic.expired.append(c.expired_predictions)
        lags = np.asarray(c.label_lags, dtype=np.float64)
        traffic.lag_p50.append(float(np.median(lags)) if len(lags) else math.nan)
        traffic.lag_p95.append(float(np.quantile(lags, 0.95)) if len(lags) else math.nan)
        if not stats.feature_drift and not stats.prediction_drift:
            return
        # The detectors fed up to the sample (a numeric one a batch's Foresight measures keeps
        # the reference it had: a Foresight needs it complete)
        stats.feed_to_position()
        for name, detector in self._detectors(stats):
            if detector.is_test and detector.reference_counts is not None:
                # KS needs the reference's size; chi2 its degrees of freedom: the bins not empty
                # on both sides, less one (what chi2_test counts)
                dof = 1
                if detector.kind == "chi2":
                    dof = max(1, int(((detector.reference_counts + detector.current_counts()) > 0).sum()) - 1)
                self.test_sizes[model_id, name, events] = (float(detector.reference_counts.sum()), dof)

    @staticmethod
    def _detectors(stats) -> list[tuple[str, Any]]:
        return ([(f"feature.{f}.{k}", d) for (f, k), d in stats.feature_drift.items()]
                + [(f"prediction.{k}", d) for k, d in stats.prediction_drift.items()])

    def finish(self) -> None:
        """Note each drift statistic's alarm level and warm-up as the replay ended."""
        for model_id, m in (self.monitor.models.items() if self.monitor is not None else ()):
            if m.stats.model.drift is None:
                continue
            self.alpha[model_id] = test_family(m.stats.model.drift)
            self.drift[model_id] = {name: DriftInfo(d.is_test, d.threshold, d.min_samples)
                                    for name, d in self._detectors(m.stats)}

    @staticmethod
    def snapshots_of(trigger: "TriggerEvent", stats, at_ms: int, events: int) -> list[Snapshot]:
        """The reference and current bins of each feature the trigger says drifted, ``stats``
        read where the sample is."""
        found = []
        drifted = sorted(drifted_features(trigger))
        if drifted:
            stats.feed_to_position(foreseen=True)  # each detector's own windows are read
        for feature, kind in drifted:
            detector = stats.feature_drift.get((feature, kind))
            if detector is None or detector.reference_counts is None:
                continue
            labels, reference, current = readable_bins(detector.profile, detector.reference_counts,
                                                       np.asarray(detector.current_counts()))
            found.append(Snapshot(trigger.trigger_id, feature, kind, at_ms, events, labels, reference, current))
        return found


def test_family(drift) -> tuple[float, str]:
    """(alpha, correction) the Monitor judges a model's feature tests at together; ``none`` when
    each test is judged alone at its own threshold (a false-alarm budget gives each its level)."""
    if getattr(drift, "budgeted", False):
        return 0.01, "none"
    alpha = getattr(drift, "test_alpha", None) or getattr(drift, "alpha", None) or 0.01
    return float(alpha), str(getattr(drift, "test_correction", None) or getattr(drift, "correction", None) or "none")


def drifted_features(trigger: "TriggerEvent") -> set[tuple[str, str]]:
    """(feature, kind) of every feature the trigger's evidence says fired or matched a condition."""
    evidence = trigger.evidence or {}
    out = {(f["feature"], f["kind"]) for f in evidence.get("top_features", []) if f.get("fired")}
    names = [trigger.metric] + [n for c in evidence.get("conditions", []) for n in c.get("matched", [])]
    for name in names:
        parts = str(name).split(".")
        if parts[0] == "feature" and len(parts) >= 3 and "*" not in parts[1]:
            out.add((".".join(parts[1:-1]), parts[-1]))
    return out


#: a numeric detector's bins are merged into at most this many for the distribution plots (KS has 100)
MAX_BARS = 20


def readable_bins(profile, reference: np.ndarray, current: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names for a detector's bins (the category, the last bin "any other"; or the value range)
    and its reference and current counts; a numeric detector's bins merged to ``MAX_BARS``."""
    reference, current = np.asarray(reference, dtype=np.int64), np.asarray(current, dtype=np.int64)
    if hasattr(profile, "categories"):
        return [str(c) for c in profile.categories] + ["(other)"], reference.copy(), current.copy()
    edges = [float(e) for e in profile.edges]
    if not edges:
        return ["all"], reference.copy(), current.copy()
    # bins i..j-1 together: bin 0 is below edges[0], bin k between edges[k-1] and edges[k]
    starts = np.unique(np.linspace(0, len(reference), min(MAX_BARS, len(reference)) + 1).round().astype(int))
    bounds = [-math.inf] + edges + [math.inf]
    labels = []
    for i, j in zip(starts[:-1], starts[1:]):
        low, high = bounds[i], bounds[j]
        labels.append(f"< {high:.3g}" if low == -math.inf else f"≥ {low:.3g}" if high == math.inf
                      else f"{low:.3g} to {high:.3g}")
    return labels, np.add.reduceat(reference, starts[:-1]), np.add.reduceat(current, starts[:-1])


# -- scaling ---------------------------------------------------------------------------------------
def _thresholds(config: Config) -> dict[str, list[tuple[str, str, float]]]:
    """model → [(statistic pattern, rule name, threshold)]."""
    out: dict[str, list[tuple[str, str, float]]] = {}
    for model in config.models:
        for rule in load_rules(model.rules, where=f"models[{model.id}].rules"):
            for cond in rule.conditions:
                if cond.threshold is not None:
                    out.setdefault(model.id, []).append((cond.statistic, rule.name, cond.threshold))
    return out


def is_drift(statistic: str) -> bool:
    return statistic.startswith(("feature.", "prediction."))


@dataclass
class DriftSeries:
    """One drift statistic, scaled to its alarm level (1 = alarm), warm-up dropped."""

    name: str
    at_ms: np.ndarray
    scaled: np.ndarray
    alarm: np.ndarray
    how: str


def scale_drift(model_id: str, points: dict[str, list[tuple[int, int, float, int]]],
                recorder: ReportRecorder | None) -> tuple[list[DriftSeries], dict[str, list]]:
    """The drift series of one model scaled to their alarm levels, and those that have none
    (drawn raw). ``points``: statistic → [(at_ms, events, value, n)]."""
    from scipy import stats as sps

    from detectors.calibration import reject

    info = (recorder.drift.get(model_id) if recorder else None) or {}
    alpha, correction = recorder.alpha.get(model_id, (0.01, "none")) if recorder else (0.01, "none")
    scaled: list[DriftSeries] = []
    raw: dict[str, list] = {}
    test_p: dict[str, dict[int, float]] = {}
    for name, rows in points.items():
        d = info.get(name)
        if d is None or (not d.is_test and not d.threshold):
            raw[name] = rows
            continue
        rows = [r for r in rows if r[3] >= d.min_samples]
        if not rows:
            continue
        at = np.array([r[0] for r in rows], dtype=np.int64)
        value = np.array([r[2] for r in rows], dtype=np.float64)
        if d.is_test:
            level = alpha if correction != "none" else (d.threshold or alpha)
            p = _test_p_values(name, rows, recorder, model_id, sps)
            test_p[name] = {r[1]: pv for r, pv in zip(rows, p)}
            with np.errstate(divide="ignore"):
                s = -np.log10(np.maximum(p, 1e-300)) / -math.log10(level)
            how = f"-log10(p) / -log10({level:g})"
            alarm = np.zeros(len(rows), dtype=bool)  # set below, across the family
        else:
            s = value / d.threshold
            how = f"statistic / {d.threshold:.4g}"
            alarm = value > d.threshold
        scaled.append(DriftSeries(name, at, s, alarm, how))
    # Tests are one family per evaluation: the model's correction decides which alarm, as in the Monitor.
    feature_tests = [n for n in test_p if n.startswith("feature.")]
    if feature_tests:
        by_sample: dict[int, list[tuple[str, float]]] = {}
        for name in feature_tests:
            for events, pv in test_p[name].items():
                by_sample.setdefault(events, []).append((name, pv))
        fired: dict[tuple[str, int], bool] = {}
        for events, pairs in by_sample.items():
            level = alpha if correction != "none" else 0.01
            decisions = reject([pv for _, pv in pairs], level, correction) if correction != "none" \
                else np.array([pv < (info[n].threshold or level) for n, pv in pairs])
            for (name, _), yes in zip(pairs, decisions):
                fired[name, events] = bool(yes)
        for series in scaled:
            if series.name in test_p and series.name.startswith("feature."):
                series.alarm = np.array([fired.get((series.name, e), False) for e in test_p[series.name]])
    for series in scaled:
        if series.name.startswith("prediction.") and series.name in test_p:
            series.alarm = series.scaled > 1
    return scaled, raw


def _test_p_values(name: str, rows: list, recorder: ReportRecorder | None, model_id: str, sps) -> np.ndarray:
    """A test's p-values from its statistic, sample sizes and degrees of freedom at each sample
    (what the detector computes: Smirnov's ``kstwo.sf``, the chi-squared survival function)."""
    sizes = [recorder.test_sizes.get((model_id, name, r[1]), (math.nan, 1)) if recorder else (math.nan, 1)
             for r in rows]
    value = np.array([r[2] for r in rows], dtype=np.float64)
    n_cur = np.array([r[3] for r in rows], dtype=np.float64)
    n_ref = np.array([s[0] for s in sizes], dtype=np.float64)
    if name.endswith(".ks"):
        en = np.maximum(1.0, np.round(n_ref * n_cur / (n_ref + n_cur)))
        return np.nan_to_num(sps.kstwo.sf(value, en), nan=1.0)
    dof = np.array([s[1] for s in sizes], dtype=np.float64)
    return np.nan_to_num(sps.chi2.sf(value, dof), nan=1.0)


# -- drawing ---------------------------------------------------------------------------------------
def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _when(ms):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _parse_ms(text: str) -> int:
    from streams.core.codecs import parse_timestamp

    return parse_timestamp(text)


def _mark_events(ax, triggers, drifts, model: str) -> None:
    for t in triggers:
        ax.axvline(_when(_parse_ms(t.triggered_at)), color="tab:red", lw=0.9, alpha=0.6)
    for d in drifts:
        if d.get("model_id") == model and d.get("at_time"):
            ax.axvline(_when(_parse_ms(d["at_time"])), color="tab:purple", ls=":", lw=1.5)


def _time_axis(ax) -> None:
    import matplotlib.dates as mdates

    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))


def _performance_figure(model, stats, thresholds, triggers, drifts):
    import matplotlib.pyplot as plt

    names = sorted(stats)
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.4 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        points = stats[name]
        ax.plot([_when(t) for t, *_ in points], [p[2] for p in points], lw=1.2, color="tab:blue")
        for pattern, rule, threshold in thresholds.get(model, []):
            if fnmatch.fnmatchcase(name, pattern):
                ax.axhline(threshold, color="tab:red", ls="--", lw=1)
                ax.annotate(f"{rule} {threshold:g}", xy=(0.005, threshold), xycoords=("axes fraction", "data"),
                            color="tab:red", fontsize=8, va="bottom")
        for t in triggers:
            if t.metric == name:
                ax.plot([_when(_parse_ms(t.triggered_at))], [t.value], marker="v", color="tab:red", ms=9,
                        clip_on=False, zorder=5)
        _mark_events(ax, triggers, drifts, model)
        ax.set_title(name, fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        ax.margins(y=0.15)  # room for a trigger mark at the top or bottom of the data
    _time_axis(axes[-1, 0])
    fig.suptitle(f"{model}: performance. Red ▼ trigger, red dashes rule threshold, purple dots injected drift",
                 fontsize=10)
    fig.tight_layout()
    return fig


def _drift_lines_figure(model, series: list[DriftSeries], triggers, drifts):
    import matplotlib.pyplot as plt

    top = sorted(series, key=lambda s: float(np.nanmax(s.scaled)), reverse=True)[:TOP_LINES]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for s in top:
        y = np.minimum(s.scaled, SCALE_CAP)
        line, = ax.plot([_when(t) for t in s.at_ms], y, lw=1.1, label=f"{s.name}  ({s.how})")
        if s.alarm.any():
            ax.plot([_when(t) for t in s.at_ms[s.alarm]], y[s.alarm], "o", ms=3, color=line.get_color())
    ax.axhline(1.0, color="tab:red", ls="--", lw=1)
    ax.annotate("alarm level 1", xy=(0.005, 1.0), xycoords=("axes fraction", "data"), color="tab:red",
                fontsize=8, va="bottom")
    _mark_events(ax, triggers, drifts, model)
    ax.set_ylim(0, max(1.3, min(SCALE_CAP, max(float(np.nanmax(np.minimum(s.scaled, SCALE_CAP))) for s in top)) * 1.1))
    ax.set_ylabel("statistic / alarm level")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    _time_axis(ax)
    title = f"{model}: drift, the {len(top)} highest of {len(series)}" if len(series) > len(top) else f"{model}: drift"
    ax.set_title(title + ". Dots: in alarm, as the Monitor judges it; "
                 f"values above {SCALE_CAP:g} drawn at {SCALE_CAP:g}", fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def _drift_heatmap_figure(model, series: list[DriftSeries], triggers, drifts):
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    ordered = sorted(series, key=lambda s: float(np.nanmax(s.scaled)), reverse=True)
    times = np.unique(np.concatenate([s.at_ms for s in ordered]))
    grid = np.full((len(ordered), len(times)), np.nan)
    alarm = np.zeros_like(grid, dtype=bool)
    for i, s in enumerate(ordered):
        idx = np.searchsorted(times, s.at_ms)
        grid[i, idx] = np.minimum(s.scaled, SCALE_CAP)
        alarm[i, idx] = s.alarm
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.17 * len(ordered)))
    x = mdates.date2num([_when(t) for t in times])
    step = float(np.median(np.diff(x))) if len(x) > 1 else 1.0
    edges = np.concatenate([x - step / 2, [x[-1] + step / 2]])
    # white at the alarm level 1, blue below, red above: a glance finds the rows past it
    norm = TwoSlopeNorm(vmin=0, vcenter=1, vmax=2)
    mesh = ax.pcolormesh(edges, np.arange(len(ordered) + 1), np.ma.masked_invalid(grid), cmap="RdBu_r",
                         norm=norm, shading="flat")
    rows, cols = np.nonzero(alarm)
    ax.scatter(x[cols], rows + 0.5, marker="|", s=9, color="black", linewidths=0.6)
    ax.set_yticks(np.arange(len(ordered)) + 0.5, [s.name.removeprefix("feature.") for s in ordered], fontsize=7)
    ax.invert_yaxis()
    ax.xaxis_date()
    for t in triggers:
        ax.axvline(mdates.date2num(_when(_parse_ms(t.triggered_at))), color="black", lw=1)
    for d in drifts:
        if d.get("model_id") == model and d.get("at_time"):
            ax.axvline(mdates.date2num(_when(_parse_ms(d["at_time"]))), color="tab:purple", ls=":", lw=1.5)
    _time_axis(ax)
    fig.colorbar(mesh, ax=ax, label="statistic / alarm level (2+ at the top)", pad=0.01)
    ax.set_title(f"{model}: every drift statistic (white = alarm level 1; black ticks: in alarm; black lines: triggers)", fontsize=9,
                 loc="left")
    fig.tight_layout()
    return fig


def _raw_figure(model, raw, triggers, drifts):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 2.6))
    for name, rows in sorted(raw.items()):
        ax.plot([_when(r[0]) for r in rows], [r[2] for r in rows], lw=1, label=name)
    _mark_events(ax, triggers, drifts, model)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    ax.grid(alpha=0.3)
    _time_axis(ax)
    ax.set_title(f"{model}: statistics with no alarm level (no threshold set), raw", fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def _distributions_figure(model, snapshots: list[Snapshot]):
    import matplotlib.pyplot as plt

    cols = min(3, len(snapshots))
    nrows = math.ceil(len(snapshots) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(10, 2.8 * nrows), squeeze=False)
    for ax in axes.flat[len(snapshots):]:
        ax.axis("off")
    for ax, snap in zip(axes.flat, snapshots):
        keep = (snap.reference + snap.current) > 0
        labels = [label for label, k in zip(snap.labels, keep) if k]
        ref = snap.reference[keep] / max(1, snap.reference.sum())
        cur = snap.current[keep] / max(1, snap.current.sum())
        x = np.arange(len(labels))
        ax.bar(x - 0.2, ref, 0.4, label=f"reference ({int(snap.reference.sum())})", color="tab:gray")
        ax.bar(x + 0.2, cur, 0.4, label=f"current ({int(snap.current.sum())})", color="tab:orange")
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=6)
        ax.set_title(f"{snap.feature} ({snap.kind}), {snap.trigger_id.rsplit(':', 1)[-1]}", fontsize=8, loc="left")
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle(f"{model}: share of values per bin, reference vs current window, at each trigger", fontsize=10)
    fig.tight_layout()
    return fig


def _traffic_figure(model, traffic: Traffic, triggers, drifts):
    import matplotlib.pyplot as plt

    t = [_when(x) for x in traffic.at_ms]
    fig, axes = plt.subplots(3, 1, figsize=(10, 6.2), sharex=True)
    axes[0].step(t, traffic.predictions, where="pre", label="predictions", lw=1)
    axes[0].step(t, traffic.labels, where="pre", label="labels", lw=1)
    axes[0].step(t, traffic.expired, where="pre", label="expired unlabelled", lw=1)
    axes[0].set_title("events per sample", fontsize=9, loc="left")
    axes[0].legend(fontsize=7, loc="upper left")
    predicted = np.cumsum(traffic.predictions)
    joined = np.cumsum(traffic.joined)
    coverage = np.divide(joined, predicted, out=np.full(len(predicted), np.nan), where=predicted > 0)
    axes[1].plot(t, coverage, lw=1.2, color="tab:green")
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title("label coverage: predictions joined with a label / predictions, so far", fontsize=9, loc="left")
    axes[2].plot(t, traffic.lag_p50, lw=1, label="median")
    axes[2].plot(t, traffic.lag_p95, lw=1, label="95th percentile")
    axes[2].set_title("label lag, seconds of event time (pairs joined in the sample)", fontsize=9, loc="left")
    axes[2].legend(fontsize=7, loc="upper left")
    for ax in axes:
        ax.grid(alpha=0.3)
        _mark_events(ax, triggers, drifts, model)
    _time_axis(axes[-1])
    fig.suptitle(f"{model}: traffic and labels", fontsize=10)
    fig.tight_layout()
    return fig


# -- the page --------------------------------------------------------------------------------------
def _trigger_table(triggers) -> str:
    if not triggers:
        return "<p>No trigger.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(t.trigger_id)}</td><td>{html.escape(t.triggered_at)}</td><td>{html.escape(t.rule)}</td>"
        f"<td>{html.escape(t.metric)}</td><td>{t.value:.4g}</td><td>{t.threshold:g}</td><td>{t.window.count}</td>"
        f"<td>{html.escape(', '.join(f'{f} ({k})' for f, k in sorted(drifted_features(t))) or '-')}</td>"
        f"<td><details><summary>evidence</summary><pre>{html.escape(json.dumps(t.evidence, indent=1, default=str))}"
        f"</pre></details></td></tr>" for t in triggers)
    return ("<table class=triggers><tr><th>trigger</th><th>at</th><th>rule</th><th>metric</th><th>value</th>"
            f"<th>threshold</th><th>window</th><th>drifted features</th><th>evidence</th></tr>{rows}</table>")


def write_report(config: Config, result: "BacktestResult", path: Path, scenario: str | Path | None = None,
                 recorder: ReportRecorder | None = None) -> None:
    """Write ``report.html`` (PNG figures embedded): one section per configured model, then any
    other model the history held."""
    import matplotlib

    matplotlib.use("Agg")

    if recorder is not None:
        recorder.finish()
    drifts = []
    if scenario is not None and Path(scenario).exists():
        drifts = json.loads(Path(scenario).read_text()).get("drifts", [])
    thresholds = _thresholds(config)
    series: dict[str, dict[str, list[tuple[int, int, float, int]]]] = {}
    for at_ms, events, model, name, value, n in result.timeline:
        series.setdefault(model, {}).setdefault(name, []).append((at_ms, events, value, n))
    configured = [m.id for m in config.models]
    seen = set(series) | {t.model_id for t in result.triggers} | set(result.totals)
    sections = []
    for model in configured + sorted(seen - set(configured)):
        stats = series.get(model, {})
        triggers = [t for t in result.triggers if t.model_id == model]
        figures = []
        performance = {n: p for n, p in stats.items() if not is_drift(n)}
        if performance:
            figures.append(_performance_figure(model, performance, thresholds, triggers, drifts))
        drift_points = {n: p for n, p in stats.items() if is_drift(n)}
        scaled, raw = scale_drift(model, drift_points, recorder)
        if scaled:
            figures.append(_drift_lines_figure(model, scaled, triggers, drifts))
            if len(scaled) > TOP_LINES:
                figures.append(_drift_heatmap_figure(model, scaled, triggers, drifts))
        if raw:
            figures.append(_raw_figure(model, raw, triggers, drifts))
        snapshots = [s for s in (recorder.snapshots if recorder else []) if s.trigger_id.startswith(f"{model}:")]
        if snapshots:
            figures.append(_distributions_figure(model, snapshots))
        traffic = recorder.traffic.get(model) if recorder else None
        if traffic is not None and traffic.at_ms:
            figures.append(_traffic_figure(model, traffic, triggers, drifts))
        images = "".join(_png(f) for f in figures)
        totals = result.totals.get(model, {})
        counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in totals.items() if v) or "no events"
        drift_text = "".join(f"<li>{html.escape(d['kind'])} at {html.escape(str(d.get('at_time')))}: "
                             f"{html.escape(d['detail'])}</li>" for d in drifts if d.get("model_id") == model)
        note = "" if model in configured else " <small>(not in the config)</small>"
        empty = "" if figures else "<p class=empty>No statistic was recorded for this model.</p>"
        sections.append(
            f'<section class=model id="model-{html.escape(model)}"><h2>{html.escape(model)}{note}</h2>'
            f"<p>{html.escape(counts)}; {len(triggers)} triggers.</p>"
            + (f"<p>Injected drift:</p><ul>{drift_text}</ul>" if drift_text else "")
            + empty + images + _trigger_table(triggers) + "</section>")
    summary = result.summary()
    invalid = ", ".join(f"{k} {v}" for k, v in summary["invalid"].items()) or "none"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>driftline backtest</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}img{{max-width:100%;display:block;margin:.6em 0}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}}
pre{{white-space:pre-wrap;font-size:11px;max-width:600px}}section.model{{border-top:2px solid #888;margin-top:2em}}</style>
</head><body><h1>driftline backtest</h1>
<p>Config <code>{html.escape(config.source)}</code>: {summary['lines']} lines, {summary['events']} valid events,
rejected: {html.escape(invalid)}; {summary['triggers']} triggers; {len(configured)} configured models.</p>
<p>Drift panels are scaled to each statistic's alarm level (1 = alarm): a distance as statistic / threshold,
a test (ks, chi2) as -log10(p) / -log10(level), the level being the test's own or, where the model corrects
across its feature tests, alpha before the correction (the alarm dots apply it). Points before a
detector holds its min_samples values are left out.</p>
{''.join(sections)}
</body></html>
"""
    path.write_text(page)
