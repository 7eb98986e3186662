"""The inner platform's INVITE dialogs with ferry, pure (issue 13 item 3, media-inner).

Every answer code, the SDP answer, CANCEL, BYE either side, the timeouts (fake `now`), the
on-demand reverse requests, and a hypothesis run of random SIP through the dialog lane."""
from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings, strategies as st

from ferry import limits
from ferry.codecs.sdp import parse_sdp
from ferry.codecs.sip import SipError, SipRequest, SipResponse, build_request, parse_message
from ferry.lanes.signaling.ids import IdMap
from ferry.lanes.signaling.inner_media import (Ask, InnerMediaLane, MediaSettings, SendSip, StartViewer,
                                               StopViewer)
from ferry.lanes.work import AuditIntent
from ferry.policy.load import parse_policy
from ferry.policy.plan import compile_policy

CAMERA = "43090000001320000001"        # outer ID, allowed
NO_VIDEO = "43090000001320000777"      # named by a source with no video rule
INNER_CAM = "43010000001320000001"     # what the platform sees (prefix 4309 -> 4301)
PLATFORM = "43010000002000000001"      # the inner platform's ID
POLICY = f"""
policy: media
version: 1
default: deny
sources:
  cameras: {{kind: devices, ids: ["{CAMERA}"]}}
  others: {{kind: devices, ids: ["{NO_VIDEO}"]}}
destinations:
  police-vms: {{kind: vms}}
rules:
  - id: video-cameras
    lane: video
    from: cameras
    to: police-vms
    video: {{codecs: [h264], max_width: 1920, max_height: 1080, max_frame_rate: 30, max_bitrate_kbps: 20000}}
"""
PLAN = compile_policy(parse_policy({"policy.yaml": POLICY.encode()}), b"\0" * 32)
IDS = IdMap(prefixes=[("4309", "4301")])


@dataclass(frozen=True)
class Peer:
    transport: str
    host: str
    port: int


PEER = Peer("udp", "10.1.0.5", 5060)
TCP_PEER = Peer("tcp", "10.1.0.5", 5060)


def offer(*, transport="RTP/AVP", setup=None, ssrc="0430100001", s="Play", direction="recvonly", pt="96",
          rtpmap="a=rtpmap:96 PS/90000") -> bytes:
    lines = ["v=0", f"o={PLATFORM} 0 0 IN IP4 10.1.0.5", f"s={s}", "c=IN IP4 10.1.0.5", "t=0 0",
             f"m=video 40000 {transport} {pt}", f"a={direction}", rtpmap]
    if setup:
        lines += [f"a=setup:{setup}", "a=connection:new"]
    if ssrc:
        lines.append(f"y={ssrc}")
    return ("\r\n".join(lines) + "\r\n").encode()


def invite(target=INNER_CAM, body=None, call="c1@10.1.0.5", branch="z9hG4bKinv1", to_tag=None, cseq=20,
           transport="UDP") -> SipRequest:
    to = f"<sip:{target}@4301000000>" + (f";tag={to_tag}" if to_tag else "")
    data = build_request("INVITE", f"sip:{target}@4301000000", [
        ("Via", f"SIP/2.0/{transport} 10.1.0.5:5060;rport;branch={branch}"),
        ("From", f"<sip:{PLATFORM}@4301000000>;tag=pf1"),
        ("To", to), ("Call-ID", call), ("CSeq", f"{cseq} INVITE"), ("Max-Forwards", "70"),
        ("Contact", f"<sip:{PLATFORM}@10.1.0.5:5060>"), ("Subject", f"{target}:0430100001,{PLATFORM}:0"),
        ("Content-Type", "APPLICATION/SDP")], offer() if body is None else body)
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def request(method, call="c1@10.1.0.5", branch="z9hG4bKx", to_tag=None, cseq=21) -> SipRequest:
    to = f"<sip:{INNER_CAM}@4301000000>" + (f";tag={to_tag}" if to_tag else "")
    data = build_request(method, f"sip:{INNER_CAM}@4301000000", [
        ("Via", f"SIP/2.0/UDP 10.1.0.5:5060;rport;branch={branch}"), ("From", f"<sip:{PLATFORM}@4301000000>;tag=pf1"),
        ("To", to), ("Call-ID", call), ("CSeq", f"{cseq} {method}"), ("Max-Forwards", "70")])
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def lane(mode="always-on", port_range=(30000, 30009), **kw) -> InnerMediaLane:
    settings = MediaSettings(mode=mode, media_address="10.1.0.1", port_range=port_range, sip_host="10.1.0.1",
                             sip_port=5060, **kw)
    return InnerMediaLane(settings, IDS.map_to_outer, rng=random.Random(7))


