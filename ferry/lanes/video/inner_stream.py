"""Inner side of the video lane: fresh output of one stream from canonical objects alone.

`InnerStream` builds GB/T 28181 PS (PsMuxer, PSM on keyframes) in RTP payload type 96, or
RFC 6184/7798 packets; new SSRC, sequence numbers and timestamps (random starts), timestamps
derived from the access unit's pts. `container(obj)` gives the bytes without RTP (PS, or
Annex B for the raw forms) for file outputs.

The PS program lists every stream that crosses from the first PSM on: an access unit names the
stream's G.711 audio (`audio_codec`, set by the outer agent when the rule lets audio through),
so the first keyframe's map lists it before any audio frame arrives; a program that changes
later (another audio codec) gets a new map version ahead of the PES it concerns.
"""
from __future__ import annotations

import random

from ferry import limits
from ferry.codecs import rtp_h264, rtp_h265
from ferry.codecs.errors import CodecError
from ferry.codecs.mpeg_ps import PsMuxer
from ferry.codecs.nal import join_annexb
from ferry.codecs.rtp import RtpPacketWriter
from ferry.lanes.video.events import CLOCK, FORMS
from ferry.pb import ferry_pb2

AUDIO_CODECS = ("g711a", "g711u")   # what an access unit's audio_codec may name (else ignored)


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
            if obj.audio.codec not in AUDIO_CODECS:
                return f"audio codec {obj.audio.codec!r} has no output"
            return None
        return "no access unit or audio body"

    def container(self, obj: ferry_pb2.CanonicalObject) -> tuple[bytes, int, bool]:
        """(PS or Annex B bytes, RTP timestamp, is video) of one object; ValueError if it has no output here."""
        reason = self.accepts(obj)
        if reason:
            raise ValueError(reason)
        if obj.HasField("audio"):
            a = obj.audio
            self._audio_codec = a.codec
            mux = self._muxer(self.codec or "h264")
            ts, pts, _ = self._times(a.pts, a.pts)
            return mux.audio(a.payload, pts), ts, False
        au = obj.access_unit
        ts, pts, dts = self._times(au.pts, au.dts)
        if self.form == "ps":
            if self._audio_codec is None and au.audio_codec in AUDIO_CODECS:   # before its first frame
                self._audio_codec = au.audio_codec      # (then the frames themselves say)
            data = self._muxer(au.codec).video(list(au.nal_units), pts, dts, au.keyframe)
        else:
            data = join_annexb(au.nal_units)
        self.codec = au.codec
        self.access_units += 1
        return data, ts, True

    def _muxer(self, video_codec: str) -> PsMuxer:
        """The stream's one muxer, told what the program carries now (a change: a new PSM)."""
        if self._mux is None:
            self._mux = PsMuxer(video_codec, self._audio_codec)
        else:
            self._mux.set_streams(video_codec, self._audio_codec)
        return self._mux

    def push(self, obj: ferry_pb2.CanonicalObject) -> list[bytes]:
        """Fresh RTP packets for one object (marker on the last packet of each picture)."""
        if self.form == "ps" or obj.HasField("audio"):
            data, ts, video = self.container(obj)
            view, mtu = memoryview(data), self.mtu
            packets = self.writer.write([view[i:i + mtu] for i in range(0, len(data), mtu)], ts,
                                        marker_last=True)
        else:
            reason = self.accepts(obj)
            if reason:
                raise ValueError(reason)
            au = obj.access_unit
            ts, _, _ = self._times(au.pts, au.dts)
            packetize = rtp_h264.packetize if au.codec == "h264" else rtp_h265.packetize
            try:
                payloads = packetize(list(au.nal_units), self.mtu)
            except CodecError as exc:
                raise ValueError(str(exc)) from None
            self.codec = au.codec
            self.access_units += 1
            packets = self.writer.write(payloads, ts, marker_last=True)
        self.packets += len(packets)
        return packets
