"""The video lane, pure: outer RTP -> canonical access units, canonical access units -> inner RTP.

`OuterStream` takes the RTP packets of one ingest stream (GB/T 28181 RTP/PS, or RFC 6184/7798)
with a `now`, and returns events: `StreamStarted`, `AccessUnitReady(obj)` for each access unit
the policy allows, `StreamRefused` once per stream (its later access units are dropped and
counted), `StreamLoss`, `StreamEnded(counts)`. Pipeline: SSRC binding -> ReorderBuffer -> PS demux
or depacketize -> access units -> NAL unit stripping (SEI unless `keep_sei`, filler, AUD, reserved
and unspecified types always) -> bitrate (sliding windows) -> CanonicalObject -> `plan.decide`.
After a loss, access units are dropped up to the next keyframe, so the output never references
a picture that did not cross.

Transcode mode (the rule's `video.mode: transcode`) never runs the transcoder here: the stream
emits `TranscodeRequest(stream_id, access_unit, caps)` and, when it ends, `TranscodeEnd`; the caller
runs one transcoder per stream (blocking work: a worker thread in the agent) and feeds each
result back, in order, one per request: `transcoded(aus, now)` or `transcode_failed(reason, now)`.
At most `transcode_queue` requests are outstanding; beyond that access units are dropped up to
the next keyframe and counted (`transcode_dropped_aus`). `StreamEnded` follows the result of
`TranscodeEnd`. With `transcoder_factory`, the stream runs the transcoder itself, in process
(`TranscoderRunner`): for tests and tools, not for an event loop.

`InnerStream` builds fresh output from canonical objects alone: GB/T 28181 PS (PsMuxer, PSM on
keyframes) in RTP payload type 96, or RFC 6184/7798 packets; new SSRC, sequence numbers and
timestamps (random starts), timestamps derived from the access unit's pts.

No sockets, no clocks: the agents (ferry.agents.video_ingest / video_emit) own the I/O.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from ferry import limits
from ferry.codecs import h264, h265
from ferry.codecs.access_unit import AccessUnit, ByteStreamAssembler, AccessUnitAssembler
from ferry.codecs.access_unit import Dropped as AuDropped
from ferry.codecs.errors import CodecError
from ferry.codecs.mpeg_ps import AudioPes, PsDemuxer, PsMuxer, StreamInfo, VideoPes, is_audio, is_video
from ferry.codecs.nal import NalKind, join_annexb
from ferry.codecs.rtp import Lost, ReorderBuffer, RtpPacket, RtpPacketWriter, parse_rtp
from ferry.codecs.rtp_h264 import H264Depacketizer
from ferry.codecs.rtp_h265 import H265Depacketizer
from ferry.codecs.rtp_payload import Dropped as RtpDropped
from ferry.codecs.rtp_payload import RtpAccessUnit
from ferry.pb import ferry_pb2

PAYLOADS = ("ps", "h264", "h265")
FORMS = ("ps", "h264", "h265")
CLOCK = 90_000
BUILTIN_RULE = "ferry-video-lane"   # refusals by the lane itself (e.g. a codec the output cannot carry)
TRANSCODE_QUEUE = 8   # transcode requests outstanding per stream before access units are dropped

# NAL unit classes that cross; SEI only with keep_sei. AUD, filler, reserved, unspecified and
# "other" (SVC/MVC extensions the remux does not carry) are stripped.
_KEEP = frozenset({NalKind.SLICE, NalKind.KEY_SLICE, NalKind.PARAMETER_SET, NalKind.END})


# --- events ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StreamStarted:
    ssrc: int


@dataclass(frozen=True, slots=True)
class AccessUnitReady:
    obj: ferry_pb2.CanonicalObject


@dataclass(frozen=True, slots=True)
class StreamRefused:
    rule: str
    reason: str
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamLoss:
    count: int          # packets lost in this gap
    total: int          # packets lost in the stream so far


@dataclass(frozen=True, slots=True)
class StreamEnded:
    counts: dict


@dataclass(frozen=True, slots=True)
class TranscodeCaps:
    """The transcoder's constructor arguments (ferry.lanes.transcode.Transcoder)."""
    in_codec: str
    out_codec: str
    max_width: int
    max_height: int
    max_bitrate_kbps: int
    frame_rate: float

    def args(self) -> tuple:
        return (self.in_codec, self.out_codec, self.max_width, self.max_height, self.max_bitrate_kbps,
                self.frame_rate)