def sent(work) -> list[SipResponse | SipRequest]:
    return [parse_message(w.data) for w in work if isinstance(w, SendSip)]


def statuses(work) -> list[int]:
    return [m.status for m in sent(work) if isinstance(m, SipResponse)]


def records(work, event=None) -> list[dict]:
    return [w.fields for w in work if isinstance(w, AuditIntent) and (event is None or w.fields["event"] == event)]


def started_lane(mode="always-on", now=100.0, **kw):
    ln = lane(mode, **kw)
    work = ln.on_sip(invite(), PEER, PLAN, now, 1.7e9)
    [sv] = [w for w in work if isinstance(w, StartViewer)]
    return ln, sv, work


# --- the answer ---------------------------------------------------------------------------------

def test_an_allowed_camera_gets_100_at_once_then_200_with_a_gb28181_answer_at_its_first_key_frame():
    ln, sv, work = started_lane()
    assert statuses(work) == [100]
    assert sv.device_id == CAMERA and sv.address == "10.1.0.5:40000" and sv.ssrc == 430100001
    assert sv.transport == "udp" and sv.setup == "" and 30000 <= sv.local_port <= 30009 and sv.local_port % 2 == 0
    assert [r["flow"] for r in records(work, "invite_received")] == [INNER_CAM]
    assert ln.next_timer() == 100.0 + limits.INNER_MEDIA_INVITE_TIMEOUT
    work = ln.viewer_started(sv.viewer, "cam-1", 101.0, 1.7e9)
    [ok] = sent(work)
    assert isinstance(ok, SipResponse) and ok.status == 200 and ok.to.tag and ok.call_id == "c1@10.1.0.5"
    assert ok.content_type == "application/sdp" and ok.contact[0].uri.user == INNER_CAM
    sdp = parse_sdp(ok.body)
    assert sdp.session_name == "Play" and sdp.ssrc == "0430100001" and sdp.direction == "sendonly"
    assert sdp.transport == "RTP/AVP" and sdp.payload_types == (96,) and str(sdp.rtpmaps[0]) == "96 PS/90000"
    assert sdp.connection == "10.1.0.1" and sdp.media_port == sv.local_port and sdp.origin.username == INNER_CAM
    assert sdp.setup is None and sdp.connection_mode is None
    [rec] = records(work, "viewer_started")
    assert rec["flow"] == "cam-1" and rec["detail"]["ssrc"] == 430100001 and rec["source"]["device_id"] == CAMERA


def test_tcp_offers_get_the_other_setup_role_and_connection_new():
    for setup, mine, port_given in (("passive", "active", False), ("active", "passive", True),
                                    ("actpass", "active", False)):
        ln = lane()
        work = ln.on_sip(invite(body=offer(transport="TCP/RTP/AVP", setup=setup)), TCP_PEER, PLAN, 1.0, 1.7e9)
        [sv] = [w for w in work if isinstance(w, StartViewer)]
        assert (sv.transport, sv.setup, sv.local_port != 0) == ("tcp", mine, port_given)
        sdp = parse_sdp(sent(ln.viewer_started(sv.viewer, "s", 2.0, 1.7e9))[0].body)
        assert sdp.transport == "TCP/RTP/AVP" and sdp.setup == mine and sdp.connection_mode == "new"
        assert sdp.media_port == (sv.local_port or 9)


def test_an_offer_without_y_gets_a_live_ssrc_of_the_domain():
    ln = lane()
    work = ln.on_sip(invite(body=offer(ssrc=None)), PEER, PLAN, 1.0, 1.7e9)
    [sv] = [w for w in work if isinstance(w, StartViewer)]
    sdp = parse_sdp(sent(ln.viewer_started(sv.viewer, "s", 2.0, 1.7e9))[0].body)
    assert sdp.ssrc is not None and sdp.ssrc.startswith("0" + INNER_CAM[3:8]) and int(sdp.ssrc) == sv.ssrc


