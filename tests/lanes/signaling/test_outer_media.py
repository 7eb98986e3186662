"""The outer media lane (ferry.lanes.signaling.outer_media): ferry INVITEs outer cameras, pure.

A fake camera answers from the bytes the lane sends (parsed back with ferry.codecs.sip/sdp), so
each test checks what crosses the wire: the offer's lines, ACK and BYE, CANCEL, retransmits,
timeouts, holders, always-on backoff and the MANSCDP of PTZ and catalog queries.
"""
from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings, strategies as st

from ferry.codecs import manscdp
from ferry.codecs.sdp import Origin, RtpMap, Sdp, build_sdp, parse_sdp
from ferry.codecs.sip import SipRequest, SipUri, build_request, build_response, parse_message, response_to
from ferry.lanes.signaling.outer_media import (ALWAYS_ON, CameraSetting, CloseIngest, MediaSettings, OpenIngest,
                                               OuterMediaLane, SendSip, ptz_command, ssrc_for)
from ferry.lanes.work import AuditIntent
from ferry.reasons import Reason

CAM = "34020000001320000001"
CAM2 = "34020000001320000002"
SERVER = "34020000002000000001"


@dataclass(frozen=True)
class P:
    transport: str
    host: str
    port: int


PEER = P("udp", "10.0.0.5", 5060)


def settings_(**kw) -> MediaSettings:
    base = dict(server_id=SERVER, domain="3402000000", sip_host="10.0.0.1", sip_port=5060,
                media_address="10.0.0.1", destination="inner-video", port_range=(30000, 30009),
                invite_timeout=10.0, media_timeout=5.0, retry_min=1.0, retry_max=8.0)
    base.update(kw)
    return MediaSettings(**base)


def lane_(**kw) -> OuterMediaLane:
    return OuterMediaLane(settings_(**kw), lambda d: (PEER, SipUri("sip", d, "10.0.0.5", 5060)))


def of(work, kind):
    return [w for w in work if isinstance(w, kind)]


def records(work, event=None):
    return [w.fields for w in work if isinstance(w, AuditIntent) and (event is None or w.fields["event"] == event)]


def sent(work) -> list:
    return [parse_message(w.data) for w in of(work, SendSip)]


def invite(lane, device=CAM, transport="udp", operator="alice", now=0.0):
    """start + ingest_ready: the INVITE the lane sends, and the OpenIngest."""
    work = lane.start(device, transport, operator, now, 1000.0)
    opens = of(work, OpenIngest)
    assert len(opens) == 1
    work = lane.ingest_ready(opens[0].session, None, now, 1000.0)
    (req,) = sent(work)
    assert isinstance(req, SipRequest) and req.method == "INVITE"
    return req, opens[0], work


def answer(req: SipRequest, status=200, ssrc=None, transport=None, tag="cam1", contact="sip:%s@10.0.0.5:5060"):
    offer = parse_sdp(req.body)
    body = b""
    if status == 200:
        body = build_sdp(Sdp(origin=Origin(CAM, "0", "0", "10.0.0.5"), session_name="Play", connection="10.0.0.5",
                             media_port=15060, transport=transport or offer.transport, payload_types=(96,),
                             rtpmaps=(RtpMap(96, "PS", 90000),), direction="sendonly",
                             setup="active" if offer.transport == "TCP/RTP/AVP" else None,
                             ssrc=ssrc or offer.ssrc))
    extra = [("Contact", f"<{contact % req.to.uri.user}>")] if status == 200 else []
    if body:
        extra.append(("Content-Type", "APPLICATION/SDP"))
    return parse_message(response_to(req, status, {200: "OK", 180: "Ringing", 100: "Trying"}.get(status, "Busy"),
                                     extra, body, to_tag=tag if status > 100 else None))


# --- the offer ---------------------------------------------------------------------------------------------------

