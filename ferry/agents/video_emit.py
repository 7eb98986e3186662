"""Inner agent, video lane: allowed access units -> fresh RTP (UDP, TCP) or a recording file.

Each `[[video_output]]` names a policy destination and how its streams leave: `udp` (datagrams
to `address`), `tcp` (a client to `address`, RFC 4571 framing, reconnecting; while it is not
connected, access units are dropped and counted, and output resumes at a keyframe), `file`
(appends PS, or Annex B for the h264/h265 forms; "{stream}" in the path is the stream id).
Every stream gets fresh SSRC, sequence numbers and timestamps per output (ferry.lanes.video).

Viewers (issue 13 item 3): the inner media glue (ferry.agents.media_inner) adds a viewer when the
inner platform INVITEs a camera: `add_viewer` makes its sink — UDP from the media port the SDP
answer names, TCP active (ferry connects to the platform, reconnecting) or TCP passive (ferry
listens on that port and takes one connection from the platform's address) — and
`remove_viewer` closes it. The lane's `ViewerStarted` / `ViewerLost` go to `on_viewer`. A viewer
whose sink finds it dead goes to `on_viewer_sink(viewer, kind, why)`: "unreachable" (a UDP send
refused by ICMP: the viewer's socket has IP_RECVERR, so a port unreachable comes back as
ECONNREFUSED on a later send), "closed" (its established TCP connection closed or was reset).

The pure lane (ferry.lanes.video.InnerVideoLane) keeps the streams and their accounting and
says what to send or write; this module owns the sinks, carries out the lane's work and arms
one timer from the lane's `next_timer()`. The agent gives `EmitHost`: `audit(**fields)` and
`audit_available()` (no audit, no transfer; idle streams end only while the trail is up).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from ferry import limits
from ferry.config import InnerVideoOutput, split_host_port
from ferry.agents.lane_timer import LaneTimer
from ferry.agents.link_io import probe_gso, send_datagrams
from ferry.codecs.rfc4571 import frame
from ferry.lanes.video import (AppendBytes, Emit, EndOutput, InnerVideoLane, Viewer, ViewerLost, ViewerPackets,
                               ViewerStarted)
from ferry.lanes.video.inner_lane import InnerWork
from ferry.lanes.work import AuditIntent
from ferry.pb import ferry_pb2
from ferry.policy.plan import Decision

log = logging.getLogger("ferry.inner.video")

_SAFE = str.maketrans({c: "_" for c in "/\\\0"})
IP_RECVERR, IPV6_RECVERR = 11, 25           # Linux (<linux/in.h>, <linux/in6.h>); the socket module lacks them
_UNREACHABLE = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})
SinkLost = Callable[[str, str], None]       # (kind: "unreachable" | "closed", why)


class UdpSink:
    """Datagrams to one address from an unconnected socket (a stale ICMP error never sticks).

    An access unit's RTP packets are all one size but the last, so with `gso = "auto"` they
    leave in one UDP_SEGMENT send: the kernel (or the NIC) cuts the datagrams, and the receiver
    gets the same datagrams as from one send each, at a fraction of the CPU. A capture on the
    sending host's interface shows the uncut send (as with TCP segmentation offload); `gso =
    "off"` sends one datagram per packet."""

    def __init__(self, out: InnerVideoOutput) -> None:
        host, port = split_host_port(out.address)
        self.address = (host, port)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.VIDEO_UDP_SNDBUF)
        self.sock.setblocking(False)
        self.gso = out.gso == "auto" and probe_gso(self.sock)
        self.errors = 0
        self.dropped = 0           # packets not sent (socket buffer full, or an error)
        self.calls = 0             # send system calls
        self.on_lost: SinkLost | None = None     # a viewer's: told of each send ICMP refused

    def report_errors(self) -> None:
        """Have ICMP errors come back on later sends (a viewer's sink: its send fails ECONNREFUSED when
        the platform's port is closed); an unconnected socket otherwise never sees them."""
        v6 = self.sock.family == socket.AF_INET6
        self.sock.setsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP, IPV6_RECVERR if v6 else IP_RECVERR, 1)

    def send(self, packets: list[bytes], keyframe: bool) -> bool:
        try:
            sent, self.gso, calls = send_datagrams(self.sock, packets, self.address, self.gso)
            self.calls += calls
        except OSError as exc:
            log.debug("video output %s:%d: %s", *self.address, exc)
            self.errors += 1
            self.dropped += len(packets)
            if exc.errno in _UNREACHABLE and self.on_lost is not None:
                for _ in range(limits.VIDEO_ERRQUEUE_DRAIN):   # the queued ICMP errors: read, dropped
                    try:
                        self.sock.recvmsg(256, 256, socket.MSG_ERRQUEUE)
                    except OSError:
                        break
                self.on_lost("unreachable", str(exc))
            return False
        if sent < len(packets):
            self.errors += 1
            self.dropped += len(packets) - sent
            return False
        return True

    async def start(self, stop: asyncio.Event) -> None:
        return None

    def close(self) -> None:
        self.sock.close()


class TcpSink:
    """A TCP client to one address: RFC 4571 frames, reconnecting, bounded queue."""

    def __init__(self, out: InnerVideoOutput) -> None:
        self.host, self.port = split_host_port(out.address)
        self.writer: asyncio.StreamWriter | None = None
        self.need_key = True
        self.task: asyncio.Task | None = None
        self.errors = 0
        self.calls = 0             # writes
        self.on_lost: SinkLost | None = None     # a viewer's: told when its connection ends
        self.closing = False

    def send(self, packets: list[bytes], keyframe: bool) -> bool:
        w = self.writer
        if w is None or w.is_closing():
            self.need_key = True
            return False
        if self.need_key and not keyframe:
            return False
        if w.transport.get_write_buffer_size() > limits.VIDEO_TCP_QUEUE_MAX:
            self.need_key = True
            self.errors += 1
            return False
        self.need_key = False
        w.write(b"".join(frame(p) for p in packets))
        self.calls += 1
        return True

    async def start(self, stop: asyncio.Event) -> None:
        self.task = asyncio.create_task(self._run(stop))

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                log.debug("video output %s:%d: %s", self.host, self.port, exc)
            else:
                self.writer, self.need_key = writer, True
                log.info("video output connected to %s:%d", self.host, self.port)
                why = "closed by the receiver"
                try:
                    while await reader.read(limits.VIDEO_TCP_READ):   # anything the receiver says is ignored
                        pass
                except (ConnectionError, OSError) as exc:
                    why = str(exc) or type(exc).__name__
                self.writer = None
                writer.close()
                self._lost(why)
            try:
                await asyncio.wait_for(stop.wait(), limits.VIDEO_RECONNECT_DELAY)
            except asyncio.TimeoutError:
                pass

    def _lost(self, why: str) -> None:
        if self.on_lost is not None and not self.closing:
            self.on_lost("closed", why)

    def close(self) -> None:
        self.closing = True
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


class FileSink:
    """Appends each stream's PS (or Annex B) to a file."""

    def __init__(self, out: InnerVideoOutput) -> None:
        self.template = out.path
        self.files: dict[str, IO[bytes]] = {}
        self.errors = 0

    def write(self, stream_id: str, data: bytes) -> bool:
        f = self.files.get(stream_id)
        try:
            if f is None:
                path = Path(self.template.replace("{stream}", stream_id.translate(_SAFE)))
                path.parent.mkdir(parents=True, exist_ok=True)
                f = self.files[stream_id] = open(path, "ab")
            f.write(data)
            f.flush()
        except OSError as exc:
            self.errors += 1
            log.error("video file %s: %s", self.template, exc)
            return False
        return True

    def end(self, stream_id: str) -> None:
        f = self.files.pop(stream_id, None)
        if f is not None:
            f.close()

    async def start(self, stop: asyncio.Event) -> None:
        return None

    def close(self) -> None:
        for sid in list(self.files):
            self.end(sid)


class _Address:
    """The two fields of a [[video_output]] the UDP and TCP sinks read, for a viewer's sink."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.gso = "auto"


class PassiveTcpSink(TcpSink):
    """A viewer's TCP passive sink: listens on the media port of its SDP answer and takes one
    connection at a time, from the platform's address only; RFC 4571 frames from a key frame on."""

    def __init__(self, address: str, local: tuple[str, int]) -> None:
        super().__init__(_Address(address))      # type: ignore[arg-type]
        self.local = local
        self.server: asyncio.AbstractServer | None = None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(local)
            sock.listen(2)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.sock: socket.socket | None = sock

    async def start(self, stop: asyncio.Event) -> None:
        if self.sock is not None:
            self.server = await asyncio.start_server(self._accepted, sock=self.sock)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        if peer[0] != self.host or (self.writer is not None and not self.writer.is_closing()):
            log.info("viewer port %s:%d: connection from %s refused", *self.local, peer[0])
            writer.close()
            return
        self.writer, self.need_key = writer, True
        log.info("viewer port %s:%d: %s:%d connected", *self.local, *peer[:2])
        why = "closed by the platform"
        try:
            while await reader.read(limits.VIDEO_TCP_READ):
                pass
        except (ConnectionError, OSError) as exc:
            why = str(exc) or type(exc).__name__
        if self.writer is writer:
            self.writer = None
            self._lost(why)
        writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        elif self.sock is not None:
            self.sock.close()
        self.sock = None
        super().close()


class PortTaken(str):
    """Why a viewer's sink could not be made: its local media port could not be bound (another
    program holds it); the media part picks another port."""


def make_viewer_sink(address: str, transport: str, setup: str, local: tuple[str, int]) -> UdpSink | TcpSink:
    """A viewer's sink; OSError if its port cannot be bound."""
    if transport == "udp":
        sink = UdpSink(_Address(address))      # type: ignore[arg-type]
        try:
            sink.sock.bind(local)
            sink.report_errors()
        except OSError:
            sink.close()
            raise
        return sink
    if setup == "passive":
        return PassiveTcpSink(address, local)
    return TcpSink(_Address(address))          # type: ignore[arg-type]


Sink = UdpSink | TcpSink | FileSink


def make_sink(out: InnerVideoOutput) -> Sink:
    if out.transport == "udp":
        return UdpSink(out)
    return TcpSink(out) if out.transport == "tcp" else FileSink(out)


class EmitHost(Protocol):
    """What the video outputs need of the inner agent."""

    def audit(self, **fields: Any) -> object: ...

    def audit_available(self) -> bool: ...


class VideoEmitter:
    """The inner agent's video outputs: sinks around `InnerVideoLane`."""

    def __init__(self, host: EmitHost, outputs: Sequence[InnerVideoOutput],
                 mode_of: Callable[[str], str] = lambda rule: "remux", *, viewable: bool = False) -> None:
        self.host = host
        self.refused_streams = 0
        self.mode_of = mode_of     # a rule's video mode (remux, transcode): the stream_ended record
        self.lane = InnerVideoLane(outputs, viewable=viewable)
        self.sinks: list[Sink] = [make_sink(out) for out in outputs]
        self.viewer_sinks: dict[str, UdpSink | TcpSink] = {}
        self.on_viewer: Callable[[ViewerStarted | ViewerLost], None] | None = None
        self.on_viewer_sink: Callable[[str, str, str], None] | None = None    # (viewer, kind, why)
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.timer = LaneTimer(self.lane.next_timer, self._on_timer)

    # -- viewers (ferry.agents.media_inner) ------------------------------------------------------
    def add_viewer(self, viewer_id: str, device_id: str, address: str, ssrc: int, transport: str, setup: str,
                   local: tuple[str, int]) -> str | None:
        """Make a viewer and its sink; None, or why it could not be made."""
        try:
            sink = make_viewer_sink(address, transport, setup, local)
        except OSError as exc:
            return PortTaken(f"{transport} media port {local[0]}:{local[1]}: {exc.strerror or exc}")
        try:
            self.lane.add_viewer(viewer_id, device_id, address, ssrc, transport, setup, time.monotonic())
        except ValueError as exc:
            sink.close()
            return str(exc)
        self.viewer_sinks[viewer_id] = sink
        sink.on_lost = lambda kind, why: self._sink_lost(viewer_id, kind, why)
        if self._stop is not None:
            task = asyncio.ensure_future(sink.start(self._stop))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        log.info("viewer %s of device %s: %s %s%s, SSRC %d", viewer_id, device_id, transport, address,
                 f" ({setup})" if setup else "", ssrc)
        return None

    def _sink_lost(self, viewer_id: str, kind: str, why: str) -> None:
        """A viewer's sink found it dead: told to `on_viewer_sink` from the loop (not inside a send)."""
        if self.on_viewer_sink is None or viewer_id not in self.viewer_sinks:
            return
        try:
            asyncio.get_running_loop().call_soon(self._tell_sink_lost, viewer_id, kind, why)
        except RuntimeError:          # no loop running (tests driving the emitter by hand)
            self._tell_sink_lost(viewer_id, kind, why)

    def _tell_sink_lost(self, viewer_id: str, kind: str, why: str) -> None:
        if self.on_viewer_sink is not None and viewer_id in self.viewer_sinks:
            self.on_viewer_sink(viewer_id, kind, why)

    def remove_viewer(self, viewer_id: str) -> Viewer | None:
        """The viewer stops: its sink is closed at once (nothing more is sent to it)."""
        sink = self.viewer_sinks.pop(viewer_id, None)
        if sink is not None:
            sink.close()
        return self.lane.remove_viewer(viewer_id)

    @property
    def stats(self) -> dict[str, int]:
        return self.lane.stats

    def flows(self) -> list[dict[str, Any]]:
        """The streams open now, for the management service's Flows call."""
        now, wall = time.monotonic(), time.time()
        return [{"name": f.destination, "stream_id": sid, "device_id": f.source.get("device_id", ""),
                 "source": f.source.get("address", ""), "destination": f.destination,
                 "started": wall - (now - f.started), "access_units": f.counts["access_units"],
                 "bytes": f.counts["bytes"]} for sid, f in self.lane.flows.items()]

    def lane_counters(self) -> dict[str, int]:
        """The video lane for `ferry policy status`: `refused` counts refused streams, `refused_access_units`
        the objects refused; `delivered` and `dropped` count access units and audio frames."""
        st = self.lane.stats
        return {"streams": st["video_streams"], "active": len(self.lane.flows), "delivered": st["video_delivered"],
                "refused": self.refused_streams, "refused_access_units": st["video_refused"],
                "dropped": st["video_dropped"]}

    async def start(self, stop: asyncio.Event) -> None:
        self._stop = stop
        for sink in self.sinks:
            await sink.start(stop)
        for viewer in self.viewer_sinks.values():
            await viewer.start(stop)

    def close(self, wall: float) -> None:
        self._carry(self.lane.close(time.monotonic(), wall))
        self.timer.cancel()
        for sink in self.sinks:
            sink.close()
        for vid in list(self.viewer_sinks):
            self.remove_viewer(vid)

    # -- objects (the agent's wall clock) -------------------------------------------------------
    # The dispatcher's video collaborator (ferry.lanes.inner.InnerVideo): the lane's work is
    # carried out here, at once, so nothing is handed back.
    def refuse(self, obj: ferry_pb2.CanonicalObject, decision: Decision, now: float, wall: float) -> tuple[()]:
        """An object the inner agent refuses: counted; the stream's first refusal is recorded."""
        self._carry(self.lane.refuse(obj, decision, now, wall))
        return ()

    def deliver(self, obj: ferry_pb2.CanonicalObject, decision: Decision, now: float, wall: float) -> tuple[()]:
        """An allowed object: fresh output on every output of its destination."""
        self.lane.audit_available = self.host.audit_available()
        self._carry(self.lane.deliver(obj, decision.rule, now, wall, self.mode_of(decision.rule)))
        return ()

    # -- work -----------------------------------------------------------------------------------
    def _carry(self, work: list[InnerWork]) -> None:
        for w in work:
            if isinstance(w, Emit):
                delivered, sends = False, 0
                for out in w.outputs:
                    if isinstance(out, ViewerPackets):
                        vsink = self.viewer_sinks.get(out.viewer)
                        if vsink is not None:
                            calls = vsink.calls
                            delivered |= vsink.send(out.packets, out.keyframe)
                            sends += vsink.calls - calls
                        continue
                    sink = self.sinks[out.output]
                    if isinstance(out, AppendBytes):
                        assert isinstance(sink, FileSink)
                        ok = sink.write(out.stream_id, out.data)
                    else:
                        assert not isinstance(sink, FileSink)
                        calls = sink.calls
                        ok = sink.send(out.packets, out.keyframe)
                        sends += sink.calls - calls
                    delivered |= ok
                self.lane.emitted(w, delivered, sends)
            elif isinstance(w, AuditIntent):
                self.host.audit(**w.fields)
                if w.fields["event"] == "stream_refused":
                    self.refused_streams += 1
                log.info("video %s %s: %s", w.fields["event"], w.fields["flow"], w.fields.get("reason"))
            elif isinstance(w, EndOutput):
                sink = self.sinks[w.output]
                if isinstance(sink, FileSink):
                    sink.end(w.stream_id)
            elif isinstance(w, (ViewerStarted, ViewerLost)):
                if self.on_viewer is not None:
                    self.on_viewer(w)
        self.timer.arm()

    def _on_timer(self, now: float) -> None:
        if not self.host.audit_available():   # streams end only when their end can be recorded
            self.timer.arm(now + limits.VIDEO_AUDIT_RETRY)
            return
        self._carry(self.lane.handle_timer(now, time.time()))
