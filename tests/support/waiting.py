"""Waiting for a condition with a deadline, instead of sleeping a fixed time.

    wait_until(lambda: path.exists(), 10, "the file")           # returns the condition's value
    wait_until(lambda: counter() or None, 5, "a packet", check=agent_alive)

A fixed sleep is a guess at how long something takes; it fails on a loaded machine and wastes
time on an idle one. A test sleeps only where time itself is the scenario (sending at a paced
rate, letting a settle time pass), and says so beside the sleep.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(cond: Callable[[], T], timeout: float, what: str, interval: float = 0.02, *,
               check: Callable[[], None] | None = None, details: Callable[[], str] | None = None) -> T:
    """Poll ``cond()`` until it returns a true value and return that value.

    After ``timeout`` seconds: AssertionError naming ``what`` (and ``details()``, e.g. logs).
    ``check()`` runs before every poll and may raise to give up at once (a process died).
    The condition is always tried at least once, even with no time left.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        time.sleep(interval)


async def async_wait_until(cond: Callable[[], T], timeout: float, what: str, interval: float = 0.005) -> T:
    """``wait_until`` inside an event loop: the loop keeps running while it waits."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


def wait_stable(value: Callable[[], object], settle: float, timeout: float, what: str,
                interval: float = 0.05) -> object:
    """Wait until ``value()`` has not changed for ``settle`` seconds (a file stopped growing, a
    trail stopped moving) and return it; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while True:
        time.sleep(interval)
        now_value, now = value(), time.monotonic()
        if now_value != last:
            last, since = now_value, now
        elif now - since >= settle:
            return last
        if now >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} to settle (last: {last!r})")


def file_size(path: Path) -> int:
    """Size of ``path``, -1 while it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def udp_receive_queues(port: int) -> list[int]:
    """Bytes waiting in the receive queue of each UDP socket bound to ``port`` (this network
    namespace, /proc/net/udp and udp6); an empty list while none is bound."""
    queues = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].rsplit(":", 1)[1] == f"{port:04X}":
                queues.append(int(fields[4].split(":")[1], 16))
    return queues
