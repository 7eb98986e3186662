"""OuterVideoLane without a socket: datagrams, connections and timers in, work items out."""
from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest

from ferry import limits
from ferry.codecs.rfc4571 import frame
from ferry.lanes.video import INGEST_RULE, OuterVideoLane, TranscodeEnd, TranscodeRequest
from ferry.lanes.work import AuditIntent, ObjectIds, SealObject
from ferry.pb import ferry_pb2
from .test_stream import CAMERA, SSRC

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")

CAM = ("192.0.2.10", 5000)
RUN = 0x5EED


@dataclass(frozen=True)
class Entry:
    name: str = "cam"
    transport: str = "udp"
    device_id: str = CAMERA
    ssrc: int = 0
    source_address: str = ""
    payload: str = "ps"
    destination: str = "police-vms"


def lane_of(plan, *entries: Entry, **kw) -> OuterVideoLane:
    return OuterVideoLane(list(entries) or [Entry()], lambda: plan, ObjectIds(RUN), **kw)


def feed(lane: OuterVideoLane, packets, t0: float = 100.0, step: float = 0.001, addr=CAM, entry="cam"):
    """Datagrams as the agent hands them over: views of one reused receive buffer."""
    buf = bytearray(2048)
    view = memoryview(buf)
    work = []
    for i, data in enumerate(packets):
        buf[:len(data)] = data
        work += lane.datagram(entry, view[:len(data)], addr, t0 + i * step, 1.7e9 + i * step)
    return work


def timers(lane: OuterVideoLane, until: float) -> list:
    """What the agent's timer does: handle_timer at each next_timer() up to `until`."""
    work = []
    while (t := lane.next_timer()) is not None and t <= until:
        work += lane.handle_timer(t, 0.0)
    return work


def records(work, event=None) -> list[dict]:
    return [w.fields for w in work if isinstance(w, AuditIntent) and (event is None or w.fields["event"] == event)]


def sealed(work) -> list[ferry_pb2.CanonicalObject]:
    return [w.obj for w in work if isinstance(w, SealObject)]


def test_a_udp_stream_becomes_objects_to_seal_and_ends_on_its_idle_timer(plan_of, packets):
    lane = lane_of(plan_of())
    work = feed(lane, packets)
    [started] = records(work)
    assert started["event"] == "stream_started" and started["flow"] == f"cam-{RUN:08x}-1"
    assert started["detail"]["ssrc"] == SSRC and started["source"] == {"device_id": CAMERA, "address": CAM[0]}
    objs = sealed(work)
    assert len(objs) == 49 and objs[0].access_unit.keyframe   # the last picture ends with the stream:
    # a marker is not the end of a picture (issue 12 item 1), the next picture or the end is
    assert all(o.rule == "video-cameras" and o.created >= 1.7e9 for o in objs)      # created: the wall clock
    assert all(w.sent is None for w in work if isinstance(w, SealObject))            # accounted per stream
    last = 100.0 + (len(packets) - 1) * 0.001
    t = lane.next_timer()
    assert t is not None and t <= last + limits.VIDEO_STREAM_IDLE
    assert lane.handle_timer(last + 1.0, 0.0) == []                                   # not idle yet
    end = lane.handle_timer(last + limits.VIDEO_STREAM_IDLE, 1.7e9 + 10)
    objs += sealed(end)
    assert [o.object_id for o in objs] == [(RUN << 32) | n for n in range(1, 51)]   # from the ObjectIds given
    [ended] = records(end)
    assert ended["event"] == "stream_ended" and ended["rule"] == "video-cameras"
    assert ended["detail"]["access_units"] == 50 and ended["detail"]["dropped_no_audit"] == 0
    assert ended["size"] == sum(len(n) for o in objs for n in o.access_unit.nal_units)
    assert not lane.streams and lane.next_timer() is None
    assert lane.stats == {"video_streams": 1, "video_access_units": 50, "video_refused_packets": 0,
                          "video_dropped_no_audit": 0, "video_refused_connections": 0}
    again = feed(lane, packets[:1], t0=200.0)                                         # a new stream, numbered on
    assert records(again, "stream_started")[0]["flow"] == f"cam-{RUN:08x}-2"


def test_the_fast_path_and_the_parsing_path_give_the_same_objects(plan_of, packets):
    lane = lane_of(plan_of())
    fast = sealed(feed(lane, packets))
    slow_lane = lane_of(plan_of())
    slow = []
    for i, data in enumerate(packets):   # bytes with a padding bit set never take the fast path
        padded = bytes([data[0] | 0x20]) + data[1:] + b"\x00\x02"   # 2 bytes of padding
        slow += sealed(slow_lane.datagram("cam", padded, CAM, 100.0 + i * 0.001, 1.7e9))
    assert [o.access_unit.nal_units for o in fast] == [o.access_unit.nal_units for o in slow]


