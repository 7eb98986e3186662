"""InnerVideoLane without a socket: decided objects in, outputs and records out."""
from __future__ import annotations

from dataclasses import dataclass

from ferry.policy.plan import Decision
from ferry.reasons import Reason
from ferry import limits
from ferry.codecs.mpeg_ps import PsDemuxer, VideoPes
from ferry.codecs.nal import split_annexb
from ferry.lanes.video import BUILTIN_RULE, AppendBytes, Emit, EndOutput, InnerVideoLane, SendPackets
from ferry.lanes.work import AuditIntent
from ferry.pb import ferry_pb2

# a 16x16 H.264 picture's parameter sets and an IDR slice (enough for the muxers: they do not decode)
SPS = bytes.fromhex("6742c00ada0f0b4d4040405000003e90000bb800f1409940")
PPS = bytes.fromhex("68ce3c80")
IDR = bytes.fromhex("65888400") + bytes(range(1, 41))
SLICE = bytes.fromhex("419a0000") + b"\x11" * 20


@dataclass(frozen=True)
class Output:
    destination: str = "police-vms"
    form: str = "ps"
    transport: str = "udp"
    address: str = "192.0.2.50:9000"
    path: str = ""
    payload_type: int = 96


def au(n: int, stream="cam-1", codec="h264", dest="police-vms") -> ferry_pb2.CanonicalObject:
    obj = ferry_pb2.CanonicalObject(lane="video", destination=dest, object_id=100 + n, created=1.7e9)
    obj.source.device_id, obj.source.address = "43090000001320000001", "192.0.2.10"
    key = n % 25 == 0
    obj.access_unit.CopyFrom(ferry_pb2.AccessUnit(
        stream_id=stream, codec=codec, keyframe=key, pts=n * 3600, dts=n * 3600, width=16, height=16,
        frame_rate=25.0, nal_units=[SPS, PPS, IDR] if key else [SLICE]))
    return obj


def records(work, event=None) -> list[dict]:
    return [w.fields for w in work if isinstance(w, AuditIntent) and (event is None or w.fields["event"] == event)]


def emits(work) -> list[Emit]:
    return [w for w in work if isinstance(w, Emit)]


def test_objects_become_fresh_output_per_output_and_the_stream_ends_when_idle():
    lane = InnerVideoLane([Output(), Output(form="h264", transport="file", address="", path="/x/{stream}.h264")])
    work = []
    for n in range(50):
        w = lane.deliver(au(n), "video-cameras", 10.0 + n * 0.04, 1.7e9)
        for e in emits(w):
            lane.emitted(e, True, 1)
        work += w
    [started] = records(work)
    assert started["event"] == "stream_started" and started["flow"] == "cam-1"
    assert started["detail"]["outputs"] == ["udp:192.0.2.50:9000 (ps)", "file:/x/{stream}.h264 (h264)"]
    es = emits(work)
    assert len(es) == 50 and all(e.counted and e.obj.HasField("access_unit") for e in es)
    sends = [e.outputs[0] for e in es]
    files = [e.outputs[1] for e in es]
    assert all(isinstance(s, SendPackets) and s.output == 0 for s in sends)
    assert [s.keyframe for s in sends] == [n % 25 == 0 for n in range(50)]
    assert all(isinstance(f, AppendBytes) and f.output == 1 and f.stream_id == "cam-1" for f in files)
    # the PS output carries the same NAL units, in fresh RTP (one SSRC, contiguous sequence numbers)
    packets = [p for s in sends for p in s.packets]
    assert len({p[8:12] for p in packets}) == 1
    seqs = [int.from_bytes(p[2:4], "big") for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))
    demux = PsDemuxer()
    es_bytes = b"".join(ev.data for ev in demux.feed(b"".join(p[12:] for p in packets)) + demux.flush()
                        if isinstance(ev, VideoPes))
    assert split_annexb(es_bytes) == [n for i in range(50) for n in au(i).access_unit.nal_units]
    assert split_annexb(b"".join(f.data for f in files)) == split_annexb(es_bytes)
    last = 10.0 + 49 * 0.04
    assert lane.next_timer() is not None and lane.next_timer() <= last + limits.VIDEO_INNER_IDLE
    assert lane.handle_timer(last + 1, 0.0) == []
    end = lane.handle_timer(last + limits.VIDEO_INNER_IDLE, 0.0)
    assert [type(w) for w in end] == [EndOutput, AuditIntent] and end[0] == EndOutput(1, "cam-1")
    [ended] = records(end)
    assert ended["detail"]["access_units"] == 50 and ended["detail"]["sends"] == 50
    assert ended["rule"] == "video-cameras" and ended["size"] == sum(
        len(n) for i in range(50) for n in au(i).access_unit.nal_units)
    assert not lane.flows and lane.next_timer() is None
    assert lane.stats == {"video_streams": 1, "video_delivered": 50, "video_refused": 0, "video_dropped": 0}


