"""Issue 12 item 4: every stream that delivers nothing says why, once; bulk drops leave a trace.

OuterVideoLane without a socket (UDP entries), fed with ffmpeg-made sources that the tests
alter: an SPS claiming 100000x100000, no keyframe, payloads that are not a program stream, a
megabyte of filler NAL units or of garbage between packs, packets of a second SSRC.
"""
from __future__ import annotations

import shutil

import pytest

import gb28181
from ferry import limits
from ferry.codecs.mpeg_ps import PsMuxer
from ferry.lanes.video import INGEST_RULE
from .test_outer_lane import CAM, lane_of, records, sealed, timers
from .test_stream import SSRC

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


class Bits:
    """An RBSP bit writer (u(n), ue(v)) for crafted parameter sets."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, v: int) -> "Bits":
        self.bits += [(v >> (n - 1 - i)) & 1 for i in range(n)]
        return self

    def ue(self, v: int) -> "Bits":
        x = v + 1
        return self.u(2 * x.bit_length() - 1, x)

    def rbsp(self) -> bytes:
        bits = self.bits + [1]
        bits += [0] * (-len(bits) % 8)
        raw = bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))
        out = bytearray()
        zeros = 0
        for b in raw:                 # emulation prevention
            if zeros >= 2 and b <= 3:
                out.append(3)
                zeros = 0
            out.append(b)
            zeros = zeros + 1 if b == 0 else 0
        return bytes(out)


def huge_sps(width: int = 100_000, height: int = 100_000) -> bytes:
    """An H.264 baseline SPS claiming width x height (ITU-T H.264 §7.3.2.1.1)."""
    b = Bits().u(8, 66).u(8, 0).u(8, 30).ue(0)          # profile, constraints, level, sps_id
    b.ue(0).ue(2)                                       # log2_max_frame_num_minus4, poc type 2
    b.ue(1).u(1, 0)                                     # max_num_ref_frames, gaps allowed
    b.ue(width // 16 - 1).ue(height // 16 - 1)          # pic_width_in_mbs_minus1, height
    b.u(1, 1).u(1, 1).u(1, 0).u(1, 0)                   # frame_mbs_only, direct_8x8, no crop, no VUI
    return b"\x67" + b.rbsp()


@pytest.fixture(scope="module")
def frames() -> list:
    return gb28181.access_units(gb28181.make_source(None, "h264", seconds=2), "h264")


def packets_of(frames, ssrc: int = SSRC, junk_after: dict[int, bytes] | None = None) -> list[bytes]:
    """A GB/T 28181 camera's RTP/PS of `frames` (one pack per frame, 1400-byte payloads); bytes
    of `junk_after[i]` follow frame i's pack in the program stream."""
    mux = PsMuxer("h264")
    junk_after = junk_after or {}

    def cut(i, fr) -> list[bytes]:
        ps = mux.video(fr.nal_units, fr.pts, fr.dts, fr.keyframe) + junk_after.get(i, b"")
        return [ps[j:j + 1400] for j in range(0, len(ps), 1400)]

    return [d for d, _ in gb28181._rtp(((fr, cut(i, fr)) for i, fr in enumerate(frames)), ssrc=ssrc,
                                        payload_type=96, seq_start=None, spread=0.8, ts_offset=0)]


def run(lane, packets, step: float, t0: float = 100.0) -> list:
    """The packets `step` seconds apart, then the lane's timers to the stream's idle end."""
    buf = bytearray(65536)
    view = memoryview(buf)
    work = []
    for i, data in enumerate(packets):
        buf[:len(data)] = data
        work += lane.datagram("cam", view[:len(data)], CAM, t0 + i * step, 1.7e9)
    return work + timers(lane, t0 + len(packets) * step + 2 * limits.VIDEO_STREAM_IDLE)


def test_an_sps_beyond_the_limits_refuses_the_stream_with_the_parsers_reason(plan_of, frames):
    bad = [type(fr)(tuple(huge_sps() if n[0] & 0x1F == 7 else n for n in fr.nal_units), fr.pts, fr.dts,
                    fr.keyframe) for fr in frames]
    work = run(lane_of(plan_of()), packets_of(bad), 0.001)
    [refused] = records(work, "stream_refused")
    assert refused["rule"] == INGEST_RULE and refused["code"] == "stream_check", refused
    assert "100000x100000" in refused["reason"] and "SPS" in refused["reason"]
    assert not sealed(work)
    [ended] = records(work, "stream_ended")
    assert ended["reason"].startswith("refused: ") and ended["detail"]["access_units"] == 0


