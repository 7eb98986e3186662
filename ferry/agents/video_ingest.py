"""Outer agent, video lane: the `[[video]]` sockets and the transcode threads around `OuterVideoLane`.

Each entry is one endpoint: a UDP socket, a TCP server (one stream per connection) or a TCP
client that reconnects. The pure lane (ferry.lanes.video.OuterVideoLane) checks sources,
parses, decides and says what to do; this module reads the sockets (clocks read once per
wake-up), carries out the lane's work (objects to the link, records to the trail, pictures to
the transcoders) and arms one timer from the lane's `next_timer()`.

The agent gives `IngestHost`: `seal(obj, wall)` submits an object to the link, `flush(wall)`
seals what was submitted (at most VIDEO_SUBMIT_DELAY later), `audit(**fields)` writes a record,
`audit_available()` says whether the trail can be written (no audit, no transfer).

Transcode mode runs off the event loop: each transcoded stream has its own transcoder
(`TranscoderRunner`) and a queue of its requests, run one at a time, in order, on a small thread
pool (PyAV releases the GIL while it decodes, scales and encodes); each answer comes back on the
loop (`call_soon_threadsafe`) into the lane. The lane bounds a stream's outstanding requests.
"""
from __future__ import annotations

import asyncio
import logging
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol

from ferry import limits
from ferry.agents.config import OuterVideo, split_host_port
from ferry.codecs.errors import CodecError
from ferry.lanes.video import OuterVideoLane, TranscodeEnd, TranscodeRequest, TranscoderRunner
from ferry.lanes.video.outer_lane import IdSource, OuterWork
from ferry.lanes.work import AuditIntent, SealObject
from ferry.pb import ferry_pb2
from ferry.policy.plan import Plan

try:
    from ferry.lanes.transcode import Transcoder as _Transcoder   # PyAV: the `transcode` extra
except ImportError:
    _Transcoder = None   # type: ignore[assignment,misc]

log = logging.getLogger("ferry.outer.video")


class IngestHost(Protocol):
    """What the video ingest needs of the outer agent."""

    def seal(self, obj: ferry_pb2.CanonicalObject, wall: float) -> None: ...

    def flush_link(self, wall: float) -> None: ...

    def audit(self, **fields: Any) -> object: ...

    def audit_available(self) -> bool: ...


def transcoder_factory() -> Callable[..., Any] | None:
    """The PyAV transcoder's constructor, or None where PyAV is not installed."""
    return _Transcoder


class _TranscodeQueue:
    """One stream's transcoder and its pending requests, run one at a time (order kept) on the pool."""

    def __init__(self, ingest: VideoIngest, stream_id: str) -> None:
        self.ingest, self.stream_id = ingest, stream_id
        assert ingest.factory is not None
        self.runner = TranscoderRunner(ingest.factory)
        self.pending: deque[TranscodeRequest | TranscodeEnd] = deque()
        self.busy = False
        self.done = asyncio.Event()       # set once the end was answered (or abandoned)

    def put(self, ev: TranscodeRequest | TranscodeEnd) -> None:
        if len(self.pending) > limits.VIDEO_TRANSCODE_QUEUE:   # the lane bounds it; this only guards
            raise RuntimeError(f"transcode queue of {self.stream_id} overflowed")
        self.pending.append(ev)
        self._next()

    def _next(self) -> None:
        if self.busy or self.done.is_set():
            return
        ingest = self.ingest
        while self.pending and isinstance(self.pending[0], TranscodeRequest):
            now, wall = ingest.clocks()
            work = ingest.lane.transcode_skip(self.stream_id, now, wall)   # refused: not worth decoding
            if work is None:
                break
            self.pending.popleft()
            ingest.carry(work, wall)
        if not self.pending:
            return
        ev = self.pending.popleft()
        self.busy = True
        loop = asyncio.get_running_loop()

        def answered(f: Future[tuple[list[Any] | None, str | None]]) -> None:
            try:
                loop.call_soon_threadsafe(self._answered, ev, f)
            except RuntimeError:              # the loop is gone (agent exited)
                pass
        ingest.pool.submit(self._run, ev).add_done_callback(answered)

    def _run(self, ev: TranscodeRequest | TranscodeEnd) -> tuple[list[Any] | None, str | None]:
        """On a worker thread: the transcoder's output, or why it failed."""
        try:
            return self.runner.run(ev), None
        except CodecError as exc:
            return None, str(exc)
        except Exception as exc:  # fail closed: a transcoder bug refuses the stream, never the agent
            log.exception("video stream %s: transcoder", self.stream_id)
            return None, f"{type(exc).__name__}: {exc}"

    def _answered(self, ev: TranscodeRequest | TranscodeEnd,
                  fut: Future[tuple[list[Any] | None, str | None]]) -> None:
        """On the loop: hand the answer to the lane, then start the next request."""
        self.busy = False
        if self.done.is_set():
            return
        ingest = self.ingest
        now, wall = ingest.clocks()
        try:
            aus, error = fut.result()
        except BaseException as exc:   # cancelled when the pool shut down
            aus, error = None, f"{type(exc).__name__}: {exc}"
        lane = ingest.lane
        work = (lane.transcoded(self.stream_id, aus, now, wall) if aus is not None
                else lane.transcode_failed(self.stream_id, error or "", now, wall))
        if isinstance(ev, TranscodeEnd):
            self._done()
        ingest.carry(work, wall)
        self._next()

    def abandon(self) -> None:
        """The agent stops and the transcoder did not finish in time: end the stream without it."""
        if self.done.is_set():
            return
        self._done()
        self.pending.clear()
        now, wall = self.ingest.clocks()
        self.ingest.carry(self.ingest.lane.transcode_abandon(self.stream_id, now, wall), wall)

    def _done(self) -> None:
        self.done.set()
        if self.ingest.transcodes.get(self.stream_id) is self:
            del self.ingest.transcodes[self.stream_id]