# --- refusals -----------------------------------------------------------------------------------

def refused(work):
    [rec] = records(work, "invite_refused")
    assert rec["verdict"] == "refused" and rec["code"] and rec["reason"]
    return rec


def test_unknown_ids_get_404_and_a_device_without_a_video_rule_403():
    ln = lane()
    for target in ("43990000001320000001", "4301000000132000000", "12345"):
        work = ln.on_sip(invite(target=target, call=f"u{target}"), PEER, PLAN, 1.0, 1.7e9)
        assert statuses(work) == [404] and refused(work)["code"] == "unknown_camera"
    # mapped, but the policy names no such device
    work = ln.on_sip(invite(target="43010000001320000002", call="u2"), PEER, PLAN, 1.0, 1.7e9)
    assert statuses(work) == [404] and refused(work)["code"] == "unknown_camera"
    work = ln.on_sip(invite(target="43010000001320000777", call="f1"), PEER, PLAN, 1.0, 1.7e9)
    assert statuses(work) == [403] and refused(work)["code"] == "default_deny"
    assert "no video rule" in refused(work)["reason"]
    assert not ln.dialogs and not [w for w in work if isinstance(w, StartViewer)]


def test_offers_ferry_cannot_serve_live_get_488_or_400():
    cases = [offer(s="Playback", ssrc="1430100001"), offer(pt="98", rtpmap="a=rtpmap:98 H264/90000"),
             offer(direction="sendonly"), offer(rtpmap="a=rtpmap:96 H264/90000")]
    for n, body in enumerate(cases):
        ln = lane()
        work = ln.on_sip(invite(body=body, call=f"o{n}"), PEER, PLAN, 1.0, 1.7e9)
        assert statuses(work) == [488] and refused(work)["code"] == "bad_offer", body
    ln = lane()
    work = ln.on_sip(invite(body=b"v=0\r\nnonsense\r\n"), PEER, PLAN, 1.0, 1.7e9)
    assert statuses(work) == [400] and refused(work)["code"] == "bad_offer"


def test_too_many_viewers_get_486():
    ln = lane(max_viewers=3, max_viewers_per_device=2)
    for n in range(2):
        assert statuses(ln.on_sip(invite(call=f"a{n}", branch=f"z9hG4bKa{n}"), PEER, PLAN, 1.0, 1.7e9)) == [100]
    work = ln.on_sip(invite(call="a2", branch="z9hG4bKa2"), PEER, PLAN, 1.0, 1.7e9)
    assert statuses(work) == [486] and refused(work)["code"] == "viewers_busy"
    assert "max_viewers_per_device" in refused(work)["reason"]
    # the port range is a limit too: 5 even ports in 30000-30009
    ln = lane(max_viewers=10, max_viewers_per_device=10)
    codes = [statuses(ln.on_sip(invite(call=f"p{n}", branch=f"z9hG4bKp{n}"), PEER, PLAN, 1.0, 1.7e9))[0]
             for n in range(6)]
    assert codes == [100] * 5 + [486]