def test_invite_carries_a_gb28181_offer_for_the_port_ferry_opened():
    lane = lane_()
    req, opened, work = invite(lane)
    assert opened.device_id == CAM and opened.transport == "udp" and opened.destination == "inner-video"
    assert opened.session == f"sip-{CAM}-1" and 30000 <= opened.port <= 30009
    sdp = parse_sdp(req.body)
    assert sdp.session_name == "Play" and sdp.connection == "10.0.0.1" and sdp.media_port == opened.port
    assert sdp.transport == "RTP/AVP" and sdp.direction == "recvonly"
    assert sdp.rtpmaps == (RtpMap(96, "PS", 90000),)
    assert sdp.ssrc == "0200000001" == ssrc_for("3402000000", 1) and int(sdp.ssrc) == opened.ssrc
    assert sdp.origin.username == SERVER
    assert str(req.uri) == f"sip:{CAM}@10.0.0.5:5060"
    assert req.from_.uri.user == SERVER and req.from_.tag and req.to.tag is None
    assert req.header("Subject") == f"{CAM}:0200000001,{SERVER}:0"
    assert req.header("Content-Type") == "APPLICATION/SDP"
    (rec,) = records(work, "stream_requested")
    assert rec["flow"] == opened.session and rec["detail"]["holders"] == ["alice"]
    assert rec["detail"]["ssrc"] == "0200000001" and rec["source"]["device_id"] == CAM


def test_tcp_offer_is_passive_with_a_new_connection():
    req, opened, _ = invite(lane_(), transport="tcp")
    sdp = parse_sdp(req.body)
    assert opened.transport == "tcp"
    assert sdp.transport == "TCP/RTP/AVP" and sdp.setup == "passive" and sdp.connection_mode == "new"


def test_two_dialogs_get_different_ports_and_ssrcs():
    lane = lane_()
    r1, o1, _ = invite(lane, CAM)
    r2, o2, _ = invite(lane, CAM2)
    assert o1.port != o2.port and o1.ssrc != o2.ssrc


# --- answers ---------------------------------------------------------------------------------------------------

def test_200_is_acked_and_media_must_follow():
    lane = lane_()
    req, opened, _ = invite(lane)
    assert lane.on_sip(answer(req, 100), PEER, 0.1, 1000.1) == []
    assert lane.on_sip(answer(req, 180), PEER, 0.2, 1000.2) == []
    work = lane.on_sip(answer(req), PEER, 0.3, 1000.3)
    (ack,) = sent(work)
    assert ack.method == "ACK" and ack.cseq == (1, "ACK") and ack.to.tag == "cam1"
    assert str(ack.uri) == f"sip:{CAM}@10.0.0.5:5060" and ack.call_id == req.call_id
    assert ack.via[0].branch != req.via[0].branch          # ACK of a 2xx: a new transaction
    (rec,) = records(work, "stream_answered")
    assert rec["detail"]["port"] == opened.port and rec["detail"]["camera_address"] == "10.0.0.5"
    # a retransmitted 200 is ACKed again
    assert [m.method for m in sent(lane.on_sip(answer(req), PEER, 0.4, 1000.4))] == ["ACK"]
    # no media within media_timeout: BYE and stream_failed no_media
    assert lane.next_timer() <= 5.3
    work = lane.handle_timer(5.31, 1005.31)
    (bye,) = sent(work)
    assert bye.method == "BYE" and bye.cseq == (2, "BYE") and bye.to.tag == "cam1"
    (fail,) = records(work, "stream_failed")
    assert fail["code"] == Reason.NO_MEDIA and fail["verdict"] == "lost"
    assert of(work, CloseIngest) == [CloseIngest(opened.session)]
    assert lane.holders(CAM) == []          # on-demand: whoever wants it asks again


def test_media_in_time_keeps_the_dialog():
    lane = lane_()
    req, opened, _ = invite(lane)
    lane.on_sip(answer(req), PEER, 0.3, 1000.3)
    assert lane.media_started(opened.session, 1.0, 1001.0) == []
    assert lane.handle_timer(100.0, 1100.0) == []
    assert lane.sessions()[0]["state"] == "streaming"


