"""The inner SIP side's pure lane (ferry/lanes/signaling/inner.py): cascade registration with digest,
refresh, 403, keepalive loss, catalog paging, forwarding, the protocol break (fresh headers, ferry's
IDs, nothing of an outer message in the output), unmapped devices refused; hypothesis on the lane."""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry import limits
from ferry.codecs import manscdp
from ferry.codecs.manscdp import Item, Manscdp, ManscdpError
from ferry.codecs.sip import SipError, SipRequest, SipResponse, build_request, parse_message, response_to
from ferry.codecs.sip_digest import Challenge, www_authenticate
from ferry.lanes.signaling.ids import IdMap
from ferry.lanes.signaling.inner import InnerSignalingLane, PlatformGone, SendSip, Settings
from ferry.lanes.work import AuditIntent
from ferry.pb import ferry_pb2
from ferry.policy.plan import Decision

LOCAL_ID = "43010000002000000099"       # ferry as a lower platform of the inner platform
PLATFORM_ID = "43010000002000000001"
PASSWORD = "s3cret-Pass"
OUTER_NVR = "43090000001180000001"       # a lower platform / NVR outside
NVR_ID = "43090000002000000001"
OUTER_CAM = "43090000001320000007"
INNER_CAM = "43010000001320000007"       # its ID as the inner platform sees it (prefix 43090000 -> 43010000)
ALLOW = Decision(True, "signaling-catalog", "allowed by signaling-catalog")


@dataclass(frozen=True)
class Peer:                  # what the agent's endpoint gives (the lane only keeps and compares host)
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


PLATFORM = Peer("udp", "127.0.0.9", 5060)
SETTINGS = Settings(local_host="127.0.0.2", local_port=5070, transport="udp", platform_host=PLATFORM.host,
                    platform_port=PLATFORM.port, platform_id=PLATFORM_ID, platform_domain="4301000000",
                    local_id=LOCAL_ID, local_domain="4301000000", password=PASSWORD, register_expires=600,
                    keepalive_interval=30.0, catalog_page_size=20)


def lane(**over) -> InnerSignalingLane:
    s = dataclasses.replace(SETTINGS, **over)
    return InnerSignalingLane(s, IdMap(prefixes=[("43090000", "43010000")]), PLATFORM, 0.0)


def sent(work) -> list[SipRequest | SipResponse]:
    return [parse_message(w.data) for w in work if isinstance(w, SendSip)]


def audits(work, event=None) -> list[dict]:
    return [w.fields for w in work if isinstance(w, AuditIntent) and (event is None or w.fields["event"] == event)]