def test_a_media_port_some_other_program_holds_is_replaced_by_another_not_answered_500():
    """The port range is shared with the rest of the host: a port ferry thought free may be taken.
    The viewer is made again on another port (bench/signaling.py saw 500s); only when
    INNER_MEDIA_PORT_TRIES ports in a row fail does the platform get 500."""
    ln, sv, _ = started_lane(port_range=(30000, 30099))
    tried = [sv.local_port]
    for _ in range(limits.INNER_MEDIA_PORT_TRIES - 1):
        work = ln.viewer_failed(sv.viewer, f"udp media port 10.1.0.1:{sv.local_port}: in use", 100.5, 1.7e9,
                                port_taken=True)
        assert statuses(work) == []
        [stop] = [w for w in work if isinstance(w, StopViewer)]
        [sv] = [w for w in work if isinstance(w, StartViewer)]
        assert stop.viewer != sv.viewer and sv.local_port not in tried and sv.local_port % 2 == 0
        tried.append(sv.local_port)
        assert len(ln.ports_used) == 1
    work = ln.viewer_started(sv.viewer, "cam-1", 101.0, 1.7e9)        # the last port worked
    [ok] = sent(work)
    assert ok.status == 200 and parse_sdp(ok.body).media_port == sv.local_port
    # a lane whose every try fails answers 500, with the reason
    ln, sv, _ = started_lane(port_range=(30000, 30099))
    for i in range(limits.INNER_MEDIA_PORT_TRIES):
        work = ln.viewer_failed(sv.viewer, "in use", 100.5, 1.7e9, port_taken=True)
        nxt = [w for w in work if isinstance(w, StartViewer)]
        if not nxt:
            break
        sv = nxt[0]
    assert i == limits.INNER_MEDIA_PORT_TRIES - 1 and statuses(work) == [500] and not ln.ports_used
    # a failure that is not the port's (e.g. the lane refused the viewer) is 500 at once
    ln, sv, _ = started_lane()
    assert statuses(ln.viewer_failed(sv.viewer, "no such stream", 100.5, 1.7e9)) == [500]
    # and a range with no other free port ends the tries early: 500
    ln, sv, _ = started_lane(port_range=(30000, 30001))
    assert statuses(ln.viewer_failed(sv.viewer, "in use", 100.5, 1.7e9, port_taken=True)) == [500]


def test_a_camera_that_never_starts_gets_408_within_the_timeout():
    ln, sv, _ = started_lane(invite_timeout=8.0)
    assert statuses(ln.handle_timer(107.9, 1.7e9)) == []
    work = ln.handle_timer(108.0, 1.7e9)
    assert statuses(work) == [408] and refused(work)["code"] == "no_stream"
    assert StopViewer(sv.viewer) in work and not ln.dialogs and not ln.ports_used
    # the platform's ACK of the 408 and a late INVITE retransmission
    assert ln.on_sip(request("ACK", branch="z9hG4bKinv1", to_tag="x", cseq=20), PEER, PLAN, 108.1, 0) == []
    assert statuses(ln.on_sip(invite(), PEER, PLAN, 108.2, 1.7e9)) == [408]


# --- the dialog ---------------------------------------------------------------------------------

def answered(mode="always-on", **kw):
    ln, sv, _ = started_lane(mode, **kw)
    [ok] = sent(ln.viewer_started(sv.viewer, "sip-cam-1", 101.0, 1.7e9))
    return ln, sv, ok


def test_200_is_retransmitted_until_the_ack_and_a_missing_ack_ends_with_bye():
    ln, sv, ok = answered()
    assert statuses(ln.handle_timer(101.5, 0)) == [200]
    assert statuses(ln.handle_timer(102.5, 0)) == [200]
    ln.on_sip(request("ACK", branch="z9hG4bKack", to_tag=ok.to.tag, cseq=20), PEER, PLAN, 102.6, 0)
    assert ln.handle_timer(110.0, 0) == [] and ln.dialogs["c1@10.1.0.5"].state == "confirmed"
    ln2, sv2, ok2 = answered()
    work = ln2.handle_timer(101.0 + limits.INNER_MEDIA_ACK_TIMEOUT, 0)
    [bye] = sent(work)
    assert isinstance(bye, SipRequest) and bye.method == "BYE" and StopViewer(sv2.viewer) in work
    assert records(work, "viewer_ended")[0]["detail"]["by"] == "ferry"


def test_bye_from_the_platform_stops_the_viewer():
    ln, sv, ok = answered()
    ln.on_sip(request("ACK", to_tag=ok.to.tag, cseq=20), PEER, PLAN, 101.1, 0)
    work = ln.on_sip(request("BYE", to_tag=ok.to.tag, branch="z9hG4bKbye"), PEER, PLAN, 130.0, 0)
    assert statuses(work) == [200] and StopViewer(sv.viewer) in work
    [rec] = records(work, "viewer_ended")
    assert rec["detail"]["by"] == "platform" and rec["detail"]["duration"] == 30.0
    assert not ln.dialogs and not ln.ports_used
    # a BYE for no dialog
    assert statuses(ln.on_sip(request("BYE", to_tag="nope", call="zz"), PEER, PLAN, 131.0, 0)) == [481]


