"""tests/support/waiting.py: waiting on a condition with a deadline."""
from __future__ import annotations

import socket
import time

import pytest
from waiting import file_size, udp_receive_queues, wait_stable, wait_until


def test_wait_until_returns_the_first_true_value():
    calls = iter([0, None, [], "yes"])
    assert wait_until(lambda: next(calls), 5, "a value", interval=0.001) == "yes"


def test_wait_until_times_out_naming_what_and_details():
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0.1 s waiting for the moon\nlogs here"):
        wait_until(lambda: False, 0.1, "the moon", details=lambda: "logs here")
    assert 0.1 <= time.monotonic() - start < 2


def test_wait_until_tries_at_least_once():
    assert wait_until(lambda: "now", 0, "no time at all") == "now"


def test_check_gives_up_at_once():
    def dead():
        raise AssertionError("agent exited")

    start = time.monotonic()
    with pytest.raises(AssertionError, match="agent exited"):
        wait_until(lambda: False, 30, "anything", check=dead)
    assert time.monotonic() - start < 1


def test_wait_stable_waits_for_the_value_to_stop_changing():
    t0 = time.monotonic()

    def growing():
        return min(int((time.monotonic() - t0) / 0.05), 4)   # 0, 1, 2, 3, 4 over 0.2 s, then 4

    assert wait_stable(growing, 0.2, 5, "a counter", interval=0.01) == 4
    assert time.monotonic() - t0 >= 0.4


def test_wait_stable_times_out_while_it_keeps_changing():
    with pytest.raises(AssertionError, match="waiting for a clock to settle"):
        wait_stable(time.monotonic, 0.5, 0.2, "a clock", interval=0.01)


def test_file_size(tmp_path):
    p = tmp_path / "f"
    assert file_size(p) == -1
    p.write_bytes(b"abc")
    assert file_size(p) == 3


def test_udp_receive_queues_sees_bound_sockets_and_waiting_bytes():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        assert udp_receive_queues(port) == [0]
        tx.sendto(b"x" * 100, ("127.0.0.1", port))
        wait_until(lambda: any(udp_receive_queues(port)), 5, "the datagram queued")
        rx.recv(200)
        assert udp_receive_queues(port) == [0]
    assert udp_receive_queues(port) == []
