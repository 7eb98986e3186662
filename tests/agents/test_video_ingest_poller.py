"""The UDP ingest poller: every datagram of every socket, in order, with far fewer wake-ups."""
from __future__ import annotations

import asyncio
import socket
import time

from waiting import async_wait_until

from ferry.agents.video_ingest import _UdpPoller


class Recorder:
    """A poller's drain callback: reads each ready socket dry, per entry; notes each call."""

    def __init__(self) -> None:
        self.got: dict = {}
        self.wakes: list[float] = []

    def __call__(self, entry, sock, now, wall) -> None:
        self.wakes.append(now)
        while True:
            try:
                self.got.setdefault(entry, []).append(sock.recv(2048))
            except BlockingIOError:
                return


def _bound() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def test_poller_drains_every_socket_in_order_and_coalesces_wake_ups():
    async def main():
        rec = Recorder()
        got, wakes = rec.got, rec.wakes
        socks = []
        poller = _UdpPoller(0.02, rec)
        for i in range(3):
            s = _bound()
            poller.add(i, s)
            socks.append(s)
        poller.start(asyncio.get_running_loop())
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = {i: [] for i in range(3)}
        t0 = time.monotonic()
        try:
            for burst in range(4):            # 4 bursts of 20 datagrams to each socket
                for n in range(20):
                    for i, s in enumerate(socks):
                        d = f"{i}-{burst}-{n}".encode()
                        tx.sendto(d, s.getsockname())
                        sent[i].append(d)
                await asyncio.sleep(0.06)     # the bursts' pace (scenario)
            await async_wait_until(lambda: got == sent, 10, "every datagram drained")
        finally:
            tx.close()
            poller.close()
        elapsed = time.monotonic() - t0
        assert got == sent
        # a wake-up drains every ready socket, and comes at most once per tick (0.02 s):
        # 240 datagrams in a few drains per socket and burst, however slow the machine
        assert len(wakes) <= 3 * (elapsed / 0.02 + 2)
        assert len(wakes) <= 3 * 4 * 2, len(wakes)
        assert all(s.fileno() == -1 for s in socks)     # closed with the poller

    asyncio.run(main())


def test_a_trickle_of_datagrams_wakes_the_loop_at_most_once_per_tick():
    """Datagrams 1 ms apart: each wake-up finds several (the socket queued them during the tick)."""
    async def main():
        rec = Recorder()
        poller = _UdpPoller(0.02, rec)
        rx = _bound()
        poller.add("cam", rx)
        poller.start(asyncio.get_running_loop())
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t0 = time.monotonic()
        try:
            for n in range(200):
                tx.sendto(b"%d" % n, rx.getsockname())
                await asyncio.sleep(0.001)    # the trickle's pace (scenario)
            await async_wait_until(lambda: len(rec.got.get("cam", ())) == 200, 10, "all 200 datagrams")
        finally:
            tx.close()
            poller.close()
        elapsed = time.monotonic() - t0
        assert rec.got == {"cam": [b"%d" % n for n in range(200)]}
        assert len(rec.wakes) <= elapsed / 0.02 + 2, (len(rec.wakes), elapsed)

    asyncio.run(main())
