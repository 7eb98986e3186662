"""Outer agent, video lane: RTP over UDP and TCP (RFC 4571) into `OuterStream`s, onto the link.

Each `[[video]]` entry is one endpoint: a UDP socket, a TCP server (one stream per connection)
or a TCP client that reconnects. Packets from an address other than `source_address` are
refused (one audit record per address). The pure lane (ferry.lanes.video) parses, checks and
decides; this module only moves bytes and writes the per-stream audit records:
stream_started, stream_refused (the first refusal, with rule and reason), stream_loss (at most
every VIDEO_LOSS_AUDIT_INTERVAL), stream_ended (counts). No audit, no transfer: while the trail
cannot be written, access units are dropped (and counted), not sent.

Transcode mode runs off the event loop: each transcoded stream has its own transcoder
(`TranscoderRunner`) and a queue of its `TranscodeRequest`s, run one at a time, in order, on a
small thread pool (PyAV releases the GIL while it decodes, scales and encodes); each result
comes back on the loop (`call_soon_threadsafe`) into `OuterStream.transcoded` /
`transcode_failed`. The stream bounds its outstanding requests (it drops up to the next keyframe
when the transcoder falls behind), so the queue is bounded too.
"""
from __future__ import annotations

import asyncio
import logging
import select
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from ferry import limits
from ferry.agents.config import OuterVideo, split_host_port
from ferry.codecs.errors import CodecError
from ferry.codecs.rfc4571 import Deframer
from ferry.codecs.rtp import HEADER, HEADER_SIZE, parse_rtp
from ferry.lanes.video import (AccessUnitReady, OuterStream, StreamEnded, StreamLoss, StreamRefused,
                               StreamStarted, TranscodeEnd, TranscodeRequest, TranscoderRunner)

log = logging.getLogger("ferry.outer.video")

INGEST_RULE = "ferry-video-ingest"
POLL_INTERVAL = 0.05
RECONNECT_DELAY = 1.0
REFUSED_ADDRESSES_MAX = 1024
TRANSCODE_WORKERS = 2         # threads shared by the transcoded streams
TRANSCODE_STOP_TIMEOUT = 10.0  # seconds the agent waits, when stopping, for transcoders to flush


def transcoder_factory():
    """The PyAV transcoder's constructor, or None where PyAV is not installed."""
    try:
        from ferry.lanes.transcode import Transcoder
    except ImportError:
        return None
    return Transcoder


class _TranscodeQueue:
    """One stream's transcoder and its pending events, run one at a time (order kept) on the pool."""

    def __init__(self, ingest: "VideoIngest", stream: OuterStream) -> None:
        self.ingest, self.stream = ingest, stream
        self.runner = TranscoderRunner(ingest._factory)
        self.pending: deque = deque()
        self.busy = False
        self.done = asyncio.Event()       # set once the end was answered (or abandoned)

    def put(self, ev: TranscodeRequest | TranscodeEnd) -> None:
        if len(self.pending) > self.stream.transcode_queue:   # the stream bounds it; this only guards
            raise RuntimeError(f"transcode queue of {self.stream.stream_id} overflowed")
        self.pending.append(ev)
        self._next()

    def _next(self) -> None:
        if self.busy or self.done.is_set():
            return
        stream = self.stream
        while self.pending and stream.refused is not None and isinstance(self.pending[0], TranscodeRequest):
            self.pending.popleft()            # refused: its queued pictures are not worth decoding
            stream.counts["refused_aus"] += 1
            stream.transcoded([], time.time())
        if not self.pending:
            return
        ev = self.pending.popleft()
        self.busy = True
        loop = asyncio.get_running_loop()

        def answered(f) -> None:
            try:
                loop.call_soon_threadsafe(self._answered, ev, f)
            except RuntimeError:              # the loop is gone (agent exited)
                pass
        self.ingest.pool.submit(self._run, ev).add_done_callback(answered)

    def _run(self, ev) -> tuple[list | None, str | None]:
        """On a worker thread: the transcoder's output, or why it failed."""
        try:
            return self.runner.run(ev), None
        except CodecError as exc:
            return None, str(exc)
        except Exception as exc:  # fail closed: a transcoder bug refuses the stream, never the agent
            log.exception("video stream %s: transcoder", self.stream.stream_id)
            return None, f"{type(exc).__name__}: {exc}"

    def _answered(self, ev, fut) -> None:
        """On the loop: hand the result to the stream, then start the next event."""
        self.busy = False
        if self.done.is_set():
            return
        now = time.time()
        try:
            aus, error = fut.result()
        except BaseException as exc:   # cancelled when the pool shut down
            aus, error = None, f"{type(exc).__name__}: {exc}"
        stream = self.stream
        events = stream.transcoded(aus, now) if error is None else stream.transcode_failed(error, now)
        if isinstance(ev, TranscodeEnd):
            self.done.set()
        self.ingest._handle(stream, events, now)
        self._next()

    def abandon(self, now: float) -> None:
        """The agent stops and the transcoder did not finish in time: end the stream without it."""
        if self.done.is_set():
            return
        self.done.set()
        self.pending.clear()
        stream = self.stream
        events = []
        while stream.transcode_pending > 1:   # pictures never transcoded: dropped, not a refusal
            stream.counts["dropped_aus"] += 1
            events.extend(stream.transcoded([], now))
        events.extend(stream.transcode_failed("agent stopping", now))   # the end: StreamEnded
        self.ingest._handle(stream, events, now)