@dataclass(frozen=True, slots=True)
class TranscodeRequest:
    """Transcode one access unit; answer with `transcoded` or `transcode_failed`, in order."""
    stream_id: str
    access_unit: ferry_pb2.AccessUnit
    caps: TranscodeCaps


@dataclass(frozen=True, slots=True)
class TranscodeEnd:
    """The stream ended: flush the transcoder and close it; answer like a request."""
    stream_id: str


Event = (StreamStarted | AccessUnitReady | StreamRefused | StreamLoss | StreamEnded | TranscodeRequest
         | TranscodeEnd)


class TranscoderRunner:
    """One stream's transcoder driven by its events: `run(event) -> [AccessUnit]`, raises CodecError.

    Blocking (decoding and encoding): the agent calls it on a worker thread, one event at a time.
    """

    def __init__(self, factory: Callable) -> None:
        self.factory = factory
        self.transcoder = None

    def run(self, ev: TranscodeRequest | TranscodeEnd) -> list[ferry_pb2.AccessUnit]:
        if isinstance(ev, TranscodeEnd):
            t, self.transcoder = self.transcoder, None
            return t.flush() if t is not None else []
        if self.transcoder is None:
            try:
                self.transcoder = self.factory(*ev.caps.args())
            except ValueError as exc:
                raise CodecError(str(exc)) from None
        return self.transcoder.push(ev.access_unit)


# --- NAL unit stripping -------------------------------------------------------------------------
def strip_nal_units(codec: str, nal_units, keep_sei: bool = False) -> tuple[list[bytes], int]:
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


# --- bitrate -------------------------------------------------------------------------------------
class BitrateMeter:
    """kbit/s of a stream: the larger of a media-time window (pts) and a wall-clock window.

    The media window (VIDEO_BITRATE_WINDOW seconds of pts, denominator at least 1 s, each pts step
    clamped to 0..1 s so a forged timeline cannot stretch it far) measures what the pictures
    claim; the wall window (VIDEO_BITRATE_WALL_WINDOW seconds, fixed denominator) measures what
    actually arrives, so a source sending faster than its timestamps is caught too.
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


class _Unwrap:
    """32-bit RTP timestamps extended to a monotonic-ish 64-bit count (RFC 3550 §A.1 style)."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._ext = 0

    def __call__(self, ts: int) -> int:
        if self._last is None:
            self._ext = ts
        else:
            delta = (ts - self._last) & 0xFFFFFFFF
            self._ext += delta - (1 << 32) if delta >= 1 << 31 else delta
        self._last = ts
        return self._ext