def test_what_no_output_took_is_counted_as_dropped():
    lane = InnerVideoLane([Output()])
    [e] = emits(lane.deliver(au(0), "r", 1.0, 0.0))
    lane.emitted(e, False, 0)
    [ended] = records(lane.close(2.0, 0.0), "stream_ended")
    assert ended["detail"]["dropped"] == 1 and ended["detail"]["access_units"] == 0
    assert ended["reason"].startswith("agent stopping")


def test_no_audit_no_transfer():
    lane = InnerVideoLane([Output()])
    lane.audit_available = False
    work = lane.deliver(au(0), "r", 1.0, 0.0)
    assert emits(work) == [] and lane.stats["video_dropped"] == 1


def test_the_first_refusal_of_a_stream_is_recorded_once():
    lane = InnerVideoLane([Output()])
    mismatch = Decision(False, "policy-hash", "outer and inner agents run different policies", Reason.POLICY_MISMATCH)
    work = lane.refuse(au(0), mismatch, 1.0, 0.0)
    work += lane.refuse(au(1), Decision(False, "policy-hash", "again", Reason.POLICY_MISMATCH), 1.1, 0.0)
    [refused] = records(work, "stream_refused")
    assert refused["rule"] == "policy-hash" and refused["object_id"] == 100
    assert refused["code"] == Reason.POLICY_MISMATCH
    assert refused["detail"] == {"codec": "h264", "width": 16, "height": 16}
    [ended] = records(lane.close(2.0, 0.0), "stream_ended")
    assert ended["detail"]["refused"] == 2


def test_an_object_without_an_output_or_one_an_output_cannot_carry_is_refused():
    lane = InnerVideoLane([Output(), Output(form="h265")])
    work = lane.deliver(au(0, dest="elsewhere"), "r", 1.0, 0.0)
    [refused] = records(work, "stream_refused")
    assert refused["rule"] == BUILTIN_RULE and "no video output" in refused["reason"]
    assert refused["code"] == Reason.NO_OUTPUT
    work = lane.deliver(au(0, stream="cam-2"), "r", 1.0, 0.0)
    [e] = emits(work)                      # the PS output was served before the H.265 one refused
    assert not e.counted and [o.output for o in e.outputs] == [0]
    [refused] = records(work, "stream_refused")
    assert refused["reason"] == "a h265 output cannot carry h264" and refused["code"] == Reason.STREAM_CHECK


def test_the_oldest_stream_makes_room(monkeypatch):
    monkeypatch.setattr(limits, "VIDEO_STREAMS_MAX", 1)
    lane = InnerVideoLane([Output()])
    lane.deliver(au(0, stream="a"), "r", 1.0, 0.0)
    work = lane.deliver(au(0, stream="b"), "r", 2.0, 0.0)
    ended = records(work, "stream_ended")
    assert [r["flow"] for r in ended] == ["a"] and ended[0]["reason"].startswith("too many streams")
    assert list(lane.flows) == ["b"]


def test_each_stream_gets_its_own_ssrc():
    lane = InnerVideoLane([Output()])
    a = emits(lane.deliver(au(0, stream="a"), "r", 1.0, 0.0))[0].outputs[0]
    b = emits(lane.deliver(au(0, stream="b"), "r", 1.0, 0.0))[0].outputs[0]
    assert isinstance(a, SendPackets) and isinstance(b, SendPackets)
    assert a.packets[0][8:12] != b.packets[0][8:12]
