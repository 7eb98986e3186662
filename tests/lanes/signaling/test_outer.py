"""The outer SIP side's pure lane (ferry.lanes.signaling.outer): SIP messages in, work out.
A real compiled policy, real codecs; devices are played by a small in-test client."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from ferry import limits
from ferry.codecs import manscdp, sip, sip_digest
from ferry.codecs.manscdp import Item, Manscdp
from ferry.lanes.signaling.outer import OuterSignalingLane, SendSip, Settings, is_media
from ferry.lanes.work import AuditIntent, ObjectIds, SealObject
from ferry.pb import ferry_pb2
from ferry.policy import compile_policy, parse_policy, policy_hash
from ferry.reasons import Reason

SERVER = "43090000002000000001"
REALM = "4309000000"
CAM = "43090000001320000001"          # allowed by the policy
NVR = "43090000001180000002"          # allowed by the policy
OTHER = "11010000001320000009"        # configured, but outside the policy's devices
STRANGER = "43090000001320000777"     # not configured at all
CHANNEL = "43090000001310000003"

POLICY = """
policy: t
version: 1
default: deny
sources:
  yiyang-devices: {kind: devices, match: [{region: "4309"}]}
destinations:
  platform: {kind: vms}
rules:
  - id: yiyang-signaling
    lane: signaling
    from: yiyang-devices
    to: platform
    signaling: {roots: [Notify, Response], cmd_types: [Keepalive, Alarm, Catalog, DeviceInfo, DeviceStatus],
                 max_body_bytes: 8192}
