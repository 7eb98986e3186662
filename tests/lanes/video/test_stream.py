"""ferry.lanes.video in process: OuterStream (RTP in -> decided access units) and InnerStream (fresh RTP)."""
from __future__ import annotations

import random
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gb28181
from ferry import limits
from ferry.codecs import h264, h265
from ferry.codecs.mpeg_ps import PsDemuxer, PsMuxer, VideoPes
from ferry.codecs.nal import split_annexb
from ferry.codecs.rtp import build_rtp, parse_rtp
from ferry.codecs.rtp_h264 import H264Depacketizer
from ferry.lanes.video import (AccessUnitReady, InnerStream, OuterStream, StreamEnded, StreamLoss,
                               StreamRefused, StreamStarted, strip_nal_units)
from ferry.policy import load_plan
from video_policy import video_limits, video_policy

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")

CAMERA = "43090000001320000001"
SSRC = 0x0BEBC201


def policy_text(*, codecs="[h264, h265]", max_width=1920, max_height=1080, bitrate=20000, keep_sei=False,
                audio=False, mode="remux") -> str:
    return video_policy("video-lane-test", video=video_limits(
        codecs=codecs, max_width=max_width, max_height=max_height, max_bitrate_kbps=bitrate, keep_sei=keep_sei,
        audio=audio, mode=mode))


def plan_maker(tmp_path):
    """make(**policy_text arguments) -> a loaded plan, each in its own folder under tmp_path."""
    made = []

    def make(**kw):
        d = tmp_path / f"policy{len(made)}"
        d.mkdir()
        (d / "policy.yaml").write_text(policy_text(**kw))
        made.append(load_plan(d))
        return made[-1]
    return make


def source(codec, seconds=2, **kw):
    return gb28181.make_source(None, codec, seconds=seconds, **kw)


def run(stream: OuterStream, packets, t0=0.0, step=0.001) -> list:
    events = []
    for i, (data, _offset) in enumerate(packets):
        events += stream.push_rtp(parse_rtp(data), t0 + i * step)
    events += stream.close(t0 + len(packets) * step + 1)
    return events


def outer(plan, payload="ps", device=CAMERA, **kw) -> OuterStream:
    return OuterStream("cam-1", device, "192.0.2.10", payload, "police-vms", lambda: plan, 0.0, **kw)


def ready(events) -> list:
    return [e.obj for e in events if isinstance(e, AccessUnitReady)]


def kinds(codec, nals):
    classify = h264.classify if codec == "h264" else h265.classify
    return [classify(n).value for n in nals]


def expected_nals(codec, path):
    """The source's NAL units as the lane lets them cross: SEI, AUD and filler stripped."""
    kept, _ = strip_nal_units(codec, split_annexb(path.read_bytes()))
    return kept


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_ps_remux_keeps_every_nal_unit_bit_exact(plan_of, codec):
    plan = plan_of()
    src = source(codec)
    events = run(outer(plan), gb28181.ps_packets(src, codec, ssrc=SSRC))
    objs = ready(events)
    assert len(objs) == 50
    assert isinstance(events[0], StreamStarted) and events[0].ssrc == SSRC
    assert isinstance(events[-1], StreamEnded) and events[-1].counts["access_units"] == 50
    crossed = [n for o in objs for n in o.access_unit.nal_units]
    assert crossed == expected_nals(codec, src)
    au = objs[0].access_unit
    assert (au.codec, au.width, au.height, au.keyframe) == (codec, 640, 360, True)
    assert objs[0].rule == "video-cameras" and objs[0].source.device_id == CAMERA
    assert objs[0].lane == "video" and objs[0].destination == "police-vms"
    # inner: a fresh PS whose NAL units are the same, in the same order
    inner = InnerStream("ps", 0.0, rng=random.Random(1))
    packets = [p for o in objs for p in inner.push(o)]
    demux = PsDemuxer()
    es = b"".join(ev.data for ev in demux.feed(b"".join(p[12:] for p in packets)) + demux.flush()
                  if isinstance(ev, VideoPes))
    assert split_annexb(es) == crossed


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_source_sei_is_stripped_unless_the_rule_keeps_it(plan_of, codec):
    src = source(codec)
    sei = "sei"
    assert sei in kinds(codec, split_annexb(src.read_bytes()))     # x264/x265 write their settings as SEI
    stripped = ready(run(outer(plan_of()), gb28181.ps_packets(src, codec, ssrc=SSRC)))
    assert sei not in {k for o in stripped for k in kinds(codec, o.access_unit.nal_units)}
    kept = ready(run(outer(plan_of(keep_sei=True)), gb28181.ps_packets(src, codec, ssrc=SSRC)))
    assert sei in {k for o in kept for k in kinds(codec, o.access_unit.nal_units)}


