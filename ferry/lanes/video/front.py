"""The front end of an outer stream: in-order RTP payloads -> coded access units.

Two forms, one interface (`packet`, `discontinuity`, `close`, `codec`):
- `PsFront`: GB/T 28181 RTP/PS. The payloads are an MPEG-2 program stream (ISO/IEC 13818-1
  §2.5): `PsDemuxer` -> the video PES of the stream the PSM names (H.264/H.265) -> Annex B byte
  stream -> `ByteStreamAssembler`; G.711 audio PES go to the gate as they are. A camera that
  marks the last packet of each picture gets one demuxer pass per picture (`gathered`). The
  marker is only that hint: sources mark every packet or every PES, so a marker may fall
  inside an access unit, even inside a NAL unit. A picture ends where the next one starts (a
  new PTS, an access unit delimiter, the first slice of the next picture: the assembler's
  rules), never at a marker.
- `RtpFront`: RFC 6184 (H.264) / RFC 7798 (H.265) payloads -> depacketizer -> NAL units per RTP
  timestamp -> `AccessUnitAssembler`.
What comes out goes to a `Sink` (the gate): access units (or what the assembler dropped) and
audio frames. Every byte the assembler drops is counted with its reason (`drops`, and
`dropped_bytes` in the stream's counts).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ferry import limits
from ferry.codecs.access_unit import AccessUnit, AccessUnitAssembler, ByteStreamAssembler
from ferry.codecs.access_unit import Dropped as AuDropped
from ferry.codecs.mpeg_ps import AudioPes, PsDemuxer, PsEvent, StreamInfo, VideoPes, is_audio, is_video
from ferry.codecs.rtp import RtpPacket
from ferry.codecs.rtp_h264 import H264Depacketizer
from ferry.codecs.rtp_h265 import H265Depacketizer
from ferry.codecs.rtp_payload import Dropped as RtpDropped
from ferry.codecs.rtp_payload import Event as RtpEvent
from ferry.lanes.video.events import Event


class Sink(Protocol):
    """Where a front end's output goes (`ferry.lanes.video.gate.Gate`)."""
    need_key: bool
    audio_codec: str | None    # the program's G.711 stream (PS: from its PSM)

    def access_units(self, events: Sequence[AccessUnit | AuDropped], now: float, out: list[Event]) -> None: ...

    def audio(self, ev: AudioPes, codec: str | None, now: float, out: list[Event]) -> None: ...


# what a demuxer skips that is not a piece of a picture (others, after a malformed packet, are)
_HARMLESS_SKIPS = frozenset({"padding stream", "private stream 1", "private stream 2"})


class _Front:
    """What both forms share: the sink, the stream's counts, the dropped bytes by reason."""

    def __init__(self, sink: Sink, counts: dict[str, int]) -> None:
        self.sink = sink
        self.counts = counts
        self.drops: dict[str, int] = {}  # bytes the assembler dropped, by reason

    def _assembled(self, events: Sequence[AccessUnit | AuDropped], now: float, out: list[Event]) -> None:
        """The assembler's output to the sink; every dropped byte counted with its reason."""
        passed: list[AccessUnit | AuDropped] = []
        for ev in events:
            if isinstance(ev, AuDropped):
                self._count_drop(ev)
                if not ev.access_unit:      # the tail of a NAL unit whose start was lost
                    self.sink.need_key = True
                    continue
            passed.append(ev)
        if passed:
            self.sink.access_units(passed, now, out)

    def _count_drop(self, ev: AuDropped) -> None:
        if ev.nbytes:
            self.drops[ev.reason] = self.drops.get(ev.reason, 0) + ev.nbytes
            self.counts["dropped_bytes"] = self.counts.get("dropped_bytes", 0) + ev.nbytes