""".encode()
FILES = {"policy.yaml": POLICY}
PLAN = compile_policy(parse_policy(FILES), policy_hash(FILES))
PASSWORDS = {CAM: "cam-secret", NVR: "nvr-secret", OTHER: "other-secret"}
WALL = 1_800_000_000.0


@dataclass(frozen=True)
class Peer:
    transport: str
    host: str
    port: int


CAM_PEER = Peer("udp", "192.0.2.10", 5060)


def settings(**kw) -> Settings:
    base = dict(server_id=SERVER, realm=REALM, destination="platform", passwords=PASSWORDS,
                keepalive_timeout=180.0, register_expires_min=60, register_expires_max=3600, catalog_retry=0.0,
                local={"udp": ("192.0.2.1", 5060), "tcp": ("192.0.2.1", 5060)})
    base.update(kw)
    return Settings(**base)


def lane(**kw) -> OuterSignalingLane:
    counter = itertools.count(1)
    return OuterSignalingLane(settings(**kw), ObjectIds(7), token=lambda n: f"nonce{next(counter):04d}")


class Device:
    """A GB/T 28181 device, as far as the lane sees it: builds its requests."""

    def __init__(self, device_id: str, password: str, peer: Peer = CAM_PEER) -> None:
        self.id, self.password, self.peer = device_id, password, peer
        self.cseq = 0
        self.call_id = f"{device_id}-call@{peer.host}"
        self.sn = 0

    def request(self, method: str, extra=(), body=b"", call_id=None, branch=None, from_user=None) -> sip.SipRequest:
        self.cseq += 1
        user = from_user or self.id
        headers = [("Via", f"SIP/2.0/{self.peer.transport.upper()} {self.peer.host}:{self.peer.port};rport;"
                           f"branch={branch or sip.new_branch()}"),
                   ("From", f"<sip:{user}@{REALM}>;tag=t{self.cseq}"), ("To", f"<sip:{user}@{REALM}>"),
                   ("Call-ID", call_id or self.call_id), ("CSeq", f"{self.cseq} {method}"),
                   ("Max-Forwards", "70"), *extra]
        if method == "REGISTER":
            headers.append(("Contact", f"<sip:{user}@{self.peer.host}:{self.peer.port}>"))
        return sip.parse_message(sip.build_request(method, f"sip:{SERVER}@{REALM}", headers, body))

    def register(self, expires: int = 3600, auth: str | None = None) -> sip.SipRequest:
        extra = [("Expires", str(expires))]
        if auth is not None:
            extra.append(("Authorization", auth))
        return self.request("REGISTER", extra, call_id=self.call_id)

    def answer(self, challenge_response: sip.SipResponse, password: str | None = None, qop: bool = True) -> str:
        ch = sip_digest.parse_challenge(challenge_response.header("WWW-Authenticate"))
        if not qop:
            ch = sip_digest.Challenge(ch.realm, ch.nonce, ch.opaque, ch.algorithm, None)
        return sip_digest.authorization(ch, "REGISTER", f"sip:{SERVER}@{REALM}", self.id,
                                        password or self.password, "0a4f113b")

    def message(self, m: Manscdp, content_type="Application/MANSCDP+xml", body: bytes | None = None,
                **kw) -> sip.SipRequest:
        data = manscdp.build(m) if body is None else body
        return self.request("MESSAGE", [("Content-Type", content_type)], data, **kw)

    def keepalive(self) -> sip.SipRequest:
        self.sn += 1
        return self.message(manscdp.keepalive(self.id, self.sn))


def responses(work) -> list[sip.SipResponse]:
    return [m for w in work if isinstance(w, SendSip) and isinstance(m := sip.parse_message(w.data), sip.SipResponse)]


def requests(work) -> list[sip.SipRequest]:
    return [m for w in work if isinstance(w, SendSip) and isinstance(m := sip.parse_message(w.data), sip.SipRequest)]


def records(work, event=None) -> list[dict]:
    return [w.fields for w in work if isinstance(w, AuditIntent) and (event is None or w.fields["event"] == event)]


def seals(work) -> list[SealObject]:
    return [w for w in work if isinstance(w, SealObject)]


def register(ln: OuterSignalingLane, dev: Device, now: float = 100.0, expires: int = 3600, password=None):
    """The two-step REGISTER; returns the work of the authenticated one."""
    first = ln.on_message(dev.register(expires), dev.peer, PLAN, now, WALL)
    [challenge] = responses(first)
    assert challenge.status == 401
    return ln.on_message(dev.register(expires, dev.answer(challenge, password)), dev.peer, PLAN, now, WALL)


# --- REGISTER and digest ------------------------------------------------------------------------

def test_register_with_digest_comes_online_crosses_on_and_queries_the_catalog():
    ln, cam = lane(), Device(CAM, "cam-secret")
    first = ln.on_message(cam.register(), CAM_PEER, PLAN, 100.0, WALL)
    [r401] = responses(first)
    assert r401.status == 401 and 'realm="4309000000"' in r401.header("WWW-Authenticate")
    assert not ln.registry.online(CAM) and not records(first)
    work = ln.on_message(cam.register(auth=cam.answer(r401)), CAM_PEER, PLAN, 100.0, WALL)
    [ok] = responses(work)
    assert ok.status == 200 and ok.header("Expires") == "3600" and ok.header("Date")
    assert ok.to.tag                                   # RFC 3261 §8.2.6.2
    assert ln.registry.online(CAM)
    peer, uri = ln.registry.contact(CAM)
    assert peer == CAM_PEER and uri.user == CAM and uri.host == "192.0.2.10"
    [rec] = records(work, "device_registered")
    assert rec["source"] == {"address": "192.0.2.10", "device_id": CAM}
    [on] = seals(work)
    s = on.obj.signaling
    assert (on.obj.lane, s.root, s.cmd_type, s.device_id) == ("signaling", "Notify", "Catalog", CAM)
    parsed = manscdp.parse(s.xml.encode("utf-8"))
    assert [(i.device_id, i.get("Event")) for i in parsed.items] == [(CAM, "ON")]
    assert on.sent["event"] == "object_sent" and on.sent["rule"] == "yiyang-signaling"
    [query] = requests(work)
    assert query.method == "MESSAGE" and query.uri.user == CAM
    q = manscdp.parse(query.body)
    assert (q.root, q.cmd_type, q.device_id) == ("Query", "Catalog", CAM)
    assert query.call_id != cam.call_id and query.from_.uri.user == SERVER
    # never the password, anywhere
    assert not any("cam-secret" in repr(w) for w in work + first)


def test_digest_without_qop_is_accepted():
    ln, cam = lane(), Device(CAM, "cam-secret")
    [r401] = responses(ln.on_message(cam.register(), CAM_PEER, PLAN, 100.0, WALL))
    work = ln.on_message(cam.register(auth=cam.answer(r401, qop=False)), CAM_PEER, PLAN, 100.0, WALL)
    assert responses(work)[0].status == 200 and ln.registry.online(CAM)


def test_wrong_password_is_refused_403_and_the_nonce_is_spent():
    ln, cam = lane(), Device(CAM, "cam-secret")
    [r401] = responses(ln.on_message(cam.register(), CAM_PEER, PLAN, 100.0, WALL))
    auth = cam.answer(r401, password="guess")
    work = ln.on_message(cam.register(auth=auth), CAM_PEER, PLAN, 100.0, WALL)
    assert [r.status for r in responses(work)] == [403]
    [rec] = records(work, "signaling_refused")
    assert rec["code"] == Reason.WRONG_PASSWORD and rec["verdict"] == "refused" and rec["rule"] == "ferry-signaling"
    assert "guess" not in repr(rec) and not ln.registry.online(CAM)
    # the same nonce again (even with the right password): a replay, challenged afresh
    right = cam.answer(r401)
    work = ln.on_message(cam.register(auth=right), CAM_PEER, PLAN, 200.0, WALL)
    [again] = responses(work)
    assert again.status == 401 and "stale=TRUE" in again.header("WWW-Authenticate")
    assert records(work, "signaling_refused")[0]["code"] == Reason.NONCE_REPLAY
    assert not ln.registry.online(CAM)


def test_a_replayed_register_is_refused_as_nonce_replay():
    ln, cam = lane(), Device(CAM, "cam-secret")
    [r401] = responses(ln.on_message(cam.register(), CAM_PEER, PLAN, 100.0, WALL))
    auth = cam.answer(r401)
    assert responses(ln.on_message(cam.register(auth=auth), CAM_PEER, PLAN, 100.0, WALL))[0].status == 200
    # an attacker replays the captured Authorization in a new request (new CSeq, branch)
    work = ln.on_message(cam.register(auth=auth), Peer("udp", "198.51.100.7", 5060), PLAN, 200.0, WALL)
    assert responses(work)[0].status == 401
    assert records(work, "signaling_refused")[0]["code"] == Reason.NONCE_REPLAY


def test_stale_nonce_is_challenged_afresh():
    ln, cam = lane(), Device(CAM, "cam-secret")
    [r401] = responses(ln.on_message(cam.register(), CAM_PEER, PLAN, 100.0, WALL))
    late = 100.0 + limits.SIGNALING_NONCE_TTL + 1
    work = ln.on_message(cam.register(auth=cam.answer(r401)), CAM_PEER, PLAN, late, WALL)
    [again] = responses(work)
    assert again.status == 401 and "stale=TRUE" in again.header("WWW-Authenticate")
    assert records(work, "signaling_refused")[0]["code"] == Reason.STALE_NONCE
    # answering the fresh nonce works
    work = ln.on_message(cam.register(auth=cam.answer(again)), CAM_PEER, PLAN, late, WALL)
    assert responses(work)[0].status == 200


def test_a_nonce_issued_to_another_device_does_not_serve():
    ln, cam, nvr = lane(), Device(CAM, "cam-secret"), Device(NVR, "nvr-secret", Peer("udp", "192.0.2.11", 5060))
    [r401] = responses(ln.on_message(cam.register(), CAM_PEER, PLAN, 100.0, WALL))
    work = ln.on_message(nvr.register(auth=nvr.answer(r401)), nvr.peer, PLAN, 100.0, WALL)
    assert responses(work)[0].status == 401 and not ln.registry.online(NVR)


def test_nonces_are_bounded(monkeypatch):
    monkeypatch.setattr(limits, "SIGNALING_NONCES_MAX", 64)
    ids = [f"4309000000132{n:07d}" for n in range(100)]
    ln = lane(passwords={d: "pw" for d in ids})
    for d in ids:
        ln.on_message(Device(d, "pw").register(), CAM_PEER, PLAN, 100.0, WALL)
    assert len(ln._nonces) == 64


def test_one_device_asking_for_challenges_keeps_a_few_nonces_and_drops_no_other_devices():
    ln, cam, nvr = lane(), Device(CAM, "cam-secret"), Device(NVR, "nvr-secret", Peer("udp", "192.0.2.11", 5060))
    [challenge] = responses(ln.on_message(nvr.register(), nvr.peer, PLAN, 100.0, WALL))
    for _ in range(limits.SIGNALING_NONCES_MAX + 50):
        ln.on_message(cam.register(), CAM_PEER, PLAN, 100.0, WALL)
    assert len(ln._nonces) == 1 + limits.SIGNALING_NONCES_PER_DEVICE
    work = ln.on_message(nvr.register(auth=nvr.answer(challenge)), nvr.peer, PLAN, 100.0, WALL)
    assert [r.status for r in responses(work)] == [200] and ln.registry.online(NVR)


def test_a_burst_of_devices_registering_at_once_all_come_online():
    """10,000 cameras re-registering after a power cut: every one is challenged before the first
    answers (their answers queue behind the other REGISTERs); no nonce is dropped for another's."""
    assert limits.SIGNALING_NONCES_MAX >= limits.SIGNALING_DEVICES_MAX     # every device at once
    ids = [f"4309000000132{n:07d}" for n in range(4200)]                  # beyond the 4096 there were
    ln = lane(passwords={d: f"pw{d[-4:]}" for d in ids})
    devices = [Device(d, f"pw{d[-4:]}", Peer("udp", "192.0.2.10", 20000 + i)) for i, d in enumerate(ids)]
    challenges = [responses(ln.on_message(dev.register(), dev.peer, PLAN, 100.0, WALL))[0] for dev in devices]
    statuses = [responses(ln.on_message(dev.register(auth=dev.answer(ch)), dev.peer, PLAN, 101.0, WALL))[0].status
                for dev, ch in zip(devices, challenges)]
    assert statuses.count(200) == len(ids)
    assert len(ln.registry) == len(ids)


