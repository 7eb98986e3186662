"""A sender whose blocks are sealed elsewhere (`sealer`): same datagrams, same order, same counts."""

from __future__ import annotations

import random

from ferry.agents.sealing import PendingBlock, SealingThread
from ferry.wire import LinkSender, ObjectReceived
from ferry.wire.frame import TYPE_SYMBOL
from wire_sim import Channel, Link


def _sender(keys, **kw) -> LinkSender:
    outer, inner = keys
    rng = random.Random(5)
    return LinkSender(outer_key=outer, inner_public=inner.public_key(), policy_hash=bytes(32), name="o",
                      now=1000.0, rng=rng.randbytes, **kw)


def _objects():
    rng = random.Random(9)
    return [(i, rng.randbytes(rng.choice([10, 900, 30_000, 70_000]))) for i in range(40)]


def _symbols(datagrams) -> list[bytes]:
    return [bytes(d) for d in datagrams if d[3] == TYPE_SYMBOL]


def test_deferred_sealing_gives_the_same_datagrams_in_the_same_places(keys):
    now_sealed = _sender(keys)
    calls = []

    def sealer(fn, *args):
        calls.append(args[2])               # block number
        return ("later", fn, args)

    deferred = _sender(keys, sealer=sealer)
    for oid, payload in _objects():
        now_sealed.submit(oid, payload, 1000.0)
        deferred.submit(oid, payload, 1000.0)
    now_sealed.flush(1000.0)
    deferred.flush(1000.0)
    a = now_sealed.datagrams_to_send(1000.0)
    items = deferred.datagrams_to_send(1000.0)
    assert calls == list(range(len(calls))) and len(calls) > 10
    assert not [d for d in a if not isinstance(d, bytes) and not isinstance(d, memoryview)]
    b = []
    for item in items:
        if isinstance(item, tuple):
            _, fn, args = item
            datagrams = fn(*args)
            deferred.sealed(datagrams)
            b.extend(datagrams)
        else:
            b.append(item)
    assert len(a) == len(b)
    assert _symbols(a) == _symbols(b)     # the same key (same rng), the same blocks
    assert [d[3] for d in a] == [d[3] for d in b]   # announcements and symbols in the same places
    assert deferred.counters.bytes == now_sealed.counters.bytes
    assert deferred.counters.blocks == now_sealed.counters.blocks == len(calls)


def test_the_sealing_thread_keeps_order_and_the_receiver_gets_everything(keys):
    thread = SealingThread()
    link = Link(keys, Channel(random.Random(1)), sealer=thread)
    try:
        objs = _objects()
        for oid, payload in objs:
            link.submit(oid, payload)
        link.sender.flush(link.now)
        items = link.sender.datagrams_to_send(link.now)
        thread.submit()
        assert thread.batches == 1          # one hand-over for every block made since the last
        blocks = [i for i in items if isinstance(i, PendingBlock)]
        assert len(blocks) > 10 and len({id(b.future) for b in blocks}) == 1
        datagrams = []
        for item in items:
            if isinstance(item, PendingBlock):
                item.future.result(10)
                datagrams.extend(item.datagrams)
            else:
                datagrams.append(item)
        link.deliver(datagrams)
        got = {e.object_id: e.payload for e in link.of(ObjectReceived)}
        assert got == dict(objs)
    finally:
        thread.close()


def test_a_sealing_error_surfaces_on_the_block(keys):
    thread = SealingThread()
    try:
        block = thread(lambda *a: 1 / 0)
        thread.submit()
        try:
            block.future.result(10)
        except ZeroDivisionError:
            pass
        else:
            raise AssertionError("the error was swallowed")
    finally:
        thread.close()
