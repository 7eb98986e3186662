"""Loaded (via PYTHONPATH) only into agents started under libfaketime by tests/support/faults.py.

libfaketime 0.9.10 (Debian 12) with FAKETIME_DONT_FAKE_MONOTONIC=1 fails every absolute
clock_nanosleep(CLOCK_MONOTONIC) with EINVAL, and Python 3.11's time.sleep is one: the same wait
through select(2) (which libfaketime passes through; asyncio and threading waits work too)."""
import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
