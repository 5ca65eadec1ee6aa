"""PredictionLogger without a broker: never blocks, never raises, counts every drop."""
from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from streams.client.producer import AsyncPredictionLogger, PredictionLogger

NOWHERE = "127.0.0.1:1"  # nothing listens: every delivery fails after message.timeout.ms


def _logger(**kwargs) -> PredictionLogger:
    kwargs.setdefault("registry", CollectorRegistry())
    return PredictionLogger({"bootstrap.servers": NOWHERE, "message.timeout.ms": 1000}, "p", "l", **kwargs)


def test_a_full_buffer_drops_and_counts_instead_of_blocking():
    registry = CollectorRegistry()
    logger = _logger(max_buffered=100, registry=registry)
    started = time.perf_counter()
    ids = [logger.log_prediction("churn", {"age": 41}, 1, score=0.8) for _ in range(1000)]
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0  # a call that waited for the broker would wait message.timeout.ms (1 s)
    # librdkafka's queue length also counts its own pending events (the connect-failure log
    # line, the error callback), so up to a few slots go to those: 100 at most, never more.
    accepted = logger.sent
    assert 90 <= accepted <= 100
    assert sum(i is not None for i in ids) == accepted
    assert logger.dropped["buffer_full"] == 1000 - accepted
    assert registry.get_sample_value("driftline_producer_dropped_total",
                                     {"reason": "buffer_full"}) == 1000 - accepted
    assert logger.log_label(ids[0], "churn", 0) is False
    logger.close(timeout=0.2)
    assert logger.dropped["unflushed"] + logger.dropped["delivery_failed"] == accepted


def test_unencodable_events_are_dropped_not_raised_and_closed_logger_refuses():
    logger = _logger()
    assert logger.log_prediction("churn", {"when": object()}, 1) is None
    assert logger.dropped["encode_error"] == 1
    logger.close(timeout=0.1)
    assert logger.log_prediction("churn", {"age": 1}, 1) is None and logger.dropped["closed"] == 1


def test_delivery_failures_are_counted_and_logged_once(caplog):
    logger = _logger()
    for i in range(20):
        logger.log_prediction("churn", {"age": i}, 1, prediction_id=f"p{i}")
    deadline = time.monotonic() + 10
    while logger.dropped["delivery_failed"] < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    logger.close(timeout=0.1)
    assert logger.dropped["delivery_failed"] == 20
    warnings = [r for r in caplog.records if r.name == "driftline.producer" and r.levelname == "WARNING"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_context_manager_closes_and_prometheus_is_optional():
    with PredictionLogger(NOWHERE, prometheus=False, producer_config={"message.timeout.ms": 500}) as logger:
        assert logger.log_prediction("m", {}, 0) is not None
    assert logger._closed


def test_async_wrapper_never_blocks_the_loop():
    async def scenario():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        logger = AsyncPredictionLogger({"bootstrap.servers": NOWHERE, "message.timeout.ms": 60000},
                                       registry=CollectorRegistry())
        pid = logger.log_prediction("m", {"x": 1.0}, 1)
        assert logger.log_label(pid, "m", 1)
        before = ticks
        await logger.aflush(0.5)  # waits in a thread; the loop keeps ticking
        assert ticks - before >= 5
        before = ticks
        await logger.aclose(0.5)
        assert ticks - before >= 5
        task.cancel()
        return logger

    logger = asyncio.run(scenario())
    assert logger.dropped["unflushed"] == 2  # close() gave up on the two queued events and said so


def test_numpy_values_from_model_code_are_encoded_as_numbers():
    import numpy as np

    from streams.core.codecs import decode_prediction
    from streams.client.producer import _encoder

    logger = _logger()
    pid = logger.log_prediction("churn", {"age": np.int64(41), "income": np.float32(1.5)}, np.int64(1),
                                score=np.float64(0.25))
    assert pid is not None and logger.dropped_total == 0
    logger.close(timeout=0.1)
    event = decode_prediction(_encoder.encode({"prediction_id": "p", "model_id": "m", "timestamp": 1,
                                               "prediction": np.int64(1), "score": np.float32(0.5),
                                               "features": {"v": np.array(2.5), "n": np.int32(3)}}))
    assert event.features == {"v": 2.5, "n": 3} and event.score == 0.5 and event.prediction == 1


def test_failure_and_recovery_are_each_logged_once(caplog, monkeypatch):
    import logging

    caplog.set_level(logging.INFO, logger="driftline.producer")
    # librdkafka's own connection errors are silenced here so the test drives the state itself.
    logger = _logger(producer_config={"error_cb": lambda err: None})
    for _ in range(3):
        logger._note_failure("delivery to p failed: broker down")  # as delivery reports would
    monkeypatch.setattr(logger, "_broker_answers", lambda: True)  # the broker is back
    deadline = time.monotonic() + 10
    while logger._failing and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # no second "recovered" line while nothing fails
    logger.close(timeout=0.1)
    messages = [r.getMessage() for r in caplog.records if r.name == "driftline.producer"]
    assert sum("retried; logging again on recovery" in m for m in messages) == 1, messages
    assert sum("reachable again" in m for m in messages) == 1, messages


def test_a_broker_that_is_down_makes_one_warning_on_stderr_not_librdkafkas_retries():
    """A model server that configures no logging: while the broker refuses connections, stderr
    holds driftline's one warning, not a librdkafka FAIL line per retry (Python's last-resort
    handler prints any record at WARNING or above); those lines stay in logging at DEBUG."""
    import subprocess
    import sys

    script = f"""
import logging, sys, time
from streams.client.producer import PredictionLogger
if sys.argv[1] == "debug":
    logging.getLogger("driftline.producer.librdkafka").addHandler(logging.StreamHandler(sys.stdout))
    logging.getLogger("driftline.producer.librdkafka").setLevel(logging.DEBUG)
events = PredictionLogger({{"bootstrap.servers": "{NOWHERE}", "reconnect.backoff.ms": 10,
                           "reconnect.backoff.max.ms": 50}}, prometheus=False)
events.log_prediction("churn", {{"age": 1}}, 1)
time.sleep(1.5)
events.close(timeout=0)
"""
    quiet = subprocess.run([sys.executable, "-c", script, "quiet"], capture_output=True, text=True, timeout=60)
    lines = quiet.stderr.strip().splitlines()
    assert quiet.returncode == 0 and not any("rdkafka" in line for line in lines), lines
    assert sum("retried; logging again on recovery" in line for line in lines) == 1, lines
    debug = subprocess.run([sys.executable, "-c", script, "debug"], capture_output=True, text=True, timeout=60)
    assert sum("Connection refused" in line for line in debug.stdout.splitlines()) >= 2, debug.stdout
    assert not any("rdkafka" in line for line in debug.stderr.splitlines()), debug.stderr