def test_refused_once_per_stream_and_counted(plan_of):
    plan = plan_of(max_width=320, max_height=240)
    events = run(outer(plan), gb28181.ps_packets(source("h264"), "h264", ssrc=SSRC))
    refusals = [e for e in events if isinstance(e, StreamRefused)]
    assert len(refusals) == 1
    assert refusals[0].rule == "video-cameras" and "width 640 exceeds max_width 320" in refusals[0].reason
    assert not ready(events)
    assert events[-1].counts["refused_aus"] == 50 and events[-1].counts["access_units"] == 0


def test_unknown_device_and_disallowed_codec_are_refused(plan_of):
    stranger = run(outer(plan_of(), device="44000000001320000001"),
                   gb28181.ps_packets(source("h264"), "h264", ssrc=SSRC))
    [r] = [e for e in stranger if isinstance(e, StreamRefused)]
    assert r.rule == "default-deny" and "no rule for lane 'video'" in r.reason
    hevc = run(outer(plan_of(codecs="[h264]")), gb28181.ps_packets(source("h265"), "h265", ssrc=SSRC))
    [r] = [e for e in hevc if isinstance(e, StreamRefused)]
    assert "codec 'h265' not allowed" in r.reason


def test_bitrate_cap_refuses(plan_of):
    events = run(outer(plan_of(bitrate=50)), gb28181.ps_packets(source("h264"), "h264", ssrc=SSRC))
    [r] = [e for e in events if isinstance(e, StreamRefused)]
    assert "exceeds max_bitrate_kbps 50" in r.reason


def test_other_ssrcs_are_dropped_and_counted(plan_of):
    plan = plan_of()
    src = source("h264")
    good = gb28181.ps_packets(src, "h264", ssrc=SSRC)
    intruder = gb28181.ps_packets(src, "h264", ssrc=0xBAD)
    mixed = [p for pair in zip(good, intruder) for p in pair]
    events = run(outer(plan), mixed)
    assert len(ready(events)) == 50
    assert events[-1].counts["foreign_ssrc_packets"] == len(intruder)
    # a configured SSRC is required from the first packet on
    events = run(outer(plan, ssrc=SSRC), intruder + good)
    assert len(ready(events)) == 50 and events[-1].counts["foreign_ssrc_packets"] == len(intruder)
    assert [e.ssrc for e in events if isinstance(e, StreamStarted)] == [SSRC]