def test_error_answer_is_acked_on_the_invite_branch_and_fails():
    lane = lane_()
    req, opened, _ = invite(lane)
    work = lane.on_sip(answer(req, 486), PEER, 0.3, 1000.3)
    (ack,) = sent(work)
    assert ack.method == "ACK" and ack.via[0].branch == req.via[0].branch and ack.to.tag == "cam1"
    (fail,) = records(work, "stream_failed")
    assert fail["code"] == Reason.INVITE_REFUSED and fail["detail"]["status"] == 486
    assert CloseIngest(opened.session) in work and lane.sessions() == []


def test_an_answer_with_another_ssrc_is_refused():
    lane = lane_()
    req, _, _ = invite(lane)
    work = lane.on_sip(answer(req, ssrc="0999990001"), PEER, 0.3, 1000.3)
    assert [m.method for m in sent(work)] == ["ACK", "BYE"]
    (fail,) = records(work, "stream_failed")
    assert fail["code"] == Reason.BAD_ANSWER and "0999990001" in fail["reason"]


def test_udp_invite_is_retransmitted_until_a_provisional_answer_then_times_out_with_cancel():
    lane = lane_()
    req, opened, _ = invite(lane)
    assert lane.next_timer() == 0.5
    work = lane.handle_timer(0.5, 1000.5)
    assert [m.method for m in sent(work)] == ["INVITE"] and sent(work)[0].via[0].branch == req.via[0].branch
    lane.on_sip(answer(req, 180), PEER, 0.6, 1000.6)
    assert sent(lane.handle_timer(2.0, 1002.0)) == []        # no more retransmits after 180
    work = lane.handle_timer(10.0, 1010.0)
    assert [m.method for m in sent(work)] == ["CANCEL"]
    (fail,) = records(work, "stream_failed")
    assert fail["code"] == Reason.INVITE_TIMEOUT
    # the camera's 487 after the CANCEL is ACKed, nothing else happens
    work = lane.on_sip(answer(req, 487), PEER, 10.1, 1010.1)
    assert [m.method for m in sent(work)] == ["ACK"] and records(work) == []


def test_silent_camera_times_out_without_cancel():
    lane = lane_()
    invite(lane)
    work = lane.handle_timer(10.0, 1010.0)
    assert [m.method for m in sent(work)] == []
    assert records(work, "stream_failed")[0]["code"] == Reason.INVITE_TIMEOUT


def test_unknown_device_fails_with_no_contact():
    lane = OuterMediaLane(settings_(), lambda d: None)
    work = lane.start(CAM, "udp", "alice", 0.0, 1000.0)
    assert of(work, OpenIngest) == []
    (fail,) = records(work, "stream_failed")
    assert fail["code"] == Reason.NO_CONTACT


def test_port_that_cannot_be_opened_fails():
    lane = lane_()
    (o,) = of(lane.start(CAM, "udp", "alice", 0.0, 1000.0), OpenIngest)
    work = lane.ingest_ready(o.session, "Address already in use", 0.0, 1000.0)
    assert sent(work) == [] and records(work, "stream_failed")[0]["code"] == Reason.NO_MEDIA_PORT


def test_port_range_exhausted():
    lane = lane_(port_range=(30000, 30000))
    invite(lane, CAM)
    work = lane.start(CAM2, "udp", "bob", 0.0, 1000.0)
    assert records(work, "stream_failed")[0]["code"] == Reason.NO_MEDIA_PORT


# --- BYE both ways, holders ----------------------------------------------------------------------------

def streaming(lane, device=CAM, operator="alice"):
    req, opened, _ = invite(lane, device, operator=operator)
    lane.on_sip(answer(req), PEER, 0.3, 1000.3)
    lane.media_started(opened.session, 0.5, 1000.5)
    return req, opened