class PsFront(_Front):
    """RTP/PS payloads, in order, -> access units of the program's video stream (and its audio)."""

    def __init__(self, sink: Sink, counts: dict[str, int]) -> None:
        super().__init__(sink, counts)
        self.codec: str | None = None   # from the PSM (or the stream type of the first PES)
        self._demux = PsDemuxer()
        self._gather: list[bytes] = []  # in-order payloads of the current picture, fed at its marker
        self.gathered_bytes = 0
        self.markers = False            # the camera marks the last packet of a picture
        self._video_sid: int | None = None
        self._audio_codec: str | None = None
        self._bsa: ByteStreamAssembler | None = None
        self._suspect = False           # a malformed packet came between PES: check what follows
        self._suspect_pts: int | None = None
        self._after_marker = False      # the last payload fed had the marker bit
        self._check_marker = False      # the next video PES shows whether that marker ended a picture
        self._check_pts: int | None = None
        self._demux_was_idle = True
        self.markers_lie = False        # a marker was seen inside a picture: never trusted again
        self.markers_confirmed = 0      # markers seen followed by the opening of a new picture

    # -- input ---------------------------------------------------------------------------------
    def gathered(self, payload: bytes | memoryview, marker: bool, now: float, out: list[Event]) -> None:
        """The ingest's own path: one packet's payload (a view is fine: used or copied at once)."""
        if not self.markers:
            if not marker:
                self._payload(payload, False, now, out)
                return
            self.markers = True
        # a marking camera: one demuxer pass per picture, not per packet
        self._gather.append(bytes(payload))
        self.gathered_bytes += len(payload)
        if marker or self.gathered_bytes >= limits.VIDEO_GATHER_MAX:
            self._gathered_out(marker, now, out)

    def packet(self, packet: RtpPacket, now: float, out: list[Event]) -> None:
        """A packet released in order by the reorder buffer (what was gathered goes first)."""
        if self._gather:
            self._gathered_out(False, now, out)
        self._payload(packet.payload, packet.marker, now, out)

    def flush_gathered(self, now: float, out: list[Event]) -> None:
        if self._gather:
            self._gathered_out(False, now, out)

    def discontinuity(self, now: float, out: list[Event]) -> None:
        """Packets were lost: forget the partial pack/PES (its middle is gone)."""
        if self._gather:
            self._gathered_out(False, now, out)
        partial = self._demux.partial_video_pes()
        self._demux_was_idle = self._demux.idle()
        self._demux = PsDemuxer()
        if self._bsa is not None:
            if partial is not None:     # the next picture had begun: the one before is whole
                self._assembled(self._bsa.end_at_next_pes(*partial), now, out)
            elif self._after_marker and self.markers_confirmed and not self.markers_lie and self._demux_was_idle:
                self._assembled(self._bsa.flush(), now, out)   # a trusted marker ended it
            self.sink.need_key = True
            self._assembled(self._bsa.discontinuity(), now, out)

    def malformed(self, now: float, out: list[Event], same_picture: bool = False) -> None:
        """A packet in the order was refused as malformed (its payload unknown). Right after a
        marked packet, between two PES and with another timestamp it may have been nothing of
        the picture: the next video PES decides (`_continues`); else part of one is gone: a
        discontinuity."""
        if self._gather:
            self._gathered_out(False, now, out)
        if same_picture and self._after_marker:
            self.markers_lie = True     # more of the picture came after its marker
        if not self._demux.idle() or not self._after_marker or self.markers_lie or same_picture:
            # inside a PES, or after a packet that did not end a picture: part of one is gone
            self.discontinuity(now, out)
        else:
            self._suspect = True
            self._suspect_pts = None

    def close(self, now: float, out: list[Event]) -> None:
        if self._gather:
            self._gathered_out(False, now, out)
        self._demux_events(self._demux.flush(), now, out)
        if self._bsa is not None:
            self._assembled(self._bsa.flush(), now, out)

    # -- stages --------------------------------------------------------------------------------
    def _gathered_out(self, marker: bool, now: float, out: list[Event]) -> None:
        parts = self._gather
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._gather = []
        self.gathered_bytes = 0
        self._payload(data, marker, now, out)

    def _payload(self, payload: bytes | memoryview, marker: bool, now: float, out: list[Event]) -> None:
        # the marker does not end the picture: it may fall inside one (issue 12 item 1)
        events = self._demux.feed(payload)  # type: ignore[arg-type]  # any buffer: it copies what it keeps
        if events:
            self._demux_events(events, now, out)
        self._after_marker = marker
        if marker:
            self._check_marker = True

    def _continues(self, ev: VideoPes) -> bool:
        """After a malformed packet: does this video PES show that nothing of the picture was in
        it? Yes if it starts a new access unit: a PES with a new PTS whose payload begins with a
        start code (the NAL unit before it ended there)."""
        assert self._bsa is not None
        if not ev.continued:
            self._suspect_pts = ev.pts
        if not ev.data:               # the header of an unbounded PES: its payload follows
            return True
        self._suspect = False
        pts, self._suspect_pts = self._suspect_pts, None
        return self._opens(pts, False, ev.data)

    def _opens(self, pts: int | None, continued: bool, data: bytes) -> bool:
        """Does a video PES (its first payload bytes `data`) open a new picture: a PTS other
        than the picture in progress, and a start code first?"""
        assert self._bsa is not None
        return (not continued and pts is not None and pts != self._bsa.pending_pts
                and (data[:3] == b"\x00\x00\x01" or data[:4] == b"\x00\x00\x00\x01"))

    def _demux_events(self, events: Sequence[PsEvent], now: float, out: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, VideoPes):
                if self._video_sid is None and self.codec is not None:
                    self._video_sid = ev.stream_id
                if ev.stream_id != self._video_sid or self._bsa is None:
                    self.counts["skipped_bytes"] += len(ev.data)
                    continue
                if self._check_marker:
                    if not ev.continued:
                        self._check_pts = ev.pts
                    if ev.data:                 # (an unbounded PES: its header, then its payload)
                        self._check_marker = False
                        if not self._opens(self._check_pts, False, ev.data):
                            self.markers_lie = True
                        else:
                            self.markers_confirmed += 1
                if self._suspect and not self._continues(ev):
                    self.sink.need_key = True
                    self._assembled(self._bsa.discontinuity(), now, out)
                self._assembled(self._bsa.feed(ev.data, ev.pts, ev.dts, new_pes=not ev.continued), now, out)
            elif isinstance(ev, AudioPes):
                self.sink.audio(ev, self._audio_codec, now, out)
            elif isinstance(ev, StreamInfo):
                if is_video(ev.stream_id) and ev.codec in ("h264", "h265"):
                    if self._video_sid in (None, ev.stream_id) and self._bsa is None:
                        self._video_sid = ev.stream_id
                        self.codec = ev.codec
                        self._bsa = ByteStreamAssembler(ev.codec)
                elif is_audio(ev.stream_id) and ev.codec in ("g711a", "g711u"):
                    self._audio_codec = self.sink.audio_codec = ev.codec
            else:  # Skipped
                self.counts["skipped_bytes"] += ev.nbytes
                if self._suspect and ev.reason not in _HARMLESS_SKIPS and self._bsa is not None:
                    # after a malformed packet, bytes without their start: part of a picture is gone
                    # (the one before it, ended by a trusted marker, is whole)
                    self._suspect = False
                    self._assembled(self._bsa.flush(), now, out)
                    self.sink.need_key = True


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


