"""The outer registrations kept across restarts (ferry.lanes.signaling.registrations and
OuterSignalingLane.restore): what a run writes, the next takes back; a damaged file is refused
whole, never half read."""
from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.codecs import manscdp
from ferry.codecs.manscdp import Item
from ferry.lanes.signaling.registrations import Saved, decode, encode, snapshot
from tests.lanes.signaling.test_outer import (CAM, CAM_PEER, CHANNEL, NVR, PLAN, STRANGER, WALL, Device, Peer, lane,
                                              records, register, responses, seals)


def peer_of(transport: str, host: str, port: int) -> Peer:
    return Peer(transport, host, port)


def moved(ln, now: float, wall: float, data: bytes | None = None):
    """A new run of the lane at `now`/`wall`, given what the old one wrote."""
    saved, problem = decode(data)
    assert problem is None, problem
    new = lane()
    return new, new.restore(saved, peer_of, PLAN, now, wall)


def test_devices_online_when_written_are_online_again_and_their_messages_cross():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam, now=100.0, expires=3600)
    catalog = manscdp.Manscdp("Response", "Catalog", 7, CAM, items=(Item((("DeviceID", CHANNEL), ("Name", "gate"))),),
                              sum_num=1)
    assert responses(ln.on_message(cam.message(catalog), CAM_PEER, PLAN, 101.0, WALL + 1))[0].status == 200
    data = encode(snapshot(ln.registry, 110.0, WALL + 10))
    # the next run: another monotonic clock, 60 s later on the wall
    new, work = moved(ln, 5.0, WALL + 70, data)
    [loaded] = records(work, "registrations_loaded")
    assert loaded["detail"] == {"restored": 1, "expired": 0, "dropped": 0}
    d = new.registry.get(CAM)
    assert d is not None and d.online and d.peer == CAM_PEER and str(d.contact).startswith(f"sip:{CAM}@")
    assert abs(d.expires_at - (5.0 + 3600 - 70)) < 0.01          # what its registration had left
    assert d.keepalive_deadline == 5.0 + new.registry.keepalive_timeout      # keepalives due from the restart
    # a keepalive crosses without a new REGISTER; an alarm naming its catalog channel is not device_mismatch
    work = new.on_message(cam.keepalive(), CAM_PEER, PLAN, 6.0, WALL + 71)
    assert [r.status for r in responses(work)] == [200] and len(seals(work)) == 1
    alarm = manscdp.Manscdp("Notify", "Alarm", 9, CHANNEL, (("AlarmPriority", "1"), ("AlarmMethod", "2")))
    work = new.on_message(cam.message(alarm), CAM_PEER, PLAN, 7.0, WALL + 72)
    assert not [r for r in records(work) if r.get("code") == "device_mismatch"]


def test_a_registration_that_ran_out_meanwhile_is_offline_and_its_off_crosses():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam, now=100.0, expires=600)
    data = encode(snapshot(ln.registry, 100.0, WALL))
    new, work = moved(ln, 1.0, WALL + 601, data)
    assert not new.registry.online(CAM)
    assert records(work, "registrations_loaded")[0]["detail"] == {"restored": 0, "expired": 1, "dropped": 0}
    assert "ran out while the outer agent was down" in records(work, "device_offline")[0]["reason"]
    [off] = seals(work)
    assert off.obj.signaling.cmd_type == "Catalog" and "<Event>OFF</Event>" in off.obj.signaling.xml
    # and it is refused until it registers again, as any device ferry does not know
    work = new.on_message(cam.keepalive(), CAM_PEER, PLAN, 2.0, WALL + 602)
    assert [r.status for r in responses(work)] == [403]


def test_a_device_no_longer_configured_is_left_out():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam)
    data = encode(snapshot(ln.registry, 100.0, WALL))
    saved, _ = decode(data)
    new = lane(passwords={NVR: "nvr-secret"})
    work = new.restore(saved, peer_of, PLAN, 1.0, WALL + 1)
    assert len(new.registry) == 0
    assert records(work, "registrations_loaded")[0]["detail"] == {"restored": 0, "expired": 0, "dropped": 1}


def test_offline_devices_are_not_written():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam, expires=3600)
    [challenge] = responses(ln.on_message(cam.register(0), CAM_PEER, PLAN, 101.0, WALL))
    ln.on_message(cam.register(0, cam.answer(challenge)), CAM_PEER, PLAN, 101.0, WALL)      # Expires 0
    assert not ln.registry.online(CAM)
    assert decode(encode(snapshot(ln.registry, 102.0, WALL))) == ([], None)


def test_the_registry_counts_its_changes_so_an_unchanged_one_is_not_written_again():
    ln, cam = lane(), Device(CAM, "cam-secret")
    before = ln.registry.changes
    register(ln, cam)
    assert ln.registry.changes > before
    after = ln.registry.changes
    ln.on_message(cam.keepalive(), CAM_PEER, PLAN, 101.0, WALL)
    assert ln.registry.changes == after         # a keepalive changes nothing written


def test_damaged_files_are_refused_whole_with_a_reason():
    ln = lane()
    for dev in (Device(CAM, "cam-secret"), Device(NVR, "nvr-secret", Peer("tcp", "192.0.2.11", 5061))):
        register(ln, dev)
    good = encode(snapshot(ln.registry, 100.0, WALL))
    assert len(decode(good)[0]) == 2
    head, body = good.split(b"\n", 1)
    cases = {
        "empty": b"", "no header": body, "torn": good[:-7], "a flipped byte": good[:-20] + b"X" + good[-19:],
        "another version": good.replace(b"registrations 1 ", b"registrations 9 ", 1),
        "a count that lies": head.rsplit(b" ", 1)[0] + b" 3\n" + body,
    }
    bad_line = body.replace(b'"udp"', b'"sctp"', 1)     # a field out of bounds, with a checksum that fits
    cases["a bad field"] = b"ferry-sip-registrations 1 %08x 2\n" % zlib.crc32(bad_line) + bad_line
    for what, data in cases.items():
        saved, problem = decode(data)
        assert saved == [] and problem, what


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 2000))
def test_any_bytes_give_devices_or_a_reason_never_an_exception(junk, cut):
    ln = lane()
    register(ln, Device(CAM, "cam-secret"))
    good = encode(snapshot(ln.registry, 100.0, WALL))
    for data in (junk, good[:cut] + junk, good[:cut]):
        saved, problem = decode(data)
        assert (problem is None) == (saved != [] or data == b"ferry-sip-registrations 1 00000000 0\n")
        assert all(isinstance(s, Saved) for s in saved)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 99), st.sampled_from(["udp", "tcp"]), st.integers(1, 65535),
                          st.integers(60, 86_400)), max_size=30, unique_by=lambda t: t[0]))
def test_what_is_written_is_read_back(devices):
    ids = [f"4309000000131{n:07d}" for n, *_ in devices]    # none of them CAM
    ln = lane(passwords={d: "pw" for d in ids} | {CAM: "cam-secret"})
    for did, (_, transport, port, expires) in zip(ids, devices):
        register(ln, Device(did, "pw", Peer(transport, "192.0.2.50", port)), now=100.0, expires=expires)
    saved, problem = decode(encode(snapshot(ln.registry, 100.0, WALL)))
    assert problem is None
    assert {(s.device_id, s.transport, s.port) for s in saved} == \
        {(d, t, p) for d, (_, t, p, _) in zip(ids, devices)}
    assert STRANGER not in {s.device_id for s in saved}