def test_join_and_leave_count_holders_and_the_last_stop_byes():
    lane = lane_()
    req, opened = streaming(lane)
    work = lane.start(CAM, "udp", "bob", 1.0, 1001.0)
    assert of(work, OpenIngest) == [] and sent(work) == []
    assert records(work, "stream_joined")[0]["detail"]["holders"] == ["alice", "bob"]
    work = lane.start(CAM, "udp", "bob", 1.1, 1001.1)           # bob twice: two holds
    assert lane.holders(CAM) == ["alice", "bob", "bob"]
    assert lane.stop(CAM, "carol", 2.0, 1002.0) == (False, [])  # holds nothing
    assert lane.stop(CAM, "bob", 2.0, 1002.0) == (True, [])
    assert lane.stop(CAM, "alice", 2.0, 1002.0) == (True, [])
    ok, work = lane.stop(CAM, "bob", 3.0, 1003.0)
    assert ok
    (bye,) = sent(work)
    assert bye.method == "BYE" and bye.call_id == req.call_id and str(bye.uri) == f"sip:{CAM}@10.0.0.5:5060"
    assert records(work, "stream_stopped") and CloseIngest(opened.session) in work
    # the camera's 200 to the BYE ends the dialog
    assert lane.on_sip(parse_message(response_to(bye, 200, "OK")), PEER, 3.1, 1003.1) == []
    assert lane.sessions() == [] and lane.next_timer() is None


def test_bye_of_the_camera_is_answered_and_recorded():
    lane = lane_()
    req, opened = streaming(lane)
    bye = parse_message(_camera_bye(req))
    work = lane.on_sip(bye, PEER, 5.0, 1005.0)
    (ok,) = sent(work)
    assert ok.status == 200 and ok.call_id == req.call_id
    (rec,) = records(work, "stream_stopped")
    assert rec["code"] == Reason.CAMERA_BYE and CloseIngest(opened.session) in work
    # a BYE of an unknown dialog: 481
    (nope,) = sent(lane.on_sip(bye, PEER, 5.1, 1005.1))
    assert nope.status == 481


def _camera_bye(req: SipRequest) -> bytes:
    return build_request("BYE", SipUri("sip", SERVER, "10.0.0.1", 5060), [
        ("Via", "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKcam"), ("From", f"<sip:{CAM}@3402000000>;tag=cam1"),
        ("To", f"{req.header('From')}"), ("Call-ID", req.call_id), ("CSeq", "20 BYE"), ("Max-Forwards", "70")])


def test_media_lost_byes_and_fails():
    lane = lane_()
    req, opened = streaming(lane)
    work = lane.media_ended(opened.session, 9.0, 1009.0)
    assert [m.method for m in sent(work)] == ["BYE"]
    assert records(work, "stream_failed")[0]["code"] == Reason.MEDIA_LOST


def test_a_request_ferry_does_not_take():
    lane = lane_()
    req, _ = streaming(lane)
    (r,) = sent(lane.on_sip(parse_message(_camera_bye(req).replace(b"BYE", b"INFO")), PEER, 1.0, 1001.0))
    assert r.status == 200
    other = parse_message(_camera_bye(req).replace(b"BYE", b"INVITE").replace(req.call_id.encode(), b"x@y"))
    work = lane.on_sip(other, PEER, 1.0, 1001.0)
    (r,) = sent(work)
    assert r.status == 403
    (rec,) = records(work, "media_sip_refused")
    assert rec["code"] == Reason.UNSUPPORTED_METHOD and rec["source"] == {"address": "10.0.0.5"}
    # more within MEDIA_REFUSAL_AUDIT_INTERVAL are answered, counted, and recorded together later
    for i in range(5):
        work = lane.on_sip(other, PEER, 2.0 + i, 1002.0 + i)
        assert [m.status for m in sent(work)] == [403] and records(work) == []
    (rec,) = records(lane.on_sip(other, PEER, 11.5, 1011.5), "media_sip_refused")
    assert rec["detail"] == {"messages": 6, "total": 7}
    lane.on_sip(other, PEER, 12.0, 1012.0)
    (last,) = records(lane.close(13.0, 1013.0), "media_sip_refused")     # the agent stops: the rest
    assert last["detail"]["messages"] == 1


