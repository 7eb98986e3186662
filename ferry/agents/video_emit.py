"""Inner agent, video lane: allowed access units -> fresh RTP (UDP, TCP) or a recording file.

Each `[[video_output]]` names a policy destination and how its streams leave: `udp` (datagrams
to `address`), `tcp` (a client to `address`, RFC 4571 framing, reconnecting; while it is not
connected, access units are dropped and counted, and output resumes at a keyframe), `file`
(appends PS, or Annex B for the h264/h265 forms; "{stream}" in the path is the stream id).
Every stream gets fresh SSRC, sequence numbers and timestamps per output (ferry.lanes.video).

Accounting is per stream, not per object: stream_started, stream_refused (first refusal, rule
and reason), stream_ended (delivered / refused / dropped counts) after VIDEO_INNER_IDLE without
an access unit, or when the agent stops.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from ferry import limits
from ferry.agents.config import InnerVideoOutput, split_host_port
from ferry.agents.link_io import probe_gso, send_datagrams
from ferry.codecs.rfc4571 import frame
from ferry.lanes.video import BUILTIN_RULE, InnerStream

log = logging.getLogger("ferry.inner.video")

RECONNECT_DELAY = 1.0
_SAFE = str.maketrans({c: "_" for c in "/\\\0"})


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
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.setblocking(False)
        self.gso = out.gso == "auto" and probe_gso(self.sock)
        self.errors = 0
        self.dropped = 0           # packets not sent (socket buffer full, or an error)
        self.calls = 0             # send system calls

    def send(self, packets: list[bytes], keyframe: bool) -> bool:
        try:
            sent, self.gso, calls = send_datagrams(self.sock, packets, self.address, self.gso)
            self.calls += calls
        except OSError as exc:
            log.debug("video output %s:%d: %s", *self.address, exc)
            self.errors += 1
            self.dropped += len(packets)
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
                try:
                    while await reader.read(4096):   # anything the receiver says is ignored
                        pass
                except (ConnectionError, OSError):
                    pass
                self.writer = None
                writer.close()
            try:
                await asyncio.wait_for(stop.wait(), RECONNECT_DELAY)
            except asyncio.TimeoutError:
                pass

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


class FileSink:
    """Appends each stream's PS (or Annex B) to a file."""

    def __init__(self, out: InnerVideoOutput) -> None:
        self.template = out.path
        self.files: dict[str, object] = {}
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


def make_sink(out: InnerVideoOutput):
    return {"udp": UdpSink, "tcp": TcpSink, "file": FileSink}[out.transport](out)


@dataclass
class _Flow:
    """One stream as the inner agent sees it."""
    stream_id: str
    destination: str
    source: dict
    started: float
    last: float
    rule: str = ""
    refused: bool = False
    outputs: list = field(default_factory=list)      # (InnerStream, sink) per output
    counts: dict = field(default_factory=lambda: {
        "access_units": 0, "audio_frames": 0, "bytes": 0, "refused": 0, "dropped": 0, "packets": 0,
        "sends": 0})


