"""Issue 15 item 1: loss accounting does work in proportion to what the receiver saw, never to
the block number. A late joiner (an inner restart) reports nothing it never could see; a huge
authenticated block number or heartbeat next_block gives a bounded number of loss records."""

from __future__ import annotations

import random
import time
import tracemalloc

import pytest

from ferry import limits
from ferry.wire.events import BlockLost, ObjectReceived
from .wire_sim import Channel, Link


def _lost(link: Link) -> list[BlockLost]:
    return link.of(BlockLost)


def _blocks(events: list[BlockLost]) -> int:
    return sum(getattr(e, "count", 1) for e in events)


def _timed_deliver(link: Link, datagrams: list[bytes]) -> float:
    """Deliver one by one; the longest single receive call (s)."""
    r = link.receiver
    worst = 0.0
    for d in datagrams:
        t0 = time.perf_counter()
        r.receive_datagram(d, link.now, link.wall)
        worst = max(worst, time.perf_counter() - t0)
    link.collect()
    return worst


def _send(link: Link, oid: int, payload: bytes) -> list[bytes]:
    """Submit one object and return the datagrams its sealing and flushing produce."""
    link.submit(oid, payload)
    link.now += 0.05
    link.sender.flush(link.now)
    out = link.sender.datagrams_to_send(link.now)
    link.step(0.0, flush=False)  # collect sender events (BlockSealed)
    return out


def test_an_inner_restart_after_20000_blocks_reports_no_false_losses(keys):
    link = Link(keys, Channel(random.Random(15)))
    link.idle(2.0)
    link.sender._next_block = 20_000  # the sender has sent 20,000 blocks (the restart's precondition)
    link.submit(1, b"before the restart")
    link.idle(5.0)  # the epoch grows older than the restarted receiver will be
    link.receiver = link.new_receiver()  # inner restart
    link.events.clear()
    link.deliver([link.sender.announcement])  # the key comes again; no heartbeat yet (start undecided)
    assert link.receiver.current_epoch == link.sender.epoch
    worst = 0.0
    for oid in range(100, 140):
        worst = max(worst, _timed_deliver(link, _send(link, oid, bytes([oid]) * 3000)))
    link.idle(limits.BLOCK_TIMEOUT * 3)
    assert not _lost(link), f"{len(_lost(link))} false losses, first {_lost(link)[:3]}"
    assert {e.object_id for e in link.of(ObjectReceived)} >= set(range(100, 140))
    assert worst < 0.05


@pytest.mark.parametrize("block_no", [10**6, 2**40])
@pytest.mark.parametrize("joined", ["from_the_start", "late"])
def test_one_block_with_a_huge_number_is_cheap_and_gives_few_loss_records(keys, block_no, joined):
    link = Link(keys, Channel(random.Random(16)))
    link.idle(2.0)  # keyed, heartbeats: accounting starts at the epoch's first block
    if joined == "late":
        link.idle(5.0)
        link.receiver = link.new_receiver()
        link.deliver([link.sender.announcement])  # no heartbeat yet: the start is undecided
    assert link.receiver.current_epoch == link.sender.epoch
    link.events.clear()
    link.sender._next_block = block_no
    datagrams = _send(link, 7, b"x" * 2000)
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        worst = _timed_deliver(link, datagrams)
        link.idle(limits.BLOCK_TIMEOUT * 3)
        took = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [e.object_id for e in link.of(ObjectReceived)] == [7]
    lost = _lost(link)
    assert len(lost) <= 2 and worst < 0.25 and took < 2.0 and peak < 16 << 20
    if joined == "late":
        assert not lost  # it never could see what came before
    else:  # blocks 0 .. block_no - 1 were proven sent and never came: counted, in a record or two
        assert _blocks(lost) == block_no
        assert link.receiver.counters.blocks_lost == block_no


def test_a_heartbeat_with_a_huge_next_block_gives_bounded_records(keys):
    link = Link(keys, Channel(random.Random(17)))
    for oid in range(5):
        link.submit(oid, b"y" * 500)
        link.step(0.3)
    link.idle(2.0)
    link.events.clear()
    assert not link.receiver.loss.lost
    link.sender._next_block = 2**40  # the next heartbeat says 2**40 blocks were sent
    t0 = time.perf_counter()
    link.idle(limits.BLOCK_TIMEOUT * 3)
    for _ in range(20):  # every timer the receiver asks for
        link.now += 1.0
        link.receiver.handle_timer(link.now)
    link.collect()
    took = time.perf_counter() - t0
    lost = _lost(link)
    assert 1 <= len(lost) <= 2 and took < 2.0
    assert _blocks(lost) == 2**40 - 5
    assert link.receiver.get_timer() is None or link.receiver.get_timer() > link.now - 1.0


def test_after_a_rotation_a_late_joiner_reports_nothing_below_the_new_first_block(keys):
    link = Link(keys, Channel(random.Random(18)))
    link.idle(2.0)
    link.sender._next_block = 20_000
    link.submit(1, b"epoch 1")
    link.idle(1.0)
    link.sender._rotate(link.now, "policy")  # the new epoch's first block is 20,001
    first_block = link.sender._epoch_first_block
    link.idle(5.0)
    link.receiver = link.new_receiver()  # inner restart: meets the second epoch under way
    link.events.clear()
    link.deliver([link.sender.announcement])  # no heartbeat yet: the start is undecided
    assert link.receiver.current_epoch == link.sender.epoch
    for oid in range(100, 110):
        link.submit(oid, bytes([oid]) * 3000)
        link.step(0.1)
    link.idle(limits.BLOCK_TIMEOUT * 3)
    assert not [e for e in _lost(link) if e.block_no < first_block]
    assert not _lost(link)
    assert {e.object_id for e in link.of(ObjectReceived)} >= set(range(100, 110))
