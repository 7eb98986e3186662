"""The inner dispatcher (ferry.lanes.inner): link events in, audit intents and work out.
No sockets, no agent: the plan is a real compiled policy, the video lane a recorder."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ferry import limits
from ferry.crypto import SM2PrivateKey
from ferry.lanes import inner
from ferry.lanes.delivered import Remember
from ferry.lanes.files import WriteFile, make_file_object
from ferry.lanes.inner import InnerDispatch, skew_refusal
from ferry.lanes.work import AuditIntent
from ferry.pb import ferry_pb2
from ferry.reasons import Reason
from ferry.policy import compile_policy, parse_policy, policy_hash
from ferry.wire import LinkReceiver, LinkSender
from ferry.wire import events as ev

POLICY = b"""
policy: t
version: 1
default: deny
sources:
  outer-spool: {kind: spool}
  cams: {kind: devices, match: [{region: "4309"}]}
destinations:
  inner-spool: {kind: spool}
  vms: {kind: vms}
rules:
  - id: office-hours
    lane: files
    from: outer-spool
    to: inner-spool
    when: [{days: [mon], from: "08:00", to: "09:00"}]
    files: {max_size: 1048576, media_types: [text/plain], name_pattern: "[a-z0-9.]+"}
  - id: video
    lane: video
    from: cams
    to: vms
    video: {codecs: [h264], max_width: 1920, max_height: 1080, max_frame_rate: 30, max_bitrate_kbps: 8000}
"""
FILES = {"policy.yaml": POLICY}
PLAN = compile_policy(parse_policy(FILES), policy_hash(FILES))
OTHER_HASH = b"x" * 32
MONDAY_0830 = datetime(2026, 11, 30, 8, 30, tzinfo=timezone.utc).timestamp()
SUNDAY_0830 = MONDAY_0830 - 86400
EPOCH = 3
NOW = 1000.0                      # monotonic


class Video:
    """The video lane as the dispatcher sees it: records what it was handed."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def deliver(self, obj, decision, now, wall):
        self.calls.append(("deliver", obj.object_id, decision.rule, now, wall))
        return ["video-out"]

    def refuse(self, obj, decision, now, wall):
        self.calls.append(("refuse", obj.object_id, decision.rule, decision.reason, decision.code))
        return []


def _dispatch(files_output=True, outer_hash=PLAN.hash):
    d = InnerDispatch(Video(), files_output=files_output)
    d.handle(ev.KeyAccepted(EPOCH, outer_hash, "outer", 0.0, 2e9), PLAN, NOW, MONDAY_0830)
    return d


def _file(oid=5, created=MONDAY_0830, name="a.txt", content=b"hello\n"):
    return make_file_object(object_id=oid, name=name, content=content, source="outer-spool",
                            destination="inner-spool", now=created)


def _received(obj, oid=None):
    return ev.ObjectReceived(obj.object_id if oid is None else oid, obj.SerializeToString(), EPOCH, (10, 11))


def _records(work):
    return [w.fields for w in work if isinstance(w, AuditIntent)]


# --- files --------------------------------------------------------------------------

def test_an_allowed_file_becomes_a_write_and_its_records():
    d = _dispatch()
    [w] = d.handle(_received(_file()), PLAN, NOW, MONDAY_0830)
    assert isinstance(w, WriteFile) and w.name == "a.txt" and w.content == b"hello\n"
    assert list(w.candidates())[:2] == ["a.txt", "a (1).txt"]
    work = d.file_written(w, "a (1).txt", 11)
    assert work[0] == Remember(5, MONDAY_0830 + limits.CLOCK_SKEW, EPOCH, 11)   # journaled before its record
    [rec] = _records(work)
    assert rec["event"] == "object_delivered" and rec["rule"] == "office-hours" and rec["object_id"] == 5
    assert rec["epoch"] == EPOCH and rec["blocks"] == [10, 11] and rec["size"] == 6
    assert rec["detail"] == {"name": "a.txt", "media_type": "text/plain", "written_as": "a (1).txt"}
    [lost] = _records(d.file_lost(w, "disk full"))
    assert lost["event"] == "object_lost" and lost["reason"] == "cannot write output: disk full"
    assert d.counts == {"delivered": 1, "refused": 0, "lost": 1, "replays": 0, "duplicates": 0}