def test_a_foreign_source_address_is_refused_once_and_counted(plan_of, packets):
    lane = lane_of(plan_of(), Entry(source_address=CAM[0]))
    work = feed(lane, packets[:3], addr=("192.0.2.99", 5000))
    [refused] = records(work)
    assert refused["event"] == "stream_refused" and refused["rule"] == INGEST_RULE
    assert "192.0.2.99" in refused["reason"] and not lane.streams
    assert lane.stats["video_refused_packets"] == 3
    assert len(sealed(feed(lane, packets))) == 49                    # the camera itself still crosses
    # (its last picture is complete only when the next starts or the stream ends: issue 12 item 1)
    other = feed(lane, packets[:2], addr=("192.0.2.10", 6000), t0=101.0)
    assert other == []                                                # same address, other port: same stream


def test_while_the_trail_is_down_nothing_is_sealed_and_the_drops_are_counted(plan_of, packets):
    lane = lane_of(plan_of())
    lane.audit_available = False
    work = feed(lane, packets)
    assert sealed(work) == []
    [ended] = records(lane.close(200.0, 0.0), "stream_ended")
    assert ended["detail"]["dropped_no_audit"] == 50 and lane.stats["video_dropped_no_audit"] == 50


def test_a_gap_arms_the_reorder_timer_and_loss_records_are_throttled(plan_of, packets):
    lane = lane_of(plan_of())
    work = feed(lane, packets[:50])
    idle = lane.next_timer()
    work += feed(lane, packets[51:60], t0=100.2)                       # packet 50 lost: the rest waits
    t = lane.next_timer()
    assert t is not None and t < idle and t <= 100.2 + limits.RTP_REORDER_DELAY + 0.01
    work += lane.handle_timer(t, 0.0)
    [loss] = records(work, "stream_loss")
    assert loss["detail"] == {"lost_packets": 1} and loss["verdict"] == "lost"
    work = feed(lane, packets[61:110], t0=t + 0.01)                     # a second gap, soon after
    work += timers(lane, t + 1)
    assert records(work, "stream_loss") == []                           # at most one per interval
    later = t + limits.VIDEO_LOSS_AUDIT_INTERVAL + 1
    work = feed(lane, packets[111:], t0=later, step=0.0001)
    work += timers(lane, later + 1)
    assert [r["detail"] for r in records(work, "stream_loss")] == [{"lost_packets": 3}]


def test_a_tcp_connection_is_one_stream_and_garbage_is_skipped(plan_of, packets):
    lane = lane_of(plan_of(), Entry(transport="tcp-listen"))
    cid, work = lane.tcp_opened("cam", CAM[0], CAM[1], 100.0, 1.7e9)
    assert cid == f"cam-{RUN:08x}-c1" and work == []
    data = b"".join(frame(p) for p in packets[:50]) + b"\xff" * 7 + b"".join(frame(p) for p in packets[50:])
    for i in range(0, len(data), 3000):
        work += lane.tcp_data(cid, data[i:i + 3000], 100.0 + i * 1e-6, 1.7e9)
    assert lane.is_open(cid) and lane.next_timer() is None            # the agent times the connection
    [started] = records(work, "stream_started")
    assert started["flow"] == f"cam-{RUN:08x}-1"
    work += lane.tcp_closed(cid, 101.0, 1.7e9)
    assert len(sealed(work)) == 50 and not lane.is_open(cid)
    [ended] = records(work, "stream_ended")
    assert ended["detail"]["skipped_bytes"] >= 7
    assert lane.tcp_closed(cid, 102.0, 0.0) == ()


def test_the_stream_table_is_bounded(plan_of, packets, monkeypatch):
    monkeypatch.setattr(limits, "VIDEO_STREAMS_MAX", 1)
    lane = lane_of(plan_of(), Entry(transport="tcp-listen"))
    first, _ = lane.tcp_opened("cam", CAM[0], 1, 100.0, 0.0)
    second, _ = lane.tcp_opened("cam", CAM[0], 2, 100.0, 0.0)
    assert first and second                       # connections are not streams
    two = frame(packets[0]) + frame(packets[1])       # the deframer syncs on a frame and the next
    lane.tcp_data(first, two, 100.1, 0.0)
    work = lane.tcp_data(second, two, 100.1, 0.0)
    assert not lane.is_open(second) and lane.is_open(first)
    [refused] = records(work)
    assert refused["rule"] == INGEST_RULE and refused["reason"] == "more than 1 video streams"
    assert lane.tcp_closed(second, 100.2, 0.0) == ()          # refused once, not again as "no RTP"


