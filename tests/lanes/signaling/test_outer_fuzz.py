"""Property tests of the outer SIP lane: whatever parsed SIP a peer sends (random device IDs,
mutated headers and bodies), only work items come out, and the lane's state stays bounded."""
from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings, strategies as st

from ferry import limits
from ferry.codecs import manscdp, sip
from ferry.codecs.sip import SipError
from ferry.lanes.signaling.outer import SendSip
from ferry.lanes.work import AuditIntent, SealObject
from tests.lanes.signaling.test_outer import CAM, CAM_PEER, PLAN, WALL, Device, Peer, lane, register

METHODS = ["REGISTER", "MESSAGE", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "SUBSCRIBE", "NOTIFY", "INFO"]


def check(work) -> None:
    for w in work:
        assert isinstance(w, (SendSip, SealObject, AuditIntent)), w
        if isinstance(w, AuditIntent) and w.fields["verdict"] == "refused":
            assert w.fields["code"] and w.fields["reason"]
        if isinstance(w, SendSip):
            sip.parse_message(w.data)        # everything ferry sends parses strictly


def mutate(data: bytes, rnd: random.Random, n: int) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        op = rnd.randrange(3)
        i = rnd.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[i] = rnd.randrange(256)
        elif op == 1:
            b[i:i] = bytes([rnd.randrange(256)])
        elif b:
            del b[i]
    return bytes(b)


def body_for(kind: int, device_id: str, sn: int) -> bytes:
    if kind == 0:
        return manscdp.build(manscdp.keepalive(device_id, sn))
    if kind == 1:
        return (f'<?xml version="1.0"?><Notify><CmdType>Alarm</CmdType><SN>{sn}</SN><DeviceID>{device_id}'
                f"</DeviceID><AlarmPriority>1</AlarmPriority></Notify>").encode()
    if kind == 2:
        return b'<!DOCTYPE x [<!ENTITY a "a">]><Notify>&a;</Notify>'
    return bytes(random.Random(sn).randrange(256) for _ in range(40))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(METHODS), st.integers(0, 3), st.integers(0, 2**31 - 1),
                          st.booleans(), st.integers(0, 6), st.integers(0, 2**32 - 1)), min_size=1, max_size=20))
def test_random_and_mutated_messages_only_give_work(steps):
    ln = lane()
    cam = Device(CAM, "cam-secret")
    register(ln, cam)
    now = 200.0
    for method, kind, sn, known, mutations, seed in steps:
        rnd = random.Random(seed)
        device_id = CAM if known else "".join(rnd.choice("0123456789") for _ in range(20))
        dev = Device(device_id, "x")
        extra = [("Content-Type", "Application/MANSCDP+xml")] if method == "MESSAGE" else []
        if method == "REGISTER" and rnd.random() < 0.5:
            extra.append(("Authorization", f'Digest username="{device_id}", realm="4309000000", nonce="n{seed}", '
                                           f'uri="sip:x@y", response="{seed:032x}"'[:200]))
        req = dev.request(method, extra, body_for(kind, device_id, sn) if method == "MESSAGE" else b"")
        data = sip.build_request(req.method, req.uri, [h for h in req.headers if h[0] != "Content-Length"],
                                 req.body)
        data = mutate(data, rnd, mutations)
        now += rnd.random() * 30
        try:
            msg = sip.parse_message(data)
        except SipError as e:
            check(ln.on_refused(CAM_PEER, str(e), len(data), now, WALL))
            continue
        check(ln.on_message(msg, CAM_PEER if known else Peer("udp", "203.0.113.9", 5060), PLAN, now, WALL))
        check(ln.handle_timer(PLAN, now, WALL))
    assert len(ln.registry) <= 1


def test_ten_thousand_random_device_ids_do_not_grow_the_state():
    ln = lane()
    rnd = random.Random(13)
    now = 100.0
    for i in range(10_000):
        device_id = "".join(rnd.choice("0123456789") for _ in range(20))
        dev = Device(device_id, "x", Peer("udp", f"198.51.{i % 256}.{(i // 256) % 256}", 5060))
        req = dev.register() if i % 2 else dev.keepalive()
        ln.on_message(req, dev.peer, PLAN, now, WALL)
        now += 0.001
    assert len(ln.registry) == 0 and not ln._nonces
    assert len(ln._refusals) <= limits.SIGNALING_REFUSAL_KEYS_MAX + 2
    assert len(ln._transactions) <= limits.SIGNALING_TRANSACTIONS_MAX
    assert ln.counters["refused_sip_unknown_device"] == 10_000