UDP_READS_PER_WAKE = 256    # datagrams drained from one socket per wake-up, at most
UDP_BUFFER = 65536


class _UdpPoller:
    """All UDP ingest sockets in one epoll set, woken at most once per `tick`.

    A camera's packets arrive one by one; waking the loop for each (an epoll round trip and a
    callback per datagram) cost more than handling them. Here the loop watches one epoll fd; when
    it turns readable, every ready socket is drained (bounded), the fd is unwatched for `tick`
    seconds while the kernel queues what comes, then watched again. Added latency: at most one
    tick; under load, one wake-up per tick instead of one per packet."""

    def __init__(self, tick: float, drain) -> None:
        self.tick, self.drain = tick, drain
        self.epoll = select.epoll()
        self.entries: dict[int, tuple] = {}     # fd -> (entry, socket)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.rearm: asyncio.TimerHandle | None = None

    def add(self, e: OuterVideo, sock: socket.socket) -> None:
        self.entries[sock.fileno()] = (e, sock)
        self.epoll.register(sock.fileno(), select.EPOLLIN)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.epoll.fileno(), self._wake)

    def _wake(self) -> None:
        self.loop.remove_reader(self.epoll.fileno())
        now = time.time()
        for fd, _mask in self.epoll.poll(0, len(self.entries) or 1):
            e, sock = self.entries[fd]
            self.drain(e, sock, now)
        self.rearm = self.loop.call_later(self.tick, self._arm)

    def _arm(self) -> None:
        self.rearm = None
        self.loop.add_reader(self.epoll.fileno(), self._wake)

    def close(self) -> None:
        if self.loop is not None:
            self.loop.remove_reader(self.epoll.fileno())
        if self.rearm is not None:
            self.rearm.cancel()
        for _e, sock in self.entries.values():
            sock.close()
        self.entries.clear()
        self.epoll.close()