class VideoEmitter:
    """The inner agent's video outputs and per-stream accounting."""

    def __init__(self, agent, outputs: list[InnerVideoOutput]) -> None:
        self.agent = agent
        self.by_destination: dict[str, list[tuple[InnerVideoOutput, object]]] = {}
        for out in outputs:
            self.by_destination.setdefault(out.destination, []).append((out, make_sink(out)))
        self.flows: dict[str, _Flow] = {}
        self.stats = {"video_streams": 0, "video_delivered": 0, "video_refused": 0, "video_dropped": 0}

    async def start(self, stop: asyncio.Event) -> None:
        for sinks in self.by_destination.values():
            for _, sink in sinks:
                await sink.start(stop)

    def close(self, now: float) -> None:
        for flow in list(self.flows.values()):
            self._end(flow, now, "agent stopping")
        for sinks in self.by_destination.values():
            for _, sink in sinks:
                sink.close()

    # -- streams ------------------------------------------------------------------------------
    def _flow(self, obj, now: float) -> _Flow:
        sid = obj.access_unit.stream_id if obj.HasField("access_unit") else obj.audio.stream_id
        flow = self.flows.get(sid)
        if flow is None:
            if len(self.flows) >= limits.VIDEO_STREAMS_MAX:   # the oldest idle one makes room
                oldest = min(self.flows.values(), key=lambda f: f.last)
                self._end(oldest, now, "too many streams")
            src = {"device_id": obj.source.device_id, "address": obj.source.address}
            flow = self.flows[sid] = _Flow(sid, obj.destination, src, now, now)
            for out, sink in self.by_destination.get(obj.destination, ()):
                flow.outputs.append((InnerStream(out.form, now, payload_type=out.payload_type), sink))
            self.stats["video_streams"] += 1
            self.agent.audit(event="stream_started", verdict="info", lane="video", flow=sid, source=src,
                             destination=obj.destination, reason="video stream started",
                             detail={"outputs": [f"{o.transport}:{o.address or o.path} ({o.form})"
                                                 for o, _ in self.by_destination.get(obj.destination, ())],
                                     "ssrcs": [s.ssrc for s, _ in flow.outputs]})
        flow.last = now
        return flow

    def refuse(self, obj, rule: str, reason: str, now: float) -> None:
        """An object the inner agent refuses: counted; the stream's first refusal is recorded."""
        flow = self._flow(obj, now)
        flow.counts["refused"] += 1
        self.stats["video_refused"] += 1
        if not flow.refused:
            flow.refused = True
            au = obj.access_unit
            self.agent.audit(event="stream_refused", verdict="refused", lane="video", flow=flow.stream_id,
                             source=flow.source, destination=flow.destination, rule=rule, reason=reason,
                             object_id=obj.object_id,
                             detail={"codec": au.codec, "width": au.width, "height": au.height}
                             if obj.HasField("access_unit") else None)
            log.info("video stream %s refused: %s: %s", flow.stream_id, rule, reason)

    def deliver(self, obj, decision, now: float) -> None:
        """An allowed object: fresh output on every output of its destination."""
        flow = self._flow(obj, now)
        flow.rule = decision.rule
        if not self.agent.audit_available():    # no audit, no transfer
            flow.counts["dropped"] += 1
            self.stats["video_dropped"] += 1
            return
        if not flow.outputs:
            self.refuse(obj, BUILTIN_RULE, f"no video output for destination {obj.destination!r}", now)
            return
        video = obj.HasField("access_unit")
        keyframe = video and obj.access_unit.keyframe
        delivered = False
        for inner, sink in flow.outputs:
            reason = inner.accepts(obj)
            if reason:
                self.refuse(obj, BUILTIN_RULE, reason, now)
                return
            if isinstance(sink, FileSink):
                data, _, _ = inner.container(obj)
                ok = sink.write(flow.stream_id, data)
            else:
                packets = inner.push(obj)
                flow.counts["packets"] += len(packets)
                calls = sink.calls
                ok = sink.send(packets, keyframe)
                flow.counts["sends"] += sink.calls - calls
            delivered |= ok
        if delivered:
            flow.counts["access_units" if video else "audio_frames"] += 1
            flow.counts["bytes"] += (sum(len(n) for n in obj.access_unit.nal_units) if video
                                     else len(obj.audio.payload))
            self.stats["video_delivered"] += 1
        else:
            flow.counts["dropped"] += 1
            self.stats["video_dropped"] += 1

    def poll(self, now: float) -> None:
        for flow in list(self.flows.values()):
            if now - flow.last >= limits.VIDEO_INNER_IDLE:
                self._end(flow, now, "no access unit for %gs" % limits.VIDEO_INNER_IDLE)

    def _end(self, flow: _Flow, now: float, why: str) -> None:
        self.flows.pop(flow.stream_id, None)
        for _, sink in flow.outputs:
            if isinstance(sink, FileSink):
                sink.end(flow.stream_id)
        c = dict(flow.counts, duration=round(flow.last - flow.started, 3))
        self.agent.audit(event="stream_ended", verdict="info", lane="video", flow=flow.stream_id,
                         source=flow.source, destination=flow.destination, rule=flow.rule or None,
                         reason=f"{why}: {c['access_units']} access units delivered, {c['refused']} refused",
                         size=c["bytes"], detail=c)
        log.info("video stream %s ended: %s", flow.stream_id, c)