def test_a_delivered_object_again_is_a_replay_refused_and_recorded_once():
    d = _dispatch()
    [w] = d.handle(_received(_file()), PLAN, NOW, MONDAY_0830)
    d.file_written(w, "a.txt", 11)
    [rec] = _records(d.handle(_received(_file()), PLAN, NOW, MONDAY_0830 + 1))
    assert rec["event"] == "object_refused" and rec["code"] == Reason.REPLAYED_OBJECT
    assert rec["rule"] == inner.REPLAY_RULE and "already delivered" in rec["reason"]
    assert d.handle(_received(_file()), PLAN, NOW, MONDAY_0830 + 2) == []      # again: counted only
    assert d.counts["replays"] == 2 and d.counts["refused"] == 1
    # a restarted agent knows it from the journal
    d2 = InnerDispatch(Video(), files_output=True)
    d2.delivered.load([Remember(5, MONDAY_0830 + limits.CLOCK_SKEW, EPOCH, 11)], MONDAY_0830)
    d2.handle(ev.KeyAccepted(EPOCH, PLAN.hash, "outer", 0.0, 2e9), PLAN, NOW, MONDAY_0830)
    [rec] = _records(d2.handle(_received(_file()), PLAN, NOW, MONDAY_0830 + 3))
    assert rec["code"] == Reason.REPLAYED_OBJECT
    # another object still crosses
    [w2] = d2.handle(_received(_file(oid=6)), PLAN, NOW, MONDAY_0830 + 3)
    assert isinstance(w2, WriteFile)


def test_a_resent_copy_of_a_delivered_object_is_a_duplicate_dropped_and_recorded_once():
    d = _dispatch()
    [w] = d.handle(_received(_file()), PLAN, NOW, MONDAY_0830)
    d.file_written(w, "a.txt", 11)
    copy = _file()
    copy.resent = True                        # the restarted outer agent's re-send, same ID
    [rec] = _records(d.handle(_received(copy), PLAN, NOW, MONDAY_0830 + 1))
    assert rec["event"] == "object_duplicate" and rec["verdict"] == "info"
    assert rec["code"] == Reason.DUPLICATE_OBJECT and rec["object_id"] == 5 and rec["detail"] == {"name": "a.txt"}
    assert d.handle(_received(copy), PLAN, NOW, MONDAY_0830 + 2) == []          # again: counted only
    assert d.counts == {"delivered": 1, "refused": 0, "lost": 0, "replays": 0, "duplicates": 2}
    # a re-sent object never delivered (lost on the link before the restart) crosses
    lost_before = _file(oid=6)
    lost_before.resent = True
    [w2] = d.handle(_received(lost_before), PLAN, NOW, MONDAY_0830 + 3)
    assert isinstance(w2, WriteFile) and w2.name == "a.txt"
    # without the flag, a known ID stays a replay
    d.file_written(d.handle(_received(_file(oid=8)), PLAN, NOW, MONDAY_0830 + 3)[0], "b.txt", 11)
    [rec] = _records(d.handle(_received(_file(oid=8)), PLAN, NOW, MONDAY_0830 + 4))
    assert rec["code"] == Reason.REPLAYED_OBJECT


def test_refusals_name_rule_and_reason():
    d = _dispatch()
    cases = []
    bad = _file(oid=1)
    bad.file.sm3 = bytes(32)
    cases.append((_received(bad), "ferry-files-lane", "sm3 does not match content"))
    cases.append((_received(_file(oid=2, content=b"%PDF-1")), "office-hours", "media type application/pdf"))
    cases.append((_received(_file(oid=3), oid=4), "ferry-canonical", "differs from its link id 4"))
    other = _file(oid=6)
    other.lane = "signaling"
    cases.append((_received(other), "default-deny", ""))      # the policy first: no rule for that lane
    for e, rule, reason in cases:
        [rec] = _records(d.handle(e, PLAN, NOW, MONDAY_0830))
        assert rec["event"] == "object_refused" and rec["rule"] == rule and reason in rec["reason"], rec
    [rec] = _records(d.handle(ev.ObjectReceived(9, b"\xff\xff", EPOCH, (1,)), PLAN, NOW, MONDAY_0830))
    assert rec["rule"] == "ferry-canonical" and rec["reason"].startswith("malformed canonical object")
    assert d.counts["refused"] == 5


def test_no_files_output_is_a_refusal():
    d = _dispatch(files_output=False)
    [rec] = _records(d.handle(_received(_file()), PLAN, NOW, MONDAY_0830))
    assert rec["reason"] == "no files output configured on the inner agent"


# --- the inner side bounds time -------------------------------------------------------