def test_close_ends_every_dialog():
    lane = lane_()
    streaming(lane, CAM)
    streaming(lane, CAM2, "bob")
    work = lane.close(20.0, 1020.0)
    assert sorted(m.method for m in sent(work)) == ["BYE", "BYE"] and len(records(work, "stream_stopped")) == 2


# --- always-on ---------------------------------------------------------------------------------------------

def test_always_on_invites_at_start_and_retries_with_backoff():
    cams = (CameraSetting(CAM, "udp"),)
    lane = lane_(mode="always-on", cameras=cams)
    work = lane.begin(0.0, 1000.0)
    (o,) = of(work, OpenIngest)
    req = sent(lane.ingest_ready(o.session, None, 0.0, 1000.0))[0]
    assert lane.holders(CAM) == [ALWAYS_ON]
    retries = []
    now = 0.0
    for _ in range(5):       # each INVITE refused: retried after 1, 2, 4, 8, 8 s
        work = lane.on_sip(answer(req, 503), PEER, now, 1000 + now)
        assert records(work, "stream_failed")
        at = lane.next_timer()
        retries.append(at - now)
        now = at
        work = lane.handle_timer(now, 1000 + now)
        (o,) = of(work, OpenIngest)
        req = sent(lane.ingest_ready(o.session, None, now, 1000 + now))[0]
    assert retries == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert lane.holders(CAM) == [ALWAYS_ON]
    # a stream that ran for retry_max resets the backoff
    lane.on_sip(answer(req), PEER, now, 1000 + now)
    lane.media_started(o.session, now + 0.1, 1000 + now)
    work = lane.media_ended(o.session, now + 20, 1020 + now)
    assert [m.method for m in sent(work)] == ["BYE"]
    assert lane.devices[CAM].retry_at == now + 20 + 1.0


def test_always_on_stop_by_operator_does_not_end_it():
    lane = lane_(mode="always-on", cameras=(CameraSetting(CAM),))
    (o,) = of(lane.begin(0.0, 1000.0), OpenIngest)
    req = sent(lane.ingest_ready(o.session, None, 0.0, 1000.0))[0]
    lane.on_sip(answer(req), PEER, 0.1, 1000.1)
    lane.start(CAM, "udp", "alice", 1.0, 1001.0)
    ok, work = lane.stop(CAM, "alice", 2.0, 1002.0)
    assert ok and work == [] and lane.holders(CAM) == [ALWAYS_ON]


# --- MESSAGEs -----------------------------------------------------------------------------------------------

def test_ptz_message_carries_a_valid_ptzcmd():
    lane = lane_()
    cmd = ptz_command("left", 0x40)
    assert cmd[:2] == "A5" and len(cmd) == 16
    b = bytes.fromhex(cmd)
    assert b[3] == 0x02 and b[4] == 0x40 and b[7] == sum(b[:7]) % 256
    (msg,) = sent(lane.ptz(CAM, cmd))
    assert msg.method == "MESSAGE" and msg.header("Content-Type") == "Application/MANSCDP+xml"
    body = manscdp.parse(msg.body)
    assert (body.root, body.cmd_type, body.device_id, body.get("PTZCmd")) == ("Control", "DeviceControl", CAM, cmd)
    (q,) = sent(lane.catalog_query(CAM))
    assert (manscdp.parse(q.body).root, manscdp.parse(q.body).cmd_type) == ("Query", "Catalog")
    assert OuterMediaLane(settings_(), lambda d: None).ptz(CAM, cmd).startswith(CAM)


