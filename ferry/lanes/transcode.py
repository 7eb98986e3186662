"""Transcode mode of the video lane: decode and re-encode with PyAV (libx264/libx265).

The strongest content disarm, for sources the policy marks high-risk (`video.mode: transcode`):
only pixels cross. The source's NAL units never reach the output: parameter sets and slices
go to FFmpeg's decoder (SEI, AUD, filler and unknown types are dropped before decoding), the
decoded pictures are scaled down to fit the caps (aspect kept, even dimensions, never scaled
up), decimated to the output frame rate, and coded afresh with rate control capped at the
bitrate limit. The output carries parameter sets in-band on every keyframe and no SEI.

Bounded before decoding: an SPS wider or taller than `limits.TRANSCODE_INPUT_FACTOR` times the
caps, an access unit larger than `limits.ACCESS_UNIT_MAX`, or any malformed NAL unit is refused.
Every failure, hostile input included, is a `CodecError` with a reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import av
from av.video.frame import PictureType

from ferry import limits
from ferry.codecs import h264, h265
from ferry.codecs.errors import CodecError
from ferry.codecs.nal import NalError, h264_nal_type, h265_nal_header, join_annexb, split_annexb
from ferry.pb import ferry_pb2

CODECS = ("h264", "h265")
_DECODERS = {"h264": "h264", "h265": "hevc"}
_ENCODERS = {"h264": "libx264", "h265": "libx265"}
_CLOCK = 90000
_TIME_BASE = Fraction(1, _CLOCK)

# NAL unit types handed to the decoder; everything else is dropped unread by FFmpeg
_H264_DECODE = frozenset({h264.SLICE, h264.SLICE_DPA, h264.SLICE_DPB, h264.SLICE_DPC, h264.IDR,
                          h264.SPS, h264.PPS})
_H265_DECODE = frozenset(range(0, 10)) | frozenset(range(16, 22)) | {h265.VPS, h265.SPS, h265.PPS}
_H264_SEI = frozenset({h264.SEI})
_H265_SEI = frozenset({h265.PREFIX_SEI, h265.SUFFIX_SEI})


def fit_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The largest even size within the caps with the source's aspect ratio (never larger than the source)."""
    if width <= 0 or height <= 0:
        raise CodecError(f"picture size {width}x{height}")
    scale = min(Fraction(max_width, width), Fraction(max_height, height), Fraction(1))
    w = max(2, int(width * scale) // 2 * 2)
    h = max(2, int(height * scale) // 2 * 2)
    return w, h


class Transcoder:
    """One stream's decoder and encoder: `push(au) -> [AccessUnit]`, `flush() -> [AccessUnit]`.

    Output access units are fresh proto AccessUnits of `out_codec`: NAL units split from the
    encoder's Annex B output (SEI removed), the output size and frame rate, the keyframe flag,
    pts from the input picture (90 kHz) and dts from the encoder (no reordering: dts == pts).
    """

    def __init__(self, in_codec: str, out_codec: str, max_width: int, max_height: int,
                 max_bitrate_kbps: int, frame_rate: float, preset: str = "veryfast") -> None:
        if in_codec not in CODECS or out_codec not in CODECS:
            raise ValueError(f"unsupported codec {in_codec!r} -> {out_codec!r}")
        if not (2 <= max_width <= limits.VIDEO_MAX_WIDTH and 2 <= max_height <= limits.VIDEO_MAX_HEIGHT):
            raise ValueError(f"size caps {max_width}x{max_height}")
        if not 0 < max_bitrate_kbps <= limits.VIDEO_BITRATE_MAX_KBPS:
            raise ValueError(f"bitrate cap {max_bitrate_kbps} kbit/s")
        if not 0 < frame_rate <= limits.VIDEO_MAX_FRAME_RATE:
            raise ValueError(f"frame rate {frame_rate}")
        self.in_codec, self.out_codec = in_codec, out_codec
        self.max_width, self.max_height = max_width, max_height
        self.max_bitrate_kbps = max_bitrate_kbps
        self.frame_rate = float(frame_rate)
        self.preset = preset
        self._rate = Fraction(frame_rate).limit_denominator(1001)
        self._frame_ticks = _CLOCK / self.frame_rate
        self._decode_types = _H264_DECODE if in_codec == "h264" else _H265_DECODE
        self._decoder: av.CodecContext | None = None
        self._encoder: av.CodecContext | None = None
        self._size: tuple[int, int] | None = None  # output size of the open encoder
        self._have_sps = False
        self._last_pts: int | None = None  # pts of the last picture given to the encoder
        self._prev_pts: int | None = None  # pts of the last decoded picture
        self._stream_id = ""
        self._bytes = 0
        # counters for the caller's per-stream audit record
        self.pictures_in = 0
        self.pictures_out = 0
        self.pictures_dropped = 0

    # -- input -----------------------------------------------------------------
    def _nal_type(self, nal: bytes) -> int:
        return h264_nal_type(nal) if self.in_codec == "h264" else h265_nal_header(nal)[0]

    def _check_sps(self, t: int, nal: bytes) -> None:
        sps: h264.Sps | h265.Sps
        if self.in_codec == "h264":
            if t != h264.SPS:
                return
            sps = h264.parse_sps(nal)
        else:
            if t != h265.SPS:
                return
            sps = h265.parse_sps(nal)
        factor = limits.TRANSCODE_INPUT_FACTOR
        if sps.width > self.max_width * factor or sps.height > self.max_height * factor:
            raise CodecError(f"SPS size {sps.width}x{sps.height} beyond {factor}x the caps "
                             f"{self.max_width}x{self.max_height}")
        self._have_sps = True

    def _admit(self, au: ferry_pb2.AccessUnit) -> bytes:
        """The Annex B bytes of the NAL units the decoder may see; raises CodecError."""
        if au.codec and au.codec != self.in_codec:
            raise CodecError(f"access unit codec {au.codec!r}, transcoder input {self.in_codec!r}")
        if len(au.nal_units) > limits.ACCESS_UNIT_NALS_MAX:
            raise CodecError("too many NAL units in the access unit")
        if sum(len(n) for n in au.nal_units) > limits.ACCESS_UNIT_MAX:
            raise CodecError("access unit too large")
        kept: list[bytes] = []
        try:
            for nal in au.nal_units:
                t = self._nal_type(nal)
                if t not in self._decode_types:
                    continue
                self._check_sps(t, nal)
                kept.append(nal)
        except NalError as exc:
            raise CodecError(f"refused NAL unit: {exc}") from None
        if not self._have_sps:
            raise CodecError("no sequence parameter set yet")
        if not kept:
            raise CodecError("access unit without a picture")
        return join_annexb(kept)

    def push(self, au: ferry_pb2.AccessUnit) -> list[ferry_pb2.AccessUnit]:
        """Decode one access unit; return the access units the encoder completed."""
        data = self._admit(au)
        self._stream_id = au.stream_id
        if self._decoder is None:
            self._decoder = self._open_decoder()
        packet = av.Packet(data)
        packet.time_base = _TIME_BASE
        packet.pts, packet.dts = au.pts, au.dts
        try:
            frames = self._decoder.decode(packet)
        except (av.FFmpegError, ValueError, OverflowError) as exc:
            raise CodecError(f"decoder: {exc}") from None
        return self._encode_all(frames)

    def _open_decoder(self) -> av.CodecContext:
        dec = av.CodecContext.create(_DECODERS[self.in_codec], "r")
        factor = limits.TRANSCODE_INPUT_FACTOR
        # FFmpeg's own bound too, should its SPS parsing ever differ from ferry.codecs'
        dec.options = {"max_pixels": str(self.max_width * factor * self.max_height * factor)}
        return dec

    def flush(self) -> list[ferry_pb2.AccessUnit]:
        """End of stream: drain the decoder and the encoder; the next push starts afresh."""
        out: list[ferry_pb2.AccessUnit] = []
        try:
            if self._decoder is not None:
                try:
                    frames = self._decoder.decode(None)
                except (av.FFmpegError, ValueError, OverflowError) as exc:
                    raise CodecError(f"decoder: {exc}") from None
                out = self._encode_all(frames)
            out.extend(self._close_encoder())
        finally:
            self._decoder = None
            self._encoder = None
            self._size = None
            self._have_sps = False
            self._last_pts = self._prev_pts = None
        return out

    # -- pictures --------------------------------------------------------------
    def _encode_all(self, frames: Iterable[Any]) -> list[ferry_pb2.AccessUnit]:
        out: list[ferry_pb2.AccessUnit] = []
        for frame in frames:
            out.extend(self._encode_picture(frame))
        return out

    def _picture_pts(self, frame: Any) -> int | None:
        """The output pts of a decoded picture, or None to drop it (decimation to the frame rate)."""
        pts: int | None = frame.pts
        prev = self._prev_pts
        self._prev_pts = pts
        last = self._last_pts
        if last is None:
            return pts if pts is not None else 0
        if pts is None or prev is None or pts <= prev or pts < last - self._frame_ticks * 8:
            return round(last + self._frame_ticks)  # absent or broken timestamps: a steady clock
        if pts < last + self._frame_ticks * 0.9:
            return None  # faster than the output frame rate
        return pts

    def _encode_picture(self, frame: Any) -> list[ferry_pb2.AccessUnit]:
        self.pictures_in += 1
        factor = limits.TRANSCODE_INPUT_FACTOR
        if frame.width > self.max_width * factor or frame.height > self.max_height * factor:
            raise CodecError(f"decoded picture {frame.width}x{frame.height} beyond {factor}x the caps")
        pts = self._picture_pts(frame)
        if pts is None:
            self.pictures_dropped += 1
            return []
        size = fit_size(frame.width, frame.height, self.max_width, self.max_height)
        out: list[ferry_pb2.AccessUnit] = []
        if size != self._size:
            out.extend(self._close_encoder())
            self._open_encoder(size)
        try:
            picture = frame.reformat(width=size[0], height=size[1], format="yuv420p")
            picture.pts = pts
            picture.time_base = _TIME_BASE
            picture.pict_type = PictureType.NONE
            assert self._encoder is not None    # opened above for this size
            packets = self._encoder.encode(picture)
        except (av.FFmpegError, ValueError, OverflowError) as exc:
            raise CodecError(f"encoder: {exc}") from None
        self._last_pts = pts
        out.extend(self._access_units(packets))
        return out

    # -- encoder ---------------------------------------------------------------
    def _open_encoder(self, size: tuple[int, int]) -> None:
        bitrate = self.max_bitrate_kbps * 1000  # the ceiling (VBV); the average aims below it
        enc = av.CodecContext.create(_ENCODERS[self.out_codec], "w")
        enc.width, enc.height = size
        enc.pix_fmt = "yuv420p"
        enc.time_base = _TIME_BASE
        enc.framerate = self._rate
        enc.gop_size = max(1, round(self.frame_rate))
        enc.max_b_frames = 0
        enc.bit_rate = int(bitrate * limits.TRANSCODE_TARGET_SHARE)
        options = {
            "preset": self.preset, "tune": "zerolatency", "udu_sei": "0",
            "maxrate": str(bitrate), "bufsize": str(bitrate),
        }
        if self.out_codec == "h264":
            options.update({"a53cc": "0", "x264-params": "repeat-headers=1:aud=0"})
        else:
            options["x265-params"] = "log-level=error:repeat-headers=1:aud=0:info=0:hash=0:open-gop=0"
        enc.options = options
        try:
            enc.open()
        except (av.FFmpegError, ValueError) as exc:
            raise CodecError(f"encoder: {exc}") from None
        self._encoder = enc
        self._size = size

    def _close_encoder(self) -> list[ferry_pb2.AccessUnit]:
        enc, self._encoder, self._size = self._encoder, None, None
        if enc is None:
            return []
        try:
            packets = enc.encode(None)
        except (av.FFmpegError, ValueError) as exc:
            raise CodecError(f"encoder: {exc}") from None
        return self._access_units(packets, enc)

    def _access_units(self, packets: Iterable[Any], enc: Any = None) -> list[ferry_pb2.AccessUnit]:
        enc = enc or self._encoder
        sei = _H264_SEI if self.out_codec == "h264" else _H265_SEI
        out: list[ferry_pb2.AccessUnit] = []
        for packet in packets:
            nals = []
            for nal in split_annexb(bytes(packet)):
                t = h264_nal_type(nal) if self.out_codec == "h264" else h265_nal_header(nal)[0]
                if t not in sei:
                    nals.append(nal)
            if not nals:
                continue
            pts = packet.pts if packet.pts is not None else (self._last_pts or 0)
            dts = packet.dts if packet.dts is not None else pts
            self._bytes += sum(len(n) for n in nals)
            self.pictures_out += 1
            span = self.pictures_out / self.frame_rate  # seconds of output so far
            out.append(ferry_pb2.AccessUnit(
                stream_id=self._stream_id, codec=self.out_codec, keyframe=packet.is_keyframe,
                pts=pts, dts=dts, width=enc.width, height=enc.height, frame_rate=self.frame_rate,
                bitrate_kbps=min(round(self._bytes * 8 / span / 1000), 2**32 - 1), nal_units=nals))
        return out
