"""The gate of an outer stream: what an access unit must pass before it may cross.

In order: a refused stream sends nothing more (counted); after the start and after a loss,
access units wait for a keyframe (the output never references a picture that did not
cross); NAL units are stripped (SEI unless the rule keeps it, filler, AUD, reserved and
unspecified types always); the bitrate is measured (`BitrateMeter`); the canonical object is
built and the policy decides (`plan.decide`). The first refusal refuses the stream (once, with
rule, reason and what the access unit claims); so does a parameter set the parser refuses (beyond
ferry.limits: rule `ferry-video-ingest`, the parser's reason). What the assembler drops is
remembered by reason (`drops`) so that a stream that ends without a picture can say why
(`no_picture_reason`). A rule in transcode mode sends the access unit
to the transcode flow instead, and decides its output afresh (`decide(..., transcoded=True)`).
Audio (G.711 in PS) crosses only under a rule that allows it, after the stream's video.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ferry import limits
from ferry.codecs import h264, h265
from ferry.codecs.access_unit import AccessUnit
from ferry.codecs.access_unit import Dropped as AuDropped
from ferry.codecs.errors import CodecError
from ferry.codecs.mpeg_ps import AudioPes
from ferry.codecs.nal import NalKind
from ferry.lanes.video.events import BUILTIN_RULE, CLOCK, INGEST_RULE, AccessUnitReady, Event, StreamRefused
from ferry.pb import ferry_pb2
from ferry.reasons import Reason
from ferry.policy.plan import Plan
from ferry.policy.models import VideoLimits

# the assembler's reason for an access unit whose parameter set the parser refused (beyond the limits)
REFUSED_PARAMETER_SET = "refused parameter set"
DISCONTINUITY = "discontinuity"
_DROP_REASONS_MAX = 16        # distinct reasons a gate remembers (with counts) for a stream that sends nothing

# NAL unit classes that cross; SEI only with keep_sei. AUD, filler, reserved, unspecified and
# "other" (SVC/MVC extensions the remux does not carry) are stripped.
_KEEP = frozenset({NalKind.SLICE, NalKind.KEY_SLICE, NalKind.PARAMETER_SET, NalKind.END})


def strip_nal_units(codec: str, nal_units: Iterable[bytes],
                    keep_sei: bool = False) -> tuple[list[bytes], int]:
    """(the NAL units that cross, how many were stripped)."""
    classify = h264.classify if codec == "h264" else h265.classify
    kept: list[bytes] = []
    stripped = 0
    for nal in nal_units:
        try:
            kind = classify(nal)
        except CodecError:
            stripped += 1
            continue
        if kind in _KEEP or (keep_sei and kind is NalKind.SEI):
            kept.append(bytes(nal))
        else:
            stripped += 1
    return kept, stripped


class BitrateMeter:
    """kbit/s of a stream: the larger of a media-time window (pts) and an arrival-time window.

    The media window (VIDEO_BITRATE_WINDOW seconds of pts, denominator at least 1 s, each pts step
    clamped to 0..1 s so a forged timeline cannot stretch it far) measures what the pictures
    claim; the arrival window (VIDEO_BITRATE_WALL_WINDOW seconds of `now`, fixed denominator)
    measures what actually arrives, so a source sending faster than its timestamps is caught too.
    """

    def __init__(self) -> None:
        self._media: deque[tuple[float, int]] = deque()   # (media time s, bytes)
        self._media_bytes = 0
        self._media_t = 0.0
        self._last_pts: int | None = None
        self._wall: deque[tuple[float, int]] = deque()
        self._wall_bytes = 0

    def add(self, nbytes: int, pts: int | None, now: float) -> int:
        if pts is not None and self._last_pts is not None:
            step = (pts - self._last_pts) / CLOCK
            self._media_t += min(max(step, 0.0), 1.0)
        if pts is not None:
            self._last_pts = pts
        t = self._media_t
        self._media.append((t, nbytes))
        self._media_bytes += nbytes
        while self._media and self._media[0][0] <= t - limits.VIDEO_BITRATE_WINDOW:
            self._media_bytes -= self._media.popleft()[1]
        span = max(1.0, t - self._media[0][0])
        self._wall.append((now, nbytes))
        self._wall_bytes += nbytes
        while self._wall and self._wall[0][0] <= now - limits.VIDEO_BITRATE_WALL_WINDOW:
            self._wall_bytes -= self._wall.popleft()[1]
        media = self._media_bytes * 8 / span / 1000
        wall = self._wall_bytes * 8 / limits.VIDEO_BITRATE_WALL_WINDOW / 1000
        return int(max(media, wall))


def detail(pb: ferry_pb2.AccessUnit) -> dict[str, Any]:
    """A refusal record's detail: what the access unit claims."""
    return {"codec": pb.codec, "width": pb.width, "height": pb.height, "frame_rate": pb.frame_rate,
            "bitrate_kbps": pb.bitrate_kbps}


