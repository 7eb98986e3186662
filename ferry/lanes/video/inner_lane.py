"""The inner side of the video lane, whole and pure: decided objects in, outputs and records out.

`InnerVideoLane` takes the video objects the inner agent has opened and decided, with `now`
(monotonic: idle streams) and `wall` (the wall clock):
- `deliver(obj, rule, now, wall)`: an allowed access unit or audio frame -> fresh output for
  every output of its destination (`InnerStream` per stream and output: new SSRC, sequence
  numbers, timestamps), as one `Emit` work item;
- `refuse(obj, rule, reason, now, wall)`: a refused one -> counted; the stream's first
  refusal is recorded;
- its timer: `handle_timer(now, wall)` at `next_timer()`: a stream without an access unit for
  VIDEO_INNER_IDLE ends; `close(now, wall)`: every stream ends.
Accounting is per stream, not per object: stream_started, stream_refused (first refusal, rule
and reason), stream_ended (delivered / refused / dropped counts). At most VIDEO_STREAMS_MAX
streams: the oldest idle one makes room. No audit, no transfer: while the agent says the
trail is down (`audit_available = False`) objects are dropped and counted.

The agent carries out an `Emit` (sends the packets, appends the bytes) and answers
`emitted(emit, delivered, sends)`: whether any output took it, and how many send calls it made.

Viewers (ferry.lanes.video.viewers; issue 13 item 3): `add_viewer(...)` / `remove_viewer(id)`
attach a platform's INVITEd session to the stream crossing for a device. All viewers of a stream
share one PS build; each gets its own RTP numbering from its first key frame (`ViewerPackets`
in the `Emit`, `ViewerStarted`, `ViewerLost` when the stream ends). With `viewable` (the inner
agent answers INVITEs), a stream without configured outputs is not refused: its objects wait
for viewers and are counted as `video_unwatched`. `device_streams(device_id)` says which
streams of a device cross now.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ferry import limits
from ferry.lanes.video.ended import picture_fields, pictures_line
from ferry.lanes.video.events import BUILTIN_RULE
from ferry.lanes.video.inner_stream import InnerStream
from ferry.lanes.video.viewers import Viewer, ViewerLost, ViewerPackets, ViewerStarted
from ferry.lanes.work import AuditIntent
from ferry.pb import ferry_pb2
from ferry.policy.plan import Decision
from ferry.reasons import Reason


class VideoOutput(Protocol):
    """What the lane reads of one `[[video_output]]` (ferry.config.InnerVideoOutput)."""

    @property
    def destination(self) -> str: ...

    @property
    def form(self) -> str: ...

    @property
    def transport(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def payload_type(self) -> int: ...


# per access unit: plain slotted dataclasses (a frozen one costs several times more to build)
@dataclass(slots=True)
class SendPackets:
    """RTP packets of one access unit (or audio frame) for output `output` (UDP or TCP)."""
    output: int
    packets: list[bytes]
    keyframe: bool


@dataclass(slots=True)
class AppendBytes:
    """The container bytes (PS, or Annex B) of one object, for the file of `stream_id` of output `output`."""
    output: int
    stream_id: str
    data: bytes


@dataclass(slots=True)
class Emit:
    """One object's outputs, in order. `counted`: answer with `emitted` (False: a later output
    refused the object, which is accounted as refused)."""
    stream_id: str
    outputs: list[SendPackets | AppendBytes | ViewerPackets]
    counted: bool
    obj: ferry_pb2.CanonicalObject


@dataclass(frozen=True, slots=True)
class EndOutput:
    """The stream ended: output `output` lets go of it (a file output closes its file)."""
    output: int
    stream_id: str


InnerWork = AuditIntent | Emit | EndOutput | ViewerStarted | ViewerLost


@dataclass
class _Flow:
    """One stream as the inner agent sees it."""
    stream_id: str
    destination: str
    source: dict[str, str]
    started: float
    last: float
    rule: str = ""
    refused: bool = False
    mode: str = "remux"           # the rule's (the stream_ended record)
    picture: tuple[str, int, int, float] = ("", 0, 0, 0.0)   # the last delivered access unit's codec, size, rate
    pictures_in: int = 0          # access units that reached the lane
    picture_bytes: int = 0        # of the access units delivered
    outputs: list[tuple[int, InnerStream, bool]] = field(default_factory=list)   # (output index, its stream, file?)
    viewer_ps: InnerStream | None = None    # the one PS build every viewer of the stream shares
    unwatched: int = 0            # objects no output or viewer took (viewable lanes)
    counts: dict[str, int] = field(default_factory=lambda: {
        "access_units": 0, "audio_frames": 0, "bytes": 0, "refused": 0, "dropped": 0, "packets": 0,
        "sends": 0})


def _stream_id(obj: ferry_pb2.CanonicalObject) -> str:
    sid: str = obj.access_unit.stream_id if obj.HasField("access_unit") else obj.audio.stream_id
    return sid


class InnerVideoLane:
    """The inner agent's video streams and their accounting (see the module doc)."""

    def __init__(self, outputs: Sequence[VideoOutput], *, viewable: bool = False) -> None:
        self.outputs = list(outputs)
        self.viewable = viewable          # streams may have viewers only (no configured output)
        self.viewers: dict[str, Viewer] = {}
        self.by_destination: dict[str, list[int]] = {}
        for i, out in enumerate(self.outputs):
            self.by_destination.setdefault(out.destination, []).append(i)
        self.flows: dict[str, _Flow] = {}
        self.audit_available = True       # the agent says whether the trail can be written
        self._soonest: float | None = None
        self.stats = {"video_streams": 0, "video_delivered": 0, "video_refused": 0, "video_dropped": 0}
        if viewable:
            self.stats["video_unwatched"] = 0

    # -- input ---------------------------------------------------------------------------------
    def refuse(self, obj: ferry_pb2.CanonicalObject, decision: Decision, now: float,
               wall: float) -> list[InnerWork]:
        """An object the inner agent refuses: counted; the stream's first refusal is recorded."""
        work: list[InnerWork] = []
        flow = self._flow(obj, now, work)
        flow.pictures_in += obj.HasField("access_unit")
        self._refuse(flow, obj, decision, work)
        return work

    def deliver(self, obj: ferry_pb2.CanonicalObject, rule: str, now: float, wall: float,
                mode: str = "remux") -> list[InnerWork]:
        """An allowed object: fresh output on every output of its destination (`mode`: its rule's)."""
        work: list[InnerWork] = []
        flow = self._flow(obj, now, work)
        flow.rule, flow.mode = rule, mode
        flow.pictures_in += obj.HasField("access_unit")
        if not self.audit_available:    # no audit, no transfer
            flow.counts["dropped"] += 1
            self.stats["video_dropped"] += 1
            return work
        watched = [v for v in self.viewers.values() if v.wants(obj.source.device_id, flow.stream_id)] \
            if self.viewers else []
        if not flow.outputs and not watched:
            if self.viewable:         # waits for a viewer (always-on): neither refused nor delivered
                self.stats["video_unwatched"] += 1
                flow.unwatched += 1
                return work
            self._refuse(flow, obj, Decision(False, BUILTIN_RULE, f"no video output for destination "
                                             f"{obj.destination!r}", Reason.NO_OUTPUT), work)
            return work
        keyframe = bool(obj.HasField("access_unit") and obj.access_unit.keyframe)
        made: list[SendPackets | AppendBytes | ViewerPackets] = []
        for i, inner, is_file in flow.outputs:
            reason = inner.accepts(obj)
            if reason:
                if made:
                    work.append(Emit(flow.stream_id, made, False, obj))
                self._refuse(flow, obj, Decision(False, BUILTIN_RULE, reason, Reason.STREAM_CHECK), work)
                return work
            if is_file:
                data, _, _ = inner.container(obj)
                made.append(AppendBytes(i, flow.stream_id, data))
            else:
                packets = inner.push(obj)
                flow.counts["packets"] += len(packets)
                made.append(SendPackets(i, packets, keyframe))
        if watched:
            self._to_viewers(flow, obj, keyframe, watched, made, work)
            if not made:              # every viewer waits for a key frame
                self.stats["video_unwatched"] = self.stats.get("video_unwatched", 0) + 1
                flow.unwatched += 1
                return work
        work.append(Emit(flow.stream_id, made, True, obj))
        return work

    # -- viewers -------------------------------------------------------------------------------
    def add_viewer(self, viewer_id: str, device_id: str, address: str, ssrc: int, transport: str = "udp",
                   setup: str = "", now: float = 0.0, *, stream: str = "", payload_type: int = 96,
                   rng: Any = None) -> Viewer:
        """A viewer of `device_id`'s stream (or of `stream` only); it starts at the next key frame.
        ValueError for a bad transport/setup/SSRC, a known id, or more than VIDEO_VIEWERS_MAX."""
        if viewer_id in self.viewers:
            raise ValueError(f"viewer {viewer_id!r} exists")
        if len(self.viewers) >= limits.VIDEO_VIEWERS_MAX:
            raise ValueError(f"more than {limits.VIDEO_VIEWERS_MAX} viewers")
        v = Viewer(viewer_id, device_id, address, ssrc, transport, setup, stream, payload_type, now, rng=rng)
        self.viewers[viewer_id] = v
        return v

    def remove_viewer(self, viewer_id: str) -> Viewer | None:
        """Detach a viewer (its sink is the agent's to close); its counts stay on the returned value."""
        return self.viewers.pop(viewer_id, None)

    def device_streams(self, device_id: str) -> list[tuple[str, float]]:
        """(stream id, last access unit, monotonic) of the streams of `device_id` crossing now, newest first."""
        found = [(f.stream_id, f.last) for f in self.flows.values()
                 if f.source.get("device_id") == device_id and not f.refused]
        return sorted(found, key=lambda x: -x[1])

    def _to_viewers(self, flow: _Flow, obj: ferry_pb2.CanonicalObject, keyframe: bool, watched: list[Viewer],
                    made: list[SendPackets | AppendBytes | ViewerPackets], work: list[InnerWork]) -> None:
        """The object for the viewers of `flow`: one PS build, each viewer's own RTP."""
        starting = [v for v in watched if not v.started]
        if len(starting) == len(watched) and not keyframe:
            return                    # nobody to send to yet: not even a build
        ps = flow.viewer_ps
        if ps is None:
            ps = flow.viewer_ps = InnerStream("ps", flow.last)
        if ps.accepts(obj):
            return                    # (a codec PS cannot carry: configured outputs say why)
        data, ts, video = ps.container(obj)
        for v in watched:
            if not v.started:
                if not keyframe:
                    continue
                v.ts0, v.stream_id = ts, flow.stream_id
                work.append(ViewerStarted(v.id, v.device_id, flow.stream_id))
            made.append(ViewerPackets(v.id, v.push(data, ts), keyframe))
            v.access_units += video

    def emitted(self, emit: Emit, delivered: bool, sends: int) -> None:
        """The agent carried out `emit`: whether any output took it, and its send calls."""
        flow = self.flows.get(emit.stream_id)
        counts = flow.counts if flow is not None else None
        if counts is not None:
            counts["sends"] += sends
        if not emit.counted:
            return
        if delivered:
            if counts is not None:
                obj = emit.obj
                if obj.HasField("access_unit"):
                    counts["access_units"] += 1
                    size = sum(len(n) for n in obj.access_unit.nal_units)
                    counts["bytes"] += size
                    if flow is not None:
                        a = obj.access_unit
                        flow.picture = (a.codec, a.width, a.height, a.frame_rate)
                        flow.picture_bytes += size
                else:
                    counts["audio_frames"] += 1
                    counts["bytes"] += len(obj.audio.payload)
            self.stats["video_delivered"] += 1
        else:
            if counts is not None:
                counts["dropped"] += 1
            self.stats["video_dropped"] += 1

    # -- time ----------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """When `handle_timer` should run next (None: no stream). May be early."""
        return self._soonest

    def handle_timer(self, now: float, wall: float) -> list[InnerWork]:
        work: list[InnerWork] = []
        idle = limits.VIDEO_INNER_IDLE
        for flow in list(self.flows.values()):
            if now - flow.last >= idle:
                self._end(flow, "no access unit for %gs" % idle, work)
        self._soonest = min((f.last + idle for f in self.flows.values()), default=None)
        return work

    def close(self, now: float, wall: float) -> list[InnerWork]:
        work: list[InnerWork] = []
        for flow in list(self.flows.values()):
            self._end(flow, "agent stopping", work)
        return work

    # -- streams -------------------------------------------------------------------------------
    def _flow(self, obj: ferry_pb2.CanonicalObject, now: float, work: list[InnerWork]) -> _Flow:
        sid = _stream_id(obj)
        flow = self.flows.get(sid)
        if flow is None:
            if len(self.flows) >= limits.VIDEO_STREAMS_MAX:   # the oldest idle one makes room
                oldest = min(self.flows.values(), key=lambda f: f.last)
                self._end(oldest, "too many streams", work)
            src = {"device_id": obj.source.device_id, "address": obj.source.address}
            flow = self.flows[sid] = _Flow(sid, obj.destination, src, now, now)
            outs = self.by_destination.get(obj.destination, [])
            for i in outs:
                o = self.outputs[i]
                flow.outputs.append((i, InnerStream(o.form, now, payload_type=o.payload_type), o.transport == "file"))
            self.stats["video_streams"] += 1
            work.append(AuditIntent(dict(
                event="stream_started", verdict="info", lane="video", flow=sid, source=src,
                destination=obj.destination, reason="video stream started",
                detail={"outputs": [f"{self.outputs[i].transport}:{self.outputs[i].address or self.outputs[i].path} "
                                    f"({self.outputs[i].form})" for i in outs],
                        "ssrcs": [s.ssrc for _, s, _ in flow.outputs]})))
            deadline = now + limits.VIDEO_INNER_IDLE
            if self._soonest is None or deadline < self._soonest:
                self._soonest = deadline
        flow.last = now
        return flow

    def _refuse(self, flow: _Flow, obj: ferry_pb2.CanonicalObject, decision: Decision,
                work: list[InnerWork]) -> None:
        flow.counts["refused"] += 1
        self.stats["video_refused"] += 1
        if not flow.refused:
            flow.refused = True
            au = obj.access_unit
            detail: dict[str, Any] | None = ({"codec": au.codec, "width": au.width, "height": au.height}
                                             if obj.HasField("access_unit") else None)
            work.append(AuditIntent(dict(
                event="stream_refused", verdict="refused", lane="video", flow=flow.stream_id,
                source=flow.source, destination=flow.destination, rule=decision.rule, reason=decision.reason,
                code=decision.code, object_id=obj.object_id, detail=detail)))

    def _end(self, flow: _Flow, why: str, work: list[InnerWork]) -> None:
        self.flows.pop(flow.stream_id, None)
        for v in self.viewers.values():
            if v.stream_id == flow.stream_id:
                work.append(ViewerLost(v.id, v.device_id, flow.stream_id, why))
                v.ts0, v.stream_id = None, ""
        for i, _, is_file in flow.outputs:
            if is_file:
                work.append(EndOutput(i, flow.stream_id))
        c: dict[str, Any] = dict(flow.counts, duration=round(flow.last - flow.started, 3))
        c.update(picture_fields(flow.mode, *flow.picture, flow.picture_bytes, c["duration"], flow.pictures_in,
                                c["access_units"]))
        if self.viewable:
            c["unwatched"] = flow.unwatched       # waited for a viewer (or its key frame): not lost
        work.append(AuditIntent(dict(
            event="stream_ended", verdict="info", lane="video", flow=flow.stream_id, source=flow.source,
            destination=flow.destination, rule=flow.rule or None,
            reason=f"{why}: {c['access_units']} access units delivered, {c['refused']} refused; {pictures_line(c)}",
            size=c["bytes"], detail=c)))