def test_unknown_device_is_refused_403_without_state():
    ln, dev = lane(), Device(STRANGER, "x")
    work = ln.on_message(dev.register(), CAM_PEER, PLAN, 100.0, WALL)
    assert [r.status for r in responses(work)] == [403]
    assert records(work)[0]["code"] == Reason.SIP_UNKNOWN_DEVICE
    assert len(ln.registry) == 0 and not ln._nonces


def test_reregister_refreshes_and_expiry_marks_offline():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam, now=100.0, expires=600)
    assert ln.next_timer() == pytest.approx(100.0 + 180.0)     # the keepalive deadline comes first
    ka = ln.on_message(cam.keepalive(), CAM_PEER, PLAN, 150.0, WALL)
    assert responses(ka)[0].status == 200
    work = register(ln, cam, now=500.0, expires=600)          # refresh: no second ON, no second query
    assert responses(work)[0].status == 200 and not seals(work) and not requests(work)
    assert not records(work, "device_registered")
    # keepalives keep it alive; the registration runs out at 1100
    for t in (600.0, 750.0, 900.0, 1050.0):
        ln.on_message(cam.keepalive(), CAM_PEER, PLAN, t, WALL)
    assert ln.handle_timer(PLAN, 1099.0, WALL) == [] and ln.registry.online(CAM)
    work = ln.handle_timer(PLAN, 1100.5, WALL)
    [rec] = records(work, "device_offline")
    assert "registration expired" in rec["reason"] and not ln.registry.online(CAM)
    [off] = seals(work)
    items = manscdp.parse(off.obj.signaling.xml.encode()).items
    assert [(i.device_id, i.get("Event")) for i in items] == [(CAM, "OFF")]


