"""The progress bar (tqdm): counts given as totals so far, drawn to the given stream, or nothing."""
from __future__ import annotations

import io

from streams.tools.simulate import Progress


def test_the_bar_reaches_the_total_given_as_counts_so_far():
    stream = io.StringIO()
    bar = Progress(2000, "simulate", stream=stream)
    for done in (500, 1000, 1999):
        bar.update(done)
    bar.close(2000)
    assert bar.bar.n == 2000
    assert "simulate: 100%" in stream.getvalue() and "2.00k/2.00k" in stream.getvalue()


def test_without_a_total_it_counts_and_when_disabled_it_draws_nothing():
    stream = io.StringIO()
    bar = Progress(None, "backtest", stream=stream)
    bar.update(70)
    bar.close(77)
    assert "backtest: 77.0 events" in stream.getvalue()
    quiet = io.StringIO()
    bar = Progress(10, "x", stream=quiet, enabled=False)
    bar.update(5)
    bar.close(10)
    assert quiet.getvalue() == ""
