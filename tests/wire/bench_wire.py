"""Micro-benchmark of the link (not a test): python tests/wire/bench_wire.py [MiB]

Sender: MiB of 1 MiB objects -> datagrams; receiver: those datagrams -> objects.
Prints MB/s of each against raw SM4-GCM sealing of the same block size on this core.
"""

from __future__ import annotations

import os
import sys
import time

from ferry.crypto import SM2PrivateKey, SM4GCM
from ferry.wire import LinkReceiver, LinkSender, ObjectReceived


def main(mib: int = 64) -> None:
    outer, inner = SM2PrivateKey.generate(), SM2PrivateKey.generate()
    now = 1000.0
    s = LinkSender(outer_key=outer, inner_public=inner.public_key(), policy_hash=bytes(32), name="b", now=now, wall=now)
    r = LinkReceiver(inner_key=inner, outer_public=outer.public_key(), now=now)
    obj = os.urandom(1 << 20)
    total = mib << 20
    t0 = time.perf_counter()
    datagrams = []
    for i in range(mib):
        s.submit(i, obj, now)
        datagrams += s.datagrams_to_send(now)
    s.flush(now)
    datagrams += s.datagrams_to_send(now)
    t_send = time.perf_counter() - t0
    t0 = time.perf_counter()
    for d in datagrams:
        r.receive_datagram(d, now, now)
    t_recv = time.perf_counter() - t0
    got = 0
    while (e := r.next_event()) is not None:
        got += isinstance(e, ObjectReceived)
    assert got == mib, got
    aead = SM4GCM(os.urandom(16))
    block = os.urandom(s.capacity)
    n = total // len(block)
    t0 = time.perf_counter()
    for i in range(n):
        aead.seal(i.to_bytes(12, "big"), block, b"x" * 23)
    t_raw = time.perf_counter() - t0
    raw = total / t_raw / 1e6
    print(f"datagrams {len(datagrams)}  block plaintext {s.capacity} B")
    print(f"raw SM4-GCM seal {raw:7.1f} MB/s")
    print(f"sender           {total / t_send / 1e6:7.1f} MB/s  ({total / t_send / 1e6 / raw:.2f} x raw)")
    print(f"receiver         {total / t_recv / 1e6:7.1f} MB/s  ({total / t_recv / 1e6 / raw:.2f} x raw)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64)
