"""report.html in a real browser: Debian's ``chromium``, headless, renders the page a backtest
wrote; the screenshot is not blank and the rendered page has a section for every configured
model (one of them without any event), every figure decoded, and each trigger's whole evidence."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from streams.tools.backtest import run_backtest
from streams.core.config import parse_config
from streams.tools.simulate import FileSink, Simulation, parse_model_spec, run

pytestmark = pytest.mark.e2e

CONFIG = {
    "kafka": {"bootstrap.servers": "127.0.0.1:1"},
    "models": [
        {"id": "loans", "window": {"kind": "count", "size": 300}, "evaluate_every": 25,
         "features": {"numeric": ["salary", "commission", "age", "hvalue", "hyears", "loan"],
                      "categorical": ["elevel", "car", "zipcode"]},
         "drift": {"numeric": ["psi", "ks"], "categorical": ["chi2"], "reference_size": 400, "window": 400},
         "rules": [{"name": "accuracy-floor", "min_samples": 200,
                    "conditions": [{"statistic": "accuracy", "op": "<", "threshold": 0.8}]}]},
        {"id": "sensors", "window": {"kind": "count", "size": 300},
         "features": {"numeric": ["x0", "x1", "x2"]},
         "drift": {"numeric": ["psi"], "reference_size": 400, "window": 400},
         "rules": [{"name": "feature-drift", "min_samples": 200,
                    "conditions": [{"statistic": "feature.*.psi", "op": ">", "threshold": 0.2}]}]},
        {"id": "silent", "features": {"numeric": ["a"]}},
    ],
}


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("the chromium binary is missing: apt-get install chromium (make test does)")
    return path


def browse(page, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'profile'}", *args, page.as_uri()],
                          capture_output=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    history = tmp_path_factory.mktemp("history")
    sim = Simulation(models=[parse_model_spec("id=loans,generator=agrawal,drift=abrupt,at=1500"),
                             parse_model_spec("id=sensors,generator=sea,drift=covariate,shift=x0:-2,at=1500")],
                     events=3000, seed=3, label_delay="exp:20")
    summary = run(sim, [FileSink(history)], progress=False)
    (history / "scenario.json").write_text(json.dumps(summary.as_dict()))
    out = tmp_path_factory.mktemp("out")
    result = run_backtest(parse_config(CONFIG, "test.toml"), out, predictions=history / "predictions.jsonl",
                          labels=history / "labels.jsonl", progress=False, every=100)
    return out / "report.html", result


def test_the_report_renders_in_chromium_with_every_model_and_whole_evidence(report, tmp_path):
    from PIL import Image

    page, result = report
    assert {t.model_id for t in result.triggers} == {"loans", "sensors"}
    shot = tmp_path / "report.png"
    browse(page, tmp_path, "--window-size=1200,4000", f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (4000, 1200)
    assert pixels.std() > 20, "the screenshot is blank"
    assert (pixels < 200).mean() > 0.02, "almost nothing drawn"

    dom = browse(page, tmp_path, "--dump-dom").stdout.decode()
    sections = re.findall(r'<section class="model" id="model-([^"]+)">', dom)
    assert sections == ["loans", "sensors", "silent"]
    silent = dom[dom.index('id="model-silent"'):]
    assert "No statistic was recorded" in silent and "No trigger." in silent
    images = re.findall(r'src="data:image/png;base64,', dom)
    assert len(images) >= 7  # loans: performance, drift lines, heat map, traffic; sensors: drift, distributions, traffic
    evidence = [json.loads(html.unescape(text)) for text in re.findall(r"<pre>(.*?)</pre>", dom, re.S)]
    assert sorted(map(json.dumps, evidence)) == sorted(json.dumps(t.evidence) for t in result.triggers)
