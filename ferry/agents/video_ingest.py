"""Outer agent, video lane: the `[[video]]` sockets and the transcode threads around `OuterVideoLane`.

Each entry is one endpoint: a UDP socket, a TCP server (one stream per connection) or a TCP
client that reconnects. The pure lane (ferry.lanes.video.OuterVideoLane) checks sources,
parses, decides and says what to do; this module reads the sockets (clocks read once per
wake-up), carries out the lane's work (objects to the link, records to the trail, pictures to
the transcoders) and arms one timer from the lane's `next_timer()`.

The agent gives `IngestHost`: `seal(obj, wall)` submits an object to the link, `flush_link(wall)`
seals what was submitted (at most VIDEO_SUBMIT_DELAY later), `audit(**fields)` writes a record,
`audit_available()` says whether the trail can be written (no audit, no transfer).

Transcode mode runs off the event loop: each transcoded stream has its own transcoder
(`TranscoderRunner`) and a task that runs its requests one at a time, in order, on a small thread
pool (PyAV releases the GIL while it decodes, scales and encodes), and hands each answer to the
lane. The lane bounds a stream's outstanding requests.
"""
from __future__ import annotations

import asyncio
import logging
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol

from ferry import limits
from ferry.config import OuterVideo, split_host_port
from ferry.agents.lane_timer import LaneTimer
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

    def remove(self, key: Any) -> None:
        """Stop watching and close the socket of `key` (a dynamic entry that goes)."""
        for fd, (k, sock) in list(self.entries.items()):
            if k == key:
                del self.entries[fd]
                self.epoll.unregister(fd)
                sock.close()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.epoll.fileno(), self._wake)

    def _wake(self) -> None:
        assert self.loop is not None
        self.loop.remove_reader(self.epoll.fileno())
        now, wall = time.monotonic(), time.time()
        for fd, _mask in self.epoll.poll(0, len(self.entries) or 1):
            entry = self.entries.get(fd)
            if entry is not None:      # (a dynamic entry may have gone meanwhile)
                self.drain(entry[0], entry[1], now, wall)
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


@dataclass(frozen=True, slots=True)
class DynamicEntry:
    """An ingest entry opened at run time for a SIP dialog (issue 13 "media-outer"): the lane reads
    it like a `[[video]]` entry (ferry.lanes.video.outer_lane.VideoEntry). PS payload; only `ssrc`."""
    name: str                      # sip-<device_id>-<n>
    transport: str                 # "udp" | "tcp-listen" | "tcp-connect" (to `connect`)
    device_id: str
    ssrc: int
    destination: str
    source_address: str = ""
    payload: str = "ps"
    connect: str = ""              # tcp-connect: "host:port" of the camera