def test_missed_keepalives_mark_offline():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam, now=100.0)
    ln.on_message(cam.keepalive(), CAM_PEER, PLAN, 160.0, WALL)
    assert ln.next_timer() == pytest.approx(160.0 + 180.0)
    assert not ln.handle_timer(PLAN, 339.0, WALL)
    work = ln.handle_timer(PLAN, 341.0, WALL)
    assert "no keepalive" in records(work, "device_offline")[0]["reason"] and not ln.registry.online(CAM)
    # a message now: not registered
    work = ln.on_message(cam.keepalive(), CAM_PEER, PLAN, 342.0, WALL)
    assert responses(work)[0].status == 403 and records(work)[0]["code"] == Reason.NOT_REGISTERED


def test_expires_zero_unregisters():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam)
    work = register(ln, cam, now=200.0, expires=0)
    assert responses(work)[0].status == 200 and not ln.registry.online(CAM)
    assert records(work, "device_unregistered")
    assert manscdp.parse(seals(work)[0].obj.signaling.xml.encode()).items[0].get("Event") == "OFF"


def test_too_brief_and_too_long_registrations():
    ln, cam = lane(), Device(CAM, "cam-secret")
    work = register(ln, cam, expires=10)
    [r] = responses(work)
    assert r.status == 423 and r.header("Min-Expires") == "60" and not ln.registry.online(CAM)
    work = register(ln, cam, expires=999_999)
    assert responses(work)[0].header("Expires") == "3600"