@pytest.mark.parametrize("case", ["no keyframe", "not a program stream"])
def test_a_stream_that_delivers_nothing_is_refused_once_at_its_end(plan_of, frames, case):
    if case == "no keyframe":
        packets = packets_of([type(fr)(tuple(n for n in fr.nal_units if n[0] & 0x1F != 5), fr.pts, fr.dts, False)
                              for fr in frames])                # the IDR slices taken out (SPS, PPS kept)
        words = "keyframe"
    else:
        packets = [gb28181.build_rtp(96, i, i * 3600, SSRC, bytes([0x47]) + bytes(range(187)) * 7, marker=True)
                   for i in range(200)]
        words = "no H.264/H.265 video"
    work = run(lane_of(plan_of()), packets, 0.001)
    assert not sealed(work)
    [refused] = records(work, "stream_refused")
    assert refused["rule"] == INGEST_RULE and refused["code"] == "no_picture"
    assert words in refused["reason"], refused
    [started] = records(work, "stream_started")
    assert refused["flow"] == started["flow"]
    [ended] = records(work, "stream_ended")
    assert ended["detail"]["access_units"] == 0


def test_a_stream_that_delivers_gets_no_refusal(plan_of, frames):
    work = run(lane_of(plan_of()), packets_of(frames), 0.001)
    assert len(sealed(work)) == 50 and not records(work, "stream_refused") and not records(work, "stream_anomaly")


@pytest.mark.parametrize("where", ["filler NAL units", "garbage between packs", "start codes in the PES"])
def test_a_megabyte_dropped_leaves_aggregated_anomaly_records(plan_of, frames, where):
    """1 MiB stripped (filler NAL units inside the pictures) or skipped (garbage between packs)
    over a 20 s stream: the pictures still cross; stream_anomaly records, at most one per 10 s."""
    per = (1 << 20) // 40
    if where == "filler NAL units":
        fat = [type(fr)(fr.nal_units + ((b"\x0c" + b"\xff" * per + b"\x80") if 5 <= i < 45 else b"",),
                        fr.pts, fr.dts, fr.keyframe) if 5 <= i < 45 else fr for i, fr in enumerate(frames)]
        packets = packets_of(fat)
    elif where == "start codes in the PES":           # 00 00 01 00 00 01 ...: empty NAL units, no bytes kept
        runs = [type(fr)(fr.nal_units + ((b"\x00\x00\x01" * (per // 3))[3:],), fr.pts, fr.dts, fr.keyframe)
                if 5 <= i < 45 else fr for i, fr in enumerate(frames)]
        packets = packets_of(runs)
    else:
        packets = packets_of(frames, junk_after={i: b"\xff" * per for i in range(5, 45)})
    step = 20.0 / len(packets)
    work = run(lane_of(plan_of()), packets, step)
    assert len(sealed(work)) == 50
    anomalies = records(work, "stream_anomaly")
    assert 1 <= len(anomalies) <= 3, anomalies                     # 20 s: at most one per 10 s
    assert all(r["code"] == "skipped_bytes" and r["verdict"] == "refused" for r in anomalies)
    assert all(r["detail"]["bytes"] >= limits.VIDEO_ANOMALY_BYTES for r in anomalies)
    assert (1 << 20) * 0.5 <= sum(r["detail"]["bytes"] for r in anomalies) <= (1 << 20) * 1.1
    [ended] = records(work, "stream_ended")
    assert not records(work, "stream_refused")
    key = {"filler NAL units": "stripped_bytes", "garbage between packs": "skipped_bytes",
           "start codes in the PES": "unaccounted_bytes"}[where]
    assert ended["detail"][key] >= 40 * per * 0.9


def test_a_second_ssrc_on_the_port_gets_an_anomaly_record(plan_of, frames):
    ours, theirs = packets_of(frames), packets_of(frames, ssrc=0x5EC0)
    mixed = [p for pair in zip(ours, theirs) for p in pair] + ours[len(theirs):]
    work = run(lane_of(plan_of()), mixed, 0.001)
    assert len(sealed(work)) == 50
    [anomaly] = records(work, "stream_anomaly")                   # aggregated: one in 10 s
    assert anomaly["code"] == "foreign_ssrc" and anomaly["verdict"] == "refused"
    assert anomaly["detail"]["packets"] >= limits.VIDEO_ANOMALY_PACKETS
    assert "0x00005ec0" in anomaly["reason"]
    [ended] = records(work, "stream_ended")
    assert ended["detail"]["foreign_ssrc_packets"] == len(theirs)