def test_the_stream_ending_makes_ferry_send_bye_built_fresh_and_retransmitted_until_answered():
    ln, sv, ok = answered()
    ln.on_sip(request("ACK", to_tag=ok.to.tag, cseq=20), PEER, PLAN, 101.1, 0)
    work = ln.viewer_lost(sv.viewer, "no access unit for 10s", 150.0, 0)
    [bye] = sent(work)
    assert isinstance(bye, SipRequest) and bye.method == "BYE" and bye.call_id == "c1@10.1.0.5"
    assert bye.from_.tag == ok.to.tag and bye.to.tag == "pf1" and bye.uri.user == PLATFORM
    assert bye.uri.host == "10.1.0.5" and bye.cseq[1] == "BYE" and bye.via[0].branch != "z9hG4bKinv1"
    assert StopViewer(sv.viewer) in work and "the stream ended" in records(work, "viewer_ended")[0]["reason"]
    assert [m.method for m in sent(ln.handle_timer(150.5, 0))] == ["BYE"]       # no answer yet: again
    resp = parse_message(b"SIP/2.0 200 OK\r\nVia: " + bye.header("Via").encode() + b"\r\nFrom: " +
                         bye.header("From").encode() + b"\r\nTo: " + bye.header("To").encode() +
                         b"\r\nCall-ID: c1@10.1.0.5\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n")
    ln.on_sip(resp, PEER, PLAN, 150.6, 0)
    assert not ln.dialogs and ln.handle_timer(160.0, 0) == []


def test_cancel_before_the_answer_gives_487_and_after_it_does_nothing():
    ln, sv, _ = started_lane()
    work = ln.on_sip(request("CANCEL", branch="z9hG4bKinv1", cseq=20), PEER, PLAN, 101.0, 0)
    assert statuses(work) == [200, 487] and StopViewer(sv.viewer) in work
    assert records(work, "invite_cancelled") and not ln.dialogs
    assert ln.viewer_started(sv.viewer, "s", 102.0, 0) == []       # the key frame comes too late: nothing
    ln, sv, ok = answered()
    work = ln.on_sip(request("CANCEL", branch="z9hG4bKinv1", cseq=20), PEER, PLAN, 101.5, 0)
    assert statuses(work) == [200] and ln.dialogs
    assert statuses(ln.on_sip(request("CANCEL", branch="z9hG4bKother", cseq=20), PEER, PLAN, 101.6, 0)) == [481]


def test_reinvite_is_refused_488_info_405_and_a_retransmitted_invite_gets_the_last_answer():
    ln, sv, ok = answered()
    work = ln.on_sip(invite(to_tag=ok.to.tag, branch="z9hG4bKre", cseq=22), PEER, PLAN, 103.0, 0)
    assert statuses(work) == [488] and refused(work)["code"] == "not_supported"
    work = ln.on_sip(request("INFO", to_tag=ok.to.tag, cseq=23), PEER, PLAN, 103.0, 0)
    [resp] = sent(work)
    assert resp.status == 405 and "INVITE" in (resp.header("Allow") or "")
    assert refused(work)["code"] == "not_supported"
    assert statuses(ln.on_sip(invite(), PEER, PLAN, 103.5, 0)) == [200]
    assert ln.dialogs["c1@10.1.0.5"].state == "answered"


def test_viewers_of_one_device_each_get_their_own_dialog_and_viewer():
    ln = lane()
    a = ln.on_sip(invite(call="a", body=offer(ssrc="0430100011")), PEER, PLAN, 1.0, 0)
    b = ln.on_sip(invite(call="b", body=offer(ssrc="0430100012")), PEER, PLAN, 1.0, 0)
    [va] = [w for w in a if isinstance(w, StartViewer)]
    [vb] = [w for w in b if isinstance(w, StartViewer)]
    assert va.viewer != vb.viewer and (va.ssrc, vb.ssrc) == (430100011, 430100012)
    assert va.device_id == vb.device_id == CAMERA and va.local_port != vb.local_port


# --- on-demand ------------------------------------------------------------------------------------

