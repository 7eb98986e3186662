"""Access units from NAL units (H.264 §7.4.1.2.3, H.265 §7.4.2.4.4), with the active SPS.

An access unit ends before an AUD, a parameter set, a (prefix) SEI or the first slice of the
next picture (first_mb_in_slice == 0 / first_slice_segment_in_pic_flag) that follows a VCL
NAL unit, or before a PES that starts with a NAL unit and carries a new PTS. Units that
cannot be trusted (malformed NAL units, refused SPS, no active SPS yet, too large) are
returned as `Dropped` events, never raised.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ferry import limits
from ferry.codecs import h264, h265
from ferry.codecs.nal import AnnexBSplitter, NalError, h264_nal_type, h265_nal_header
from ferry.pb import ferry_pb2

H264 = "h264"
H265 = "h265"
CODECS = (H264, H265)


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One coded picture: the canonical object of the video lane (proto AccessUnit)."""

    codec: str
    keyframe: bool
    pts: int | None
    dts: int | None
    nal_units: tuple[bytes, ...]
    width: int
    height: int
    frame_rate: float

    @property
    def size(self) -> int:
        return sum(len(n) for n in self.nal_units)

    def to_pb(self, stream_id: str = "") -> ferry_pb2.AccessUnit:
        """The proto AccessUnit (absent timestamps become 0)."""
        return ferry_pb2.AccessUnit(
            stream_id=stream_id, codec=self.codec, keyframe=self.keyframe,
            pts=self.pts or 0, dts=self.dts if self.dts is not None else (self.pts or 0),
            width=self.width, height=self.height, frame_rate=self.frame_rate,
            nal_units=list(self.nal_units))


@dataclass(frozen=True, slots=True)
class Dropped:
    """NAL units that did not become (part of) an access unit, and why.

    `access_unit` False: bytes that were never part of one (the tail of a NAL unit whose start
    code was lost), counted as bytes only.
    """

    reason: str
    nbytes: int
    access_unit: bool = True


NO_START_CODE = "bytes before the first start code"


AssemblerEvent = AccessUnit | Dropped