def test_a_forged_created_cannot_satisfy_a_time_window():
    """The inner clock says Sunday; the outer stamped Monday 08:30, inside the window."""
    d = _dispatch()
    [rec] = _records(d.handle(_received(_file(created=MONDAY_0830)), PLAN, NOW, SUNDAY_0830))
    assert rec["event"] == "object_refused" and rec["rule"] == "ferry-canonical"
    assert "2026-11-30T08:30:00+00:00" in rec["reason"] and "2026-11-29T08:30:00+00:00" in rec["reason"]
    assert "allowed skew 300 s" in rec["reason"]


@pytest.mark.parametrize("offset, allowed", [(0, True), (-limits.CLOCK_SKEW, True), (limits.CLOCK_SKEW, True),
                                             (-limits.CLOCK_SKEW - 1, False), (limits.CLOCK_SKEW + 1, False),
                                             (-3600, False), (3600, False)])
def test_skew_both_ways(offset, allowed):
    d = _dispatch()
    out = d.handle(_received(_file(created=MONDAY_0830 + offset)), PLAN, NOW, MONDAY_0830)
    if allowed:
        assert isinstance(out[0], WriteFile)
    else:
        [rec] = _records(out)
        assert rec["rule"] == "ferry-canonical" and "from the inner clock" in rec["reason"]


def test_within_the_skew_the_decision_still_reads_created():
    """Created 08:59:50 with the inner clock at 09:00:10 is allowed (on time, in the window);
    created 09:00:10 with the inner clock at 08:59:50 is on time but outside: the rule refuses."""
    d = _dispatch()
    [w] = d.handle(_received(_file(created=MONDAY_0830 + 1790)), PLAN, NOW, MONDAY_0830 + 1810)
    assert isinstance(w, WriteFile)                      # created is inside the window: allowed
    [rec] = _records(d.handle(_received(_file(oid=8, created=MONDAY_0830 + 1810)), PLAN, NOW,
                              MONDAY_0830 + 1790))
    assert rec["rule"] == "office-hours" and "time window" in rec["reason"]


def test_skew_refusal_of_non_numbers():
    assert skew_refusal(float("nan"), MONDAY_0830) is not None
    assert skew_refusal(float("inf"), MONDAY_0830) is not None
    assert skew_refusal(-1e300, MONDAY_0830) is not None
    assert skew_refusal(MONDAY_0830 + 1, MONDAY_0830) is None


def test_a_forged_created_over_the_real_link():
    """The outer side's wire and the inner side's, in memory: the sealed object arrives intact
    and is refused for its created, before the policy sees it."""
    outer, inner_key = SM2PrivateKey.generate(), SM2PrivateKey.generate()
    sender = LinkSender(outer_key=outer, inner_public=inner_key.public_key(), policy_hash=PLAN.hash,
                        name="outer", now=NOW, wall=SUNDAY_0830)
    receiver = LinkReceiver(inner_key=inner_key, outer_public=outer.public_key(), now=NOW, strict=True)
    forged, honest = _file(oid=1, created=MONDAY_0830), _file(oid=2, created=SUNDAY_0830)
    for o in (forged, honest):
        sender.submit(o.object_id, o.SerializeToString(), NOW, SUNDAY_0830)
    sender.flush(NOW, SUNDAY_0830)
    for dgram in sender.datagrams_to_send(NOW):
        receiver.receive_datagram(dgram, NOW, SUNDAY_0830)
    d = InnerDispatch(Video(), files_output=True)
    work = []
    while (e := receiver.next_event()) is not None:
        work += d.handle(e, PLAN, NOW, SUNDAY_0830)
    refused = [r for r in _records(work) if r["event"] == "object_refused"]
    assert [(r["object_id"], r["rule"]) for r in refused] == [(1, "ferry-canonical"), (2, "office-hours")]
    assert "time window" in refused[1]["reason"]          # the honest Sunday object: the window decides


# --- policy hash agreement --------------------------------------------------------------

def test_a_mismatched_hash_refuses_and_alarms_once():
    d = _dispatch(outer_hash=OTHER_HASH)
    alarms = [r for r in _records(d.handle(ev.KeyAccepted(EPOCH, OTHER_HASH, "outer", 0, 1), PLAN, NOW, 0))
              if r["event"] == "policy_mismatch"]
    assert alarms == []                                  # already raised by the first announcement
    recs = _records(d.handle(_received(_file()), PLAN, NOW, MONDAY_0830))
    assert [(r["event"], r.get("rule")) for r in recs] == [("object_refused", "policy-hash")]
    d2 = InnerDispatch(Video(), files_output=True)
    recs = _records(d2.handle(_received(_file()), PLAN, NOW, MONDAY_0830))   # epoch never announced
    assert [r["event"] for r in recs] == ["policy_mismatch", "object_refused"]
    assert recs[0]["detail"] == {"outer_policy_hash": None, "inner_policy_hash": PLAN.hash.hex()}


