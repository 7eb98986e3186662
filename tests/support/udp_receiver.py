"""A UDP port on loopback that keeps every datagram it receives (a thread): a platform's RTP port,
or any application at the end of ferry's UDP output."""
from __future__ import annotations

import socket
import struct
import threading
import time


class Receiver:
    """Every datagram with its arrival time (monotonic) and sender, in `got`; on `port` (default:
    a free one). A subclass that answers overrides `handle`."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.got: list[tuple[float, bytes, tuple[str, int]]] = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.handle(data, addr)

    def handle(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append((time.monotonic(), data, addr))

    @property
    def times(self) -> list[float]:
        """When each datagram arrived (monotonic)."""
        return [t for t, _, _ in self.got]

    @property
    def ssrcs(self) -> set[int]:
        """The RTP SSRCs of what arrived."""
        return {struct.unpack_from("!I", d, 8)[0] for _, d, _ in self.got if len(d) >= 12}

    @property
    def datagrams(self) -> list[bytes]:
        """The datagrams, as the receiving application gets them, in arrival order."""
        return [d for _, d, _ in self.got]

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)
        self.sock.close()

    def rtp(self) -> list[tuple[int, int, int, bytes]]:
        """(ssrc, seq, timestamp, payload), in arrival order."""
        out = []
        for _, d, _ in self.got:
            _, _, seq, ts, ssrc = struct.unpack_from("!BBHII", d)
            out.append((ssrc, seq, ts, d[12:]))
        return out
