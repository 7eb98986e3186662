"""A captured transfer replayed after the inner agent restarted (kill -9) delivers nothing again,
and an older run's capture is refused once the outer agent moved to a newer epoch."""
from __future__ import annotations

import os
import random
import socket
import threading
import time

import pytest

from appliance import Appliance, free_udp_port, read_trail

pytestmark = pytest.mark.e2e


class Tap:
    """A relay on the link that records every datagram (the attacker's capture)."""

    def __init__(self, to_port: int) -> None:
        self.port = free_udp_port()
        self.to = ("127.0.0.1", to_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)   # the outer sends in bursts
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.captured: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                d = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.captured.append(d)
            self.out.sendto(d, self.to)

    def take(self) -> list[bytes]:
        got, self.captured = self.captured, []
        return got

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()
        self.out.close()


def replay(port: int, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port))
            time.sleep(0.0003)


@pytest.fixture
def tapped(appliance_factory):
    a: Appliance = appliance_factory()
    tap = Tap(a.port)
    text = (a.work / "outer.toml").read_text().replace(f"peer_port = {a.port}", f"peer_port = {tap.port}")
    (a.work / "outer.toml").write_text(text)
    yield a, tap
    tap.close()


def _inner(a, event):
    return [r for r in read_trail(a.inner_audit) if r["event"] == event]


def _send_files(a, prefix: str, n: int) -> dict[str, bytes]:
    rng = random.Random(prefix)
    files = {f"{prefix}{i}.pdf": b"%PDF-1.4\n" + rng.randbytes(40_000) + b"\n%%EOF\n" for i in range(n)}
    for name, content in files.items():
        a.drop(name, content)
    a.wait_for(lambda: all((a.inner_spool / name).exists() for name in files), 30, f"{prefix} files delivered")
    return files


def test_a_capture_replayed_after_an_inner_restart_delivers_nothing_again(tapped):
    a, tap = tapped
    a.start()
    files = _send_files(a, "doc", 5)
    time.sleep(0.5)
    captured = tap.take()
    a.kill("inner")
    a.start_role("inner")
    # the restarted agent has the key at once (the stored announcement), before any announcement came
    a.wait_for(lambda: [r for r in _inner(a, "state_loaded") if r["detail"]["resumed"]], 10, "state resumed")
    replay(a.port, captured)
    replay(a.port, captured)
    time.sleep(2.0)
    assert sorted(os.listdir(a.inner_spool)) == sorted(files)          # no "doc0 (1).pdf"
    delivered = [r for r in _inner(a, "object_delivered")]
    assert len(delivered) == 5
    refusals = [r for r in _inner(a, "block_refused") + _inner(a, "object_refused")
                if r.get("code") in ("replay", "replayed_object")]
    assert refusals, "the replay was not recorded"
    assert len(_inner(a, "object_refused")) <= 5                        # an object's refusal recorded once
    # and the link goes on: new files still cross
    more = _send_files(a, "new", 3)
    assert set(os.listdir(a.inner_spool)) == set(files) | set(more)


def test_an_older_runs_capture_is_refused_after_both_restarted(tapped):
    a, tap = tapped
    a.start()
    first = _send_files(a, "old", 5)
    time.sleep(0.5)
    old_run = tap.take()
    a.kill("outer")
    a.start_role("outer")                                                # a newer epoch
    second = _send_files(a, "next", 1)
    epochs = sorted({r["epoch"] for r in _inner(a, "key_accepted")})
    assert len(epochs) == 2
    a.kill("inner")
    a.start_role("inner")
    a.wait_for(lambda: [r for r in _inner(a, "state_loaded") if r["detail"]["resumed"]], 10, "state resumed")
    replay(a.port, old_run)
    replay(a.port, old_run)
    time.sleep(2.0)
    assert sorted(os.listdir(a.inner_spool)) == sorted(first | second)
    old = [r for r in _inner(a, "announcement_refused") if r["epoch"] == epochs[0]]
    assert [r["code"] for r in old] == ["old_epoch"]                    # refused, recorded once
    assert len(_inner(a, "object_delivered")) == 6
