"""The reverse lane's pure core: closed schema, policy, device, rates per operator and per device,
on both sides; the outer side refuses what a compromised inner host forges."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry import limits
from ferry.lanes.reverse import (REQUESTS, InnerReverseLane, OuterReverseLane, ReverseAction, ReverseFloor,
                                 ReverseRates, check_request, decode_floor, encode_floor, ptz_cmd_problem,
                                 restart_floor)
from ferry.lanes.work import AuditIntent, ObjectIds, SealObject
from ferry.pb import ferry_pb2
from ferry.policy import load_plan
from ferry.policy.plan import RateSpec
from ferry.wire import events as ev
from reverse import CAMERA, OTHER_CAMERA, ptz_cmd, reverse_policy

WALL = 1_800_000_000.0
SECOND_CAMERA = "43090000001320000002"      # named by demo-cameras (region 4309, type 132)


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    base = tmp_path_factory.mktemp("policies")
    return {
        "plain": load_plan(reverse_policy(base / "plain")),
        "rated": load_plan(reverse_policy(base / "rated", rate=(0.5, 3))),
        "ptz": load_plan(reverse_policy(base / "ptz", requests="[start_stream, ptz]")),
        "none": load_plan(reverse_policy(base / "none", rules=False)),
    }


def inner(destination: str = "outer-platform") -> InnerReverseLane:
    return InnerReverseLane(ObjectIds(1234), destination)


def ask(lane, plan, request="start_stream", device=CAMERA, params=None, operator="alice", now=0.0,
        address="127.0.0.1"):
    return lane.ask(request, device, params or {}, operator, plan, now, WALL, address=address)


def verdict(work) -> tuple[str, str | None]:
    rec = next(w for w in work if isinstance(w, AuditIntent)).fields
    return rec["event"], rec.get("code")


# --- the closed schema -----------------------------------------------------------------------

@pytest.mark.parametrize("request_, params, ok", [
    ("start_stream", {}, True),
    ("start_stream", {"transport": "udp"}, True),
    ("start_stream", {"transport": "tcp"}, True),
    ("start_stream", {"transport": "TCP"}, False),
    ("start_stream", {"transport": "udp", "ssrc": "1"}, False),
    ("start_stream", {"url": "rtsp://x"}, False),
    ("stop_stream", {"stream": "s-1.2:3@x"}, True),
    ("stop_stream", {}, False),
    ("stop_stream", {"stream": "a b"}, False),
    ("stop_stream", {"stream": "x" * 65}, False),
    ("ptz", {"cmd": ptz_cmd(0x01, h=10)}, True),
    ("ptz", {"cmd": ptz_cmd(0x10, z=3)}, True),
    ("ptz", {"cmd": ptz_cmd(0x81)}, False),               # a preset instruction: not PTZ
    ("ptz", {"cmd": ptz_cmd(0x03)}, False),               # left and right at once
    ("ptz", {"direction": "left", "speed": "200"}, True),
    ("ptz", {"direction": "left"}, True),
    ("ptz", {"direction": "left", "speed": "256"}, False),
    ("ptz", {"direction": "left", "speed": "0"}, False),
    ("ptz", {"direction": "sideways"}, False),
    ("ptz", {"speed": "3"}, False),
    ("ptz", {}, False),
    ("catalog_query", {}, True),
    ("catalog_query", {"page": "2"}, False),
    ("reboot", {}, False),
    ("Start_stream", {}, False),
])
def test_schema(request_, params, ok):
    assert (check_request(request_, CAMERA, params, "alice") is None) is ok


@pytest.mark.parametrize("device, operator", [
    ("4309000000132000000", "alice"), ("430900000013200000011", "alice"), ("4309000000132000000x", "alice"),
    ("４３０９００００００１３２００００００１", "alice"), (CAMERA, ""), (CAMERA, "a b"), (CAMERA, "-alice"),
    (CAMERA, "a" * 65), (CAMERA, "alice\n"),
])
def test_device_id_and_operator(device, operator):
    assert check_request("start_stream", device, {}, operator) is not None


def test_ptz_cmd_checks():
    good = ptz_cmd(0x08, v=0x20)           # up
    assert ptz_cmd_problem(good) is None
    b = bytearray.fromhex(good)
    for i, why in ((0, "A5H"), (1, "check nibble"), (7, "checksum")):
        bad = bytearray(b)
        bad[i] ^= 0x01
        assert why in ptz_cmd_problem(bad.hex())
    assert "16 hex" in ptz_cmd_problem(good[:-2])
    assert "16 hex" in ptz_cmd_problem(good + "00")


def test_too_many_or_too_long_params():
    assert "parameters" in check_request("catalog_query", CAMERA, {str(i): "x" for i in range(5)}, "a")
    assert "too long" in check_request("start_stream", CAMERA, {"transport": "u" * 65}, "a")


# --- the inner side: ask -------------------------------------------------------------------------

def test_allowed_request_is_audited_then_sealed(plans):
    lane = inner()
    work = ask(lane, plans["plain"], params={"transport": "tcp"})
    assert [type(w) for w in work] == [AuditIntent, SealObject]
    rec, seal = work[0].fields, work[1]
    assert rec["event"] == "request_sent" and rec["verdict"] == "sent" and rec["rule"] == "reverse-operators"
    obj = seal.obj
    assert obj.lane == "reverse" and obj.destination == "outer-platform" and obj.created == WALL
    assert obj.object_id == rec["object_id"] and obj.object_id >> 32 == 1234
    assert obj.source.address == "127.0.0.1" and obj.rule == "reverse-operators"
    r = obj.reverse
    assert (r.request, r.device_id, r.operator, dict(r.params)) == ("start_stream", CAMERA, "alice",
                                                                     {"transport": "tcp"})


@pytest.mark.parametrize("kw, code", [
    ({"request": "ptz", "params": {"cmd": ptz_cmd(1, h=1)}}, "content_limit"),     # the rule lists no ptz
    ({"request": "catalog_query"}, None),
    ({"device": OTHER_CAMERA}, "unknown_device"),
    ({"address": "10.9.9.9"}, "default_deny"),
    ({"address": ""}, "default_deny"),
    ({"params": {"transport": "sctp"}}, "bad_request"),
    ({"operator": "x y"}, "bad_request"),
])
def test_inner_refusals(plans, kw, code):
    work = ask(inner(), plans["plain"], **kw)
    if code is None:
        assert verdict(work) == ("request_sent", None)
    else:
        assert verdict(work) == ("request_refused", code)
        assert len(work) == 1 and work[0].fields["verdict"] == "refused" and work[0].fields["reason"]


def test_another_destination_is_default_deny(plans):
    assert verdict(inner("elsewhere").ask("start_stream", CAMERA, {}, "alice", plans["plain"], 0.0, WALL,
                                          address="127.0.0.1")) == ("request_refused", "default_deny")


def test_no_reverse_rules_refuses_everything_on_both_sides(plans):
    lane = inner()
    for request, params in (("start_stream", {}), ("stop_stream", {"stream": "s"}), ("catalog_query", {})):
        assert verdict(ask(lane, plans["none"], request, params=params)) == ("request_refused", "default_deny")
        # what an allowing inner agent would send is refused by an outer agent that has no reverse rule
        sent = ask(inner(), plans["plain"], request, params=params)
        assert verdict(OuterReverseLane().take_object(sent[1].obj, plans["none"], 0.0, WALL)) == \
            ("request_refused", "default_deny")


# --- rates -----------------------------------------------------------------------------------------

def test_a_flood_from_one_operator_is_cut_at_the_rule_rate_exactly(plans):
    lane = inner()
    plan = plans["rated"]                  # 0.5/s, burst 3
    codes = [verdict(ask(lane, plan, now=10.0))[1] for _ in range(20)]
    assert codes == [None] * 3 + ["rate_limited"] * 17
    assert lane.counts == {"sent": 3, "refused": 17}
    # refusals took no token: two seconds later exactly one more
    assert [verdict(ask(lane, plan, now=12.0))[1] for _ in range(3)] == [None, "rate_limited", "rate_limited"]


def test_per_operator_and_per_device(plans):
    plan = plans["rated"]
    lane = inner()
    # alice empties her bucket on CAMERA ...
    assert [verdict(ask(lane, plan, operator="alice"))[1] for _ in range(4)] == [None] * 3 + ["rate_limited"]
    # ... bob may not ask for CAMERA either (its device bucket is empty) ...
    refused = ask(lane, plan, operator="bob")
    assert verdict(refused) == ("request_refused", "rate_limited")
    assert f"device {CAMERA}" in refused[0].fields["reason"]
    # ... but for another camera he may, and alice may not (her bucket is empty)
    assert verdict(ask(lane, plan, operator="bob", device=SECOND_CAMERA)) == ("request_sent", None)
    limited = ask(lane, plan, operator="alice", device=SECOND_CAMERA)
    assert verdict(limited) == ("request_refused", "rate_limited") and "operator 'alice'" in limited[0].fields["reason"]


def test_default_rates_come_from_limits(plans):
    lane = inner()
    n = min(limits.REVERSE_OPERATOR_BURST, limits.REVERSE_DEVICE_BURST)
    codes = [verdict(ask(lane, plans["plain"]))[1] for _ in range(n + 2)]
    assert codes == [None] * n + ["rate_limited"] * 2


def test_rates_bounded_and_clock_going_back_refills_nothing():
    r = ReverseRates(max_entries=4)
    spec = RateSpec(1.0, 1)
    for i in range(100):
        assert r.take(f"op{i}", f"{i:020d}", spec, 0.0) is None
    assert len(r._buckets) <= 8
    assert r.take("x", "1" * 20, spec, 100.0) is None
    assert r.take("x", "1" * 20, spec, 50.0) is not None


# --- the outer side: take --------------------------------------------------------------------------

def received(obj: ferry_pb2.CanonicalObject, epoch: int = 7) -> ev.ObjectReceived:
    return ev.ObjectReceived(obj.object_id, obj.SerializeToString(), epoch, (3,))


def forged(request="start_stream", device=CAMERA, operator="eve", address="127.0.0.1", oid=1, created=WALL,
           **params) -> ferry_pb2.CanonicalObject:
    o = ferry_pb2.CanonicalObject(object_id=oid, lane="reverse", destination="outer-platform", created=created)
    o.source.address = address
    o.reverse.request, o.reverse.device_id, o.reverse.operator = request, device, operator
    o.reverse.params.update(params)
    return o


def test_what_the_inner_sends_the_outer_takes(plans):
    sent = ask(inner(), plans["plain"], params={"transport": "udp"})[1].obj
    work = OuterReverseLane().take(received(sent), plans["plain"], 0.0, WALL + 1)
    assert [type(w) for w in work] == [AuditIntent, ReverseAction]
    rec, action = work[0].fields, work[1]
    assert rec["event"] == "request_received" and rec["verdict"] == "delivered" and rec["epoch"] == 7
    assert action == ReverseAction("start_stream", CAMERA, {"transport": "udp"}, "alice", sent.object_id,
                                   "outer-platform", {"address": "127.0.0.1"})


@pytest.mark.parametrize("obj, code", [
    (forged("ptz", cmd=ptz_cmd(1, h=1)), "content_limit"),
    (forged(device=OTHER_CAMERA), "unknown_device"),
    (forged(address="10.9.9.9"), "default_deny"),
    (forged(url="rtsp://evil"), "bad_request"),
    (forged("reboot"), "bad_request"),
    (forged(operator=""), "bad_request"),
    (forged(created=WALL - 3600), "clock_skew"),
    (forged(created=float("nan")), "clock_skew"),
])
def test_the_outer_refuses_what_the_inner_should_have(plans, obj, code):
    assert verdict(OuterReverseLane().take(received(obj), plans["plain"], 0.0, WALL)) == ("request_refused", code)


def test_the_outer_refuses_other_bodies_ids_and_garbage(plans):
    lane = OuterReverseLane()
    plan = plans["plain"]
    other = ferry_pb2.CanonicalObject(object_id=1, lane="files", created=WALL)
    other.file.name = "x.pdf"
    assert verdict(lane.take(received(other), plan, 0.0, WALL)) == ("request_refused", "bad_request")
    o = forged(oid=5)
    assert verdict(lane.take(ev.ObjectReceived(6, o.SerializeToString(), 1, (0,)), plan, 0.0, WALL)) == \
        ("request_refused", "object_id_mismatch")
    assert verdict(lane.take(ev.ObjectReceived(9, b"\xff\xff\xff", 1, (0,)), plan, 0.0, WALL)) == \
        ("request_refused", "malformed_object")
    assert verdict(lane.take(ev.ObjectReceived(9, b"\0" * 5000, 1, (0,)), plan, 0.0, WALL)) == \
        ("request_refused", "bad_request")


def test_the_outer_refuses_a_replayed_request_and_keeps_its_own_rates(plans):
    lane = OuterReverseLane()
    plan = plans["rated"]
    first = lane.take(received(forged(oid=1)), plan, 0.0, WALL)
    assert verdict(first) == ("request_received", None)
    assert verdict(lane.take(received(forged(oid=1), epoch=8), plan, 0.0, WALL)) == \
        ("request_refused", "replayed_object")
    # a compromised inner host ignoring the rate: the outer cuts at the same rate
    codes = [verdict(lane.take(received(forged(oid=i)), plan, 0.0, WALL))[1] for i in range(2, 12)]
    ok = 2 + limits.REVERSE_OUTER_SLACK      # the outer's buckets are deeper by its slack
    assert codes == [None] * ok + ["rate_limited"] * (10 - ok)


def test_what_the_inner_let_through_at_its_rate_the_outer_takes_despite_link_jitter(plans):
    """One way, so the inner agent never learns of an outer refusal (the platform would wait for its
    invite_timeout and get 408 for a request the inner accepted, as bench/signaling.py saw at every
    10th request). Requests the inner spaced at its rate can reach the outer bunched up (a key
    announcement or a pacing burst holds some back): the outer's buckets are deeper by
    REVERSE_OUTER_SLACK tokens, so it takes all of them."""
    plan = plans["rated"]                          # 0.5/s, burst 3
    lane, outer = inner(), OuterReverseLane()
    sent = []
    for t in (10.0, 10.0, 10.0, 12.0, 14.0, 16.0):   # the burst, then one each refill: all allowed inside
        work = ask(lane, plan, now=t)
        assert verdict(work) == ("request_sent", None)
        sent.append(work[1].obj)
    # the link held them back (a key announcement lost, a cut healing) and they arrive together:
    # the outer's bucket, full at 3 while it waited, has not seen the refills the inner spent
    codes = [verdict(outer.take(received(o), plan, 16.5, WALL))[1] for o in sent]
    assert codes == [None] * 6


def test_the_outers_slack_is_small_a_flood_is_still_cut(plans):
    lane = OuterReverseLane()
    plan = plans["rated"]                          # 0.5/s, burst 3
    codes = [verdict(lane.take(received(forged(oid=i)), plan, 0.0, WALL))[1] for i in range(1, 21)]
    taken = codes.count(None)
    assert taken == 3 + limits.REVERSE_OUTER_SLACK and codes[taken:] == ["rate_limited"] * (20 - taken)


# --- properties: any input gives a verdict, never an exception ------------------------------------

text = st.text(max_size=80)


@settings(max_examples=400, deadline=None)
@given(request=st.one_of(st.sampled_from(REQUESTS), text), device=st.one_of(st.just(CAMERA), text),
       params=st.dictionaries(st.one_of(st.sampled_from(["transport", "stream", "cmd", "direction", "speed"]),
                                        text),
                              st.one_of(st.sampled_from(["udp", "tcp", "left", "9", ptz_cmd(4, v=3)]), text),
                              max_size=6),
       operator=st.one_of(st.just("alice"), text))
def test_any_request_gets_a_coded_verdict_on_both_sides(plans, request, device, params, operator):
    work = InnerReverseLane(ObjectIds(1), "outer-platform").ask(request, device, params, operator, plans["ptz"],
                                                               0.0, WALL, address="127.0.0.1")
    event, code = verdict(work)
    if event == "request_sent":
        assert check_request(request, device, params, operator) is None
        again = OuterReverseLane().take(received(work[1].obj), plans["ptz"], 0.0, WALL)
        assert verdict(again) == ("request_received", None)
    else:
        assert event == "request_refused" and code
    forged_obj = forged(request, device, operator)
    try:
        forged_obj.reverse.params.update(params)
    except ValueError:
        return          # not valid UTF-8 for protobuf (lone surrogates): cannot be on the link
    assert verdict(OuterReverseLane().take(received(forged_obj), plans["ptz"], 0.0, WALL))[0] in \
        ("request_received", "request_refused")


@settings(max_examples=400, deadline=None)
@given(payload=st.binary(max_size=600), oid=st.integers(0, 2**64 - 1))
def test_any_bytes_from_the_link_get_a_coded_verdict(plans, payload, oid):
    work = OuterReverseLane().take(ev.ObjectReceived(oid, payload, 1, (0,)), plans["plain"], 0.0, WALL)
    event, code = verdict(work)
    assert event in ("request_received", "request_refused")
    if event == "request_refused":
        assert code


@settings(max_examples=300, deadline=None)
@given(cmd=st.text(alphabet="0123456789abcdefABCDEF", min_size=16, max_size=16))
def test_ptz_cmd_is_total_and_only_checked_commands_pass(cmd):
    problem = ptz_cmd_problem(cmd)
    b = bytes.fromhex(cmd)
    if problem is None:
        assert b[0] == 0xA5 and b[7] == sum(b[:7]) & 0xFF and not b[3] & 0xC0


# --- the floor across the outer agent's restarts ---------------------------------------------------

def test_a_restarted_outer_refuses_what_an_earlier_run_took_and_takes_what_follows(plans):
    plan = plans["plain"]
    lane = inner()
    first = [ask(lane, plan, now=float(i))[1].obj for i in range(3)]
    before = OuterReverseLane()
    assert [verdict(before.take(received(o), plan, 0.0, WALL))[0] for o in first[:2]] == ["request_received"] * 2
    assert before.high == first[1].object_id and before.state() == ReverseFloor(first[1].object_id, 0)
    after = OuterReverseLane(decode_floor(encode_floor(before.state())))   # through the file's bytes
    assert verdict(after.take(received(first[0]), plan, 0.0, WALL)) == ("request_refused", "replayed_object")
    assert verdict(after.take(received(first[1]), plan, 0.0, WALL)) == ("request_refused", "replayed_object")
    assert verdict(after.take(received(first[2]), plan, 0.0, WALL)) == ("request_received", None)
    # a new inner run (a later start second) is above it too
    later = InnerReverseLane(ObjectIds(1235), "outer-platform")
    assert verdict(after.take(received(ask(later, plan)[1].obj), plan, 0.0, WALL)) == ("request_received", None)
    assert after.floor == before.state() and after.high > first[2].object_id


def test_without_a_usable_state_requests_older_than_the_start_plus_skew_are_refused(plans):
    plan = plans["plain"]
    floor = restart_floor(None, False, WALL)
    assert floor == ReverseFloor(0, int(WALL + limits.CLOCK_SKEW))
    lane = OuterReverseLane(floor)
    # a capture from before the restart, even one created by a clock ahead by all the skew
    old = forged(oid=(1234 << 32) | 1, created=WALL + limits.CLOCK_SKEW)
    assert verdict(lane.take(received(old), plan, 0.0, WALL + 1)) == ("request_refused", "replayed_object")
    # once the window passed, requests are taken again: never a refusal of everything for ever
    new = forged(oid=(1234 << 32) | 2, created=WALL + limits.CLOCK_SKEW + 1)
    assert verdict(lane.take(received(new), plan, 0.0, WALL + limits.CLOCK_SKEW + 1)) == ("request_received", None)
    assert lane.state() == ReverseFloor(new.object_id, floor.not_before)
    assert restart_floor(None, True, WALL) == ReverseFloor()
    assert restart_floor(ReverseFloor(5, 0), True, WALL) == ReverseFloor(5, 0)


def test_an_object_id_whose_run_begins_after_the_request_is_refused(plans):
    """A floor a compromised inner host could push past every real run ID: the run (the top 32 bits)
    must not begin after the request's creation, so the floor stays within the clock skew of now."""
    lane = OuterReverseLane()
    far = forged(oid=((int(WALL) + 60) << 32) | 1)
    assert verdict(lane.take(received(far), plans["plain"], 0.0, WALL)) == ("request_refused", "bad_request")
    assert lane.high == 0
    ok = forged(oid=(int(WALL) << 32) | 1)
    assert verdict(lane.take(received(ok), plans["plain"], 0.0, WALL)) == ("request_received", None)


@settings(max_examples=300, deadline=None)
@given(oid=st.integers(0, 2**64 - 1), not_before=st.integers(0, 10**12 - 1))
def test_the_floor_survives_its_encoding(oid, not_before):
    f = ReverseFloor(oid, not_before)
    assert decode_floor(encode_floor(f)) == f


@settings(max_examples=500, deadline=None)
@given(data=st.one_of(st.binary(max_size=80),
                      st.builds(lambda f, cut, flip: _damage(encode_floor(f), cut, flip),
                                st.builds(ReverseFloor, st.integers(0, 2**64 - 1), st.integers(0, 10**12 - 1)),
                                st.integers(0, 80), st.integers(0, 80 * 8))))
def test_any_bytes_decode_to_a_floor_or_a_value_error(data):
    """Torn (cut short) or corrupt (a bit flipped) files are refused, never misread."""
    try:
        f = decode_floor(data)
    except ValueError:
        return
    assert encode_floor(f) == data


def _damage(good: bytes, cut: int, flip: int) -> bytes:
    if cut < len(good):
        return good[:cut]
    b = bytearray(good)
    b[flip // 8 % len(b)] ^= 1 << (flip % 8)
    return bytes(b)