@given(st.sampled_from(["left", "right", "up", "down", "upleft", "upright", "downleft", "downright", "zoomin",
                        "zoomout", "stop"]), st.integers(0, 255))
def test_every_ptz_command_passes_the_manscdp_check(direction, speed):
    cmd = ptz_command(direction, speed)
    manscdp.Manscdp("Control", "DeviceControl", 1, CAM, fields=(("PTZCmd", cmd),))


# --- property: whatever the camera does, the lane stays consistent ----------------------------------------------

_STEPS = st.lists(st.tuples(st.sampled_from(["start", "stop", "100", "180", "200", "486", "bye", "media", "ended",
                                             "timer", "ready_err", "garbage"]),
                            st.sampled_from([CAM, CAM2]), st.sampled_from(["alice", "bob"]),
                            st.floats(0, 6), st.sampled_from(["udp", "tcp", "tcp-active"])), max_size=40)


@settings(max_examples=200, deadline=None)
@given(_STEPS, st.booleans())
def test_any_sequence_of_events_keeps_the_lane_consistent(steps, always):
    lane = lane_(mode="always-on" if always else "on-demand", cameras=(CameraSetting(CAM),) if always else ())
    now = 0.0
    invites: dict[str, SipRequest] = {}
    opened: set[str] = set()

    def carry(work):
        for w in work:
            if isinstance(w, OpenIngest):
                assert w.session not in opened
                opened.add(w.session)
                carry(lane.ingest_ready(w.session, None, now, 1000 + now))
            elif isinstance(w, CloseIngest):
                opened.discard(w.session)
            elif isinstance(w, SendSip):
                m = parse_message(w.data)
                if isinstance(m, SipRequest) and m.method == "INVITE":
                    invites[m.to.uri.user] = m
            elif isinstance(w, AuditIntent):
                f = w.fields
                if f["verdict"] in ("lost", "refused"):
                    assert f["code"] in set(Reason)

    carry(lane.begin(now, 1000.0))
    for what, dev, op, dt, transport in steps:
        now += dt
        req = invites.get(dev)
        sess = lane.session_of(dev)
        if what == "start":
            carry(lane.start(dev, transport, op, now, 1000 + now))
        elif what == "stop":
            carry(lane.stop(dev, op, now, 1000 + now)[1])
        elif what in ("100", "180", "200", "486") and req is not None:
            carry(lane.on_sip(answer(req, int(what)), PEER, now, 1000 + now))
        elif what == "bye" and req is not None:
            carry(lane.on_sip(parse_message(_camera_bye(req)), PEER, now, 1000 + now))
        elif what == "media" and sess:
            carry(lane.media_started(sess, now, 1000 + now))
        elif what == "ended" and sess:
            carry(lane.media_ended(sess, now, 1000 + now))
        elif what == "timer":
            t = lane.next_timer()
            if t is not None:
                now = max(now, t)
                carry(lane.handle_timer(now, 1000 + now))
        elif what == "garbage" and req is not None:
            carry(lane.on_sip(parse_message(build_response(200, "OK", [
                ("Via", "SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx"), ("From", "<sip:a@b>;tag=1"), ("To", "<sip:c@d>"),
                ("Call-ID", req.call_id), ("CSeq", "77 INVITE")])), PEER, now, 1000 + now))
        # invariants: one dialog per device at most, open ports are those of live dialogs
        live = {s["session"] for s in lane.sessions() if s["state"] not in ("ending", "cancelling")
                and not (s["transport"] == "tcp-active" and s["state"] in ("inviting", "proceeding"))}
        assert opened == live
        ports = [s["port"] for s in lane.sessions() if s["session"] in live and s["transport"] != "tcp-active"]
        assert len(set(ports)) == len(ports)
        for d in (CAM, CAM2):
            if always and d == CAM:
                assert lane.holders(d).count(ALWAYS_ON) == 1
    carry(lane.close(now, 1000 + now))
    assert opened == set()


