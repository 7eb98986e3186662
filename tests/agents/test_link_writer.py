"""The outer agent's link writer thread: seals unsealed blocks, paces, sends, in order; control
datagrams ahead of the data."""
from __future__ import annotations

import random
import struct
import time

import pytest

from ferry.agents.link_io import LinkReceiveSocket, LinkSendSocket
from ferry.agents.link_writer import LinkWriter
from ferry.wire.pacing import LinkPacer
from ferry.crypto import SM2PrivateKey
from ferry.wire import LinkReceiver, LinkSender, ObjectReceived
from ferry.wire.seal import UnsealedBlock
from ferry.wire.sender import Control


@pytest.fixture(scope="module")
def keys():
    return SM2PrivateKey.generate(), SM2PrivateKey.generate()


def _link(rate=1e9, burst=1 << 20):
    rx = LinkReceiveSocket(("127.0.0.1", 0), rcvbuf=32 << 20)
    tx = LinkSendSocket(rx.address, bind_host="127.0.0.1")
    return tx, rx, LinkWriter(tx, LinkPacer(rate, burst, time.monotonic()))


def _receive_all(rx, receiver, want: int, timeout=10.0) -> dict:
    got, deadline = {}, time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        r = rx.receive()
        if r is None:
            time.sleep(0.001)
            continue
        receiver.receive_segments(r[0], r[1], time.monotonic(), time.time())
        while (e := receiver.next_event()) is not None:
            if isinstance(e, ObjectReceived):
                got[e.object_id] = e.payload
    return got


def test_unsealed_blocks_are_sealed_and_sent_in_order(keys):
    outer, inner = keys
    tx, rx, writer = _link()
    try:
        sender = LinkSender(outer_key=outer, inner_public=inner.public_key(), policy_hash=bytes(32),
                            name="o", now=time.monotonic(), wall=time.time(), seal=False)
        receiver = LinkReceiver(inner_key=inner, outer_public=outer.public_key(), now=time.monotonic(), strict=True)
        rng = random.Random(4)
        objs = {i: rng.randbytes(rng.choice([50, 5000, 60_000, 300_000])) for i in range(60)}
        for oid, payload in objs.items():
            sender.submit(oid, payload, time.monotonic())
        sender.flush(time.monotonic())
        items = sender.items_to_send(time.monotonic())
        blocks = sum(isinstance(i, UnsealedBlock) for i in items)
        assert blocks == sender.counters.blocks > 20
        writer.put(items)
        assert _receive_all(rx, receiver, len(objs)) == objs
        writer.close()
        assert writer.error is None and writer.errors == 0
        assert writer.sent == sender.counters.datagrams
        assert writer.sealed_bytes > sum(map(len, objs.values()))
        # the sender counted every byte the writer sent without being told
        assert sender.counters.bytes == writer.sealed_bytes + sum(len(i) for i in items if isinstance(i, bytes))
    finally:
        tx.close()
        rx.close()


def test_pacing_holds_the_rate_and_close_sends_everything():
    tx, rx, writer = _link(rate=2e6, burst=64 << 10)       # 2 MB/s
    try:
        datagrams = [bytes([i % 256]) * 1400 for i in range(1000)]   # 1.4 MB: about 0.7 s
        t0 = time.monotonic()
        writer.put(datagrams)
        writer.close()                                     # returns once all of it went out
        took = time.monotonic() - t0
        assert writer.sent == len(datagrams)
        assert took >= (1.4e6 - (64 << 10)) / 2e6 * 0.9, took
        n = 0
        while (r := rx.receive()) is not None:
            n += len(r[0]) // r[1] + (1 if len(r[0]) % r[1] else 0)
        assert n == len(datagrams)
    finally:
        tx.close()
        rx.close()


class _BrokenCipher:
    def seal(self, nonce, plaintext, aad):
        return 1 / 0


class _BrokenKey:
    aead = _BrokenCipher()


def test_a_failing_seal_stops_the_writer_with_the_error():
    tx, rx, writer = _link()
    try:
        writer.put([UnsealedBlock(0, 0, b"x", 16, 4, _BrokenKey())])
        deadline = time.monotonic() + 5
        while writer.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert isinstance(writer.error, ZeroDivisionError)
        writer.close()                                     # the thread is gone: close does not hang
    finally:
        tx.close()
        rx.close()


def _received(rx, want: int, timeout=10.0) -> list[bytes]:
    """Datagrams in the order they came (GRO batches split at their segment size)."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        r = rx.receive()
        if r is None:
            time.sleep(0.001)
            continue
        buf, size = r
        out += [bytes(buf[i:i + size]) for i in range(0, len(buf), size)]
    return out


def test_control_goes_ahead_of_the_data_queued():
    """An announcement handed over behind 1.4 MB of paced data (0.7 s at 2 MB/s) leaves at
    once, not after the data; the data still all goes, in order."""
    tx, rx, writer = _link(rate=2e6, burst=64 << 10)
    try:
        data = [i.to_bytes(4, "big") * 350 for i in range(1000)]   # 1400 bytes each, numbered
        writer.put(data)
        time.sleep(0.05)
        writer.put_control([Control(b"C" * 700)])
        got = _received(rx, len(data) + 1)
        at = got.index(b"C" * 700)
        assert at < 300, at                        # ~0.1 s of data at most (sent: 1000)
        assert [d for d in got if len(d) == 1400] == data
        writer.close()
        assert writer.backlog() == 0 and writer.control_sent == 1 and writer.sent == len(data) + 1
    finally:
        tx.close()
        rx.close()


def test_a_control_datagram_after_block_waits_for_those_blocks(keys):
    """A rotation's announcement (after_block) leaves after the blocks below it and before the
    blocks after it, though handed over after all of them; next_block_sent follows the blocks."""
    outer, inner = keys
    tx, rx, writer = _link(rate=20e6, burst=64 << 10)
    try:
        sender = LinkSender(outer_key=outer, inner_public=inner.public_key(), policy_hash=bytes(32),
                            name="o", now=time.monotonic(), wall=time.time(), seal=False, track_sent=True)
        sender.control_to_send(time.monotonic())
        for i in range(12):
            sender.submit(i, bytes(23_000), time.monotonic())
        sender.flush(time.monotonic())
        blocks = sender.items_to_send(time.monotonic())
        assert len(blocks) == 12 and all(isinstance(b, UnsealedBlock) for b in blocks)
        writer.put(blocks)
        writer.put_control([Control(b"R" * 600, after_block=7), Control(b"H" * 100)])
        got = _received(rx, 12 * 20 + 2)
        block_of = [struct.unpack(">Q", d[8:16])[0] if len(d) > 700 else d[:1] for d in got]
        r = block_of.index(b"R")
        assert set(block_of[:r]) - {b"H"} == set(range(7)) and set(block_of[r + 1:]) - {b"H"} == set(range(7, 12))
        assert block_of.index(b"H") < r            # the heartbeat waited for nothing
        writer.close()
        assert writer.next_block_sent == 12
    finally:
        tx.close()
        rx.close()