def test_reordered_packets_still_cross_bit_exact(plan_of):
    src = source("h264")
    packets = gb28181.ps_packets(src, "h264", ssrc=SSRC)
    rng = random.Random(3)
    shuffled = list(packets)
    for i in range(4, len(shuffled) - 4, 4):     # swap neighbours (the first packet starts the stream)
        j = i + rng.randrange(1, 4)
        shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
    events = run(outer(plan_of()), shuffled)
    crossed = [n for o in ready(events) for n in o.access_unit.nal_units]
    assert crossed == expected_nals("h264", src)
    assert not [e for e in events if isinstance(e, StreamLoss)]


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_loss_is_reported_and_output_restarts_at_a_keyframe(plan_of, codec):
    src = source(codec, seconds=4)
    packets = gb28181.ps_packets(src, codec, ssrc=SSRC)
    rng = random.Random(5)
    kept = [p for i, p in enumerate(packets) if i < 5 or rng.random() >= 0.03]
    lost = len(packets) - len(kept)
    events = run(outer(plan_of()), kept)
    losses = [e for e in events if isinstance(e, StreamLoss)]
    assert losses and sum(e.count for e in losses) <= lost and losses[-1].total == sum(e.count for e in losses)
    objs = ready(events)
    assert 0 < len(objs) < 100
    # every access unit that crossed is one of the source's, whole, and each run starts at a keyframe
    source_aus = {tuple(strip_nal_units(codec, f.nal_units)[0]) for f in gb28181.access_units(src, codec)}
    assert all(tuple(o.access_unit.nal_units) in source_aus for o in objs)
    assert objs[0].access_unit.keyframe
    assert events[-1].counts["lost_packets"] == sum(e.count for e in losses)
    assert events[-1].counts["dropped_aus"] > 0


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_rfc6184_7798_ingest_and_output(plan_of, codec):
    src = source(codec)
    events = run(outer(plan_of(), payload=codec), gb28181.raw_packets(src, codec, ssrc=SSRC))
    objs = ready(events)
    assert len(objs) == 50
    assert [n for o in objs for n in o.access_unit.nal_units] == expected_nals(codec, src)
    inner = InnerStream(codec, 0.0, payload_type=97, rng=random.Random(2))
    packets = [parse_rtp(p) for o in objs for p in inner.push(o)]
    assert {p.payload_type for p in packets} == {97} and {p.ssrc for p in packets} == {inner.ssrc}
    if codec == "h264":       # depacketize again with the codec's own depacketizer
        dep = H264Depacketizer()
        back = [n for p in packets for ev in dep.push(p) for n in getattr(ev, "nal_units", ())]
        assert back == [n for o in objs for n in o.access_unit.nal_units]


def test_inner_stream_writes_fresh_rtp(plan_of):
    objs = ready(run(outer(plan_of()), gb28181.ps_packets(source("h264"), "h264", ssrc=SSRC)))
    a, b = InnerStream("ps", 0.0), InnerStream("ps", 0.0)
    pa = [parse_rtp(p) for o in objs for p in a.push(o)]
    pb = [parse_rtp(p) for o in objs for p in b.push(o)]
    assert a.ssrc != b.ssrc and pa[0].sequence != pb[0].sequence     # random per output
    seqs = [p.sequence for p in pa]
    assert all((y - x) % 65536 == 1 for x, y in zip(seqs, seqs[1:]))
    assert {p.payload_type for p in pa} == {96} and all(len(p.payload) <= 1400 for p in pa)
    assert sum(p.marker for p in pa) == 50                            # one marker per picture
    ts = sorted({p.timestamp for p in pa})
    assert len(ts) == 50 and all(y - x == 3600 for x, y in zip(ts, ts[1:]))   # 25 fps on a 90 kHz clock
    # the keyframes carry a PSM, the others do not
    first = b"".join(bytes(p.payload) for p in pa if p.timestamp == pa[0].timestamp)
    assert b"\x00\x00\x01\xbc" in first
    with pytest.raises(ValueError):
        InnerStream("h265", 0.0).push(objs[0])                        # an H.265 output cannot carry H.264


