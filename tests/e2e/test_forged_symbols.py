"""Forged symbol datagrams at a running inner agent cost only themselves.

The attacker reads the key epoch off the wire (it is in every datagram) and guesses block
numbers (a fresh sender starts at 0), but does not hold the key. Whatever it sends — one
symbol per upcoming block number, or a flood of random block numbers in the replay window —
every genuine file still crosses, and no genuine block fails authentication.
"""
from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time

import pytest

from appliance import read_trail
from ferry import limits
from ferry.wire.frame import MAGIC, SYMBOL_HEADER_SIZE, TYPE_SYMBOL, VERSION

pytestmark = pytest.mark.e2e

FULL_SEALED = 23168          # a full block with k=16 and 1472-byte datagrams
HEAD = struct.Struct(">2sBBIQBBBBI")


def forged_symbol(epoch: int, block_no: int, index: int, sealed_len: int, k: int = 16, m: int = 4) -> bytes:
    """A well-formed symbol datagram with garbage content (and authenticator, if the format has one)."""
    head = HEAD.pack(MAGIC, VERSION, TYPE_SYMBOL, epoch, block_no, index, k, m, 0, sealed_len)
    head += os.urandom(SYMBOL_HEADER_SIZE - HEAD.size)
    return head + os.urandom(-(-sealed_len // k))


def _send(port: int, datagrams, pace: float = 0.0002) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port))
            if pace:
                time.sleep(pace)


def _epoch(a) -> int:
    recs = a.wait_for(lambda: [r for r in read_trail(a.inner_audit) if r["event"] == "key_accepted"], 10,
                      "the outer agent's key")
    return recs[-1]["epoch"]


def _files(n: int, size: int) -> dict[str, bytes]:
    rng = random.Random(n * 7919 + size)
    return {f"doc{i:02d}.pdf": b"%PDF-1.4\n" + rng.randbytes(size) + b"\n%%EOF\n" for i in range(n)}


def _delivered(a) -> set[str]:
    return {name for name, how in a.outcomes().items() if how == "delivered"}


def _auth_failures(a) -> list[dict]:
    return [r for r in read_trail(a.inner_audit) if r["event"] == "block_refused" and r.get("code") == "auth"]


def test_one_forged_symbol_per_upcoming_block_does_not_stop_a_transfer(appliance_factory):
    a = appliance_factory().start()
    epoch = _epoch(a)
    # the sender numbers blocks from 0: poison each of the next 300 with one garbage symbol,
    # full-block and short-block sizes, source and repair indices
    forged = []
    for b in range(300):
        forged.append(forged_symbol(epoch, b, b % 20, FULL_SEALED))
        forged.append(forged_symbol(epoch, b, (b + 7) % 20, 1000 + 16 * b))
    _send(a.port, forged)
    files = _files(10, 60_000)
    for name, content in files.items():
        a.drop(name, content)
    a.wait_for(lambda: _delivered(a) >= set(files), 30, "all 10 files delivered despite forged symbols")
    for name, content in files.items():
        assert (a.inner_spool / name).read_bytes() == content
    assert not _auth_failures(a), "a forged symbol made a genuine block fail authentication"
    dropped = [r for r in read_trail(a.inner_audit) if r["event"] == "datagrams_dropped"]
    assert dropped and all(r.get("code") for r in dropped)


def test_a_flood_of_random_block_numbers_does_not_stop_transfers(appliance_factory):
    a = appliance_factory().start()
    epoch = _epoch(a)
    stop = threading.Event()

    def flood() -> None:
        rng = random.Random(1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                for _ in range(50):   # ~5,000 datagrams/s: a burst of 50 every 10 ms
                    ep = epoch if rng.random() < 0.9 else epoch + 1 + rng.randrange(3)  # and unannounced epochs
                    b = rng.randrange(limits.REPLAY_WINDOW)
                    s.sendto(forged_symbol(ep, b, rng.randrange(20), rng.choice((FULL_SEALED, 2000, 5008))),
                             ("127.0.0.1", a.port))
                time.sleep(0.01)

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        time.sleep(1.0)
        files = _files(20, 40_000)
        for name, content in files.items():
            a.drop(name, content)
        a.wait_for(lambda: _delivered(a) >= set(files), 40, "all 20 files delivered during the flood")
    finally:
        stop.set()
        t.join()
    for name, content in files.items():
        assert (a.inner_spool / name).read_bytes() == content
    assert not _auth_failures(a)