def test_on_demand_asks_start_stream_once_per_device_and_stop_stream_after_the_last_bye_and_linger():
    ln = lane("on-demand", linger=5.0)
    a = ln.on_sip(invite(call="a"), PEER, PLAN, 1.0, 0)
    assert [w for w in a if isinstance(w, Ask)] == [
        Ask("a", "start_stream", CAMERA, {"transport": "udp"}, PLATFORM, "10.1.0.5", PLATFORM)]
    b = ln.on_sip(invite(call="b"), PEER, PLAN, 1.2, 0)
    assert not [w for w in b if isinstance(w, Ask)]          # joins the stream asked for
    assert ln.asked("a", True, "", "request_sent", 1.3, 0) == []
    [va] = [w for w in a if isinstance(w, StartViewer)]
    [vb] = [w for w in b if isinstance(w, StartViewer)]
    ta = sent(ln.viewer_started(va.viewer, "sip-cam-1", 2.0, 0))[0].to.tag
    tb = sent(ln.viewer_started(vb.viewer, "sip-cam-1", 2.0, 0))[0].to.tag
    ln.on_sip(request("BYE", call="a", to_tag=ta), PEER, PLAN, 10.0, 0)
    ln.on_sip(request("BYE", call="b", to_tag=tb), PEER, PLAN, 11.0, 0)
    assert ln.handle_timer(15.9, 0) == []
    # a viewer back within the linger: no stop, no new start
    c = ln.on_sip(invite(call="c"), PEER, PLAN, 12.0, 0)
    assert not [w for w in c if isinstance(w, Ask)] and ln.handle_timer(17.0, 0) == []
    [vc] = [w for w in c if isinstance(w, StartViewer)]
    tc = sent(ln.viewer_started(vc.viewer, "sip-cam-1", 12.5, 0))[0].to.tag
    ln.on_sip(request("BYE", call="c", to_tag=tc), PEER, PLAN, 20.0, 0)
    assert [w for w in ln.handle_timer(25.0, 0) if isinstance(w, Ask)] == [
        Ask("", "stop_stream", CAMERA, {"stream": "sip-cam-1"}, PLATFORM, "10.1.0.5", PLATFORM)]
    d = ln.on_sip(invite(call="d"), PEER, PLAN, 30.0, 0)      # after the stop: asked again
    assert [w.request for w in d if isinstance(w, Ask)] == ["start_stream"]


def test_on_demand_reverse_refusal_gives_403_or_486_to_every_waiting_invite():
    ln = lane("on-demand")
    ln.on_sip(invite(call="a"), PEER, PLAN, 1.0, 0)
    ln.on_sip(invite(call="b"), PEER, PLAN, 1.0, 0)
    work = ln.asked("a", False, "default_deny", "no rule for lane 'reverse'", 1.1, 0)
    assert statuses(work) == [403, 403] and {r["code"] for r in records(work, "invite_refused")} == {"default_deny"}
    assert not ln.dialogs
    ln.on_sip(invite(call="c"), PEER, PLAN, 2.0, 0)
    work = ln.asked("c", False, "rate_limited", "over the rate", 2.1, 0)
    assert statuses(work) == [486] and refused(work)["code"] == "rate_limited"


def test_always_on_never_asks():
    ln = lane("always-on")
    work = ln.on_sip(invite(), PEER, PLAN, 1.0, 0)
    assert not [w for w in work if isinstance(w, Ask)]


def test_close_says_bye_to_answered_and_503_to_waiting():
    ln, sv, ok = answered()
    ln.on_sip(invite(call="w"), PEER, PLAN, 101.0, 0)
    work = ln.close(102.0, 0)
    kinds = sorted((m.method if isinstance(m, SipRequest) else str(m.status)) for m in sent(work))
    assert kinds == ["503", "BYE"]


# --- hostile SIP ------------------------------------------------------------------------------------

METHODS = st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "INFO", "OPTIONS"])