def test_idle_connections_are_not_streams_and_are_refused_aggregated(plan_of, packets, monkeypatch):
    """Issue 12 item 3: connections that send nothing take no stream, are bounded per source
    address and per entry, time out, and are recorded at most once per interval (with a count)."""
    monkeypatch.setattr(limits, "VIDEO_STREAMS_MAX", 4)
    lane = lane_of(plan_of(), Entry(transport="tcp-listen"))
    work: list = []
    opened = []
    for i in range(300):
        cid, w = lane.tcp_opened("cam", "192.0.2.66", 10_000 + i, 100.0 + i * 1e-3, 0.0)
        work += w
        if cid:
            opened.append(cid)
    assert len(opened) == limits.VIDEO_TCP_PENDING_PER_ADDRESS and not lane.streams
    [first] = records(work, "stream_refused")                  # one record at once, the rest counted
    assert first["code"] == "too_many_connections" and first["detail"]["connections"] == 1
    # other addresses: up to the entry's limit
    others = [lane.tcp_opened("cam", f"198.51.100.{i}", 1, 100.5, 0.0)[0] for i in range(1, 100)]
    assert sum(c is not None for c in others) == limits.VIDEO_TCP_PENDING_PER_ENTRY - len(opened)
    # silence: each pending connection expires VIDEO_TCP_FIRST_BYTE after it opened
    assert lane.tcp_deadline(opened[0]) == 100.0 + limits.VIDEO_TCP_FIRST_BYTE
    assert not lane.tcp_expired(opened[0], 104.0) and lane.tcp_expired(opened[0], 105.0)
    closing = []
    for cid in opened:
        closing += lane.tcp_closed(cid, 106.0, 0.0)
    [timed_out] = records(closing)
    assert timed_out["code"] == "no_rtp" and "silent for 5 s" in timed_out["reason"]
    # a camera from the same address now gets in, and a valid packet makes it a stream
    cam, _ = lane.tcp_opened("cam", "192.0.2.66", 2, 107.0, 0.0)
    assert cam is not None and lane.tcp_deadline(cam) == 107.0 + limits.VIDEO_TCP_FIRST_BYTE
    lane.tcp_data(cam, b"\x00", 107.5, 0.0)                     # a byte, no packet yet
    assert lane.tcp_deadline(cam) == 107.0 + limits.VIDEO_TCP_FIRST_PACKET
    started = lane.tcp_data(cam, b"".join(frame(p) for p in packets[:3]), 107.6, 0.0)
    assert records(started, "stream_started") and len(lane.streams) == 1
    assert lane.tcp_deadline(cam) == 107.6 + limits.VIDEO_TCP_IDLE
    # the counted refusals come out on the timer, summed up
    later = timers(lane, 200.0)
    summed = records(later, "stream_refused")
    assert {(r["code"], r["source"]["address"]) for r in summed} >= {("too_many_connections", "192.0.2.66")}
    everything = records(work + closing + later, "stream_refused")
    assert sum(r["detail"]["connections"] for r in everything if r["source"]["address"] == "192.0.2.66") == 300
    assert not [r for r in records(work + closing + later) if r["event"] in ("stream_started", "stream_ended")
                and r["source"]["address"] == "192.0.2.66" and r["flow"] != f"cam-{RUN:08x}-1"]


def test_pending_refusals_are_summed_up_when_the_lane_closes(plan_of):
    lane = lane_of(plan_of(), Entry(transport="tcp-listen"))
    for i in range(20):
        lane.tcp_opened("cam", "192.0.2.66", i, 100.0, 0.0)
    work = lane.close(101.0, 0.0)
    [summed] = records(work, "stream_refused")
    assert summed["detail"] == {"connections": 20 - limits.VIDEO_TCP_PENDING_PER_ADDRESS - 1, "total": 20 - 8,
                                "transport": "tcp-listen"}


def test_transcode_mode_asks_the_agent_and_decides_the_answers(plan_of, packets):
    lane = lane_of(plan_of(max_width=320, max_height=180, mode="transcode"), offload_transcode=True)
    work = feed(lane, packets)
    requests = [w for w in work if isinstance(w, TranscodeRequest)]
    assert len(requests) == limits.VIDEO_TRANSCODE_QUEUE and sealed(work) == []    # the rest waits a keyframe
    sid = requests[0].stream_id
    small = ferry_pb2.AccessUnit(codec="h264", keyframe=True, width=320, height=180, frame_rate=25.0,
                                 nal_units=list(requests[0].access_unit.nal_units))
    [obj] = sealed(lane.transcoded(sid, [small], 101.0, 1.7e9))
    assert obj.access_unit.stream_id == sid and obj.object_id == (RUN << 32) | 1
    end = lane.close(102.0, 0.0)
    assert [type(w) for w in end] == [TranscodeEnd]
    assert lane.transcode_skip(sid, 102.0, 0.0) is None                 # not refused: run what is queued
    done = lane.transcode_abandon(sid, 103.0, 0.0)                      # the agent stops without waiting
    [ended] = records(done, "stream_ended")
    assert ended["detail"]["dropped_aus"] >= limits.VIDEO_TRANSCODE_QUEUE - 1 and not lane.streams


def test_without_an_offload_transcode_mode_refuses_the_stream(plan_of, packets):
    lane = lane_of(plan_of(mode="transcode"))
    work = feed(lane, packets)
    [refused] = records(work, "stream_refused")
    assert refused["reason"] == "transcode mode is not available on this agent" and sealed(work) == []