def answer(req: SipRequest, status: int, reason: str, extra=()) -> SipResponse:
    msg = parse_message(response_to(req, status, reason, list(extra), to_tag="platformtag1"))
    assert isinstance(msg, SipResponse)
    return msg


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def kv(header: str) -> dict[str, str]:
    return {k: (v1 or v2) for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', header)}


def register(ln: InnerSignalingLane, now=0.0, expires=600) -> list:
    """Start, 401, authorized REGISTER, 200: returns the work of the 200 (registered + first keepalive)."""
    first = sent(ln.start(now, 1e9))
    assert [m.method for m in first] == ["REGISTER"]
    ch = Challenge("4301000000", "nonce-abc", opaque="op1", qop="auth")
    second = sent(ln.on_sip(answer(first[0], 401, "Unauthorized", [("WWW-Authenticate", www_authenticate(ch))]),
                            PLATFORM, now, 1e9))
    assert [m.method for m in second] == ["REGISTER"]
    return ln.on_sip(answer(second[0], 200, "OK", [("Expires", str(expires))]), PLATFORM, now, 1e9)


# -- registration ------------------------------------------------------------------------------

def test_register_answers_the_challenge_with_a_digest_computed_independently():
    ln = lane()
    first = sent(ln.start(0.0, 1e9))[0]
    assert first.header("Authorization") is None
    assert first.header("Expires") == "600" and first.from_.uri.user == LOCAL_ID and first.to.uri.user == PLATFORM_ID
    ch = Challenge("4301000000", "nonce-abc", opaque="op1", qop="auth")
    second = sent(ln.on_sip(answer(first, 401, "Unauthorized", [("WWW-Authenticate", www_authenticate(ch))]),
                            PLATFORM, 0.1, 1e9))[0]
    a = kv(second.header("Authorization"))
    assert a["username"] == LOCAL_ID and a["realm"] == "4301000000" and a["nonce"] == "nonce-abc"
    assert a["opaque"] == "op1" and a["qop"] == "auth" and a["nc"] == "00000001"
    # RFC 2617 §3.2.2.1, by hand
    ha1 = md5(f"{LOCAL_ID}:4301000000:{PASSWORD}")
    ha2 = md5(f"REGISTER:{a['uri']}")
    assert a["response"] == md5(f"{ha1}:nonce-abc:00000001:{a['cnonce']}:auth:{ha2}")
    assert a["uri"] == str(first.uri)
    # RFC 3261 §10.2: same Call-ID, next CSeq, new branch
    assert second.call_id == first.call_id and second.cseq[0] == first.cseq[0] + 1
    assert second.via[0].branch != first.via[0].branch
    work = ln.on_sip(answer(second, 200, "OK", [("Expires", "600")]), PLATFORM, 0.2, 1e9)
    assert ln.registered and ln.status()["registered"] is True
    assert audits(work, "platform_registered")
    keepalive = sent(work)
    assert [m.method for m in keepalive] == ["MESSAGE"]
    body = manscdp.parse(keepalive[0].body)
    assert (body.root, body.cmd_type, body.device_id) == ("Notify", "Keepalive", LOCAL_ID)


def test_register_without_qop_and_refresh_before_expiry():
    ln = lane()
    first = sent(ln.start(0.0, 1e9))[0]
    ch = Challenge("4301000000", "n2", qop=None)
    second = sent(ln.on_sip(answer(first, 401, "Unauthorized", [("WWW-Authenticate", www_authenticate(ch))]),
                            PLATFORM, 0.0, 1e9))[0]
    a = kv(second.header("Authorization"))
    assert "qop" not in a and a["response"] == md5(
        f"{md5(f'{LOCAL_ID}:4301000000:{PASSWORD}')}:n2:{md5('REGISTER:' + a['uri'])}")
    ln.on_sip(answer(second, 200, "OK", [("Expires", "100")]), PLATFORM, 0.0, 1e9)
    assert ln.registered
    # refreshed when half the granted expiry has passed, not before
    assert not [m for m in sent(ln.handle_timer(49.0, 1e9)) if m.method == "REGISTER"]
    refresh = [m for m in sent(ln.handle_timer(50.0, 1e9)) if m.method == "REGISTER"]
    assert len(refresh) == 1 and refresh[0].call_id == first.call_id
    assert refresh[0].header("Authorization") is not None        # the last challenge, next nc
    assert kv(refresh[0].header("Authorization"))["nonce"] == "n2"
    ln.on_sip(answer(refresh[0], 200, "OK", [("Expires", "100")]), PLATFORM, 50.1, 1e9)
    assert ln.registered


def test_403_stops_with_an_alarm_and_never_retries():
    ln = lane()
    first = sent(ln.start(0.0, 1e9))[0]
    work = ln.on_sip(answer(first, 403, "Forbidden"), PLATFORM, 0.0, 1e9)
    alarm = audits(work, "platform_register_refused")
    assert alarm and alarm[0]["verdict"] == "alarm" and alarm[0]["code"] == "platform_refused"
    assert ln.state == "stopped" and ln.next_timer() is None
    assert sent(ln.handle_timer(10_000.0, 1e9)) == []


def test_wrong_password_stops_after_the_same_nonce_comes_back():
    ln = lane()
    first = sent(ln.start(0.0, 1e9))[0]
    hdr = [("WWW-Authenticate", www_authenticate(Challenge("4301000000", "same")))]
    second = sent(ln.on_sip(answer(first, 401, "Unauthorized", hdr), PLATFORM, 0.0, 1e9))[0]
    work = ln.on_sip(answer(second, 401, "Unauthorized", hdr), PLATFORM, 0.0, 1e9)
    assert audits(work, "platform_register_refused") and sent(work) == [] and ln.state == "stopped"


def test_failure_backs_off_doubling():
    ln = lane()
    first = sent(ln.start(0.0, 1e9))[0]
    work = ln.on_sip(answer(first, 500, "Server Error"), PLATFORM, 0.0, 1e9)
    assert audits(work, "platform_register_failed")[0]["code"] == "platform_refused"
    assert ln.next_timer() == limits.SIG_REGISTER_RETRY_MIN
    again = sent(ln.handle_timer(limits.SIG_REGISTER_RETRY_MIN, 1e9))
    assert [m.method for m in again] == ["REGISTER"] and again[0].call_id != first.call_id
    # no answer at all: retransmitted over UDP, then a failure after the transaction timeout
    t = limits.SIG_REGISTER_RETRY_MIN
    retransmits = 0
    while ln.state != "waiting":
        t = ln.next_timer()
        w = ln.handle_timer(t, 1e9)
        retransmits += sum(1 for m in sent(w) if m.method == "REGISTER")
    assert retransmits >= 5
    assert ln.next_timer() == pytest.approx(t + 2 * limits.SIG_REGISTER_RETRY_MIN)


# -- keepalive ------------------------------------------------------------------------------

def test_keepalives_go_at_the_interval_and_three_unanswered_mark_the_platform_lost():
    ln = lane()
    work = register(ln)
    first_keepalive = sent(work)[0]
    ln.on_sip(answer(first_keepalive, 200, "OK"), PLATFORM, 0.0, 1e9)
    t = 0.0
    calls = {first_keepalive.call_id}
    for _ in range(3):                         # three more keepalives, none answered (retransmitted)
        t += 30.0
        msgs = [m for m in sent(ln.handle_timer(t, 1e9)) if m.method == "MESSAGE" and m.call_id not in calls]
        assert len(msgs) == 1 and manscdp.parse(msgs[0].body).cmd_type == "Keepalive"
        calls.add(msgs[0].call_id)
        assert ln.registered
    t += 30.0
    work = ln.handle_timer(t, 1e9)
    lost = audits(work, "platform_lost")
    assert lost and lost[0]["verdict"] == "alarm" and lost[0]["code"] == "platform_unavailable"
    again = [m for m in sent(work) if m.method == "REGISTER"]
    assert len(again) == 1 and again[0].call_id != first_keepalive.call_id and not ln.registered


def test_an_answered_keepalive_resets_the_count():
    ln = lane()
    register(ln)
    t = 0.0
    for _ in range(6):
        t += 30.0
        msgs = [m for m in sent(ln.handle_timer(t, 1e9)) if m.method == "MESSAGE"]
        ln.on_sip(answer(msgs[-1], 200, "OK"), PLATFORM, t, 1e9)
    assert ln.registered


# -- the device list and catalog paging ----------------------------------------------------------

def signaling_object(msg: Manscdp, object_id=1, source=None) -> ferry_pb2.CanonicalObject:
    """What the outer agent seals (the shared contract of issue 13)."""
    return ferry_pb2.CanonicalObject(
        object_id=object_id, lane="signaling", destination="police-sip", rule="signaling-catalog", created=1e9,
        source=ferry_pb2.Source(device_id=source or msg.device_id, address="10.20.5.20", port=5060,
                                name="lower-platform"),
        signaling=ferry_pb2.SignalingMessage(root=msg.root, cmd_type=msg.cmd_type, device_id=msg.device_id,
                                             sn=msg.sn, xml=manscdp.build(msg, encoding="UTF-8").decode()))


def cam(n: int) -> str:
    return f"4309000000132{n:07d}"


def catalog(n: int, sn=17) -> Manscdp:
    items = tuple(Item((("DeviceID", cam(i)), ("Name", f"路口{i}"), ("Manufacturer", "Hikvision"),
                        ("ParentID", OUTER_NVR), ("Status", "ON"))) for i in range(1, n + 1))
    return Manscdp("Response", "Catalog", sn, OUTER_NVR, items=items, sum_num=n)


def query(ln, cmd="Catalog", device=LOCAL_ID, sn=4242, now=1.0):
    body = manscdp.build(Manscdp("Query", cmd, sn, device))
    req = parse_message(build_request("MESSAGE", f"sip:{LOCAL_ID}@4301000000", [
        ("Via", "SIP/2.0/UDP 127.0.0.9:5060;rport;branch=z9hG4bKplatform1"),
        ("From", f"<sip:{PLATFORM_ID}@4301000000>;tag=pf1"), ("To", f"<sip:{LOCAL_ID}@4301000000>"),
        ("Call-ID", "platform-call-1"), ("CSeq", "20 MESSAGE"), ("Max-Forwards", "70"),
        ("Content-Type", "Application/MANSCDP+xml")], body))
    return ln.on_sip(req, PLATFORM, now, 1e9)


@pytest.mark.parametrize("n, page, pages", [(0, 20, 1), (1, 20, 1), (20, 20, 1), (21, 20, 2), (250, 20, 13),
                                            (250, 7, 36)])
def test_catalog_is_paged_with_sumnum_and_num(n, page, pages):
    ln = lane(catalog_page_size=page)
    register(ln)
    if n:
        work = ln.deliver(signaling_object(catalog(n)), ALLOW, 0.5, 1e9, epoch=3, blocks=[7])
        rec = audits(work, "object_delivered")[0]
        assert rec["lane"] == "signaling" and rec["object_id"] == 1 and rec["epoch"] == 3
    work = query(ln)
    out = sent(work)
    assert isinstance(out[0], SipResponse) and out[0].status == 200 and out[0].call_id == "platform-call-1"
    assert len(out) == 2                       # one page in flight at a time ...
    msgs = out[1:]
    while True:                                # ... the next on the 200 of the one before
        nxt = sent(ln.on_sip(answer(msgs[-1], 200, "OK"), PLATFORM, 2.0, 1e9))
        if not nxt:
            break
        assert len(nxt) == 1
        msgs += nxt
    assert len(msgs) == pages
    seen = []
    for m in msgs:
        assert m.method == "MESSAGE" and m.header("Content-Type") == "Application/MANSCDP+xml"
        body = manscdp.parse(m.body)
        assert (body.root, body.cmd_type, body.sn, body.device_id) == ("Response", "Catalog", 4242, LOCAL_ID)
        assert body.sum_num == n and 0 < len(body.items) <= page or n == 0
        assert b"<DeviceList Num=\"%d\">" % len(body.items) in m.body
        seen += [it.device_id for it in body.items]
    assert seen == [f"4301000000132{i:07d}" for i in range(1, n + 1)]
    # every page a new MESSAGE, each expecting its own 200
    assert len({m.call_id for m in msgs}) == pages
    assert len({m.via[0].branch for m in msgs}) == pages
    assert not any(tx.kind == "catalog response" for tx in ln.txs.values()) and not ln.pages


def test_an_unanswered_page_is_retransmitted_then_recorded_lost_and_the_next_goes():
    ln = lane(catalog_page_size=1)
    register(ln)
    ln.deliver(signaling_object(catalog(2)), ALLOW, 0.5, 1e9)
    first = sent(query(ln, now=1.0))[1]
    again = [m for m in sent(ln.handle_timer(1.0 + limits.SIG_T1, 1e9)) if m.method == "MESSAGE"
             and m.call_id == first.call_id]
    assert again and again[0].via[0].branch == first.via[0].branch          # a retransmission, same transaction
    work = ln.handle_timer(1.0 + limits.SIG_TRANSACTION_TIMEOUT, 1e9)
    lost = audits(work, "platform_message_lost")
    assert lost and lost[0]["code"] == "platform_unavailable" and lost[0]["detail"]["page"] == 1
    nxt = [m for m in sent(work) if m.method == "MESSAGE" and b"Catalog" in m.body]
    assert len(nxt) == 1 and manscdp.parse(nxt[0].body).items[0].device_id == "43010000001320000002"


def test_protocol_break_fresh_headers_and_no_outer_value_in_the_output():
    """A device's MESSAGE outside becomes a canonical object (as sig-outer makes it); nothing of the
    outer message's headers, IDs or addresses appears in any byte ferry sends the inner platform."""
    outer = parse_message(build_request("MESSAGE", "sip:43090000002000000001@4309000000", [
        ("Via", "SIP/2.0/UDP 10.20.5.20:5060;rport;branch=z9hG4bKouterbranch77"),
        ("From", f"<sip:{OUTER_NVR}@4309000000>;tag=outertag55"),
        ("To", "<sip:43090000002000000001@4309000000>"), ("Call-ID", "outer-call-id-31337@10.20.5.20"),
        ("CSeq", "9 MESSAGE"), ("Max-Forwards", "70"), ("User-Agent", "IP Camera V5.5"),
        ("Content-Type", "Application/MANSCDP+xml")], manscdp.build(catalog(3, sn=777))))
    parsed = manscdp.parse(outer.body)
    ln = lane()
    wire = b"".join(w.data for w in register(ln) if isinstance(w, SendSip))
    ln.deliver(signaling_object(parsed), ALLOW, 0.5, 1e9)
    alarm = Manscdp("Notify", "Alarm", 778, OUTER_CAM, (("AlarmPriority", "1"), ("AlarmMethod", "2"),
                                                       ("AlarmTime", "2026-12-06T10:00:00")))
    fwd = ln.deliver(signaling_object(alarm, object_id=2), ALLOW, 0.6, 1e9)
    wire += b"".join(w.data for w in fwd if isinstance(w, SendSip))
    wire += b"".join(w.data for w in query(ln) if isinstance(w, SendSip))
    for value in [outer.call_id, "outertag55", "z9hG4bKouterbranch77", "10.20.5.20", "IP Camera", OUTER_NVR,
                  OUTER_CAM, cam(1), cam(2), cam(3), "4309000000", "<SN>777</SN>", "<SN>778</SN>"]:
        assert value.encode() not in wire, value
    assert INNER_CAM.encode() in wire and b"4301000000132000000" in wire
    # fresh Call-ID, From tag and branch on every request
    reqs = [m for m in (parse_message(x) for x in _split(wire)) if isinstance(m, SipRequest)]
    msgs = [m for m in reqs if m.method == "MESSAGE"]
    assert len(msgs) >= 3
    assert len({m.call_id for m in msgs}) == len(msgs)
    assert len({m.from_.tag for m in reqs}) == len(reqs)
    assert len({m.via[0].branch for m in reqs}) == len(reqs)
    assert len({m.cseq[0] for m in reqs}) == len(reqs)
    alarms = [manscdp.parse(m.body) for m in msgs if b"Alarm" in m.body]
    assert alarms[0].device_id == INNER_CAM and alarms[0].get("AlarmPriority") == "1"


def _split(wire: bytes) -> list[bytes]:
    out = []
    while wire:
        head, _, rest = wire.partition(b"\r\n\r\n")
        m = re.search(rb"Content-Length: (\d+)", head)
        n = int(m.group(1)) if m else 0
        out.append(head + b"\r\n\r\n" + rest[:n])
        wire = rest[n:]
    return out


def test_unmapped_device_is_refused_never_forwarded_under_its_outer_id():
    ln = lane()
    register(ln)
    stranger = "44010000001320000001"        # no table entry, no prefix rule
    alarm = Manscdp("Notify", "Alarm", 5, stranger, (("AlarmPriority", "1"),))
    work = ln.deliver(signaling_object(alarm), ALLOW, 1.0, 1e9)
    rec = audits(work, "object_refused")
    assert rec and rec[0]["code"] == "signaling_unmapped" and stranger in rec[0]["reason"]
    assert sent(work) == []
    # an unmapped item of a catalog is left out (recorded), the others kept
    cat = Manscdp("Response", "Catalog", 6, OUTER_NVR, items=(
        Item((("DeviceID", cam(1)),)), Item((("DeviceID", stranger),))), sum_num=2)
    work = ln.deliver(signaling_object(cat), ALLOW, 1.0, 1e9)
    left = audits(work, "signaling_items_refused")
    assert left and left[0]["detail"]["device_ids"] == [stranger] and left[0]["code"] == "signaling_unmapped"
    assert list(ln.devices) == ["43010000001320000001"]
    assert stranger.encode() not in b"".join(w.data for w in query(ln) if isinstance(w, SendSip))


def test_inconsistent_or_malformed_objects_are_refused():
    ln = lane()
    good = signaling_object(catalog(1))
    forged = ferry_pb2.CanonicalObject()
    forged.CopyFrom(good)
    forged.signaling.device_id = OUTER_CAM              # the header says another device than the XML
    assert audits(ln.deliver(forged, ALLOW, 0, 1e9), "object_refused")[0]["code"] == "signaling_malformed"
    forged.CopyFrom(good)
    forged.signaling.cmd_type = "Alarm"                 # ... or another CmdType
    assert audits(ln.deliver(forged, ALLOW, 0, 1e9), "object_refused")[0]["code"] == "signaling_malformed"
    forged.CopyFrom(good)
    forged.source.device_id = "44010000002000000001"   # a source with no inner ID
    assert audits(ln.deliver(forged, ALLOW, 0, 1e9), "object_refused")[0]["code"] == "signaling_unmapped"
    bad = ferry_pb2.CanonicalObject()
    bad.CopyFrom(good)
    bad.signaling.xml = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><Response/>'
    rec = audits(ln.deliver(bad, ALLOW, 0, 1e9), "object_refused")[0]
    assert rec["code"] == "signaling_malformed" and rec["verdict"] == "refused"
    assert ln.devices == {}


def test_notify_catalog_on_off_updates_the_list_and_is_forwarded():
    ln = lane()
    register(ln)
    ln.deliver(signaling_object(catalog(2)), ALLOW, 1.0, 1e9)
    off = Manscdp("Notify", "Catalog", 9, cam(1), items=(Item((("DeviceID", cam(1)), ("Event", "OFF"))),),
                  sum_num=1)
    work = ln.deliver(signaling_object(off), ALLOW, 1.0, 1e9)
    fwd = [manscdp.parse(m.body) for m in sent(work)]
    assert fwd[0].root == "Notify" and fwd[0].device_id == LOCAL_ID
    assert fwd[0].items[0].get("Event") == "OFF" and fwd[0].items[0].device_id == "43010000001320000001"
    assert ln.devices["43010000001320000001"].get("Status") == "OFF"
    assert ln.devices["43010000001320000001"].get("Name") == "路口1"        # the rest as known
    # a device keepalive puts it back ON; a new device that registers outside appears
    ln.deliver(signaling_object(manscdp.keepalive(cam(1), 3)), ALLOW, 1.0, 1e9)
    assert ln.devices["43010000001320000001"].get("Status") == "ON"
    on = Manscdp("Notify", "Catalog", 10, cam(5), items=(Item((("DeviceID", cam(5)), ("Event", "ON"))),), sum_num=1)
    ln.deliver(signaling_object(on), ALLOW, 1.0, 1e9)
    assert ln.knows("43010000001320000005")


def test_device_info_answered_from_the_last_response_or_404():
    ln = lane()
    register(ln)
    ln.deliver(signaling_object(catalog(1)), ALLOW, 1.0, 1e9)
    out = sent(query(ln, "DeviceInfo", "43010000001320000001"))
    assert out[0].status == 404 and "DeviceInfo" in out[0].header("Warning")
    info = Manscdp("Response", "DeviceInfo", 3, cam(1), (("DeviceName", "门口"), ("Result", "OK"),
                                                         ("Manufacturer", "Dahua")))
    ln.deliver(signaling_object(info), ALLOW, 1.0, 1e9)
    out = sent(query(ln, "DeviceInfo", "43010000001320000001", sn=99))
    assert out[0].status == 200
    body = manscdp.parse(out[1].body)
    assert (body.device_id, body.sn, body.get("DeviceName")) == ("43010000001320000001", 99, "门口")
    own = sent(query(ln, "DeviceStatus", LOCAL_ID, sn=5))
    assert own[0].status == 200 and manscdp.parse(own[1].body).get("Online") == "ONLINE"


def test_requests_from_another_host_and_invite_without_media_are_refused():
    ln = lane()
    register(ln)
    body = manscdp.build(Manscdp("Query", "Catalog", 1, LOCAL_ID))
    raw = build_request("MESSAGE", f"sip:{LOCAL_ID}@4301000000", [
        ("Via", "SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKx"), ("From", "<sip:x@y>;tag=a"),
        ("To", f"<sip:{LOCAL_ID}@4301000000>"), ("Call-ID", "c1"), ("CSeq", "1 MESSAGE"),
        ("Content-Type", "Application/MANSCDP+xml")], body)
    work = ln.on_sip(parse_message(raw), Peer("udp", "10.9.9.9", 5060), 1.0, 1e9)
    assert sent(work)[0].status == 403 and audits(work, "sip_refused")[0]["code"] == "platform_request_refused"
    invite = raw.replace(b"MESSAGE", b"INVITE")
    work = ln.on_sip(parse_message(invite), PLATFORM, 1.0, 1e9)
    resp = sent(work)[0]
    assert resp.status == 403 and "on-demand video not configured" in resp.header("Warning")


def test_alarm_while_not_registered_is_recorded_lost():
    ln = lane()
    alarm = Manscdp("Notify", "Alarm", 5, OUTER_CAM, (("AlarmPriority", "1"),))
    work = ln.deliver(signaling_object(alarm), ALLOW, 1.0, 1e9)
    lost = audits(work, "platform_message_lost")
    assert lost and lost[0]["code"] == "platform_unavailable" and lost[0]["object_id"] == 1
    assert audits(work, "object_delivered")


# -- hypothesis: whatever the inner side sends, the lane gives work, never an exception -------------

def _mutate(data: bytes, cuts: list[int], junk: bytes) -> bytes:
    for c in cuts:
        c %= max(1, len(data))
        data = data[:c] + junk + data[c + len(junk):]
    return data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cmd=st.sampled_from(["Catalog", "DeviceInfo", "DeviceStatus", "RecordInfo", "Alarm"]),
       root=st.sampled_from(["Query", "Notify", "Response", "Control"]),
       device=st.sampled_from([LOCAL_ID, "43010000001320000001", OUTER_CAM, "12345678901234567890"]),
       status=st.integers(100, 699), cuts=st.lists(st.integers(0, 2000), max_size=3),
       junk=st.binary(max_size=8), host=st.sampled_from([PLATFORM.host, "10.0.0.1"]),
       steps=st.lists(st.floats(0, 100), max_size=4))