def test_retransmitted_request_gets_the_same_answer_and_crosses_once():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam)
    req = cam.keepalive()
    one = ln.on_message(req, CAM_PEER, PLAN, 200.0, WALL)
    two = ln.on_message(req, CAM_PEER, PLAN, 200.5, WALL)
    assert len(seals(one)) == 1 and not seals(two)
    assert [w.data for w in two] == [w.data for w in one if isinstance(w, SendSip)]


# --- MESSAGE ------------------------------------------------------------------------------------

def alarm(device_id: str, sn: int = 5) -> Manscdp:
    return Manscdp("Notify", "Alarm", sn, device_id, (("AlarmPriority", "1"), ("AlarmMethod", "2"),
                                                      ("AlarmTime", "2026-12-06T10:00:00"),
                                                      ("AlarmDescription", "越界")))


def test_keepalive_and_alarm_cross_as_canonical_objects():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam)
    work = ln.on_message(cam.keepalive(), CAM_PEER, PLAN, 110.0, WALL)
    assert responses(work)[0].status == 200
    [ka] = seals(work)
    assert (ka.obj.signaling.root, ka.obj.signaling.cmd_type) == ("Notify", "Keepalive")
    assert ka.obj.source.device_id == CAM and ka.obj.source.address == "192.0.2.10"
    assert ka.obj.destination == "platform" and ka.obj.rule == "yiyang-signaling" and ka.obj.created == WALL
    work = ln.on_message(cam.message(alarm(CAM)), CAM_PEER, PLAN, 111.0, WALL)
    [al] = seals(work)
    m = manscdp.parse(al.obj.signaling.xml.encode("utf-8"))
    assert m.get("AlarmDescription") == "越界" and m.sn == 5
    assert al.sent["object_id"] == al.obj.object_id and al.sent["object_type"] == "Notify/Alarm"
    assert ln.registry.get(CAM).keepalives == 1


def test_disallowed_cmd_type_is_refused_by_the_policy():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam)
    ctl = Manscdp("Control", "DeviceControl", 9, CAM, (("TeleBoot", "Boot"),))
    work = ln.on_message(cam.message(ctl), CAM_PEER, PLAN, 110.0, WALL)
    assert responses(work)[0].status == 403 and not seals(work)
    [rec] = records(work, "signaling_refused")
    assert rec["code"] == Reason.CONTENT_LIMIT and rec["rule"] == "yiyang-signaling"
    assert "Control" in rec["reason"] and rec["detail"]["cmd_type"] == "DeviceControl"
    # an unknown CmdType under a known root: the policy names it not (later: recorded at once)
    odd = Manscdp("Notify", "MobilePosition", 10, CAM)
    work = ln.on_message(cam.message(odd), CAM_PEER, PLAN, 110.0 + limits.SIGNALING_REFUSAL_AUDIT_INTERVAL, WALL)
    assert records(work, "signaling_refused")[0]["code"] == Reason.CONTENT_LIMIT