class Transcoding(Protocol):
    """Where the gate sends access units of a transcode-mode rule (`TranscodeFlow`)."""

    def request(self, pb: ferry_pb2.AccessUnit, video: VideoLimits, now: float, out: list[Event]) -> None: ...


class Gate:
    """Checks, strips and decides the access units of one stream (see the module doc)."""

    def __init__(self, stream_id: str, source: tuple[str, str, int], destination: str,
                 plan_getter: Callable[[], Plan], counts: dict[str, int], wall: float) -> None:
        self.stream_id = stream_id
        self.device_id, self.address, self.port = source
        self.destination = destination
        self.plan_getter = plan_getter
        self.counts = counts
        self.wall = wall                  # the wall clock of the current input: `created`
        self.need_key = True              # at the start and after a loss: wait for a keyframe
        self.refused: StreamRefused | None = None
        self.rule_id: str | None = None
        self.width = self.height = 0
        self.frame_rate = 0.0
        self.transcoding: Transcoding | None = None
        self.audio_codec: str | None = None   # the source's G.711 stream (set by the front end)
        self.drops: dict[str, int] = {}   # access units the assembler dropped, by its reason
        self.pictures = 0                 # access units that reached the gate
        self.keyframes = 0                # of which keyframes
        self.seen_bytes = 0               # bytes of the access units and audio frames that reached the gate
        self.largest = 0                  # the largest access unit so far (bytes)
        self._meter = BitrateMeter()

    # -- Sink (front end output) ---------------------------------------------------------------
    def access_units(self, events: Sequence[AccessUnit | AuDropped], now: float, out: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, AuDropped):      # its bytes: the front's `dropped_bytes` where it counts them
                if ev.nbytes:
                    self.counts["dropped_aus"] += 1
                    self._dropped(ev.reason)
                if ev.reason.startswith(REFUSED_PARAMETER_SET) and self.refused is None:
                    # the source claims what the appliance never takes: say so once, with the parser's words
                    self.refuse(INGEST_RULE, ev.reason, {}, out, Reason.STREAM_CHECK)
                continue
            self._access_unit(ev, now, out)

    def _dropped(self, reason: str) -> None:
        drops = self.drops
        if reason in drops:
            drops[reason] += 1
        elif len(drops) < _DROP_REASONS_MAX:
            drops[reason] = 1

    def no_picture_reason(self, codec: str | None) -> str:
        """Why a stream sent no picture, from what was dropped (the parser's reasons first)."""
        c = self.counts
        if c.get("dropped_no_audit"):
            return "no picture crossed: the audit trail was unavailable"
        if self.keyframes == 0 and self.pictures:
            return f"no picture crossed: no keyframe in {self.pictures} access units"
        told = [r for r in self.drops if r != DISCONTINUITY]
        if told:
            n = sum(self.drops.values())
            return f"no picture crossed: {told[0]} ({n} access unit{'s' if n != 1 else ''} dropped)"
        if self.pictures:
            return f"no picture crossed: {self.pictures} access units, all dropped or stripped"
        if codec is None:
            return "no picture crossed: no H.264/H.265 video found in what the source sent"
        if self.drops:
            return f"no picture crossed: every access unit lost with a {DISCONTINUITY}"
        return "no picture crossed: no complete access unit"

    def audio(self, ev: AudioPes, codec: str | None, now: float, out: list[Event]) -> None:
        self.seen_bytes += len(ev.data)
        plan = self.plan_getter()
        rule = plan.rule(self.rule_id) if self.rule_id else None
        if (self.refused is not None or codec is None or rule is None or rule.video is None
                or not rule.video.audio or not ev.data):
            self.counts["dropped_audio"] += 1
            return
        obj = self._object()
        obj.audio.stream_id = self.stream_id
        obj.audio.codec = codec
        obj.audio.pts = ev.pts or 0
        obj.audio.payload = ev.data
        decision = plan.decide(obj)
        if not decision.allowed:
            self.counts["dropped_audio"] += 1
            return
        obj.rule = decision.rule
        self.counts["audio_frames"] += 1
        out.append(AccessUnitReady(obj))

    # -- stages --------------------------------------------------------------------------------
    def _access_unit(self, au: AccessUnit, now: float, out: list[Event]) -> None:
        self.pictures += 1
        self.keyframes += au.keyframe
        size = au.size
        self.seen_bytes += size
        if size > self.largest:
            self.largest = size
        if self.refused is not None:
            self.counts["refused_aus"] += 1
            return
        if self.need_key:
            if not au.keyframe:
                self.counts["dropped_aus"] += 1
                return
            self.need_key = False
        self.width, self.height, self.frame_rate = au.width, au.height, au.frame_rate
        nals, stripped = strip_nal_units(au.codec, au.nal_units)
        if not nals:
            self.counts["dropped_aus"] += 1
            self.counts["stripped_nal_units"] += stripped
            self.counts["stripped_bytes"] = self.counts.get("stripped_bytes", 0) + size
            return
        pb = ferry_pb2.AccessUnit(
            stream_id=self.stream_id, codec=au.codec, keyframe=au.keyframe,
            pts=au.pts or 0, dts=au.dts if au.dts is not None else (au.pts or 0),
            width=au.width, height=au.height, frame_rate=au.frame_rate, nal_units=nals)
        pb.bitrate_kbps = self._meter.add(sum(len(n) for n in nals), au.pts, now)
        self.decide(pb, now, out, raw=au.nal_units, stripped=stripped)

    def _object(self) -> ferry_pb2.CanonicalObject:
        obj = ferry_pb2.CanonicalObject(lane="video", destination=self.destination, created=self.wall)
        obj.source.device_id = self.device_id
        obj.source.address = self.address
        obj.source.port = self.port
        return obj

    def decide(self, pb: ferry_pb2.AccessUnit, now: float, out: list[Event], transcoded: bool = False,
               raw: Sequence[bytes] = (), stripped: int = 0) -> None:
        plan = self.plan_getter()
        obj = self._object()
        obj.access_unit.CopyFrom(pb)
        # as the source sent it: Plan.admit (what `policy test` and `policy diff` say too);
        # the transcoder's output: Plan.decide, strictly within the rule's limits
        decision = plan.decide(obj) if transcoded else plan.admit(obj)
        rule = plan.rule(decision.rule)
        video = rule.video if rule is not None else None
        if decision.transcode and video is not None:
            self.rule_id = decision.rule
            if self.transcoding is None:
                self.refuse_au(pb, "transcode mode is not available on this agent", out)
            else:
                self.transcoding.request(pb, video, now, out)
            return
        if not decision.allowed:
            self.refuse(decision.rule, decision.reason, detail(pb), out, decision.code)
            return
        self.rule_id = decision.rule
        obj.rule = decision.rule
        if video is not None and video.audio and self.audio_codec:   # the inner's first PSM lists it
            obj.access_unit.audio_codec = self.audio_codec
        if raw and video is not None and video.keep_sei:   # the rule keeps SEI: put them back
            nals, stripped = strip_nal_units(pb.codec, raw, keep_sei=True)
            del obj.access_unit.nal_units[:]
            obj.access_unit.nal_units.extend(nals)
        self.counts["stripped_nal_units"] += stripped
        self.counts["access_units"] += 1
        size = sum(len(n) for n in obj.access_unit.nal_units)
        self.counts["au_bytes"] += size
        if stripped and raw:
            self.counts["stripped_bytes"] = self.counts.get("stripped_bytes", 0) + sum(len(n) for n in raw) - size
        out.append(AccessUnitReady(obj))

    def refuse_au(self, pb: ferry_pb2.AccessUnit, reason: str, out: list[Event]) -> None:
        """A refusal by the lane itself (BUILTIN_RULE) over this access unit."""
        self.refuse(BUILTIN_RULE, reason, detail(pb), out, Reason.STREAM_CHECK)

    def refuse(self, rule: str, reason: str, detail: dict[str, Any], out: list[Event],
               code: Reason | None) -> None:
        self.counts["refused_aus"] += 1
        if self.refused is None:
            self.refused = StreamRefused(rule, reason, detail, code)
            out.append(self.refused)