class AccessUnitAssembler:
    """Groups NAL units of one stream into access units: `push(nal, ...) -> events`."""

    def __init__(self, codec: str) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}")
        self.codec = codec
        self._parameter_set_types = (h264.SPS,) if codec == H264 else (h265.VPS, h265.SPS)
        self.sps: h264.Sps | h265.Sps | None = None
        self._vps_timing: tuple[int, int] = (0, 0)
        self._nals: list[bytes] = []
        self._bytes = 0
        self._has_vcl = False
        self._keyframe = False
        self._pts: int | None = None
        self._dts: int | None = None
        self._claimed = -1          # last PES number whose PTS an access unit took
        self._overflow = False      # the current access unit exceeded the limits: drop it
        self._refused: str | None = None  # the current access unit contains a refused NAL unit

    # -- NAL header ------------------------------------------------------------
    def _inspect(self, nal: bytes) -> tuple[int, bool, bool, bool]:
        """(type, is_vcl, starts_au, keyframe) of a NAL unit; raises NalError."""
        if self.codec == H264:
            t = h264_nal_type(nal)
            vcl = 1 <= t <= 5
            if t in h264.PRIMARY_VCL_TYPES:
                starts = h264.first_mb_in_slice(nal) == 0
            else:
                starts = t in h264.AU_START_TYPES
            return t, vcl, starts, t == h264.IDR
        t = h265_nal_header(nal)[0]
        vcl = h265.is_vcl_type(t)
        if vcl:
            starts = h265.first_slice_segment_in_pic(nal)
        else:
            starts = t in h265.AU_START_TYPES
        return t, vcl, starts, vcl and h265.is_keyframe_type(t)

    def _parameter_set(self, t: int, nal: bytes) -> None:
        if self.codec == H264:
            if t == h264.SPS:
                self.sps = h264.parse_sps(nal)
        elif t == h265.SPS:
            self.sps = h265.parse_sps(nal)
        elif t == h265.VPS:
            vps = h265.parse_vps(nal)
            self._vps_timing = (vps.num_units_in_tick, vps.time_scale)

    # -- assembly --------------------------------------------------------------
    def push(self, nal: bytes, pts: int | None = None, dts: int | None = None,
             pes: int | None = None, pes_start: bool = False) -> list[AssemblerEvent]:
        """Add the next NAL unit; return the access units (and drops) it completes.

        pts/dts are those of the PES the unit's start code is in (`pes` numbers that PES, so
        its PTS goes to the first access unit starting in it only); `pes_start` says the
        unit is the first thing in its PES.
        """
        out: list[AssemblerEvent] = []
        try:
            t, vcl, starts, key = self._inspect(nal)
        except NalError as exc:
            self._refused = self._refused or f"malformed NAL unit: {exc}"
            self._append(nal)
            return out
        fresh_pts = pts is not None and (pes is None or pes > self._claimed)
        boundary = self._nals and (
            (self._has_vcl and (starts or (pes_start and fresh_pts and pts != self._pts)))
            or (self.codec == H264 and t == h264.AUD) or (self.codec == H265 and t == h265.AUD))
        if boundary:
            out.extend(self._finish())
        if not self._nals:
            if fresh_pts:
                self._pts, self._dts = pts, dts if dts is not None else pts
                if pes is not None:
                    self._claimed = pes
            else:
                self._pts = self._dts = None
        if t in self._parameter_set_types:
            try:
                self._parameter_set(t, nal)
            except NalError as exc:
                self.sps = None
                self._refused = self._refused or f"refused parameter set: {exc}"
        self._has_vcl |= vcl
        self._keyframe |= key
        self._append(nal)
        return out

    def _append(self, nal: bytes) -> None:
        if self._overflow:
            self._bytes += len(nal)
            return
        self._nals.append(bytes(nal))
        self._bytes += len(nal)
        if self._bytes > limits.ACCESS_UNIT_MAX or len(self._nals) > limits.ACCESS_UNIT_NALS_MAX:
            self._overflow = True

    def _finish(self) -> list[AssemblerEvent]:
        nals, nbytes = tuple(self._nals), self._bytes
        has_vcl, key, pts, dts = self._has_vcl, self._keyframe, self._pts, self._dts
        overflow, refused = self._overflow, self._refused
        self._reset_au()
        if overflow:
            return [Dropped("access unit too large", nbytes)]
        if refused:
            return [Dropped(refused, nbytes)]
        if not nals:
            return []
        if not has_vcl:
            return [Dropped("access unit without a picture", nbytes)]
        sps = self.sps
        if sps is None:
            return [Dropped("no active SPS", nbytes)]
        rate = sps.frame_rate
        if not rate and self.codec == H265 and self._vps_timing[0]:
            units, scale = self._vps_timing
            rate = scale / units if scale / units <= limits.VIDEO_MAX_FRAME_RATE else 0.0
        return [AccessUnit(self.codec, key, pts, dts, nals, sps.width, sps.height, rate)]

    def _reset_au(self) -> None:
        self._nals = []
        self._bytes = 0
        self._has_vcl = self._keyframe = self._overflow = False
        self._refused = None
        self._pts = self._dts = None

    def flush(self) -> list[AssemblerEvent]:
        """End of stream: the last access unit."""
        return self._finish()

    @property
    def pending_pts(self) -> int | None:
        """The PTS of the access unit in progress (None: none, or it has none)."""
        return self._pts if self._nals else None

    def end_before(self, pts: int) -> list[AssemblerEvent]:
        """A PES with timestamp `pts` starts with a start code: if `push` would end the access
        unit at its first NAL unit (a picture in progress with another PTS), end it now."""
        if self._nals and self._has_vcl and pts != self._pts:
            return self._finish()
        return []

    def discard(self, extra: int = 0) -> list[AssemblerEvent]:
        """A discontinuity (lost bytes): drop the partial access unit (and `extra` bytes of it
        still in the caller's hands: the NAL unit in progress)."""
        nbytes = self._bytes + extra
        self._reset_au()
        return [Dropped("discontinuity", nbytes)] if nbytes else []