def test_a_configured_device_outside_the_policy_is_refused_default_deny():
    ln, dev = lane(), Device(OTHER, "other-secret", Peer("udp", "192.0.2.20", 5060))
    work = register(ln, dev)
    assert responses(work)[0].status == 200          # its password is right: registered
    assert records(work, "signaling_refused")[0]["code"] == Reason.DEFAULT_DENY   # its ON does not cross
    work = ln.on_message(dev.keepalive(), dev.peer, PLAN, 110.0, WALL)
    assert responses(work)[0].status == 200 and not seals(work)
    assert records(work, "signaling_refused")[0]["code"] == Reason.DEFAULT_DENY


def test_message_refusals_each_with_its_code_and_status():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam)
    bomb = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>" + CAM.encode() + b"</DeviceID>"
            b"<Status>&b;</Status></Notify>")
    xxe = (b'<?xml version="1.0"?><!DOCTYPE n [<!ENTITY x SYSTEM "file:///etc/passwd">]><Notify><CmdType>Keepalive'
           b"</CmdType><SN>1</SN><DeviceID>" + CAM.encode() + b"</DeviceID><Status>&x;</Status></Notify>")
    cases = [
        (cam.message(alarm(CAM), body=bomb), 400, Reason.BAD_MANSCDP),
        (cam.message(alarm(CAM), body=xxe), 400, Reason.BAD_MANSCDP),
        (cam.message(alarm(CAM), body=b"<Notify>\xff\xfe</Notify>"), 400, Reason.BAD_MANSCDP),
        (cam.message(alarm(CAM), content_type="text/plain"), 415, Reason.UNSUPPORTED_CONTENT_TYPE),
        (cam.message(alarm(CAM), body=b"<" * (limits.SIGNALING_MESSAGE_BODY_MAX + 1)), 413, Reason.BODY_TOO_LARGE),
        (cam.message(alarm(NVR)), 403, Reason.DEVICE_MISMATCH),
        (cam.message(alarm(CAM), from_user=STRANGER), 403, Reason.SIP_UNKNOWN_DEVICE),
        (cam.message(alarm(NVR), from_user=NVR), 403, Reason.NOT_REGISTERED),
        (cam.request("SUBSCRIBE"), 405, Reason.UNSUPPORTED_METHOD),
    ]
    for i, (req, status, code) in enumerate(cases):
        work = ln.on_message(req, CAM_PEER, PLAN, 1000.0 + 100 * i, WALL)   # apart: each recorded at once
        assert [r.status for r in responses(work)] == [status], code
        [rec] = records(work, "signaling_refused")
        assert rec["code"] == code and rec["verdict"] == "refused", code
        assert not seals(work)


def test_a_message_from_another_address_than_the_registration_is_refused():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam)
    work = ln.on_message(cam.keepalive(), Peer("udp", "198.51.100.9", 5060), PLAN, 110.0, WALL)
    assert responses(work)[0].status == 403 and records(work)[0]["code"] == Reason.NOT_REGISTERED


def test_malformed_sip_from_the_endpoint_is_refused_and_aggregated():
    ln = lane()
    peer = Peer("udp", "203.0.113.5", 5060)
    first = ln.on_refused(peer, "header line 3: no colon", 120, 100.0, WALL)
    assert records(first)[0]["code"] == Reason.MALFORMED_SIP
    for i in range(999):
        assert ln.on_refused(peer, "header line 3: no colon", 120, 100.0 + i * 0.001, WALL) == []
    assert ln.counters["refused_malformed_sip"] == 1000
    due = ln.next_timer()
    assert due == pytest.approx(100.0 + limits.SIGNALING_REFUSAL_AUDIT_INTERVAL)
    [summary] = records(ln.handle_timer(PLAN, due, WALL))
    assert summary["detail"]["messages"] == 999 and summary["detail"]["total"] == 1000
    assert "999 messages refused" in summary["reason"]


def test_a_flood_of_disallowed_messages_is_aggregated():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam)
    ctl = Manscdp("Control", "DeviceControl", 9, CAM, (("TeleBoot", "Boot"),))
    made = []
    for i in range(500):
        made += records(ln.on_message(cam.message(ctl), CAM_PEER, PLAN, 200.0 + i * 0.01, WALL), "signaling_refused")
    assert len(made) == 1 and ln.counters["refused_content_limit"] == 500
    made += records(ln.handle_timer(PLAN, 200.0 + limits.SIGNALING_REFUSAL_AUDIT_INTERVAL, WALL))
    assert sum(r["detail"]["messages"] for r in made) == 500


