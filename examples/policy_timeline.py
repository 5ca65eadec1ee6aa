"""Print how one retrain rule reacts to a scripted accuracy series, window by window.

    python examples/policy_timeline.py

This is the timeline in retrain_trigger/README.md; rerun it after changing the policy.
"""
from __future__ import annotations

from retrain_trigger.events import TriggerWindow
from retrain_trigger.policy import Observation, TriggerPolicy, iso_from_ms
from retrain_trigger.rules import load_rules

RULE = {
    "name": "accuracy-floor",
    "min_samples": 200,
    "consecutive": 2,
    "cooldown_seconds": 3600,
    "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.80, "rearm": 0.85}],
}
WINDOW_MS = 5 * 60_000
START_MS = 1_795_507_200_000  # 2026-11-24T08:00:00Z

# (accuracy, labelled samples in the window, model_version)
SERIES = [
    (0.91, 1000, "v1"), (0.90, 1000, "v1"), (0.78, 1000, "v1"), (0.62, 40, "v1"),
    (0.76, 1000, "v1"), (0.75, 1000, "v1"), (0.82, 1000, "v1"), (0.77, 1000, "v1"),
    (0.79, 1000, "v1"), (0.86, 1000, "v1"), (0.78, 1000, "v1"), (0.77, 1000, "v1"),
    (0.77, 1000, "v1"), (0.76, 1000, "v1"), (0.74, 1000, "v1"), (0.90, 1000, "v2"),
    (0.76, 1000, "v2"), (0.75, 1000, "v2"),
]


def explain(fired: list, before: dict, after: dict, version_changed: bool) -> str:
    """What the policy did at this window, read from its state before and after."""
    notes = ["new model version: episode, cooldown and baseline reset"] if version_changed else []
    if version_changed:
        before = {**before, "armed": True, "streak": 0}
    if fired:
        notes.append(f"TRIGGER {fired[0].trigger_id} (baseline {fired[0].evidence['baseline']})")
    elif after["suppressed_min_samples"] > before["suppressed_min_samples"]:
        notes.append(f"fewer than {RULE['min_samples']} samples: window skipped")
    elif after["suppressed_cooldown"] > before["suppressed_cooldown"]:
        notes.append(f"breach persists, cooling down until {iso_from_ms(after['cooldown_until_ms'])[11:16]}: suppressed")
    elif after["streak"] > before["streak"]:
        notes.append("breaching; not re-armed since the last trigger" if not after["armed"]
                     else f"breach {after['streak']} of {RULE['consecutive']}")
    elif after["armed"] and not before["armed"]:
        notes.append("recovered to >= rearm 0.85: re-armed")
    elif not after["armed"]:
        notes.append("above threshold, below rearm 0.85: stays disarmed")
    return "; ".join(notes)


def main() -> None:
    policy = TriggerPolicy("churn", load_rules([RULE], "rules"))
    print(f"{'window end (event time)':<25} {'version':<7} {'accuracy':>8} {'n':>5}  what happens")
    previous_version = SERIES[0][2]
    for index, (accuracy, n, version) in enumerate(SERIES):
        end_ms = START_MS + (index + 1) * WINDOW_MS
        window = TriggerWindow(start=iso_from_ms(end_ms - WINDOW_MS), end=iso_from_ms(end_ms), count=n)
        before = policy.state()["rules"]["accuracy-floor"]
        fired = policy.evaluate({"accuracy": Observation(accuracy, n)}, model_version=version,
                                window=window, at_ms=end_ms)
        after = policy.state()["rules"]["accuracy-floor"]
        note = explain(fired, before, after, version != previous_version)
        previous_version = version
        print(f"{iso_from_ms(end_ms):<25} {version:<7} {accuracy:>8.2f} {n:>5}  {note}")


if __name__ == "__main__":
    main()