@st.composite
def sip_messages(draw):
    method = draw(METHODS)
    target = draw(st.sampled_from([INNER_CAM, "43010000001320000777", "1" * 20, "abc"]))
    call = draw(st.sampled_from(["c1", "c2", "c3"]))
    tag = draw(st.sampled_from([None, "t1", "pf1"]))
    body = draw(st.one_of(st.just(offer()), st.binary(max_size=200),
                          st.just(offer(transport="TCP/RTP/AVP", setup="passive")),
                          st.builds(lambda b: offer()[:b], st.integers(0, 200))))
    headers = [("Via", f"SIP/2.0/UDP 10.1.0.5:5060;branch=z9hG4bK{draw(st.sampled_from(['a', 'b']))}"),
               ("From", f"<sip:{PLATFORM}@4301000000>" + draw(st.sampled_from([";tag=pf1", ""]))),
               ("To", f"<sip:{target}@4301000000>" + (f";tag={tag}" if tag else "")),
               ("Call-ID", call), ("CSeq", f"{draw(st.integers(1, 5))} {method}")]
    if draw(st.booleans()):
        headers.append(("Contact", draw(st.sampled_from(["<sip:x@10.1.0.5>", "*", "garbage<"]))))
    try:
        return parse_message(build_request(method, f"sip:{target}@4301000000", headers, body))
    except SipError:
        return parse_message(build_request("BYE", f"sip:{INNER_CAM}@h", headers[:1] + [
            ("From", "<sip:a@h>;tag=1"), ("To", "<sip:b@h>"), ("Call-ID", "x"), ("CSeq", "1 BYE")]))


EVENTS = st.one_of(sip_messages(), st.tuples(st.sampled_from(["start", "lost", "failed", "port", "asked", "timer"]),
                                             st.sampled_from(["v1", "v2", "v3", "c1", "c2"])))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENTS, max_size=25), st.sampled_from(["always-on", "on-demand"]))
def test_random_sip_and_events_never_raise_and_keep_ports_and_viewers_consistent(events, mode):
    ln = lane(mode, max_viewers=3)
    viewers: set[str] = set()
    now = 1.0
    for e in events:
        now += 0.7
        if isinstance(e, tuple):
            kind, key = e
            work = {"start": lambda: ln.viewer_started(key, "s1", now, 0),
                    "lost": lambda: ln.viewer_lost(key, "x", now, 0),
                    "failed": lambda: ln.viewer_failed(key, "x", now, 0),
                    "port": lambda: ln.viewer_failed(key, "x", now, 0, port_taken=True),
                    "asked": lambda: ln.asked(key, False, "default_deny", "no", now, 0),
                    "timer": lambda: ln.handle_timer(now + 5, 0)}[kind]()
        else:
            work = ln.on_sip(e, PEER, PLAN, now, 0)
        for w in work:
            if isinstance(w, StartViewer):
                assert w.viewer not in viewers
                viewers.add(w.viewer)
            elif isinstance(w, StopViewer):
                viewers.discard(w.viewer)
            elif isinstance(w, SendSip):
                parse_message(w.data)            # everything ferry sends parses
            elif isinstance(w, AuditIntent) and w.fields["verdict"] == "refused":
                assert w.fields["code"]
        live = {d.viewer for d in ln.dialogs.values() if d.state != "ending"}
        assert live == viewers
        assert len(ln.ports_used) <= len(live)


def test_an_invite_from_another_address_than_the_platforms_gets_403():
    settings = MediaSettings(mode="always-on", media_address="10.1.0.1", port_range=(30000, 30009),
                             allow_from=("10.1.0.5",))
    ln = InnerMediaLane(settings, IDS.map_to_outer)
    work = ln.on_sip(invite(), Peer("udp", "10.9.9.9", 5060), PLAN, 1.0, 0)
    assert statuses(work) == [403] and refused(work)["code"] == "platform_request_refused"
    assert not records(work, "invite_received")
    # a flood from that host: each answered, recorded once a minute with the count in between
    for n in range(5):
        work = ln.on_sip(invite(call=f"f{n}"), Peer("udp", "10.9.9.9", 5060), PLAN, 2.0 + n, 0)
        assert statuses(work) == [403] and not records(work)
    work = ln.on_sip(invite(call="late"), Peer("udp", "10.9.9.9", 5060), PLAN, 61.5, 0)
    assert refused(work)["detail"]["suppressed"] == 5
    assert statuses(ln.on_sip(invite(call="ok"), PEER, PLAN, 1.0, 0)) == [100]