def test_audio_crosses_only_when_the_rule_allows_it(plan_of):
    frames = gb28181.access_units(source("h264"), "h264")
    mux = PsMuxer("h264", "g711a")
    payloads = []
    for i, f in enumerate(frames):
        ps = mux.video(f.nal_units, f.pts, f.dts, f.keyframe)
        if i == 0:
            ps = mux.program_stream_map() + ps
        payloads.append(ps + mux.audio(bytes([0xD5]) * 320, f.pts))
    packets = []
    seq = 100
    for f, ps in zip(frames, payloads):
        chunks = [ps[i:i + 1400] for i in range(0, len(ps), 1400)]
        for k, c in enumerate(chunks):
            packets.append((build_rtp(96, seq, f.pts, SSRC, c, marker=k == len(chunks) - 1), 0.0))
            seq += 1
    without = run(outer(plan_of()), packets)
    assert not [o for o in ready(without) if o.HasField("audio")]
    assert without[-1].counts["dropped_audio"] > 0
    with_audio = ready(run(outer(plan_of(audio=True)), packets))
    audio = [o for o in with_audio if o.HasField("audio")]
    assert audio and audio[-1].audio.codec == "g711a" and audio[-1].audio.payload == bytes([0xD5]) * 320
    inner = InnerStream("ps", 0.0)
    out = b"".join(p[12:] for o in with_audio for p in inner.push(o))
    assert b"\x00\x00\x01\xc0" in out


def test_transcode_rules_use_the_transcoder(plan_of):
    calls = []

    class Fake:
        def __init__(self, *args):
            calls.append(args)

        def push(self, au):
            out = type(au)()
            out.CopyFrom(au)
            out.width, out.height = 320, 180
            return [out]

        def flush(self):
            return []

    plan = plan_of(max_width=320, max_height=180, mode="transcode")
    events = run(outer(plan, transcoder_factory=Fake), gb28181.ps_packets(source("h264"), "h264", ssrc=SSRC))
    objs = ready(events)
    assert len(objs) == 50 and all(o.access_unit.width == 320 for o in objs)
    assert calls == [("h264", "h264", 320, 180, 20000, 25.0)]
    # without a transcoder the stream is refused, once, with a reason
    events = run(outer(plan), gb28181.ps_packets(source("h264"), "h264", ssrc=SSRC))
    [r] = [e for e in events if isinstance(e, StreamRefused)]
    assert "transcode" in r.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(st.binary(max_size=300), max_size=30), payload=st.sampled_from(["ps", "h264", "h265"]),
       seqs=st.lists(st.integers(0, 65535), min_size=30, max_size=30))
def test_hostile_payloads_never_raise(plan_of, payloads, payload, seqs):
    plan = _fuzz_plan(plan_of)
    stream = outer(plan, payload=payload)
    for i, (data, seq) in enumerate(zip(payloads, seqs)):
        stream.push_rtp(parse_rtp(build_rtp(96, seq, i * 3600, SSRC, data, marker=i % 3 == 0)), i * 0.01)
        stream.poll(i * 0.01)
    stream.close(10.0)


_PLAN = {}


def _fuzz_plan(plan_of):
    if "p" not in _PLAN:
        _PLAN["p"] = plan_of()
    return _PLAN["p"]


def test_transcode_mode_with_pyav_respects_the_caps(plan_of):
    transcode = pytest.importorskip("ferry.lanes.transcode")
    plan = plan_of(max_width=640, max_height=360, bitrate=500, mode="transcode", codecs="[h264]")
    src = gb28181.make_source(None, "h264", size="1280x720", seconds=2)
    events = run(outer(plan, transcoder_factory=transcode.Transcoder), gb28181.ps_packets(src, "h264", ssrc=SSRC),
                 step=0.04)
    objs = ready(events)
    assert not [e for e in events if isinstance(e, StreamRefused)]
    assert len(objs) >= 45
    assert all(o.access_unit.width <= 640 and o.access_unit.height <= 360 for o in objs)
    source_nals = set(split_annexb(src.read_bytes()))
    assert not source_nals & {n for o in objs for n in o.access_unit.nal_units}   # nothing of the source crossed
    assert objs[0].access_unit.keyframe and objs[0].rule == "video-cameras"


def run_fields(stream: OuterStream, packets, t0=0.0, step=0.001) -> list:
    """As the UDP ingest feeds a stream: header fields and a payload view (`push_fields`)."""
    events = []
    for i, data in enumerate(packets):
        view = memoryview(bytearray(data))            # the ingest's reused buffer: copied or used at once
        p = parse_rtp(data)
        events += stream.push_fields(p.ssrc, p.sequence, p.marker, view[12:], t0 + i * step, view)
        view[:] = bytes(len(view))                    # the buffer is reused for the next datagram
    events += stream.close(t0 + len(packets) * step + 1)
    return events