class RtpFront(_Front):
    """RFC 6184 / RFC 7798 payloads, in order, -> access units (one per RTP timestamp).

    A picture ends when a packet with another timestamp comes (or the stream ends), not at the
    marker: sources mark inside pictures too. Markers count only while none was seen inside a
    picture (`markers_lie`): then a loss or a malformed packet right after a marked packet
    keeps the picture before it.
    """

    def __init__(self, codec: str, sink: Sink, counts: dict[str, int]) -> None:
        super().__init__(sink, counts)
        self.codec: str | None = codec
        self._depack: H264Depacketizer | H265Depacketizer = (H264Depacketizer() if codec == "h264"
                                                              else H265Depacketizer())
        self._asm = AccessUnitAssembler(codec)
        self._pes = 0
        self._unwrap = _Unwrap()
        self._ts: int | None = None     # RTP timestamp of the picture in the assembler
        self._marked = False            # its last part was closed by the marker
        self.markers_lie = False
        self.markers_confirmed = 0

    def packet(self, packet: RtpPacket, now: float, out: list[Event]) -> None:
        for ev in self._depack.push(packet):
            self._event(ev, now, out)
        if self._ts is not None and packet.timestamp != self._ts:
            self.markers_confirmed += self._marked
            self._end_picture(now, out)   # the next picture began

    def flush_gathered(self, now: float, out: list[Event]) -> None:
        return None

    def discontinuity(self, now: float, out: list[Event]) -> None:
        for ev in self._depack.gap():
            self._event(ev, now, out)
        if self._marked and self.markers_confirmed and not self.markers_lie:
            self._end_picture(now, out)   # the marker said the picture before the gap was whole
        self._ts = None
        self._assembled(self._asm.discard(), now, out)

    def malformed(self, now: float, out: list[Event], same_picture: bool = False) -> None:
        """A packet in the order was refused as malformed. Right after a trusted marker, between
        access units and with another timestamp, it is no gap; anywhere else it is."""
        if same_picture and self._marked:
            self.markers_lie = True
        if self._depack.between_access_units() and self._marked and not self.markers_lie and not same_picture:
            self._depack.skip_sequence()
        else:
            self.discontinuity(now, out)
            self.sink.need_key = True

    def close(self, now: float, out: list[Event]) -> None:
        for ev in self._depack.flush():
            self._event(ev, now, out)
        self._end_picture(now, out)

    def _end_picture(self, now: float, out: list[Event]) -> None:
        self._ts = None
        self._marked = False
        self._assembled(self._asm.flush(), now, out)

    def _event(self, ev: RtpEvent, now: float, out: list[Event]) -> None:
        if isinstance(ev, RtpDropped):
            self.counts["skipped_bytes"] += ev.nbytes
            return
        if self._ts is not None and ev.timestamp != self._ts:
            self.markers_confirmed += self._marked
            self._end_picture(now, out)
        elif self._ts is not None and self._marked:
            self.markers_lie = True       # a marked part, then more of the same picture
        if ev.lossy:
            self.sink.need_key = True
        pts = self._unwrap(ev.timestamp)
        self._pes += 1
        asm = self._asm
        events: list[AccessUnit | AuDropped] = []
        for i, nal in enumerate(ev.nal_units):
            events.extend(asm.push(nal, pts, pts, self._pes, i == 0))
        self._ts, self._marked = ev.timestamp, ev.marker
        if events:
            self._assembled(events, now, out)


Front = PsFront | RtpFront
