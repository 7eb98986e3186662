"""The UDP ingest poller: every datagram of every socket, in order, with far fewer wake-ups."""
from __future__ import annotations

import asyncio
import socket

from ferry.agents.video_ingest import _UdpPoller


def test_poller_drains_every_socket_in_order_and_coalesces_wake_ups():
    async def main():
        got: dict[int, list[bytes]] = {}
        wakes = []
        socks = []

        def drain(entry, sock, now):
            wakes.append(now)
            while True:
                try:
                    got.setdefault(entry, []).append(sock.recv(2048))
                except BlockingIOError:
                    return

        poller = _UdpPoller(0.02, drain)
        for i in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            poller.add(i, s)
            socks.append(s)
        poller.start(asyncio.get_running_loop())
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = {i: [] for i in range(3)}
        try:
            for n in range(60):               # 180 datagrams over about 0.3 s
                for i, s in enumerate(socks):
                    d = f"{i}-{n}".encode()
                    tx.sendto(d, s.getsockname())
                    sent[i].append(d)
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.1)
        finally:
            tx.close()
            poller.close()
        assert got == sent
        # one wake-up per tick (0.02 s) at most, each draining every ready socket
        assert len(wakes) <= 3 * (0.5 / 0.02 + 2) and len(wakes) < 180 / 2
        assert all(s.fileno() == -1 for s in socks)     # closed with the poller

    asyncio.run(main())