def _unmark(data: bytes) -> bytes:
    return data[:1] + bytes((data[1] & 0x7F,)) + data[2:]


@pytest.mark.parametrize("marked", [True, False], ids=["markers", "no-markers"])
def test_ingest_fast_path_crosses_the_same_access_units(plan_of, marked):
    """Marking cameras are demuxed a picture at a time, others a packet at a time: same output,
    and the same with neighbours swapped (the reorder buffer in between)."""
    src = source("h264")
    packets = [d for d, _ in gb28181.ps_packets(src, "h264", ssrc=SSRC)]
    if not marked:
        packets = [_unmark(d) for d in packets]
    want = expected_nals("h264", src)
    for order in ("in-order", "swapped"):
        sent = list(packets)
        if order == "swapped":
            for i in range(5, len(sent) - 4, 7):
                sent[i], sent[i + 1] = sent[i + 1], sent[i]
        stream = outer(plan_of())
        events = run_fields(stream, sent)
        objs = ready(events)
        assert [n for o in objs for n in o.access_unit.nal_units] == want, order
        assert not [e for e in events if isinstance(e, StreamLoss)]
        assert stream.front.markers is marked


def test_gathering_is_bounded_when_the_marker_never_comes_again(plan_of):
    """A camera that marked once and then never again: gathered PS is demuxed every VIDEO_GATHER_MAX bytes."""
    src = source("h264")
    packets = [d for d, _ in gb28181.ps_packets(src, "h264", ssrc=SSRC)]
    first_marker = next(i for i, d in enumerate(packets) if d[1] & 0x80)
    packets = packets[:first_marker + 1] + [_unmark(d) for d in packets[first_marker + 1:]]
    stream = outer(plan_of())
    most = 0
    for i, data in enumerate(packets):
        p = parse_rtp(data)
        stream.push_fields(p.ssrc, p.sequence, p.marker, memoryview(data)[12:], i * 0.001, data)
        most = max(most, stream.front.gathered_bytes)
    assert 0 < most < limits.VIDEO_GATHER_MAX
    objs = ready(stream.close(10.0))
    assert objs      # the tail still crosses at the end


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.lists(st.tuples(st.integers(0, 2000), st.booleans(), st.integers(-2, 3)), min_size=1, max_size=40),
       junk=st.lists(st.binary(min_size=1, max_size=200), max_size=5), seed=st.integers(0, 1000))
def test_ingest_fast_path_takes_hostile_ps_without_raising(plan_of, cut, junk, seed):
    """The ingest's own path (push_fields, gathering to the marker): a real PS cut at random
    places, with lies in the marker bits, sequence jumps and junk packets, never raises, and what
    is gathered stays bounded."""
    ps = _fuzz_ps()
    rng = random.Random(seed)
    stream = outer(_fuzz_plan(plan_of))
    pos, seq = 0, 100
    for i, (size, marker, jump) in enumerate(cut):
        data = ps[pos:pos + size] if junk == [] or rng.random() < 0.8 else rng.choice(junk)
        pos += size
        seq = (seq + (jump if jump > 0 else 1)) & 0xFFFF
        packet = build_rtp(96, seq, i * 3600, SSRC, data, marker=marker)
        stream.push_fields(SSRC, seq, marker, memoryview(packet)[12:], i * 0.01, packet)
        assert stream.front.gathered_bytes < limits.VIDEO_GATHER_MAX + 65536
        stream.poll(i * 0.01)
    stream.close(10.0)


def _fuzz_ps() -> bytes:
    if "ps" not in _PLAN:
        _PLAN["ps"] = gb28181.ps_stream(gb28181.ps_packets(source("h264", seconds=1), "h264", ssrc=SSRC))
    return _PLAN["ps"]