class VideoIngest:
    """The video endpoints of one outer agent."""

    def __init__(self, agent, entries: list[OuterVideo]) -> None:
        self.agent = agent
        self.entries = entries
        self.streams: dict[str, OuterStream] = {}          # stream id -> stream
        self.udp: dict[str, OuterStream] = {}               # entry name -> its current UDP stream
        self.numbers: dict[str, int] = {}
        self.transports: list = []
        self.udp_socks: list[socket.socket] = []
        self.listeners: dict[str, socket.socket] = {}     # entry name -> its bound socket (bind())
        self._rbuf = bytearray(UDP_BUFFER)                 # one receive buffer: packets are used at once
        self._rview = memoryview(self._rbuf)
        self.poller = _UdpPoller(limits.VIDEO_INGEST_TICK, self._udp_drain)
        self.servers: list[asyncio.base_events.Server] = []
        self.tasks: list[asyncio.Task] = []
        self.refused_addresses: set[tuple[str, str]] = set()
        self.loss_audited: dict[str, float] = {}
        self.flush_handle: asyncio.TimerHandle | None = None
        self.stats = {"video_streams": 0, "video_access_units": 0, "video_refused_packets": 0,
                      "video_dropped_no_audit": 0}
        self._factory = transcoder_factory()
        self.transcodes: dict[str, _TranscodeQueue] = {}    # stream id -> its transcoder
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(TRANSCODE_WORKERS, thread_name_prefix="ferry-transcode")
        return self._pool

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
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
                    sock.bind((host, port))
                    sock.setblocking(False)
                    self.poller.add(e, sock)
                    self.udp_socks.append(sock)
                else:
                    sock = socket.create_server((host, port), family=family)
                    sock.setblocking(False)
            except OSError as exc:
                raise OSError(exc.errno, f"video {e.name}: cannot listen on {e.listen} ({e.transport}): "
                                         f"{exc.strerror}") from None
            self.listeners[e.name] = sock

    async def start(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self.bind()
        for e in self.entries:
            if e.transport == "tcp-listen":
                server = await asyncio.start_server(
                    lambda r, w, e=e: self._accepted(e, r, w), sock=self.listeners[e.name])
                self.servers.append(server)
            elif e.transport == "tcp-connect":
                self.tasks.append(asyncio.create_task(self._connect_loop(e, stop)))
            log.info("video %s: %s %s, device %s, payload %s -> %s", e.name, e.transport,
                     e.listen or e.connect, e.device_id, e.payload, e.destination)
        self.poller.start(loop)
        self.tasks.append(asyncio.create_task(self._timers(stop)))

    async def stop(self) -> None:
        self.poller.close()
        self.udp_socks.clear()
        for t in self.transports:
            t.close()
        for s in self.servers:
            s.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        now = time.time()
        for stream in list(self.streams.values()):
            self._handle(stream, stream.close(now), now)
        queues = list(self.transcodes.values())
        if queues:   # the transcoders flush on their threads; their last access units still cross
            try:
                await asyncio.wait_for(asyncio.gather(*(q.done.wait() for q in queues)), TRANSCODE_STOP_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("video: transcoders did not finish within %.0f s", TRANSCODE_STOP_TIMEOUT)
            now = time.time()
            for q in queues:
                q.abandon(now)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._flush()

    # -- streams ----------------------------------------------------------------------------------
    def _new_stream(self, e: OuterVideo, address: str, port: int, now: float) -> OuterStream | None:
        """A stream of entry `e` (UDP: silence ends it; TCP: the connection does)."""
        if len(self.streams) >= limits.VIDEO_STREAMS_MAX:
            self._refuse_address(e, address, f"more than {limits.VIDEO_STREAMS_MAX} video streams")
            return None
        n = self.numbers[e.name] = self.numbers.get(e.name, 0) + 1
        sid = f"{e.name}-{self.agent.run_id:08x}-{n}"
        stream = OuterStream(sid, e.device_id, address, e.payload, e.destination, lambda: self.agent.id.plan,
                             now, ssrc=e.ssrc, port=port, offload_transcode=self._factory is not None,
                             idle=limits.VIDEO_STREAM_IDLE if e.transport == "udp" else None)
        stream.entry = e
        stream.counts["dropped_no_audit"] = 0
        self.streams[sid] = stream
        self.stats["video_streams"] += 1
        return stream

    def _source(self, stream: OuterStream) -> dict:
        return {"device_id": stream.device_id, "address": stream.address}

    def _handle(self, stream: OuterStream, events, now: float) -> None:
        a = self.agent
        submitted = False
        for ev in events:
            if isinstance(ev, AccessUnitReady):
                if a.pump.held:
                    stream.counts["dropped_no_audit"] += 1
                    self.stats["video_dropped_no_audit"] += 1
                    continue
                oid = a.next_object_id()
                ev.obj.object_id = oid
                a.sender.submit(oid, ev.obj.SerializeToString(), now)
                self.stats["video_access_units"] += 1
                submitted = True
            elif isinstance(ev, (TranscodeRequest, TranscodeEnd)):
                q = self.transcodes.get(stream.stream_id)
                if q is None:
                    q = self.transcodes[stream.stream_id] = _TranscodeQueue(self, stream)
                q.put(ev)
            elif isinstance(ev, StreamStarted):
                e = stream.entry
                a.audit(event="stream_started", verdict="info", lane="video", flow=stream.stream_id,
                        source=self._source(stream), destination=stream.destination,
                        reason=f"video stream {e.name} started",
                        detail={"ssrc": ev.ssrc, "transport": e.transport, "payload": e.payload,
                                "port": stream.port})
                log.info("video stream %s started (SSRC %08x from %s)", stream.stream_id, ev.ssrc, stream.address)
            elif isinstance(ev, StreamRefused):
                a.audit(event="stream_refused", verdict="refused", lane="video", flow=stream.stream_id,
                        source=self._source(stream), destination=stream.destination, rule=ev.rule,
                        reason=ev.reason, detail=ev.detail)
                log.info("video stream %s refused: %s: %s", stream.stream_id, ev.rule, ev.reason)
            elif isinstance(ev, StreamLoss):
                last = self.loss_audited.get(stream.stream_id)
                if last is None or now - last >= limits.VIDEO_LOSS_AUDIT_INTERVAL:
                    self.loss_audited[stream.stream_id] = now
                    a.audit(event="stream_loss", verdict="lost", lane="video", flow=stream.stream_id,
                            source=self._source(stream), destination=stream.destination,
                            reason=f"{ev.total} RTP packets lost on ingest so far",
                            detail={"lost_packets": ev.total})
            elif isinstance(ev, StreamEnded):
                c = ev.counts
                c["dropped_no_audit"] = stream.counts.get("dropped_no_audit", 0)
                a.audit(event="stream_ended", verdict="info", lane="video", flow=stream.stream_id,
                        source=self._source(stream), destination=stream.destination,
                        rule=stream.rule_id or (stream.refused.rule if stream.refused else None),
                        reason=(f"refused: {stream.refused.reason}" if stream.refused else
                                f"{c['access_units']} access units sent, {c['lost_packets']} packets lost"),
                        size=c["au_bytes"], detail=c)
                log.info("video stream %s ended: %s", stream.stream_id, c)
                self.streams.pop(stream.stream_id, None)
                self.loss_audited.pop(stream.stream_id, None)
                self.transcodes.pop(stream.stream_id, None)
                if self.udp.get(stream.entry.name) is stream:
                    del self.udp[stream.entry.name]
        if stream.closed and self.udp.get(stream.entry.name) is stream:
            del self.udp[stream.entry.name]   # ending (its transcoder still flushing): new packets start anew
        if submitted:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self.flush_handle is None:
            loop = asyncio.get_running_loop()
            self.flush_handle = loop.call_later(limits.VIDEO_SUBMIT_DELAY, self._flush)

    def _flush(self) -> None:
        """Seal what the streams submitted and hand the datagrams to the pump."""
        self.flush_handle = None
        now = time.time()
        self.agent.sender.flush(now)
        self.agent.sender_events()
        self.agent.pump.collect(now)

    def _refuse_address(self, e: OuterVideo, address: str, reason: str) -> None:
        self.stats["video_refused_packets"] += 1
        key = (e.name, address)
        if key in self.refused_addresses or len(self.refused_addresses) >= REFUSED_ADDRESSES_MAX:
            return
        self.refused_addresses.add(key)
        self.agent.audit(event="stream_refused", verdict="refused", lane="video", flow=e.name,
                         source={"device_id": e.device_id, "address": address}, destination=e.destination,
                         rule=INGEST_RULE, reason=reason)
        log.info("video %s: refused %s: %s", e.name, address, reason)

    def _allowed_peer(self, e: OuterVideo, address: str) -> bool:
        if e.source_address and address != e.source_address:
            self._refuse_address(e, address, f"source address {address} is not {e.source_address}")
            return False
        return True

    # -- UDP ----------------------------------------------------------------------------------------
    def _udp_drain(self, e: OuterVideo, sock: socket.socket, now: float) -> None:
        """Read a ready socket dry (bounded) into one reused buffer; each datagram is handled at once.
        The common datagram (the stream's own source, plain RTP header) goes straight to its
        stream; anything else takes `udp_packet`, which checks everything."""
        view, recv, rbuf, unpack = self._rview, sock.recvfrom_into, self._rbuf, HEADER.unpack_from
        stream = self.udp.get(e.name)
        for _ in range(UDP_READS_PER_WAKE):
            try:
                n, addr = recv(rbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("video %s: %s", e.name, exc)
                return
            if (stream is not None and n >= HEADER_SIZE and rbuf[0] == 0x80 and addr[0] == stream.address
                    and not stream.closed and (not e.source_address or addr[0] == e.source_address)):
                _b0, b1, seq, _ts, ssrc = unpack(rbuf)
                events = stream.push_fields(ssrc, seq, b1 >= 0x80, view[HEADER_SIZE:n], now, view[:n])
                if events or stream.closed:
                    self._handle(stream, events, now)
                    stream = self.udp.get(e.name)
                continue
            self.udp_packet(e, view[:n], addr, now)
            stream = self.udp.get(e.name)

    def udp_packet(self, e: OuterVideo, data, addr, now: float | None = None) -> None:
        """One datagram (bytes, or a view valid until this returns)."""
        if now is None:
            now = time.time()
        address, port = addr[0], addr[1]
        if not self._allowed_peer(e, address):
            return
        stream = self.udp.get(e.name)
        if stream is not None and stream.address != address:
            stream.counts["foreign_source_packets"] = stream.counts.get("foreign_source_packets", 0) + 1
            return
        if stream is not None and len(data) >= HEADER_SIZE and data[0] == 0x80:
            # the common packet (version 2, no padding, extension or CSRC): no RtpPacket is built
            _b0, b1, seq, _ts, ssrc = HEADER.unpack_from(data)
            events = stream.push_fields(ssrc, seq, b1 >= 0x80, data[HEADER_SIZE:], now, data)
            if events or stream.closed:
                self._handle(stream, events, now)
            return
        try:
            packet = parse_rtp(data)
        except CodecError:
            if stream is not None:
                stream.counts["malformed_packets"] = stream.counts.get("malformed_packets", 0) + 1
            return
        if stream is None:
            stream = self._new_stream(e, address, port, now)
            if stream is None:
                return
            self.udp[e.name] = stream
        self._handle(stream, stream.push_rtp(packet, now), now)

    # -- TCP ------------------------------------------------------------------------------------------
    async def _accepted(self, e: OuterVideo, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        try:
            if self._allowed_peer(e, peer[0]):
                await self._read_stream(e, reader, peer)
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
                    if self._allowed_peer(e, peer[0]):
                        await self._read_stream(e, reader, peer)
                finally:
                    writer.close()
            try:
                await asyncio.wait_for(stop.wait(), RECONNECT_DELAY)
            except asyncio.TimeoutError:
                pass

    async def _read_stream(self, e: OuterVideo, reader: asyncio.StreamReader, peer) -> None:
        """One TCP connection is one stream: RFC 4571 frames (resynchronising) until EOF."""
        stream = self._new_stream(e, peer[0], peer[1], time.time())
        if stream is None:
            return
        deframer = Deframer(resync=True, ssrc=e.ssrc or None)
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except (ConnectionError, OSError):
                    break
                if not data:
                    break
                now = time.time()
                deframer.receive(data)
                events = []
                while (frame := deframer.next_packet()) is not None:
                    try:
                        packet = parse_rtp(frame)
                    except CodecError:
                        stream.counts["malformed_packets"] = stream.counts.get("malformed_packets", 0) + 1
                        continue
                    events.extend(stream.push_rtp(packet, now))
                self._handle(stream, events, now)
                if stream.closed:
                    break
        finally:
            stream.counts["skipped_bytes"] += deframer.skipped_bytes
            now = time.time()
            self._handle(stream, stream.close(now), now)

    # -- timers ------------------------------------------------------------------------------------
    async def _timers(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.time()
            for stream in list(self.streams.values()):
                d = stream.deadline()
                if d is not None and d <= now:
                    self._handle(stream, stream.poll(now), now)
            try:
                await asyncio.wait_for(stop.wait(), POLL_INTERVAL)
            except asyncio.TimeoutError:
                pass
