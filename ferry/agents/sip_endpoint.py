"""One SIP transport point of an agent: a UDP socket and/or a TCP listener, and the TCP
connections it opens or accepts. Shell only: it frames and parses with ferry.codecs.sip and hands
each message, with the peer it came from, to the agent's signaling code; it sends the bytes that
code builds. No SIP logic lives here.

- UDP: one datagram is one message (`parse_message`); a datagram over the size limit, or one
  that does not parse, is refused (`on_refused(peer, reason, size)`) and dropped. The socket is
  drained into an inbox (at most SIP_UDP_INBOX_MAX datagrams; beyond, they wait in the kernel),
  handled SIP_UDP_BATCH datagrams per turn of the event loop (a burst costs one turn per batch,
  not per datagram); an answer that finds the send buffer full waits, in order, bounded by
  SIP_UDP_OUTPUT_MAX.
- TCP: each connection has its own `SipStreamParser`; a framing or parse error refuses the
  connection's bytes and closes it (RFC 3261 §18.3: a stream that lost its framing cannot be
  resynchronised). Connections are bounded in number, in idle time and in queued output. A
  message to a TCP peer goes on the connection that peer opened or that we opened before;
  otherwise a connection is opened (its output queued, bounded, until it is up).

`Peer` names the transport and address a message came from or goes to; the signaling code
keeps it with a registration or dialog and sends replies to it.

Retransmissions over UDP (RFC 3261 §17.2): a device whose request was not answered within T1
(500 ms) sends the same bytes again, and again. The endpoint remembers, per peer and datagram
digest, the last response sent to that peer while a request was being handled, for the life of a
server transaction (64*T1); the same datagram again gets that response re-sent without being
parsed or handed over. The same datagram arriving while its first copy still waits in the inbox,
unanswered, is dropped: in the server transaction's "Trying" state a retransmission is discarded
(RFC 3261 §17.2.2), and the answer to the first copy answers it. Under a burst (10,000 devices'
keepalives) this keeps the retransmissions a backlog provokes from doubling the work that made
the backlog.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ferry import limits
from ferry.agents.link_io import _set_buffer
from ferry.codecs.sip import KeepAlive, SipError, SipRequest, SipResponse, SipStreamParser, parse_message
from ferry.config import split_host_port

log = logging.getLogger("ferry.sip")

SipMessage = SipRequest | SipResponse
_SO_RCVBUFFORCE = 33


@dataclass(frozen=True, slots=True)
class Peer:
    transport: str      # "udp" | "tcp"
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


OnMessage = Callable[[SipMessage, Peer], None]
OnRefused = Callable[[Peer, str, int], None]


class _Connection:
    __slots__ = ("peer", "writer", "parser", "last")

    def __init__(self, peer: Peer, writer: asyncio.StreamWriter | None) -> None:
        self.peer = peer
        self.writer = writer
        self.parser = SipStreamParser()
        self.last = time.monotonic()


class SipEndpoint:
    """`udp` / `tcp`: "host:port" to listen on ("" for none; port 0 picks one, see `udp_address`)."""

    def __init__(self, name: str, on_message: OnMessage, on_refused: OnRefused, *, udp: str = "",
                 tcp: str = "") -> None:
        self.name = name
        self.on_message = on_message
        self.on_refused = on_refused
        self.udp_listen = udp
        self.tcp_listen = tcp
        self._udp_sock: socket.socket | None = None
        self._tcp_sock: socket.socket | None = None
        self._udp_reading = False
        self._udp_out: deque[tuple[bytes, tuple[str, int]]] = deque()    # waiting for room in the send buffer
        self._udp_out_bytes = 0
        self._udp_peers: dict[tuple[str, int], Peer] = {}
        # read from the socket, not yet handled: (datagram, peer, key) in order, and their keys
        self._inbox: deque[tuple[bytes, Peer, tuple[Peer, bytes]]] = deque()
        self._waiting: set[tuple[Peer, bytes]] = set()
        self._draining = False
        self._udp_paused = False
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[Peer, _Connection] = {}
        self._pending: dict[Peer, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # UDP retransmissions: (peer, digest of the request datagram) -> (the last response, expiry)
        self._answers: OrderedDict[tuple[Peer, bytes], tuple[bytes, float]] = OrderedDict()
        self._handling: tuple[Peer, bytes] | None = None
        self.counters = {"received": 0, "sent": 0, "refused": 0, "send_failed": 0, "retransmissions": 0,
                         "retransmissions_waiting": 0}

    # -- life cycle ---------------------------------------------------------------------------
    def bind(self) -> None:
        """Bind the listening sockets now; an error names the address."""
        if self.udp_listen and self._udp_sock is None:
            host, port = split_host_port(self.udp_listen)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            # a burst of thousands of devices' keepalives must wait in the kernel, not be dropped
            # there (each drop costs a device retransmission 500 ms later, RFC 3261 T1)
            _set_buffer(sock, socket.SO_RCVBUF, _SO_RCVBUFFORCE, limits.SIP_UDP_RCVBUF)
            try:
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                raise OSError(exc.errno, f"{self.name}: cannot listen on udp {self.udp_listen}: {exc.strerror}") \
                    from None
            sock.setblocking(False)
            self._udp_sock = sock
        if self.tcp_listen and self._tcp_sock is None:
            host, port = split_host_port(self.tcp_listen)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                self._tcp_sock = socket.create_server((host, port), family=family)
            except OSError as exc:
                raise OSError(exc.errno, f"{self.name}: cannot listen on tcp {self.tcp_listen}: {exc.strerror}") \
                    from None
            self._tcp_sock.setblocking(False)

    @property
    def udp_rcvbuf(self) -> int:
        return self._udp_sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) if self._udp_sock else 0

    @property
    def udp_address(self) -> tuple[str, int] | None:
        return self._udp_sock.getsockname()[:2] if self._udp_sock else None

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return self._tcp_sock.getsockname()[:2] if self._tcp_sock else None

    async def start(self) -> None:
        self.bind()
        loop = asyncio.get_running_loop()
        if self._udp_sock is not None:
            loop.add_reader(self._udp_sock.fileno(), self._udp_readable)
            self._udp_reading = True
        if self._tcp_sock is not None:
            self._server = await asyncio.start_server(self._accepted, sock=self._tcp_sock)
        self._spawn(self._reap_idle())

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._inbox.clear()
        self._waiting.clear()
        if self._udp_reading and self._udp_sock is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._udp_sock.fileno())
            loop.remove_writer(self._udp_sock.fileno())
            self._udp_reading = False
            self._udp_sock.close()
            self._udp_sock = None
        for c in list(self._conns.values()):
            if c.writer is not None:
                c.writer.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._conns.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- receiving ----------------------------------------------------------------------------
    def _udp_readable(self) -> None:
        """Move what waits in the socket into the endpoint's inbox (bounded: beyond SIP_UDP_INBOX_MAX
        it waits in the kernel), then let `_drain` handle the inbox a batch per turn of the loop."""
        sock = self._udp_sock
        if sock is None:
            return
        peers, inbox = self._udp_peers, self._inbox
        while len(inbox) < limits.SIP_UDP_INBOX_MAX:
            try:
                data, addr = sock.recvfrom(limits.SIP_MESSAGE_MAX + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:      # ICMP unreachable of an earlier send: nothing to do
                log.debug("sip udp: %s", exc)
                continue
            key = (addr[0], addr[1])
            peer = peers.get(key)
            if peer is None:
                if len(peers) >= limits.SIP_UDP_PEERS_KEPT:
                    peers.clear()
                peer = peers[key] = Peer("udp", addr[0], addr[1])
            self._arrived(data, peer)
        else:
            asyncio.get_running_loop().remove_reader(sock.fileno())     # full: resumed by _drain
            self._udp_paused = True
        if inbox and not self._draining:
            self._draining = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _arrived(self, data: bytes, peer: Peer) -> None:
        """A datagram read: refused, answered again, dropped as a copy of one waiting, or queued."""
        if len(data) > limits.SIP_MESSAGE_MAX:
            self._refuse(peer, f"datagram of more than {limits.SIP_MESSAGE_MAX} bytes", len(data))
            return
        if not data.strip(b"\r\n"):
            return    # a keep-alive of CRLFs (RFC 5626 §3.5.1)
        key = (peer, hashlib.blake2b(data, digest_size=16).digest())
        kept = self._answers.get(key)
        if kept is not None and kept[1] > time.monotonic():
            self.counters["retransmissions"] += 1
            self._udp_send(kept[0], peer)
            return
        if key in self._waiting:
            # the same datagram still waits in the inbox, unanswered: a retransmission while the
            # server transaction is "Trying" is discarded (RFC 3261 §17.2.2); the answer to the
            # first copy answers it
            self.counters["retransmissions_waiting"] += 1
            return
        self._waiting.add(key)
        self._inbox.append((data, peer, key))

    def _drain(self) -> None:
        """Handle up to SIP_UDP_BATCH datagrams of the inbox; the rest on the next turn of the loop
        (timers and the other sockets get theirs in between)."""
        inbox, waiting = self._inbox, self._waiting
        for _ in range(min(len(inbox), limits.SIP_UDP_BATCH)):
            data, peer, key = inbox.popleft()
            waiting.discard(key)
            self._datagram(data, peer, key)
        loop = asyncio.get_running_loop()
        if self._udp_paused and len(inbox) < limits.SIP_UDP_INBOX_MAX // 2 and self._udp_sock is not None:
            self._udp_paused = False
            loop.add_reader(self._udp_sock.fileno(), self._udp_readable)
        if inbox:
            loop.call_soon(self._drain)
        else:
            self._draining = False

    def _datagram(self, data: bytes, peer: Peer, key: tuple[Peer, bytes]) -> None:
        try:
            msg = parse_message(data)
        except SipError as exc:
            self._refuse(peer, str(exc), len(data))
            return
        # not INVITE: its server transaction moves on after the provisional answer (the dialog code
        # retransmits its own 2xx); not ACK: it has no answer
        self._handling = key if isinstance(msg, SipRequest) and msg.method not in ("ACK", "INVITE") else None
        try:
            self._deliver(msg, peer)
        finally:
            self._handling = None

    def _deliver(self, msg: SipMessage, peer: Peer) -> None:
        self.counters["received"] += 1
        self.on_message(msg, peer)

    def _refuse(self, peer: Peer, reason: str, size: int) -> None:
        self.counters["refused"] += 1
        self.on_refused(peer, reason, size)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = writer.get_extra_info("peername") or ("", 0)
        peer = Peer("tcp", name[0], name[1])
        if len(self._conns) >= limits.SIP_TCP_CONNECTIONS_MAX:
            self._refuse(peer, f"more than {limits.SIP_TCP_CONNECTIONS_MAX} SIP connections", 0)
            writer.close()
            return
        await self._serve(peer, reader, writer)

    async def _serve(self, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(peer, writer)
        old = self._conns.get(peer)
        if old is not None and old.writer is not None and old.writer is not writer:
            old.writer.close()
        self._conns[peer] = conn
        for data in self._pending.pop(peer, []):
            self._write(conn, data)
        try:
            while True:
                try:
                    data = await reader.read(limits.SIP_TCP_READ)
                except (ConnectionError, OSError):
                    break
                if not data:
                    break
                conn.last = time.monotonic()
                try:
                    messages = conn.parser.feed(data)
                except SipError as exc:
                    self._refuse(peer, f"{exc} (connection closed)", len(data))
                    break
                for msg in messages:
                    if isinstance(msg, KeepAlive):
                        self._write(conn, b"\r\n")     # the pong (RFC 5626 §4.4.1)
                    else:
                        self._deliver(msg, peer)
        finally:
            writer.close()
            if self._conns.get(peer) is conn:
                del self._conns[peer]

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(limits.SIP_TCP_IDLE / 4)
            cut = time.monotonic() - limits.SIP_TCP_IDLE
            for c in list(self._conns.values()):
                if c.last < cut and c.writer is not None:
                    c.writer.close()

    # -- sending ------------------------------------------------------------------------------
    def send(self, data: bytes, peer: Peer) -> bool:
        """Send one built message. False when it cannot go now (no socket for that transport, the
        connection's output queue is full); a TCP peer without a connection gets one opened."""
        if peer.transport == "udp":
            if not self._udp_reading:
                self.counters["send_failed"] += 1
                return False
            handling = self._handling
            if handling is not None and handling[0] == peer and data.startswith(b"SIP/2.0 "):
                self._remember(handling, data)
            self._udp_send(data, peer)
            return True
        conn = self._conns.get(peer)
        if conn is not None and conn.writer is not None:
            return self._write(conn, data)
        queued = self._pending.get(peer)
        if queued is None:
            if len(self._conns) + len(self._pending) >= limits.SIP_TCP_CONNECTIONS_MAX:
                self.counters["send_failed"] += 1
                return False
            self._pending[peer] = [data]
            self._spawn(self._connect(peer))
        elif sum(map(len, queued)) + len(data) > limits.SIP_TCP_OUTPUT_MAX:
            self.counters["send_failed"] += 1
            return False
        else:
            queued.append(data)
        self.counters["sent"] += 1
        return True

    def _udp_send(self, data: bytes, peer: Peer) -> None:
        sock = self._udp_sock
        assert sock is not None
        if self._udp_out:       # keep the order: behind what waits already
            self._udp_queue(data, (peer.host, peer.port))
            return
        try:
            sock.sendto(data, (peer.host, peer.port))
        except (BlockingIOError, InterruptedError):
            self._udp_queue(data, (peer.host, peer.port))
            asyncio.get_running_loop().add_writer(sock.fileno(), self._udp_writable)
            return
        except OSError as exc:      # unreachable, a refused earlier send: the datagram is lost (UDP)
            self.counters["send_failed"] += 1
            log.debug("sip udp: send to %s: %s", peer, exc)
            return
        self.counters["sent"] += 1

    def _udp_queue(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._udp_out_bytes + len(data) > limits.SIP_UDP_OUTPUT_MAX:
            self.counters["send_failed"] += 1
            return
        self._udp_out.append((data, addr))
        self._udp_out_bytes += len(data)

    def _udp_writable(self) -> None:
        sock = self._udp_sock
        if sock is None:
            return
        while self._udp_out:
            data, addr = self._udp_out[0]
            try:
                sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters["send_failed"] += 1
                log.debug("sip udp: send to %s: %s", addr, exc)
            else:
                self.counters["sent"] += 1
            self._udp_out.popleft()
            self._udp_out_bytes -= len(data)
        asyncio.get_running_loop().remove_writer(sock.fileno())

    def _remember(self, key: tuple[Peer, bytes], response: bytes) -> None:
        """The response to the request datagram being handled, for its retransmissions."""
        now = time.monotonic()
        answers = self._answers
        answers.pop(key, None)
        answers[key] = (response, now + limits.SIP_ANSWER_KEEP)
        while answers:
            oldest = next(iter(answers.values()))
            if len(answers) <= limits.SIP_ANSWERS_MAX and oldest[1] > now:
                break
            answers.popitem(last=False)

    def _write(self, conn: _Connection, data: bytes) -> bool:
        assert conn.writer is not None
        transport = conn.writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() + len(data) > limits.SIP_TCP_OUTPUT_MAX:
            self.counters["send_failed"] += 1
            return False
        conn.writer.write(data)
        conn.last = time.monotonic()
        self.counters["sent"] += 1
        return True

    async def _connect(self, peer: Peer) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(peer.host, peer.port),
                                                    limits.SIP_TCP_CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            lost = self._pending.pop(peer, [])
            self.counters["send_failed"] += len(lost)
            log.info("%s: cannot connect to %s: %s (%d messages not sent)", self.name, peer, exc, len(lost))
            return
        await self._serve(peer, reader, writer)