# --- video goes to the video lane -----------------------------------------------------------

def _au(oid=7, created=MONDAY_0830, region="4309"):
    obj = ferry_pb2.CanonicalObject(object_id=oid, lane="video", destination="vms", created=created)
    obj.source.device_id = f"{region}0000001320000001"
    obj.access_unit.stream_id = "s1"
    obj.access_unit.codec = "h264"
    obj.access_unit.width, obj.access_unit.height, obj.access_unit.frame_rate = 1280, 720, 25
    obj.access_unit.nal_units.append(b"\x65\x88")
    return obj


def test_video_is_handed_to_the_video_lane():
    d = _dispatch()
    assert d.handle(_received(_au()), PLAN, NOW, MONDAY_0830) == ["video-out"]
    assert d.handle(_received(_au(8, region="1100")), PLAN, NOW, MONDAY_0830) == []
    assert d.handle(_received(_au(9, created=MONDAY_0830 - 3600)), PLAN, NOW, MONDAY_0830) == []
    calls = d.video.calls
    assert calls[0] == ("deliver", 7, "video", NOW, MONDAY_0830)
    assert calls[1][:2] == ("refuse", 8) and calls[1][4] == Reason.DEFAULT_DENY
    assert calls[2][:3] == ("refuse", 9, "ferry-canonical") and calls[2][4] == Reason.CLOCK_SKEW
    assert d.counts["refused"] == 2


# --- other link events -------------------------------------------------------------------------

@pytest.mark.parametrize("event, name, verdict", [
    (ev.BlockLost(1, 2, Reason.FEC), "block_lost", "lost"),
    (ev.ObjectLost(5, 1, (2, 3), Reason.BLOCK_LOST), "object_lost", "lost"),
    (ev.AnnouncementRefused(Reason.BAD_SIGNATURE, None), "announcement_refused", "refused"),
    (ev.BlockRefused(1, 2, Reason.REPLAY), "block_refused", "refused"),
    (ev.DatagramsDropped(Reason.BAD_LENGTH, 4), "datagrams_dropped", "refused"),
    (ev.LinkDown(1.0), "link_down", "alarm"),
    (ev.LinkUp(), "link_up", "info"),
])
def test_link_events_become_records(event, name, verdict):
    [rec] = _records(InnerDispatch(Video(), files_output=True).handle(event, PLAN, NOW, 0.0))
    assert rec["event"] == name and rec["verdict"] == verdict
    assert None not in rec.values()
    if verdict in ("refused", "lost"):
        assert rec["code"] == event.reason and rec["code"] in set(Reason)


def test_a_run_of_lost_blocks_is_one_record_with_its_count():
    [rec] = _records(InnerDispatch(Video(), files_output=True).handle(
        ev.BlockLost(1, 100, Reason.MISSING, 1 << 40), PLAN, NOW, 0.0))
    assert rec["blocks"] == [100] and rec["detail"] == {"count": 1 << 40} and rec["code"] == Reason.MISSING
    [one] = _records(InnerDispatch(Video(), files_output=True).handle(
        ev.BlockLost(1, 7, Reason.TIMEOUT), PLAN, NOW, 0.0))
    assert "detail" not in one


def test_a_lost_object_is_one_record_with_its_block_range():
    """Issue 10 item 4: ObjectLost carries (first, last); the record names it as block_lost does:
    blocks [first] and detail.count."""
    [rec] = _records(InnerDispatch(Video(), files_output=True).handle(
        ev.ObjectLost(5, 1, (200, 450), Reason.BLOCK_LOST), PLAN, NOW, 0.0))
    assert (rec["object_id"], rec["blocks"], rec["detail"]) == (5, [200], {"count": 251})
    [one] = _records(InnerDispatch(Video(), files_output=True).handle(
        ev.ObjectLost(6, 1, (7, 7), Reason.TOO_MANY_PENDING), PLAN, NOW, 0.0))
    assert one["blocks"] == [7] and "detail" not in one


def test_an_internal_error_alarm_is_recorded():
    [rec] = _records(InnerDispatch(Video(), files_output=True).handle(ev.InternalError("KeyError: 3"), PLAN, NOW, 0.0))
    assert (rec["event"], rec["verdict"]) == ("internal_error", "alarm")
    assert "KeyError: 3" in rec["reason"]
    assert inner.InnerDispatch(Video(), files_output=True).handle(object(), PLAN, NOW, 0.0) == []
