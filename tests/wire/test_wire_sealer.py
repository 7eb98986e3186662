"""A sender whose blocks are sealed elsewhere (`sealer`): same datagrams, same order, same counts."""

from __future__ import annotations

import random

from ferry.wire import LinkSender
from ferry.wire.frame import TYPE_SYMBOL


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
            deferred.sealed(sum(map(len, datagrams)))
            b.extend(datagrams)
        else:
            b.append(item)
    assert len(a) == len(b)
    assert _symbols(a) == _symbols(b)     # the same key (same rng), the same blocks
    assert [d[3] for d in a] == [d[3] for d in b]   # announcements and symbols in the same places
    control = lambda ds: sum(len(d) for d in ds if d[3] != TYPE_SYMBOL)   # signatures vary in length
    assert deferred.counters.bytes - control(b) == now_sealed.counters.bytes - control(a)
    assert deferred.counters.blocks == now_sealed.counters.blocks == len(calls)