# --- hostile answers: whatever a camera sends back, the lane returns work and never raises -----------------

def _mutate(data: bytes, cuts: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for pos, val in cuts:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([100, 180, 200, 202, 400, 486, 500, 603]), st.binary(max_size=200),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8), st.booleans(),
       st.text(max_size=60), st.sampled_from(["10.0.0.5", "10.9.9.9"]))
def test_hostile_answers_only_ever_give_work(status, junk, cuts, use_sdp, contact, host):
    lane = lane_()
    req, opened, _ = invite(lane)
    body = _mutate(answer(req).body, cuts) if use_sdp else junk
    headers = [(n, v) for n, v in (("Via", req.header("Via")), ("From", req.header("From")),
                                   ("To", f"{req.header('To')};tag=x"), ("Call-ID", req.call_id),
                                   ("CSeq", "1 INVITE"), ("Contact", contact))]
    try:
        msg = parse_message(build_response(status, "Whatever", headers, body))
    except ValueError:
        return                                   # not a message the codec lets through
    work = lane.on_sip(msg, P("udp", host, 5060), 0.3, 1000.3)
    assert all(isinstance(w, (SendSip, OpenIngest, CloseIngest, AuditIntent)) for w in work)
    if host != PEER.host:
        assert work == []                        # another host than the dialog's camera: ignored
    elif 200 <= status < 300:
        assert [m.method for m in sent(work)][:1] == ["ACK"]
        st_ = lane.sessions()[0]["state"] if lane.sessions() else "gone"
        assert st_ in ("confirmed", "ending")
        assert (st_ == "confirmed") == bool(records(work, "stream_answered"))


def test_bye_with_the_call_id_from_another_host_does_not_end_the_dialog():
    lane = lane_()
    req, opened = streaming(lane)
    (r,) = sent(lane.on_sip(parse_message(_camera_bye(req)), P("udp", "10.6.6.6", 5060), 5.0, 1005.0))
    assert r.status == 481
    assert lane.sessions()[0]["state"] == "streaming"
    # responses with the dialog's Call-ID but another CSeq are not the INVITE's
    late = parse_message(response_to(req, 486, "Busy", to_tag="x").replace(b"CSeq: 1 INVITE", b"CSeq: 9 INVITE"))
    assert lane.on_sip(late, PEER, 5.1, 1005.1) == []


def test_tcp_active_offers_port_9_and_connects_to_the_answer():
    lane = lane_()
    work = lane.start(CAM, "tcp-active", "alice", 0.0, 1000.0)
    assert of(work, OpenIngest) == []                    # nothing to listen on
    (req,) = sent(work)
    offer = parse_sdp(req.body)
    assert offer.transport == "TCP/RTP/AVP" and offer.setup == "active" and offer.media_port == 9
    assert offer.connection_mode == "new"
    work = lane.on_sip(answer(req), PEER, 0.3, 1000.3)
    (o,) = of(work, OpenIngest)
    assert o.transport == "tcp-active" and o.connect == "10.0.0.5:15060" and o.port == 15060
    assert o.ssrc == int(offer.ssrc)
    # the connection cannot be made: BYE, stream_failed
    work = lane.ingest_ready(o.session, "Connection refused", 0.4, 1000.4)
    assert [m.method for m in sent(work)] == ["BYE"]
    assert records(work, "stream_failed")[0]["code"] == Reason.NO_MEDIA_PORT


def test_a_stream_the_video_lane_refuses_is_hung_up_with_its_code():
    lane = lane_()
    req, opened = streaming(lane)
    work = lane.media_refused(opened.session, "default_deny", "no rule for 3402...", 2.0, 1002.0)
    assert [m.method for m in sent(work)] == ["BYE"]
    (fail,) = records(work, "stream_failed")
    assert fail["code"] == Reason.DEFAULT_DENY and "refused" in fail["reason"]
    assert lane.media_refused(opened.session, "default_deny", "again", 2.1, 1002.1) == []