def test_lane_survives_anything_from_the_inner_side(cmd, root, device, status, cuts, junk, host, steps):
    ln = lane()
    work = register(ln)
    ln.deliver(signaling_object(catalog(2)), ALLOW, 0.0, 1e9)
    try:
        body = manscdp.build(Manscdp(root, cmd, 1, device))
    except ManscdpError:
        body = b"<Query/>"
    raw = build_request("MESSAGE", f"sip:{LOCAL_ID}@4301000000", [
        ("Via", f"SIP/2.0/UDP {host}:5060;branch=z9hG4bKh"), ("From", "<sip:p@d>;tag=a"),
        ("To", f"<sip:{LOCAL_ID}@d>"), ("Call-ID", "c"), ("CSeq", "1 MESSAGE"),
        ("Content-Type", "Application/MANSCDP+xml")], _mutate(body, cuts, junk))
    for data in (raw, _mutate(raw, cuts, junk)):
        try:
            msg = parse_message(data)
        except SipError:
            continue
        for w in ln.on_sip(msg, Peer("udp", host, 5060), 1.0, 1e9):
            assert isinstance(w, (SendSip, AuditIntent, PlatformGone))
    ka = sent(work)[-1]
    try:
        resp = answer(ka, status, "X")
        ln.on_sip(resp, PLATFORM, 1.0, 1e9)
    except SipError:
        pass
    t = 1.0
    for dt in steps:
        t += dt
        for w in ln.handle_timer(t, 1e9):
            assert isinstance(w, (SendSip, AuditIntent, PlatformGone))