class _UdpPoller:
    """All UDP ingest sockets in one epoll set, woken at most once per `tick`.

    A camera's packets arrive one by one; waking the loop for each (an epoll round trip and a
    callback per datagram) cost more than handling them. Here the loop watches one epoll fd; when
    it turns readable, every ready socket is drained (bounded), the fd is unwatched for `tick`
    seconds while the kernel queues what comes, then watched again. Added latency: at most one
    tick; under load, one wake-up per tick instead of one per packet. `drain(key, sock, now, wall)`."""

    def __init__(self, tick: float, drain: Callable[[Any, socket.socket, float, float], None]) -> None:
        self.tick, self.drain = tick, drain
        self.epoll = select.epoll()
        self.entries: dict[int, tuple[Any, socket.socket]] = {}     # fd -> (key, socket)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.rearm: asyncio.TimerHandle | None = None

    def add(self, key: Any, sock: socket.socket) -> None:
        self.entries[sock.fileno()] = (key, sock)
        self.epoll.register(sock.fileno(), select.EPOLLIN)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.epoll.fileno(), self._wake)

    def _wake(self) -> None:
        assert self.loop is not None
        self.loop.remove_reader(self.epoll.fileno())
        now, wall = time.monotonic(), time.time()
        for fd, _mask in self.epoll.poll(0, len(self.entries) or 1):
            key, sock = self.entries[fd]
            self.drain(key, sock, now, wall)
        self.rearm = self.loop.call_later(self.tick, self._arm)

    def _arm(self) -> None:
        assert self.loop is not None
        self.rearm = None
        self.loop.add_reader(self.epoll.fileno(), self._wake)

    def close(self) -> None:
        if self.loop is not None:
            self.loop.remove_reader(self.epoll.fileno())
        if self.rearm is not None:
            self.rearm.cancel()
        for _key, sock in self.entries.values():
            sock.close()
        self.entries.clear()
        self.epoll.close()


