"""The engines' call watchdog: a Kafka call stuck past its timeout is reported once as a stall,
and past its limit it ends the process with one line."""
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import time
    from streams.runtime.health import CallWatchdog
    stalled = lambda call, overdue: print(f"stalled: {call}", flush=True)
    watchdog = CallWatchdog("Kafka at 127.0.0.1:1 unreachable for more than 1s; exiting", stalled)
    with watchdog.guard("quick_call", 5, 10):
        time.sleep(0.3)            # within its timeout: nothing happens
    with watchdog.guard("stuck_call", 0.5, 1.5):
        time.sleep(30)             # stands in for a librdkafka call that ignores its timeout
    print("not reached")
""")


def test_a_call_past_its_timeout_stalls_once_then_exits_1_with_one_line_past_its_limit():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=20)
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["stalled: stuck_call"]
    assert done.stderr.splitlines() == [
        "driftline: Kafka at 127.0.0.1:1 unreachable for more than 1s; exiting (stuck_call blocked past its timeout)"]