class ByteStreamAssembler:
    """Access units from an Annex B byte stream delivered in PES payloads.

    `feed(payload, pts, dts)` per PES (`new_pes=False` for a continuation of the same PES);
    the PTS of a PES goes to the first access unit whose first start code lies in it
    (ISO/IEC 13818-1 §2.4.3.7). A PES with a new PTS that starts with a start code ends the
    access unit before it at once. Bytes before the first start code (after a discontinuity)
    come out as `Dropped(NO_START_CODE, n, access_unit=False)`: counted, never silent.
    """

    def __init__(self, codec: str) -> None:
        self.assembler = AccessUnitAssembler(codec)
        self._splitter = AnnexBSplitter()
        self._pes: deque[tuple[int, int, int | None, int | None]] = deque(maxlen=limits.PS_PES_PENDING_MAX)
        self._pes_no = 0
        self._reported = 0      # the splitter's skipped bytes reported so far
        self._opened = 0        # the last PES whose opening start code ended the access unit before

    @property
    def codec(self) -> str:
        return self.assembler.codec

    @property
    def pending_pts(self) -> int | None:
        return self.assembler.pending_pts

    def feed(self, data: bytes, pts: int | None = None, dts: int | None = None,
             new_pes: bool = True) -> list[AssemblerEvent]:
        if new_pes:
            self._pes_no += 1
            self._pes.append((self._splitter.offset, self._pes_no, pts, dts))
        splitter = self._splitter
        try:
            located = splitter.feed_located(data)
        except NalError as exc:
            pending = splitter.pending
            splitter.reset()
            return [*self.assembler.discard(), Dropped(str(exc), max(len(data), pending))]
        out: list[AssemblerEvent] = []
        if splitter.skipped != self._reported and splitter.unit_offset is not None:
            # reported once the run of bytes without a start code ends (however the feeds are cut)
            out.append(Dropped(NO_START_CODE, splitter.skipped - self._reported, False))
            self._reported = splitter.skipped
        for offset, nal in located:
            out.extend(self._push(offset, nal))
        unit = splitter.unit_offset
        if unit is not None and self._pes:
            # the unit in progress opens its PES: end the picture before now, not when it completes
            start, number, pes_pts, _dts = self._pes[-1]
            if 0 <= unit - start <= 1:
                out.extend(self._pes_opens(number, pes_pts))
        return out

    def _pes_opens(self, number: int, pts: int | None) -> list[AssemblerEvent]:
        """A PES (a new PTS) starts with a start code: the access unit before it is complete
        (the start code proves its last NAL unit ended). Once per PES, as soon as that start code
        is found, however the bytes are cut."""
        if number == self._opened or pts is None:
            return []
        self._opened = number
        return self.assembler.end_before(pts)

    def _push(self, offset: int, nal: bytes) -> list[AssemblerEvent]:
        pes = self._pes
        while len(pes) >= 2 and pes[1][0] <= offset:
            pes.popleft()
        if pes and pes[0][0] <= offset:
            start, number, pts, dts = pes[0]
            if 0 <= offset - start <= 1:
                return [*self._pes_opens(number, pts), *self.assembler.push(nal, pts, dts, number, True)]
            return self.assembler.push(nal, pts, dts, number, False)
        return self.assembler.push(nal)

    def flush(self) -> list[AssemblerEvent]:
        out: list[AssemblerEvent] = []
        for offset, nal in self._splitter.flush_located():
            out.extend(self._push(offset, nal))
        if self._splitter.skipped != self._reported:
            out.append(Dropped(NO_START_CODE, self._splitter.skipped - self._reported, False))
            self._reported = self._splitter.skipped
        out.extend(self.assembler.flush())
        return out

    def end_at_next_pes(self, pts: int | None, head: bytes) -> list[AssemblerEvent]:
        """The next PES (timestamp `pts`, payload beginning `head`) began but will not be fed
        (a discontinuity cuts it): if it starts a new access unit with a start code, the unit
        in progress is complete: end it (before `discontinuity` drops only what is partial)."""
        if pts is None or pts == self.assembler.pending_pts or not (
                head[:3] == b"\x00\x00\x01" or head[:4] == b"\x00\x00\x00\x01"):
            return []
        out: list[AssemblerEvent] = []
        for offset, nal in self._splitter.flush_located():   # its start code proves the unit ended
            out.extend(self._push(offset, nal))
        out.extend(self.assembler.end_before(pts))
        return out

    def discontinuity(self) -> list[AssemblerEvent]:
        """Bytes were lost: forget the partial NAL unit and access unit (both counted)."""
        pending = self._splitter.pending
        self._splitter.reset()
        self._pes.clear()
        out = self.assembler.discard(pending)
        if self._splitter.skipped != self._reported:
            out.append(Dropped(NO_START_CODE, self._splitter.skipped - self._reported, False))
            self._reported = self._splitter.skipped
        return out


def sniff_codec(payload: bytes) -> str | None:
    """"h264" or "h265" when the bytes hold a parameter set that parses as one; else None."""
    return scan_parameter_sets(payload, 0, len(payload), True)[0]


def scan_parameter_sets(payload: bytes | bytearray, start: int, stop: int, final: bool) -> tuple[str | None, int]:
    """`sniff_codec` over payload[start:stop] that may be cut: (codec, index of the parameter set)
    or (None, safe), every start code before `safe` being decided not to be a parameter set.

    With `final` off more bytes may follow `stop`: a candidate whose end (the next start code,
    or PARAMETER_SET_MAX) is not known yet is left undecided, so scanning the bytes in pieces
    decides exactly as scanning them whole.
    """
    i = payload.find(b"\x00\x00\x01", start, stop)
    while i >= 0:
        if i + 4 >= stop:
            return None, (stop if final else i)
        j = payload.find(b"\x00\x00\x01", i + 3, stop)
        b0, b1 = payload[i + 3], payload[i + 4]
        h265_ps = b0 in (0x40, 0x42) and b1 == 0x01
        if h265_ps or b0 & 0x9F == h264.SPS:
            limit = i + 4 + limits.PARAMETER_SET_MAX
            if j >= 0:
                end = min(j, limit)
            elif final:
                end = min(stop, limit)
            elif limit <= stop - 2:  # a start code yet to come begins at stop - 2 or later
                end = limit
            else:
                return None, i
            nal = bytes(payload[i + 3:end])
            try:
                if h265_ps:
                    (h265.parse_vps if b0 == 0x40 else h265.parse_sps)(nal)
                    return H265, i
                h264.parse_sps(nal)
                return H264, i
            except NalError:
                pass
        i = j
    return None, (stop if final else max(start, stop - 2))
