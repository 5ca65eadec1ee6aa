"""Structured logs: --log-format json gives one JSON object per line with model and partition."""
import json
import logging

from streams.cli.common import Formatter


def record(**extra) -> logging.LogRecord:
    rec = logging.LogRecord("driftline.engine", logging.INFO, __file__, 1, "trigger %s", ("churn:floor:000001",), None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_model_and_partition():
    line = json.loads(Formatter(as_json=True).format(record(model="churn", partition=2)))
    assert line["message"] == "trigger churn:floor:000001" and line["level"] == "INFO"
    assert line["logger"] == "driftline.engine" and line["model"] == "churn" and line["partition"] == 2


def test_text_lines_append_the_fields():
    assert Formatter(as_json=False).format(record(partition=1)).endswith(
        "INFO driftline.engine: trigger churn:floor:000001 partition=1")
