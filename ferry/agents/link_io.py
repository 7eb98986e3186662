"""UDP sockets of the ferry link: a send-only socket on the outer host and a
receive-only socket on the inner host.

The sender batches equal-sized datagrams into one ``sendmsg`` with the kernel's
UDP segmentation offload (``UDP_SEGMENT``) where the kernel has it, and falls
back to one ``sendto`` per datagram. The receiver asks for UDP GRO, so a burst
arrives as one buffer plus its segment size. The inner socket is shut down for
writing right after it is bound: the kernel then refuses any send on it (EPIPE).
"""
from __future__ import annotations

import errno
import socket
import struct

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000          # total payload of one GSO send (a UDP datagram is < 64 KiB)
_SEG = struct.Struct("=H")
_GRO = struct.Struct("=i")
RECV_BUFFER = 65536 + 4096


def _bind_device(sock: socket.socket, interface: str) -> None:
    if interface:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode() + b"\0")


def _set_buffer(sock: socket.socket, opt: int, force_opt: int, size: int) -> int:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_opt, size)   # root: past net.core.[rw]mem_max
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, opt, size)
    return sock.getsockopt(socket.SOL_SOCKET, opt)


def probe_gso(sock: socket.socket) -> bool:
    """Whether this kernel takes UDP_SEGMENT on `sock`."""
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
        return True
    except OSError:
        return False


def send_datagrams(sock: socket.socket, datagrams: list[bytes], address, gso: bool) -> tuple[int, bool, int]:
    """Send datagrams in order to `address`: runs of equal size (a shorter last one allowed)
    as one UDP_SEGMENT `sendmsg` where `gso`, else one `sendto` each. Returns how many went out
    before EAGAIN, whether GSO is still usable (a device without it answers EIO/EINVAL once:
    the rest go one by one) and the number of sends. Other errors are raised."""
    sent, n, calls = 0, len(datagrams), 0
    while sent < n:
        size = len(datagrams[sent])
        j = sent + 1
        if gso:
            limit = min(n, sent + GSO_MAX_SEGMENTS, sent + max(1, GSO_MAX_BYTES // size))
            while j < limit and len(datagrams[j]) == size:
                j += 1
            if j < limit and len(datagrams[j]) < size:   # a shorter last segment is allowed
                j += 1
        calls += 1
        try:
            if j - sent > 1:
                sock.sendmsg(datagrams[sent:j], [(SOL_UDP, UDP_SEGMENT, _SEG.pack(size))], 0, address)
            else:
                sock.sendto(datagrams[sent], address)
        except BlockingIOError:
            return sent, gso, calls
        except OSError as e:
            if e.errno in (errno.EIO, errno.EINVAL) and gso:
                gso = False      # device without GSO support: fall back for good
                continue
            raise
        sent = j
    return sent, gso, calls


class LinkSendSocket:
    """Non-blocking UDP socket that only sends to the inner agent."""

    def __init__(self, peer: tuple[str, int], *, bind_host: str = "0.0.0.0", interface: str = "",
                 sndbuf: int = 8 << 20, gso: bool = True) -> None:
        self.peer = peer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        _bind_device(self.sock, interface)
        self.sock.bind((bind_host, 0))
        # Not connect()ed: a connected UDP socket reports a stale ICMP error (an
        # inner agent not listening yet) on a later send and drops that send; a
        # one-way link takes no feedback at all.
        self.sndbuf = _set_buffer(self.sock, socket.SO_SNDBUF, 32, sndbuf)   # 32 = SO_SNDBUFFORCE
        # Nothing is ever read from this socket: drop anything that arrives.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        self.gso = gso and self._probe_gso()

    def _probe_gso(self) -> bool:
        return probe_gso(self.sock)

    def send_batch(self, datagrams: list[bytes]) -> int:
        """Send datagrams in order; return how many went out before EAGAIN."""
        sent, self.gso, _ = send_datagrams(self.sock, datagrams, self.peer, self.gso)
        return sent

    def close(self) -> None:
        self.sock.close()


class LinkReceiveSocket:
    """Non-blocking UDP socket that only receives from the outer agent."""

    def __init__(self, listen: tuple[str, int], *, interface: str = "", rcvbuf: int = 64 << 20,
                 gro: bool = True) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        _bind_device(self.sock, interface)
        self.sock.bind(listen)
        self.rcvbuf = _set_buffer(self.sock, socket.SO_RCVBUF, 33, rcvbuf)   # 33 = SO_RCVBUFFORCE
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            # An unconnected UDP socket reports ENOTCONN but the kernel still sets
            # the shutdown flag; check_receive_only() proves it below.
            if e.errno != errno.ENOTCONN:
                raise
        self.gro = False
        if gro:
            try:
                self.sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError:
                pass
        self._ancsize = socket.CMSG_SPACE(_GRO.size)
        self.address = self.sock.getsockname()

    def check_receive_only(self) -> bool:
        """True if the kernel refuses to send on this socket."""
        try:
            self.sock.sendto(b"", ("127.0.0.1", 9))
        except OSError as e:
            return e.errno == errno.EPIPE
        return False

    def receive(self) -> tuple[bytes, int] | None:
        """One read: (buffer, segment size) or None when nothing is waiting."""
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(RECV_BUFFER, self._ancsize)
        except BlockingIOError:
            return None
        seg = len(data)
        for level, kind, value in anc:
            if level == SOL_UDP and kind == UDP_GRO and len(value) >= _GRO.size:
                seg = _GRO.unpack_from(value)[0]
        return data, seg

    def close(self) -> None:
        self.sock.close()
