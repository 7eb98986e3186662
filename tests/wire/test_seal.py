"""A sender whose blocks are sealed elsewhere (seal=False): same datagrams, same order, same counts."""

from __future__ import annotations

import random

from ferry.wire import LinkSender
from ferry.wire.frame import TYPE_SYMBOL
from ferry.wire.seal import UnsealedBlock, seal


def _sender(keys, **kw) -> LinkSender:
    outer, inner = keys
    rng = random.Random(5)
    return LinkSender(outer_key=outer, inner_public=inner.public_key(), policy_hash=bytes(32), name="o",
                      now=1000.0, wall=1.7e9, rng=rng.randbytes, **kw)


def _objects():
    rng = random.Random(9)
    return [(i, rng.randbytes(rng.choice([10, 900, 30_000, 70_000]))) for i in range(40)]


def _symbols(datagrams) -> list[bytes]:
    return [bytes(d) for d in datagrams if d[3] == TYPE_SYMBOL]


def control(datagrams) -> int:
    """Bytes of the control datagrams (signatures vary in length)."""
    return sum(len(d) for d in datagrams if d[3] != TYPE_SYMBOL)


def _fill(s: LinkSender) -> None:
    for oid, payload in _objects():
        s.submit(oid, payload, 1000.0)
    s.flush(1000.0)


def test_unsealed_blocks_give_the_same_datagrams_in_the_same_places(keys):
    now_sealed = _sender(keys)
    deferred = _sender(keys, seal=False)
    _fill(now_sealed)
    _fill(deferred)
    a = now_sealed.datagrams_to_send(1000.0)
    items = deferred.items_to_send(1000.0)
    assert all(isinstance(d, bytes) for d in a)
    blocks = [i for i in items if isinstance(i, UnsealedBlock)]
    assert [b.block_no for b in blocks] == list(range(len(blocks))) and len(blocks) > 10
    b = []
    for item in items:
        if isinstance(item, UnsealedBlock):
            datagrams = seal(item)
            assert sum(map(len, datagrams)) == item.wire_bytes     # its size is known unsealed
            assert len(datagrams) == item.k + item.m
            b.extend(datagrams)
        else:
            b.append(item)
    assert len(a) == len(b)
    assert _symbols(a) == _symbols(b)     # the same key (same rng), the same blocks
    assert [d[3] for d in a] == [d[3] for d in b]   # announcements and symbols in the same places
    # the byte counter is right without anyone reporting sealed bytes back
    assert deferred.counters.bytes - control(b) == now_sealed.counters.bytes - control(a)
    assert deferred.counters.bytes == sum(map(len, b))
    assert now_sealed.counters.bytes == sum(map(len, a))
    assert deferred.counters.blocks == now_sealed.counters.blocks == len(blocks)
    assert deferred.counters.datagrams == now_sealed.counters.datagrams == len(a)


def test_datagrams_to_send_seals_unsealed_blocks_in_place(keys):
    now_sealed = _sender(keys)
    deferred = _sender(keys, seal=False)
    _fill(now_sealed)
    _fill(deferred)
    a = now_sealed.datagrams_to_send(1000.0)
    b = deferred.datagrams_to_send(1000.0)    # bytes only, whatever `seal` says
    assert all(isinstance(d, bytes) for d in b)
    assert _symbols(a) == _symbols(b)
    assert deferred.items_to_send(1000.0) == []


def test_unsealed_block_is_a_frozen_value(keys):
    s = _sender(keys, seal=False)
    s.submit(1, b"x" * 100, 1000.0)
    s.flush(1000.0)
    (block,) = [i for i in s.items_to_send(1000.0) if isinstance(i, UnsealedBlock)]
    assert (block.epoch, block.block_no, block.k, block.m) == (s.epoch, 0, 16, 4)
    try:
        block.block_no = 5  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("UnsealedBlock is mutable")
    assert seal(block) == seal(block)          # pure: the same datagrams each time