def test_catalog_pages_are_learned_and_channels_may_speak():
    ln, nvr = lane(), Device(NVR, "nvr-secret", Peer("tcp", "192.0.2.11", 40000))
    work = register(ln, nvr)
    [query] = requests(work)
    sn = manscdp.parse(query.body).sn
    chans = [f"430900000013100000{i:02d}" for i in range(1, 6)]
    items = [Item((("DeviceID", c), ("Name", f"通道{i}"), ("Status", "ON"))) for i, c in enumerate(chans)]
    pages = manscdp.catalog_pages(NVR, sn, items, None, 2)
    assert len(pages) == 3
    for page in pages[:2]:
        work = ln.on_message(nvr.message(page), nvr.peer, PLAN, 110.0, WALL)
        assert responses(work)[0].status == 200 and len(seals(work)) == 1
    d = ln.registry.get(NVR)
    assert len(d.catalog) == 4 and not d.catalog_complete and d.catalog_sum == 5
    ln.on_message(nvr.message(pages[2]), nvr.peer, PLAN, 110.0, WALL)
    assert sorted(d.catalog) == chans and d.catalog_complete
    # an alarm of a learned channel is the NVR's to send
    work = ln.on_message(nvr.message(alarm(chans[0])), nvr.peer, PLAN, 111.0, WALL)
    [al] = seals(work)
    assert al.obj.signaling.device_id == chans[0] and al.obj.source.device_id == NVR


def test_invite_without_media_gets_403_with_a_warning_and_media_is_told_apart():
    ln, cam = lane(), Device(CAM, "cam-secret")
    inv = cam.request("INVITE")
    assert is_media(inv)
    [r] = responses(ln.on_message(inv, CAM_PEER, PLAN, 100.0, WALL))
    assert r.status == 403 and "on-demand video not configured" in r.header("Warning")
    assert not is_media(cam.keepalive()) and not is_media(cam.register())


def test_settings_never_show_passwords():
    assert "cam-secret" not in repr(settings()) and "cam-secret" not in str(settings())


def test_objects_parse_as_canonical_objects():
    ln, cam = lane(), Device(CAM, "cam-secret")
    register(ln, cam)
    [obj] = [s.obj for s in seals(ln.on_message(cam.keepalive(), CAM_PEER, PLAN, 110.0, WALL))]
    again = ferry_pb2.CanonicalObject.FromString(obj.SerializeToString())
    assert again == obj and PLAN.decide(again).allowed


def test_an_unanswered_catalog_query_is_asked_again_at_most_three_times():
    ln, cam = lane(catalog_retry=10.0), Device(CAM, "cam-secret")
    work = register(ln, cam, now=100.0)
    first = requests(work)
    assert len(first) == 1
    assert ln.next_timer() == pytest.approx(110.0)
    again = requests(ln.handle_timer(PLAN, 110.0, WALL))
    assert len(again) == 1 and again[0].call_id != first[0].call_id
    assert manscdp.parse(again[0].body).sn != manscdp.parse(first[0].body).sn
    third = requests(ln.handle_timer(PLAN, 120.0, WALL))
    assert len(third) == 1 and ln.next_timer() == pytest.approx(100.0 + 180.0)   # no fourth: the keepalive deadline
    assert not requests(ln.handle_timer(PLAN, 130.0, WALL))
    # answered at once: not asked again
    ln2 = lane(catalog_retry=10.0)
    [query] = requests(register(ln2, cam, now=100.0))
    sn = manscdp.parse(query.body).sn
    ln2.on_message(cam.message(Manscdp("Response", "Catalog", sn, CAM, sum_num=0)), CAM_PEER, PLAN, 101.0, WALL)
    assert not requests(ln2.handle_timer(PLAN, 110.0, WALL)) and ln2.registry.get(CAM).catalog_complete