class VideoIngest:
    """The video endpoints of one outer agent."""

    def __init__(self, entries: Sequence[OuterVideo], host: IngestHost, plan: Callable[[], Plan],
                 ids: IdSource) -> None:
        self.host = host
        self.entries = list(entries)
        self.factory = transcoder_factory()
        self.lane = OuterVideoLane(self.entries, plan, ids, offload_transcode=self.factory is not None)
        self.listeners: dict[str, socket.socket] = {}     # entry name -> its bound socket (bind())
        self._rbuf = bytearray(limits.VIDEO_UDP_BUFFER)    # one receive buffer: packets are used at once
        self._rview = memoryview(self._rbuf)
        self.poller = _UdpPoller(limits.VIDEO_INGEST_TICK, self._drain)
        self.servers: list[asyncio.Server] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.transcodes: dict[str, _TranscodeQueue] = {}    # stream id -> its transcoder
        self._pool: ThreadPoolExecutor | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_handle: asyncio.TimerHandle | None = None

    @property
    def stats(self) -> dict[str, int]:
        return self.lane.stats

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(limits.VIDEO_TRANSCODE_WORKERS, thread_name_prefix="ferry-transcode")
        return self._pool

    def clocks(self) -> tuple[float, float]:
        """(monotonic, wall) of this wake-up; the lane learns whether the trail is up."""
        self.lane.audit_available = self.host.audit_available()
        return time.monotonic(), time.time()

    # -- life cycle -----------------------------------------------------------------------------
    def bind(self) -> None:
        """Bind every listening socket now. The agent calls this before it binds anything of its own
        to an ephemeral port (the link socket), which could otherwise take a camera's port when the
        configured ports lie in the ephemeral range. An error names the entry and the address."""
        for e in self.entries:
            if e.transport not in ("udp", "tcp-listen") or e.name in self.listeners:
                continue
            host, port = split_host_port(e.listen)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                if e.transport == "udp":
                    sock = socket.socket(family, socket.SOCK_DGRAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, limits.VIDEO_UDP_RCVBUF)
                    sock.bind((host, port))
                    sock.setblocking(False)
                    self.poller.add(e.name, sock)
                else:
                    sock = socket.create_server((host, port), family=family)
                    sock.setblocking(False)
            except OSError as exc:
                raise OSError(exc.errno, f"video {e.name}: cannot listen on {e.listen} ({e.transport}): "
                                         f"{exc.strerror}") from None
            self.listeners[e.name] = sock

    async def start(self, stop: asyncio.Event) -> None:
        self.bind()
        for e in self.entries:
            if e.transport == "tcp-listen":
                server = await asyncio.start_server(partial(self._accepted, e.name), sock=self.listeners[e.name])
                self.servers.append(server)
            elif e.transport == "tcp-connect":
                self.tasks.append(asyncio.create_task(self._connect_loop(e, stop)))
            log.info("video %s: %s %s, device %s, payload %s -> %s", e.name, e.transport,
                     e.listen or e.connect, e.device_id, e.payload, e.destination)
        self.poller.start(asyncio.get_running_loop())

    async def stop(self) -> None:
        self.poller.close()
        for s in self.servers:
            s.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        now, wall = self.clocks()
        self.carry(self.lane.close(now, wall), wall)
        queues = list(self.transcodes.values())
        if queues:   # the transcoders flush on their threads; their last access units still cross
            try:
                await asyncio.wait_for(asyncio.gather(*(q.done.wait() for q in queues)),
                                       limits.VIDEO_TRANSCODE_STOP_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("video: transcoders did not finish within %.0f s", limits.VIDEO_TRANSCODE_STOP_TIMEOUT)
            for q in queues:
                q.abandon()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()

    # -- work -----------------------------------------------------------------------------------
    def carry(self, work: Sequence[OuterWork], wall: float) -> None:
        """Carry out the lane's work, then arm the timer it asks for."""
        host = self.host
        submitted = False
        for w in work:
            if isinstance(w, SealObject):
                if host.audit_available():
                    host.seal(w.obj, wall)
                    submitted = True
                else:                    # the trail went down while this work was carried out
                    self.lane.unsent(w.obj)
            elif isinstance(w, AuditIntent):
                host.audit(**w.fields)
                log.info("video %s %s: %s", w.fields["event"], w.fields["flow"], w.fields.get("reason"))
            else:
                q = self.transcodes.get(w.stream_id)
                if q is None:
                    q = self.transcodes[w.stream_id] = _TranscodeQueue(self, w.stream_id)
                q.put(w)
        if submitted and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(limits.VIDEO_SUBMIT_DELAY, self._flush)
        self._arm()

    def _flush(self) -> None:
        """Seal what the streams submitted and hand the datagrams to the pump."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.host.flush_link(time.time())

    def _arm(self) -> None:
        t = self.lane.next_timer()
        if t == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = t
        self._timer = None if t is None else asyncio.get_running_loop().call_at(t, self._on_timer, t)

    def _on_timer(self, t: float) -> None:
        self._timer = self._timer_at = None
        now, wall = self.clocks()
        self.carry(self.lane.handle_timer(max(now, t), wall), wall)

    # -- UDP ----------------------------------------------------------------------------------------
    def _drain(self, name: str, sock: socket.socket, now: float, wall: float) -> None:
        """Read a ready socket dry (bounded) into one reused buffer; each datagram goes to the lane at once."""
        self.lane.audit_available = self.host.audit_available()
        view, recv, rbuf, datagram = self._rview, sock.recvfrom_into, self._rbuf, self.lane.datagram
        for _ in range(limits.VIDEO_UDP_READS_PER_WAKE):
            try:
                n, addr = recv(rbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("video %s: %s", name, exc)
                return
            work = datagram(name, view[:n], addr, now, wall)
            if work:
                self.carry(work, wall)

    def udp_packet(self, name: str, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram of entry `name`, as if read from its socket (tools and tests)."""
        now, wall = self.clocks()
        self.carry(self.lane.datagram(name, data, addr, now, wall), wall)

    # -- TCP ------------------------------------------------------------------------------------------
    async def _accepted(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        try:
            await self._read_stream(name, reader, peer)
        finally:
            writer.close()

    async def _connect_loop(self, e: OuterVideo, stop: asyncio.Event) -> None:
        host, port = split_host_port(e.connect)
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                log.debug("video %s: connect %s: %s", e.name, e.connect, exc)
            else:
                peer = writer.get_extra_info("peername") or (host, port)
                try:
                    await self._read_stream(e.name, reader, peer)
                finally:
                    writer.close()
            try:
                await asyncio.wait_for(stop.wait(), limits.VIDEO_RECONNECT_DELAY)
            except asyncio.TimeoutError:
                pass

    async def _read_stream(self, name: str, reader: asyncio.StreamReader, peer: tuple[Any, ...]) -> None:
        """One TCP connection is one stream: RFC 4571 frames until EOF (or the stream's end)."""
        lane = self.lane
        now, wall = self.clocks()
        sid, work = lane.tcp_opened(name, peer[0], peer[1], now, wall)
        self.carry(work, wall)
        if sid is None:
            return
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except (ConnectionError, OSError):
                    break
                if not data:
                    break
                now, wall = self.clocks()
                self.carry(lane.tcp_data(sid, data, now, wall), wall)
                if not lane.is_open(sid):
                    break
        finally:
            now, wall = self.clocks()
            self.carry(lane.tcp_closed(sid, now, wall), wall)