StreamWatcher = Callable[[str, str, dict[str, Any]], None]   # (entry name, event, record fields)


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
        # stream id -> its requests and the task that runs them in order on the pool
        self.transcodes: dict[str, tuple[asyncio.Queue[TranscodeRequest | TranscodeEnd], asyncio.Task[None]]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.timer = LaneTimer(self.lane.next_timer, self._on_timer)
        self._flush_handle: asyncio.TimerHandle | None = None
        self.refused_streams = 0       # streams refused once started (policy, checks, transcoder)
        # dynamic entry name -> (entry, its socket, its server or connecting task)
        self.dynamic: dict[str, tuple[DynamicEntry, socket.socket | None, Any]] = {}
        self.watch: StreamWatcher | None = None     # told stream_started / stream_ended of dynamic entries

    @property
    def stats(self) -> dict[str, int]:
        return self.lane.stats

    def flows(self) -> list[dict[str, Any]]:
        """The streams open now, for the management service's Flows call."""
        now, wall = time.monotonic(), time.time()
        names = {sid: ep.entry.name for sid, ep in self.lane._entry_of.items()}
        return [{"name": names.get(sid, ""), "stream_id": sid, "device_id": s.device_id,
                 "source": f"{s.address}:{s.port}" if s.port else s.address, "destination": s.destination,
                 "started": wall - (now - s.started_at), "access_units": s.counts["access_units"],
                 "bytes": s.counts["bytes"]} for sid, s in self.lane.streams.items() if not s.closed]

    def lane_counters(self) -> dict[str, int]:
        """The video lane for `ferry policy status`: `refused` counts refused streams (a camera the
        policy or the checks refused) and refused connections; `refused_packets` what came from an
        address not taken."""
        st = self.lane.stats
        return {"streams": st["video_streams"], "active": len(self.lane.streams),
                "transcoding": len(self.transcodes), "access_units": st["video_access_units"],
                "refused": self.refused_streams + st["video_refused_connections"],
                "refused_streams": self.refused_streams, "refused_connections": st["video_refused_connections"],
                "refused_packets": st["video_refused_packets"], "dropped_no_audit": st["video_dropped_no_audit"]}

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
        for _entry, sock, server in self.dynamic.values():
            if _entry.transport == "tcp-connect":
                server.cancel()
            elif server is not None:
                server.close()
            elif _entry.transport != "udp" and sock is not None:
                sock.close()
        self.dynamic.clear()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        now, wall = self.clocks()
        self.carry(self.lane.close(now, wall), wall)
        tasks = {sid: task for sid, (_q, task) in self.transcodes.items()}
        if tasks:    # the transcoders flush on their threads; their last access units still cross
            _done, late = await asyncio.wait(tasks.values(), timeout=limits.VIDEO_TRANSCODE_STOP_TIMEOUT)
            if late:
                log.warning("video: transcoders did not finish within %.0f s", limits.VIDEO_TRANSCODE_STOP_TIMEOUT)
            for sid, task in tasks.items():
                if task in late:     # end the stream without its transcoder
                    task.cancel()
                    self.transcodes.pop(sid, None)
                    now, wall = self.clocks()
                    self.carry(self.lane.transcode_abandon(sid, now, wall), wall)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self.timer.cancel()
        self._flush()

    # -- dynamic entries (issue 13 "media-outer") ------------------------------------------------
    def open_dynamic(self, entry: DynamicEntry, host: str, port: int) -> str | None:
        """Open a UDP port or TCP listener for `entry` now; None, or why it cannot be opened."""
        if entry.name in self.dynamic or entry.name in self.lane.endpoints:
            return f"video entry {entry.name} exists"
        if entry.transport == "tcp-connect":
            self.lane.add_endpoint(entry)
            task = asyncio.ensure_future(self._connect_dynamic(entry))
            self.tasks.append(task)
            self.dynamic[entry.name] = (entry, None, task)
            log.info("video %s: connecting to %s, device %s, ssrc %d -> %s", entry.name, entry.connect,
                     entry.device_id, entry.ssrc, entry.destination)
            return None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            if entry.transport == "udp":
                sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, limits.VIDEO_UDP_RCVBUF)
                    sock.bind((host, port))
                except OSError:
                    sock.close()
                    raise
                sock.setblocking(False)
            else:
                sock = socket.create_server((host, port), family=family)
                sock.setblocking(False)
        except OSError as exc:
            return f"{host}:{port} ({entry.transport}): {exc.strerror}"
        self.lane.add_endpoint(entry)
        server: asyncio.Server | None = None
        if entry.transport == "udp":
            self.poller.add(entry.name, sock)
        else:
            self.tasks.append(asyncio.ensure_future(self._serve_dynamic(entry.name, sock)))
        self.dynamic[entry.name] = (entry, sock, server)
        log.info("video %s: %s %s:%d opened, device %s, ssrc %d -> %s", entry.name, entry.transport, host, port,
                 entry.device_id, entry.ssrc, entry.destination)
        return None

    async def _serve_dynamic(self, name: str, sock: socket.socket) -> None:
        server = await asyncio.start_server(partial(self._accepted, name), sock=sock)
        held = self.dynamic.get(name)
        if held is None:               # closed before it served
            server.close()
            return
        self.dynamic[name] = (held[0], held[1], server)

    async def _connect_dynamic(self, entry: DynamicEntry) -> None:
        """tcp-connect: connect to the camera (a few tries while it starts listening), read one stream."""
        host, port = split_host_port(entry.connect)
        for _ in range(limits.MEDIA_CONNECT_TRIES):
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                log.debug("video %s: connect %s: %s", entry.name, entry.connect, exc)
                await asyncio.sleep(limits.MEDIA_CONNECT_DELAY)
                continue
            peer = writer.get_extra_info("peername") or (host, port)
            try:
                await self._read_stream(entry.name, reader, peer)
            finally:
                writer.close()
            return

    def close_dynamic(self, name: str) -> None:
        """Close a dynamic entry's socket (or connection); its streams end (stream_ended)."""
        held = self.dynamic.pop(name, None)
        if held is None:
            return
        entry, sock, server = held
        if entry.transport == "udp":
            self.poller.remove(name)
        elif entry.transport == "tcp-connect":
            server.cancel()
        elif server is not None:
            server.close()
        elif sock is not None:
            sock.close()
        now, wall = self.clocks()
        self.carry(self.lane.remove_endpoint(name, now, wall), wall)
        log.info("video %s: closed", name)

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
                if w.fields["event"] == "stream_refused" and w.fields["flow"] not in self.lane.endpoints:
                    self.refused_streams += 1     # a stream's own refusal (connections: the lane counts)
                log.info("video %s %s: %s", w.fields["event"], w.fields["flow"], w.fields.get("reason"))
                if self.watch is not None:
                    self._tell(w.fields)
            else:
                entry = self.transcodes.get(w.stream_id)
                if entry is None:
                    queue: asyncio.Queue[TranscodeRequest | TranscodeEnd] = asyncio.Queue()
                    entry = self.transcodes[w.stream_id] = (
                        queue, asyncio.create_task(self._transcode(w.stream_id, queue)))
                elif entry[0].qsize() > limits.VIDEO_TRANSCODE_QUEUE:   # the lane bounds it; this only guards
                    raise RuntimeError(f"transcode queue of {w.stream_id} overflowed")
                entry[0].put_nowait(w)
        if submitted and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(limits.VIDEO_SUBMIT_DELAY, self._flush)
        self.timer.arm()

    def _tell(self, fields: dict[str, Any]) -> None:
        """A dynamic entry's stream started, ended or was refused: tell the watcher (the media part).
        (An entry's own refusals, of connections or addresses, name the entry: not told.)"""
        event = fields["event"]
        if self.watch is None or event not in ("stream_started", "stream_ended", "stream_refused"):
            return
        name = str(fields.get("flow", "")).rsplit("-", 2)[0]
        if name.startswith("sip-"):
            self.watch(name, event, fields)

    async def _transcode(self, sid: str, queue: asyncio.Queue[TranscodeRequest | TranscodeEnd]) -> None:
        """One stream's requests, one at a time, in order, on the pool; the answers to the lane."""
        assert self.factory is not None
        runner = TranscoderRunner(self.factory)
        loop = asyncio.get_running_loop()
        lane = self.lane
        while True:
            ev = await queue.get()
            now, wall = self.clocks()
            if isinstance(ev, TranscodeRequest) and (work := lane.transcode_skip(sid, now, wall)) is not None:
                self.carry(work, wall)       # refused: its queued pictures are not worth decoding
                continue
            try:
                aus: list[Any] | None = await loop.run_in_executor(self.pool, runner.run, ev)
                error = ""
            except CodecError as exc:
                aus, error = None, str(exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # fail closed: a transcoder bug refuses the stream, never the agent
                log.exception("video stream %s: transcoder", sid)
                aus, error = None, f"{type(exc).__name__}: {exc}"
            now, wall = self.clocks()
            if isinstance(ev, TranscodeEnd):
                self.transcodes.pop(sid, None)
            self.carry(lane.transcoded(sid, aus, now, wall) if aus is not None
                       else lane.transcode_failed(sid, error, now, wall), wall)
            if isinstance(ev, TranscodeEnd):
                return

    def _flush(self) -> None:
        """Seal what the streams submitted and hand the datagrams to the pump."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.host.flush_link(time.time())

    def _on_timer(self, now: float) -> None:
        _, wall = self.clocks()
        self.carry(self.lane.handle_timer(now, wall), wall)

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
        """One TCP connection: RFC 4571 frames until EOF, the stream's end, or the lane's deadline
        (first byte, first RTP packet, idle: `tcp_deadline` / `tcp_expired`)."""
        lane = self.lane
        now, wall = self.clocks()
        cid, work = lane.tcp_opened(name, peer[0], peer[1], now, wall)
        self.carry(work, wall)
        if cid is None:
            return
        try:
            while lane.is_open(cid):
                deadline = lane.tcp_deadline(cid)
                try:
                    if deadline is None:
                        data = await reader.read(limits.VIDEO_TCP_READ)
                    else:
                        data = await asyncio.wait_for(reader.read(limits.VIDEO_TCP_READ),
                                                      max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    if lane.tcp_expired(cid, time.monotonic()):
                        break
                    continue
                except (ConnectionError, OSError):
                    break
                if not data:
                    break
                now, wall = self.clocks()
                self.carry(lane.tcp_data(cid, data, now, wall), wall)
        finally:
            now, wall = self.clocks()
            self.carry(lane.tcp_closed(cid, now, wall), wall)