# --- outer ---------------------------------------------------------------------------------------
class OuterStream:
    """One ingest stream: RTP packets in, policy-checked canonical access units out."""

    def __init__(self, stream_id: str, device_id: str, address: str, payload: str, destination: str,
                 plan_getter: Callable, now: float, *, ssrc: int = 0, port: int = 0,
                 transcoder_factory: Callable | None = None, offload_transcode: bool = False,
                 transcode_queue: int = TRANSCODE_QUEUE,
                 idle: float | None = limits.VIDEO_STREAM_IDLE) -> None:
        if payload not in PAYLOADS:
            raise ValueError(f"payload must be one of {PAYLOADS}, not {payload!r}")
        self.stream_id = stream_id
        self.idle = idle              # seconds of silence that end the stream (None: never, e.g. TCP)
        self.device_id = device_id
        self.address = address
        self.port = port
        self.payload = payload
        self.destination = destination
        self.plan_getter = plan_getter
        self.ssrc: int | None = ssrc or None
        self._ssrc_fixed = bool(ssrc)
        self.started_at = now
        self.last_packet = now
        self.closed = False
        self.refused: StreamRefused | None = None
        self.codec: str | None = payload if payload != "ps" else None
        self.width = self.height = 0
        self.frame_rate = 0.0
        self.rule_id: str | None = None
        self._reorder = ReorderBuffer()
        self._demux = PsDemuxer() if payload == "ps" else None
        self._gather: list[bytes] = []  # in-order PS payloads of the current picture, fed at its marker
        self._gathered = 0
        self._markers = False         # the camera marks the last packet of a picture
        self._video_sid: int | None = None
        self._audio_codec: str | None = None
        self._bsa: ByteStreamAssembler | None = None
        self._depack = {"h264": H264Depacketizer, "h265": H265Depacketizer}.get(payload, lambda: None)()
        self._rtp_asm = AccessUnitAssembler(payload) if payload in ("h264", "h265") else None
        self._rtp_pes = 0
        self._unwrap = _Unwrap()
        self._meter = BitrateMeter()
        self._need_key = True         # at the start and after a loss: wait for a keyframe
        # transcode: in process with a factory, else by events when the caller offloads it
        self._runner = TranscoderRunner(transcoder_factory) if transcoder_factory is not None else None
        self._offload = offload_transcode
        self.transcode_queue = transcode_queue
        self._caps: TranscodeCaps | None = None
        self._in_flight = 0           # requests (and the end) not answered yet
        self._behind = False          # the transcoder fell behind: drop up to the next keyframe
        self._ending = False          # closed, waiting for the transcoder's last answers
        self._ended = False
        self._closed_at = now
        self._transcode_src: dict = {}
        self.counts = {
            "packets": 0, "bytes": 0, "access_units": 0, "au_bytes": 0, "refused_aus": 0,
            "dropped_aus": 0, "lost_packets": 0, "late_packets": 0, "duplicate_packets": 0,
            "foreign_ssrc_packets": 0, "stripped_nal_units": 0, "audio_frames": 0, "dropped_audio": 0,
            "skipped_bytes": 0, "transcode_dropped_aus": 0,
        }

    # -- input ------------------------------------------------------------------------------
    def push_rtp(self, packet: RtpPacket, now: float) -> list[Event]:
        if self.closed:
            return []
        out: list[Event] = []
        if self.ssrc is None:
            self.ssrc = packet.ssrc
        if packet.ssrc != self.ssrc:
            self.counts["foreign_ssrc_packets"] += 1
            return out
        if self.counts["packets"] == 0:
            out.append(StreamStarted(packet.ssrc))
        self.counts["packets"] += 1
        self.counts["bytes"] += len(packet.payload)
        self.last_packet = now
        # the payload is a view into the caller's buffer: keep a copy while it waits in order
        packet = RtpPacket(packet.version, packet.padding, packet.marker, packet.payload_type,
                           packet.sequence, packet.timestamp, packet.ssrc, (), None, bytes(packet.payload))
        self._released(self._reorder.push(packet, now), now, out)
        return out

    def push_fields(self, ssrc: int, sequence: int, marker: bool, payload, now: float, data) -> list[Event]:
        """`push_rtp` without an RtpPacket: the header fields, the payload (a view is fine: it is
        used or copied at once) and the whole packet `data` (parsed only if the packet must wait
        in the reorder buffer or the payload is not PS). Same events as `push_rtp(parse_rtp(data))`."""
        if self._demux is None or self.closed or self._reorder._held:
            return self.push_rtp(parse_rtp(data), now)
        if self.ssrc is None:
            self.ssrc = ssrc
        counts = self.counts
        if ssrc != self.ssrc:
            counts["foreign_ssrc_packets"] += 1
            return []
        if not self._reorder.advance(sequence):
            return self.push_rtp(parse_rtp(data), now)
        out: list[Event] = []
        if counts["packets"] == 0:
            out.append(StreamStarted(ssrc))
        counts["packets"] += 1
        n = len(payload)
        counts["bytes"] += n
        self.last_packet = now
        if not self._markers:
            if not marker:
                self._ps_payload(payload, False, now, out)
                return out
            self._markers = True
        # a marking camera: one demuxer pass per picture, not per packet
        self._gather.append(bytes(payload))
        self._gathered += n
        if marker or self._gathered >= limits.VIDEO_GATHER_MAX:
            self._gathered_out(marker, now, out)
        return out

    def _gathered_out(self, marker: bool, now: float, out: list[Event]) -> None:
        parts = self._gather
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._gather = []
        self._gathered = 0
        self._ps_payload(data, marker, now, out)

    def deadline(self) -> float | None:
        """When `poll` should run next (reorder timeouts and the idle end)."""
        if self.closed:
            return None
        d = self._reorder.deadline()
        if self.idle is None:
            return d
        idle = self.last_packet + self.idle
        return idle if d is None else min(d, idle)

    def poll(self, now: float) -> list[Event]:
        """Release packets whose gaps timed out; end the stream after `idle` seconds of silence."""
        if self.closed:
            return []
        out: list[Event] = []
        self._released(self._reorder.poll(now), now, out)
        if self.idle is not None and now - self.last_packet >= self.idle:
            out.extend(self.close(now))
        return out

    def close(self, now: float) -> list[Event]:
        """End of stream (connection closed, idle, agent stopping): flush and count."""
        if self.closed:
            return []
        out: list[Event] = []
        self._released(self._reorder.flush(), now, out)
        if self._demux is not None:
            self._demux_events(self._demux.flush(), now, out)
            if self._bsa is not None:
                self._assembled(self._bsa.flush(), now, out)
        elif self._depack is not None:
            for ev in self._depack.flush():
                self._rtp_event(ev, now, out)
        self.closed = True
        self._closed_at = now
        c = self.counts
        c["late_packets"], c["duplicate_packets"] = self._reorder.late, self._reorder.duplicates
        if self._caps is not None:    # a transcoder ran: its end (and StreamEnded) comes back later
            self._ending = True
            self._request(TranscodeEnd(self.stream_id), now, out)
        else:
            self._end(out)
        return out

    def _end(self, out: list[Event]) -> None:
        self._ended = True
        out.append(StreamEnded(dict(self.counts, codec=self.codec or "", width=self.width, height=self.height,
                                    duration=round(self._closed_at - self.started_at, 3))))

    # -- transcode results ----------------------------------------------------------------------
    def transcoded(self, aus, now: float) -> list[Event]:
        """The answer to the oldest outstanding request: the access units the transcoder made."""
        if self._ended or self._in_flight <= 0:
            return []
        self._in_flight -= 1
        out: list[Event] = []
        for au in aus:
            if self.refused is not None:
                self.counts["refused_aus"] += 1
                continue
            au.stream_id = self.stream_id
            au.bitrate_kbps = 0   # capped by the encoder's rate control
            self._decide(au, now, out, transcoded=True)
        if self._ending and self._in_flight == 0:
            self._end(out)
        return out

    def transcode_failed(self, reason: str, now: float) -> list[Event]:
        """The oldest outstanding request failed: the stream is refused (once); a failed end is counted."""
        if self._ended or self._in_flight <= 0:
            return []
        self._in_flight -= 1
        out: list[Event] = []
        if self._ending and self._in_flight == 0:
            self.counts["dropped_aus"] += 1
            self._end(out)
        else:
            self._refuse(BUILTIN_RULE, f"transcoder: {reason}", self._transcode_src, out)
        return out

    @property
    def transcode_pending(self) -> int:
        """Requests (and the end) not answered yet."""
        return self._in_flight

    def _request(self, ev: TranscodeRequest | TranscodeEnd, now: float, out: list[Event]) -> None:
        self._in_flight += 1
        if self._runner is None:
            out.append(ev)
            return
        try:                          # in process (tests, tools): answer at once
            aus = self._runner.run(ev)
        except CodecError as exc:
            out.extend(self.transcode_failed(str(exc), now))
        else:
            out.extend(self.transcoded(aus, now))

    # -- stages -----------------------------------------------------------------------------
    def _released(self, items, now: float, out: list[Event]) -> None:
        if self._gather:              # what was gathered comes first
            self._gathered_out(False, now, out)
        for item in items:
            if isinstance(item, Lost):
                self.counts["lost_packets"] += item.count
                out.append(StreamLoss(item.count, self.counts["lost_packets"]))
                self._discontinuity(now, out)
            elif self._demux is not None:
                self._ps_payload(item.payload, item.marker, now, out)
            else:
                for ev in self._depack.push(item):
                    self._rtp_event(ev, now, out)

    def _ps_payload(self, payload, marker: bool, now: float, out: list[Event]) -> None:
        events = self._demux.feed(payload)
        if events:
            self._demux_events(events, now, out)
        if marker and self._bsa is not None and self._demux_idle():
            # the marker ends the picture (GB/T 28181): no need to wait for the next one
            self._assembled(self._bsa.flush(), now, out)

    def _demux_idle(self) -> bool:
        """The demuxer holds nothing: every PES fed so far was delivered whole."""
        d = self._demux
        return not d._buf and d._unbounded is None and not d._skip

    def _discontinuity(self, now: float, out: list[Event]) -> None:
        self._need_key = True
        if self._demux is not None:
            self._demux = PsDemuxer()   # forget the partial pack/PES: its middle is gone
            if self._bsa is not None:
                self._assembled(self._bsa.discontinuity(), now, out)
        else:
            for ev in self._depack.gap():
                self._rtp_event(ev, now, out)
            self._assembled(self._rtp_asm.discard(), now, out)

    def _demux_events(self, events, now: float, out: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, VideoPes):
                if self._video_sid is None and self.codec is not None:
                    self._video_sid = ev.stream_id
                if ev.stream_id != self._video_sid or self._bsa is None:
                    self.counts["skipped_bytes"] += len(ev.data)
                    continue
                self._assembled(self._bsa.feed(ev.data, ev.pts, ev.dts, new_pes=not ev.continued), now, out)
            elif isinstance(ev, AudioPes):
                self._audio(ev, now, out)
            elif isinstance(ev, StreamInfo):
                if is_video(ev.stream_id) and ev.codec in ("h264", "h265"):
                    if self._video_sid in (None, ev.stream_id) and self._bsa is None:
                        self._video_sid = ev.stream_id
                        self.codec = ev.codec
                        self._bsa = ByteStreamAssembler(ev.codec)
                elif is_audio(ev.stream_id) and ev.codec in ("g711a", "g711u"):
                    self._audio_codec = ev.codec
            else:  # Skipped
                self.counts["skipped_bytes"] += ev.nbytes

    def _rtp_event(self, ev, now: float, out: list[Event]) -> None:
        if isinstance(ev, RtpDropped):
            self.counts["skipped_bytes"] += ev.nbytes
            return
        assert isinstance(ev, RtpAccessUnit)
        if ev.lossy:
            self._need_key = True
        pts = self._unwrap(ev.timestamp)
        self._rtp_pes += 1
        asm = self._rtp_asm
        events: list = []
        for i, nal in enumerate(ev.nal_units):
            events.extend(asm.push(nal, pts, pts, self._rtp_pes, i == 0))
        events.extend(asm.flush())   # one RTP timestamp is one access unit: no need to wait
        self._assembled(events, now, out)

    def _assembled(self, events, now: float, out: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, AuDropped):
                if ev.nbytes:
                    self.counts["dropped_aus"] += 1
                continue
            self._access_unit(ev, now, out)

    def _access_unit(self, au: AccessUnit, now: float, out: list[Event]) -> None:
        if self.refused is not None:
            self.counts["refused_aus"] += 1
            return
        if self._need_key:
            if not au.keyframe:
                self.counts["dropped_aus"] += 1
                return
            self._need_key = False
        self.width, self.height, self.frame_rate = au.width, au.height, au.frame_rate
        nals, stripped = strip_nal_units(au.codec, au.nal_units)
        if not nals:
            self.counts["dropped_aus"] += 1
            self.counts["stripped_nal_units"] += stripped
            return
        pb = ferry_pb2.AccessUnit(
            stream_id=self.stream_id, codec=au.codec, keyframe=au.keyframe,
            pts=au.pts or 0, dts=au.dts if au.dts is not None else (au.pts or 0),
            width=au.width, height=au.height, frame_rate=au.frame_rate, nal_units=nals)
        pb.bitrate_kbps = self._meter.add(sum(len(n) for n in nals), au.pts, now)
        self._decide(pb, now, out, raw=au.nal_units, stripped=stripped)

    def _object(self, pb, now: float) -> ferry_pb2.CanonicalObject:
        obj = ferry_pb2.CanonicalObject(lane="video", destination=self.destination, created=now)
        obj.source.device_id = self.device_id
        obj.source.address = self.address
        obj.source.port = self.port
        obj.access_unit.CopyFrom(pb)
        return obj

    def _decide(self, pb, now: float, out: list[Event], transcoded: bool = False, raw=(),
                stripped: int = 0) -> None:
        plan = self.plan_getter()
        obj = self._object(pb, now)
        decision = plan.decide(obj)
        rule = plan.rule(decision.rule)
        video = rule.video if rule is not None else None
        if video is not None and video.mode == "transcode" and not transcoded:
            if pb.codec in video.codecs:
                self.rule_id = decision.rule
                self._transcode(pb, video, now, out)
                return
        if not decision.allowed:
            self._refuse(decision.rule, decision.reason, _detail(pb), out)
            return
        self.rule_id = decision.rule
        obj.rule = decision.rule
        if raw and video is not None and video.keep_sei:   # the rule keeps SEI: put them back
            nals, stripped = strip_nal_units(pb.codec, raw, keep_sei=True)
            del obj.access_unit.nal_units[:]
            obj.access_unit.nal_units.extend(nals)
        self.counts["stripped_nal_units"] += stripped
        self.counts["access_units"] += 1
        self.counts["au_bytes"] += sum(len(n) for n in obj.access_unit.nal_units)
        out.append(AccessUnitReady(obj))

    def _transcode(self, pb, video, now: float, out: list[Event]) -> None:
        """Transcode mode: the policy's caps go to the transcoder; its output is decided afresh."""
        if self._runner is None and not self._offload:
            self._refuse(BUILTIN_RULE, "transcode mode is not available on this agent", _detail(pb), out)
            return
        if self._caps is None:
            out_codec = "h264" if "h264" in video.codecs else "h265"
            rate = min(pb.frame_rate or 25.0, video.max_frame_rate)
            self._caps = TranscodeCaps(pb.codec, out_codec, video.max_width, video.max_height,
                                       video.max_bitrate_kbps, rate)
        if self._in_flight >= self.transcode_queue:
            self._behind = True       # the transcoder fell behind: resume on a keyframe
        if self._behind and (not pb.keyframe or self._in_flight >= self.transcode_queue):
            self.counts["transcode_dropped_aus"] += 1
            return
        self._behind = False
        self._transcode_src = _detail(pb)
        self._request(TranscodeRequest(self.stream_id, pb, self._caps), now, out)

    def _refuse(self, rule: str, reason: str, detail: dict, out: list[Event]) -> None:
        self.counts["refused_aus"] += 1
        if self.refused is None:
            self.refused = StreamRefused(rule, reason, detail)
            out.append(self.refused)

    def _audio(self, ev: AudioPes, now: float, out: list[Event]) -> None:
        plan = self.plan_getter()
        rule = plan.rule(self.rule_id) if self.rule_id else None
        if (self.refused is not None or self._audio_codec is None or rule is None or rule.video is None
                or not rule.video.audio or not ev.data):
            self.counts["dropped_audio"] += 1
            return
        obj = ferry_pb2.CanonicalObject(lane="video", destination=self.destination, created=now)
        obj.source.device_id = self.device_id
        obj.source.address = self.address
        obj.source.port = self.port
        obj.audio.stream_id = self.stream_id
        obj.audio.codec = self._audio_codec
        obj.audio.pts = ev.pts or 0
        obj.audio.payload = ev.data
        decision = plan.decide(obj)
        if not decision.allowed:
            self.counts["dropped_audio"] += 1
            return
        obj.rule = decision.rule
        self.counts["audio_frames"] += 1
        out.append(AccessUnitReady(obj))


