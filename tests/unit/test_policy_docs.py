"""retrain_trigger/README.md stays true: its timeline is what the policy prints, its event is valid."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import jsonschema

from retrain_trigger.events import decode_trigger, load_trigger_schema

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "retrain_trigger" / "README.md").read_text()


def fenced_block_after(heading_text: str, fence: str = "```") -> str:
    after = README.split(heading_text, 1)[1]
    return after.split(fence, 1)[1].split("\n", 1)[1].split("```", 1)[0]


def test_readme_timeline_is_what_the_example_prints():
    spec = importlib.util.spec_from_file_location("policy_timeline", REPO / "examples" / "policy_timeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        module.main()
    assert fenced_block_after("printed by\n`python examples/policy_timeline.py`:") == printed.getvalue()


def test_readme_event_example_is_valid():
    event = json.loads(fenced_block_after("## The trigger event"))
    jsonschema.Draft202012Validator(load_trigger_schema()).validate(event)
    decode_trigger(json.dumps(event).encode())