def test_refusals_of_a_flood_are_recorded_once_a_minute_with_the_count():
    ln = lane()
    raw = build_request("MESSAGE", f"sip:{LOCAL_ID}@4301000000", [
        ("Via", "SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKx"), ("From", "<sip:x@y>;tag=a"),
        ("To", f"<sip:{LOCAL_ID}@4301000000>"), ("Call-ID", "c1"), ("CSeq", "1 MESSAGE")])
    stranger = Peer("udp", "10.9.9.9", 5060)
    records = []
    for i in range(1000):
        work = ln.on_sip(parse_message(raw), stranger, i * 0.01, 1e9)
        assert sent(work)[0].status == 403                 # each answered
        records += audits(work, "sip_refused")
    assert len(records) == 1
    work = ln.on_sip(parse_message(raw), stranger, limits.SIG_REFUSAL_AUDIT_INTERVAL + 1, 1e9)
    assert audits(work, "sip_refused")[0]["detail"] == {"suppressed": 999}
    assert ln.counters["refused"] == 1001
    # the dictionary of counted sources stays bounded whatever the number of hosts
    for i in range(limits.SIG_REFUSAL_KEYS_MAX + 50):
        ln.refused(Peer("udp", f"10.{i // 250}.{i % 250}.1", 5060), "x", 0, now=1.0)
    assert len(ln.refusal_marks) <= limits.SIG_REFUSAL_KEYS_MAX


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 5), cuts=st.lists(st.integers(0, 3000), max_size=3), junk=st.text(max_size=6),
       header=st.sampled_from(["root", "cmd_type", "device_id", "sn", "none"]), value=st.text(max_size=24))
def test_any_signaling_object_gives_records_never_an_exception(n, cuts, junk, header, value):
    """Whatever the link delivers as a signaling object (a compromised outer agent's too): the lane
    gives audit intents and SIP to send, nothing else, and every refusal carries a code."""
    ln = lane()
    register(ln)
    obj = signaling_object(catalog(n) if n else Manscdp("Notify", "Alarm", 5, NVR_ID, (("AlarmPriority", "1"),)))
    xml = obj.signaling.xml
    for c in cuts:
        c %= max(1, len(xml))
        xml = xml[:c] + junk + xml[c + len(junk):]
    obj.signaling.xml = xml
    if header == "sn":
        obj.signaling.sn = len(value)
    elif header != "none":
        setattr(obj.signaling, header, value)
    for w in ln.deliver(obj, ALLOW, 1.0, 1e9):
        assert isinstance(w, (SendSip, AuditIntent, PlatformGone))
        if isinstance(w, AuditIntent) and w.fields["verdict"] in ("refused", "lost"):
            assert w.fields["code"]