def _detail(pb) -> dict:
    """A refusal record's detail: what the access unit claims."""
    return {"codec": pb.codec, "width": pb.width, "height": pb.height, "frame_rate": pb.frame_rate,
            "bitrate_kbps": pb.bitrate_kbps}


# --- inner ---------------------------------------------------------------------------------------
class InnerStream:
    """Fresh output of one stream to one destination: `push(obj) -> [RTP packet bytes]`.

    `container(obj)` gives the bytes without RTP (PS, or Annex B for the raw forms) for file sinks.
    """

    def __init__(self, form: str, now: float, *, ssrc: int | None = None, payload_type: int = 96,
                 mtu: int = limits.VIDEO_RTP_PAYLOAD_MAX, rng: random.Random | None = None) -> None:
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, not {form!r}")
        rng = rng or random.SystemRandom()
        self.form = form
        self.created = now
        self.mtu = mtu
        self.ssrc = ssrc if ssrc is not None else rng.getrandbits(32)
        self.writer = RtpPacketWriter(payload_type, self.ssrc, rng.getrandbits(16))
        self._ts_base = rng.getrandbits(32)
        self._pts_base = CLOCK + rng.randrange(1 << 31)   # PES timestamps and SCR: a fresh random start
        self._first_pts: int | None = None
        self._mux: PsMuxer | None = None
        self._audio_codec: str | None = None
        self.codec: str | None = None
        self.packets = 0
        self.access_units = 0

    def _times(self, pts: int, dts: int) -> tuple[int, int, int]:
        """(rtp timestamp, new pts, new dts) relative to the stream's first pts."""
        if self._first_pts is None:
            self._first_pts = min(pts, dts)
        rel_pts, rel_dts = pts - self._first_pts, dts - self._first_pts
        return ((self._ts_base + rel_pts) & 0xFFFFFFFF, self._pts_base + rel_pts, self._pts_base + rel_dts)

    def accepts(self, obj: ferry_pb2.CanonicalObject) -> str | None:
        """Why this output cannot carry the object (None: it can)."""
        if obj.HasField("access_unit"):
            au = obj.access_unit
            if au.codec not in ("h264", "h265"):
                return f"codec {au.codec!r} has no output"
            if self.form != "ps" and au.codec != self.form:
                return f"a {self.form} output cannot carry {au.codec}"
            if self.codec is not None and au.codec != self.codec and self.form != "ps":
                return "codec changed within the stream"
            return None
        if obj.HasField("audio"):
            if self.form != "ps":
                return "audio travels only in the ps form"
            return None
        return "no access unit or audio body"

    def container(self, obj: ferry_pb2.CanonicalObject) -> tuple[bytes, int, bool]:
        """(PS or Annex B bytes, RTP timestamp, is video) of one object; ValueError if it has no output here."""
        reason = self.accepts(obj)
        if reason:
            raise ValueError(reason)
        if obj.HasField("audio"):
            a = obj.audio
            if self._audio_codec != a.codec or self._mux is None:
                self._audio_codec = a.codec
                self._mux = PsMuxer(self.codec or "h264", a.codec)
            ts, pts, _ = self._times(a.pts, a.pts)
            return self._mux.audio(a.payload, pts), ts, False
        au = obj.access_unit
        ts, pts, dts = self._times(au.pts, au.dts)
        if self.form == "ps":
            if self._mux is None or self._mux.video_codec != au.codec:
                self._mux = PsMuxer(au.codec, self._audio_codec)
            data = self._mux.video(list(au.nal_units), pts, dts, au.keyframe)
        else:
            data = join_annexb(au.nal_units)
        self.codec = au.codec
        self.access_units += 1
        return data, ts, True

    def push(self, obj: ferry_pb2.CanonicalObject) -> list[bytes]:
        """Fresh RTP packets for one object (marker on the last packet of each picture)."""
        if self.form == "ps" or obj.HasField("audio"):
            data, ts, video = self.container(obj)
            view, mtu = memoryview(data), self.mtu
            payloads = [view[i:i + mtu] for i in range(0, len(data), mtu)]
            packets = self.writer.write(payloads, ts, marker_last=True)
        else:
            reason = self.accepts(obj)
            if reason:
                raise ValueError(reason)
            au = obj.access_unit
            ts, _, _ = self._times(au.pts, au.dts)
            if au.codec == "h264":
                from ferry.codecs.rtp_h264 import packetize
            else:
                from ferry.codecs.rtp_h265 import packetize
            try:
                payloads = packetize(list(au.nal_units), self.mtu)
            except CodecError as exc:
                raise ValueError(str(exc)) from None
            self.codec = au.codec
            self.access_units += 1
            packets = self.writer.write(payloads, ts, marker_last=True)
        self.packets += len(packets)
        return packets
