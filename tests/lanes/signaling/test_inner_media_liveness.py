"""Dead viewers are reaped (issue 13 leftover, part "viewers"), pure.

An inner platform that crashes, reboots or loses its network never sends BYE. The dialog lane ends
its dialogs when the cascade declares it lost (`platform_gone`), when a UDP viewer's RTP sends are
refused by ICMP for a few seconds (`viewer_unreachable`), when a TCP viewer's connection closes
(`viewer_closed`): viewer stopped, `viewer_lost` record (code `viewer_lost`), BYE best effort, and in
on-demand mode the reverse `stop_stream` for the device's last viewer."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from ferry import limits
from ferry.codecs.sip import SipRequest, build_request, parse_message
from ferry.lanes.signaling.inner import PlatformGone
from ferry.lanes.signaling.inner_media import Ask, InnerMediaLane, MediaSettings, SendSip, StartViewer, StopViewer
from ferry.lanes.work import AuditIntent
from ferry.reasons import Reason
from tests.lanes.signaling import test_inner as sig
from tests.lanes.signaling.test_inner_media import (CAMERA, IDS, INNER_CAM, PEER, PLAN, PLATFORM, TCP_PEER, Peer,
                                                    invite, lane, offer, records, request, sent, statuses)

OTHER = Peer("udp", "10.1.0.6", 5060)     # a second platform ([media] allow_from)


def watch(ln: InnerMediaLane, call: str, now: float, peer=PEER, body=None, ack=True) -> tuple[StartViewer, str]:
    """An INVITE answered (first key frame) and ACKed: the viewer and ferry's To tag."""
    work = ln.on_sip(invite(call=call, body=body, branch=f"z9hG4bK{call}"), peer, PLAN, now, 0)
    [sv] = [w for w in work if isinstance(w, StartViewer)]
    [ok] = sent(ln.viewer_started(sv.viewer, "sip-cam-1", now + 0.2, 0))
    if ack:
        ln.on_sip(request("ACK", call=call, to_tag=ok.to.tag, cseq=20), peer, PLAN, now + 0.3, 0)
    return sv, ok.to.tag


def asks(work, what="stop_stream") -> list[Ask]:
    return [w for w in work if isinstance(w, Ask) and w.request == what]


def byes(work) -> list[SipRequest]:
    return [m for m in sent(work) if isinstance(m, SipRequest) and m.method == "BYE"]


# --- the linger and ferry's unanswered BYE ------------------------------------------------------------

def test_stop_stream_is_asked_while_ferrys_bye_to_a_vanished_platform_goes_unanswered():
    """ferry's BYE waits up to INNER_MEDIA_BYE_TIMEOUT (32 s) for an answer a dead platform never
    gives; that dialog must not hold the camera: stop_stream still goes after the linger."""
    ln = lane("on-demand", linger=5.0)
    sv, _ = watch(ln, "a", 1.0)
    assert ln.asked("a", True, "", "request_sent", 1.1, 0) == []
    work = ln.viewer_lost(sv.viewer, "no access unit for 10 s", 20.0, 0)
    assert byes(work) and StopViewer(sv.viewer) in work
    assert ln.dialogs["a"].state == "ending"                    # the BYE is retransmitted, unanswered
    stops = []
    for t in (20.5, 21.5, 23.5, 25.1, 27.5):
        stops += asks(ln.handle_timer(t, 0))
    assert stops == [Ask("", "stop_stream", CAMERA, {"stream": "sip-cam-1"}, "43010000002000000001", "10.1.0.5",
                         "43010000002000000001")]


def test_a_viewer_leaving_while_another_ones_bye_is_unanswered_still_starts_the_linger():
    ln = lane("on-demand", linger=5.0)
    va, _ = watch(ln, "a", 1.0)
    vb, tb = watch(ln, "b", 1.5)
    ln.viewer_lost(va.viewer, "x", 10.0, 0)           # a: ferry's BYE, never answered
    ln.on_sip(request("BYE", call="b", to_tag=tb, branch="z9hG4bKbyeb"), PEER, PLAN, 11.0, 0)
    assert len(asks(ln.handle_timer(16.1, 0))) == 1


# --- the platform lost -------------------------------------------------------------------------------

def test_a_lost_platform_has_every_dialog_of_its_own_ended_and_the_camera_released_at_once():
    settings = MediaSettings(mode="on-demand", media_address="10.1.0.1", port_range=(30000, 30019),
                             sip_host="10.1.0.1", sip_port=5060, linger=5.0, max_viewers_per_device=8)
    ln = InnerMediaLane(settings, IDS.map_to_outer)
    va, ta = watch(ln, "a", 1.0)                       # confirmed
    vb, _ = watch(ln, "b", 1.2, ack=False)             # answered, its ACK not come
    wc = ln.on_sip(invite(call="c", branch="z9hG4bKc"), PEER, PLAN, 1.4, 0)     # proceeding
    [vc] = [w for w in wc if isinstance(w, StartViewer)]
    vo, _ = watch(ln, "o", 1.6, peer=OTHER)            # another platform watches too
    ld, _ = watch(ln, "d", 1.8)
    ln.viewer_lost(ld.viewer, "x", 2.0, 0)             # d: ferry's BYE already out, unanswered
    work = ln.platform_gone("10.1.0.5", "3 keepalives in a row unanswered", 30.0, 0)
    assert {w.viewer for w in work if isinstance(w, StopViewer)} == {va.viewer, vb.viewer, vc.viewer}
    assert {b.call_id for b in byes(work)} == {"a", "b"}
    assert [b.to.tag for b in byes(work) if b.call_id == "a"] == ["pf1"]
    assert statuses(work) == [503]                      # the INVITE still waiting: answered, best effort
    lost = records(work, "viewer_lost")
    assert sorted(r["detail"]["call_id"] for r in lost) == ["a", "b", "c"]
    for r in lost:
        assert r["verdict"] == "lost" and r["code"] == Reason.VIEWER_LOST == "viewer_lost"
        assert r["detail"]["cause"] == "platform_lost" and "3 keepalives" in r["reason"]
        assert r["source"] == {"device_id": CAMERA} and r["destination"] == "10.1.0.5:40000"
    assert not records(work, "viewer_ended") and not records(work, "invite_refused")
    # the other platform's viewer is untouched: the camera stays asked for
    assert set(ln.dialogs) == {"o"} and not asks(work)
    assert not byes(ln.handle_timer(31.0, 0))           # no BYE to the lost platform again
    # its viewer goes too: stop_stream at once, no linger (the platform that asked is gone)
    work = ln.platform_gone("10.1.0.6", "registration ended", 40.0, 0)
    assert StopViewer(vo.viewer) in work and len(asks(work)) == 1
    assert not ln.dialogs and not ln.ports_used and ln.next_timer() is not None   # ended calls remembered only
    assert not asks(ln.handle_timer(60.0, 0))          # one stop only


def test_a_lost_platform_without_dialogs_is_nothing():
    ln = lane()
    assert ln.platform_gone("10.1.0.5", "lost", 1.0, 0) == []


# --- unreachable UDP viewers ----------------------------------------------------------------------------

def test_a_udp_viewer_refused_by_icmp_over_a_few_seconds_is_reaped():
    ln = lane("on-demand", linger=5.0)
    sv, tag = watch(ln, "a", 1.0)
    t, work = 10.0, []
    while t < 10.0 + limits.INNER_MEDIA_UNREACHABLE_FOR - 0.01:
        work += ln.viewer_unreachable(sv.viewer, "[Errno 111] Connection refused", t, 0)
        t += 0.08
    assert work == [] and ln.dialogs["a"].state == "confirmed"
    work = ln.viewer_unreachable(sv.viewer, "[Errno 111] Connection refused", 10.0 + limits.INNER_MEDIA_UNREACHABLE_FOR,
                                 0)
    assert StopViewer(sv.viewer) in work and [b.call_id for b in byes(work)] == ["a"]
    [rec] = records(work, "viewer_lost")
    assert rec["code"] == "viewer_lost" and rec["detail"]["cause"] == "unreachable"
    assert "Connection refused" in rec["reason"]
    assert ln.viewer_unreachable(sv.viewer, "again", 14.0, 0) == []      # reaped once
    assert len(asks(ln.handle_timer(14.0 + 5.0, 0))) == 1               # the linger, then stop_stream


def test_sporadic_icmp_errors_do_not_reap_a_viewer():
    """A refusal now and then (a receiver restarting its socket, a stale ICMP) is not a dead viewer:
    the count starts again after a quiet INNER_MEDIA_UNREACHABLE_GAP."""
    ln = lane()
    sv, _ = watch(ln, "a", 1.0)
    t = 10.0
    for _ in range(20):
        assert ln.viewer_unreachable(sv.viewer, "refused", t, 0) == []
        t += limits.INNER_MEDIA_UNREACHABLE_GAP + 0.1
    # a single refusal, however late after the first, is not enough either
    assert ln.dialogs["a"].state == "confirmed"


def test_refusals_before_the_answer_or_for_unknown_viewers_are_ignored():
    ln = lane()
    work = ln.on_sip(invite(), PEER, PLAN, 1.0, 0)
    [sv] = [w for w in work if isinstance(w, StartViewer)]
    for n in range(100):
        assert ln.viewer_unreachable(sv.viewer, "refused", 1.0 + n * 0.1, 0) == []
        assert ln.viewer_unreachable("nobody", "refused", 1.0 + n * 0.1, 0) == []
    assert ln.dialogs["c1@10.1.0.5"].state == "proceeding"


# --- closed TCP viewers ---------------------------------------------------------------------------------

def test_a_tcp_viewer_whose_connection_closes_is_reaped_at_once():
    ln = lane()
    sv, _ = watch(ln, "t", 1.0, peer=TCP_PEER, body=offer(transport="TCP/RTP/AVP", setup="active"))
    assert sv.transport == "tcp" and sv.setup == "passive"
    work = ln.viewer_closed(sv.viewer, "connection reset by the platform", 5.0, 0)
    assert StopViewer(sv.viewer) in work and [b.call_id for b in byes(work)] == ["t"]
    [rec] = records(work, "viewer_lost")
    assert rec["detail"]["cause"] == "closed" and "connection reset" in rec["reason"]
    assert not ln.viewer_closed(sv.viewer, "again", 5.1, 0)


# --- a property: no viewer and no camera hold outlives its dialog ---------------------------------------

EVENT = st.tuples(st.sampled_from(["invite", "timed", "refresh", "start", "ack", "bye", "lost", "gone",
                                   "unreachable", "closed", "timer", "bye-answer"]),
                  st.integers(0, 3), st.sampled_from([PEER, OTHER]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENT, max_size=30), st.sampled_from(["always-on", "on-demand"]), st.booleans())
def test_whatever_happens_every_viewer_stops_and_every_start_stream_is_stopped(events, mode, vanish):
    settings_ = MediaSettings(mode=mode, media_address="10.1.0.1", port_range=(30000, 30099), sip_host="10.1.0.1",
                              sip_port=5060, linger=2.0, max_viewers_per_device=16)
    ln = InnerMediaLane(settings_, IDS.map_to_outer)
    viewers: dict[str, str] = {}          # viewer -> call
    tags: dict[str, str] = {}
    starts = stops = 0
    now = 1.0

    def carry(work):
        nonlocal starts, stops
        for w in work:
            if isinstance(w, StartViewer):
                assert w.viewer not in viewers
                viewers[w.viewer] = ""
            elif isinstance(w, StopViewer):
                viewers.pop(w.viewer, None)
            elif isinstance(w, Ask):
                starts += w.request == "start_stream"
                stops += w.request == "stop_stream"
                if w.key:
                    carry(ln.asked(w.key, True, "", "request_sent", now, 0))
            elif isinstance(w, SendSip):
                parse_message(w.data)
            elif isinstance(w, AuditIntent) and w.fields["verdict"] in ("refused", "lost"):
                assert w.fields["code"]

    for kind, n, peer in events:
        now += 0.6
        call = f"k{n}"
        d = ln.dialogs.get(call)
        if kind == "invite":
            carry(ln.on_sip(invite(call=call, branch=f"z9hG4bK{n}x{now}"), peer, PLAN, now, 0))
        elif kind == "timed":               # with a 90 s session timer the platform refreshes (or not)
            carry(ln.on_sip(timed_invite(call=call, session="90", branch=f"z9hG4bK{n}t{now}"), peer, PLAN, now, 0))
        elif kind == "refresh" and d is not None:
            carry(ln.on_sip(timed_invite(call=call, session="90", cseq=21 + int(now), to_tag=d.tag,
                                         branch=f"z9hG4bK{n}r{now}"), d.peer, PLAN, now, 0))
        elif kind == "start" and d is not None:
            work = ln.viewer_started(d.viewer, "sip-cam-1", now, 0)
            tags[call] = d.tag
            carry(work)
        elif kind == "ack" and d is not None:
            carry(ln.on_sip(request("ACK", call=call, to_tag=d.tag, cseq=20), d.peer, PLAN, now, 0))
        elif kind == "bye" and d is not None:
            carry(ln.on_sip(request("BYE", call=call, to_tag=d.tag, branch=f"z9hG4bKb{now}"), d.peer, PLAN, now, 0))
        elif kind == "lost" and d is not None:
            carry(ln.viewer_lost(d.viewer, "x", now, 0))
        elif kind == "gone":
            carry(ln.platform_gone(peer.host, "lost", now, 0))
        elif kind == "unreachable" and d is not None:
            for i in range(40):
                carry(ln.viewer_unreachable(d.viewer, "refused", now + i * 0.1, 0))
            now += 4.0
        elif kind == "closed" and d is not None:
            carry(ln.viewer_closed(d.viewer, "closed", now, 0))
        elif kind == "bye-answer" and d is not None and d.bye:
            bye = parse_message(d.bye)
            resp = parse_message(b"SIP/2.0 200 OK\r\nVia: " + bye.header("Via").encode() + b"\r\nFrom: " +
                                 bye.header("From").encode() + b"\r\nTo: " + bye.header("To").encode() +
                                 b"\r\nCall-ID: " + call.encode() + b"\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n")
            carry(ln.on_sip(resp, d.peer, PLAN, now, 0))
        elif kind == "timer":
            now += 3.0 if n else 70.0
            carry(ln.handle_timer(now, 0))
        live = {x.viewer for x in ln.dialogs.values() if x.state != "ending"}
        assert live == set(viewers)
    # the end: both platforms vanish, or ferry ends every stream itself (BYEs nobody answers); time runs on:
    # nothing is left running
    if vanish:
        for host in (PEER.host, OTHER.host):
            carry(ln.platform_gone(host, "lost", now, 0))
    else:
        for d in list(ln.dialogs.values()):
            carry(ln.viewer_lost(d.viewer, "x", now, 0) if d.state != "proceeding" else
                  ln.viewer_failed(d.viewer, "x", now, 0))
    for _ in range(60):
        now += 1.0
        carry(ln.handle_timer(now, 0))
    assert not viewers and not ln.dialogs and not ln.ports_used
    if mode == "on-demand":
        assert starts == stops, (starts, stops)
    else:
        assert starts == stops == 0



# --- the cascade tells: PlatformGone (ferry/lanes/signaling/inner.py) -------------------------------------

def gone(work) -> list[PlatformGone]:
    return [w for w in work if isinstance(w, PlatformGone)]


def test_three_unanswered_keepalives_say_the_platform_is_gone():
    ln = sig.lane()
    first = sig.sent(sig.register(ln))[0]
    ln.on_sip(sig.answer(first, 200, "OK"), sig.PLATFORM, 0.0, 1e9)
    t, work = 0.0, []
    while not sig.audits(work, "platform_lost"):
        assert not gone(work)
        t += 30.0
        work = ln.handle_timer(t, 1e9)
    [g] = gone(work)
    assert "unanswered" in g.why
    # registering again (and failing while not registered) says nothing more
    for _ in range(20):
        t = ln.next_timer()
        assert not gone(ln.handle_timer(t, 1e9))


def test_a_registration_that_was_up_ending_says_the_platform_is_gone_a_first_failure_does_not():
    ln = sig.lane()
    assert not gone(ln.on_sip(sig.answer(sig.sent(ln.start(0.0, 1e9))[0], 500, "Server Error"), sig.PLATFORM,
                              0.0, 1e9))
    ln = sig.lane()
    sig.register(ln, expires=600)
    refresh = [m for m in sig.sent(ln.handle_timer(ln.reg_at, 1e9)) if m.method == "REGISTER"]
    work = ln.on_sip(sig.answer(refresh[0], 503, "Service Unavailable"), sig.PLATFORM, 400.0, 1e9)
    assert sig.audits(work, "platform_register_failed") and [g.why for g in gone(work)] == [
        "its registration ended: 503 Service Unavailable"]
    ln = sig.lane()
    sig.register(ln, expires=600)
    refresh = [m for m in sig.sent(ln.handle_timer(ln.reg_at, 1e9)) if m.method == "REGISTER"]
    work = ln.on_sip(sig.answer(refresh[0], 403, "Forbidden"), sig.PLATFORM, 400.0, 1e9)
    assert sig.audits(work, "platform_register_refused") and len(gone(work)) == 1


# --- RFC 4028 session timers: the platform refreshes, ferry ends a session it stops refreshing -----------

def timed_invite(call="s1", session="120;refresher=uac", supported="timer", cseq=20, to_tag=None, body=None,
                 branch=None):
    to = f"<sip:{INNER_CAM}@4301000000>" + (f";tag={to_tag}" if to_tag else "")
    headers = [("Via", f"SIP/2.0/UDP 10.1.0.5:5060;rport;branch={branch or 'z9hG4bK' + call + str(cseq)}"),
               ("From", f"<sip:{PLATFORM}@4301000000>;tag=pf1"), ("To", to), ("Call-ID", call),
               ("CSeq", f"{cseq} INVITE"), ("Max-Forwards", "70"), ("Contact", f"<sip:{PLATFORM}@10.1.0.5:5060>"),
               ("Content-Type", "application/sdp")]
    if session:
        headers.append(("Session-Expires", session))
    if supported:
        headers.append(("Supported", supported))
    msg = parse_message(build_request("INVITE", f"sip:{INNER_CAM}@4301000000", headers,
                                      offer() if body is None else body))
    assert isinstance(msg, SipRequest)
    return msg


def timed(ln, now=1.0, **kw):
    work = ln.on_sip(timed_invite(**kw), PEER, PLAN, now, 0)
    [sv] = [w for w in work if isinstance(w, StartViewer)]
    [ok] = sent(ln.viewer_started(sv.viewer, "sip-cam-1", now + 0.2, 0))
    ln.on_sip(request("ACK", call=kw.get("call", "s1"), to_tag=ok.to.tag, cseq=20), PEER, PLAN, now + 0.3, 0)
    return sv, ok


def test_a_session_timer_the_platform_refreshes_keeps_the_session_and_one_it_stops_refreshing_ends_it():
    ln = lane()
    sv, ok = timed(ln, 1.0)
    assert ok.header("Session-Expires") == "120;refresher=uac" and ok.header("Require") == "timer"
    # refreshed (a re-INVITE with the same offer) before the interval's end: 200 with ferry's answer again
    work = ln.on_sip(timed_invite(cseq=21, to_tag=ok.to.tag), PEER, PLAN, 80.0, 0)
    [again] = sent(work)
    assert again.status == 200 and again.header("Session-Expires") == "120;refresher=uac"
    assert again.body == ok.body and again.to.tag == ok.to.tag and not records(work)
    # its retransmission gets the same 200
    assert [m.status for m in sent(ln.on_sip(timed_invite(cseq=21, to_tag=ok.to.tag), PEER, PLAN, 80.5, 0))] == [200]
    # no refresh after that one: ferry ends the session min(32, 120/3) s before it would expire
    assert ln.handle_timer(80.0 + 120 - 32 - 0.1, 0) == []
    work = ln.handle_timer(80.0 + 120 - 32, 0)
    assert StopViewer(sv.viewer) in work and [b.call_id for b in byes(work)] == ["s1"]
    [rec] = records(work, "viewer_lost")
    assert rec["detail"]["cause"] == "session_expired" and "120 s" in rec["reason"]


def test_a_session_interval_under_min_se_gets_422_and_no_timer_is_kept_when_ferry_would_refresh():
    ln = lane()
    work = ln.on_sip(timed_invite(session="60"), PEER, PLAN, 1.0, 0)
    [resp] = sent(work)
    assert resp.status == 422 and resp.header("Min-SE") == str(limits.INNER_MEDIA_MIN_SE)
    assert records(work, "invite_refused")[0]["code"] == "not_supported"
    # a short interval ferry would not keep anyway (no Supported: timer) is not refused; one that does not parse is
    assert statuses(ln.on_sip(timed_invite(call="short", session="60", supported=None), PEER, PLAN, 1.0, 0)) == [100]
    assert statuses(ln.on_sip(timed_invite(call="bad", session="soon"), PEER, PLAN, 1.0, 0)) == [400]
    # ferry as the refresher (refresher=uas), or a platform that cannot refresh (no Supported: timer): no timer
    for call, kw in (("u", {"session": "120;refresher=uas"}), ("n", {"supported": None})):
        sv, ok = timed(ln, 2.0, call=call, **kw)
        assert ok.header("Session-Expires") is None and ok.header("Require") is None
        assert statuses(ln.on_sip(timed_invite(call=call, cseq=21, to_tag=ok.to.tag, **kw), PEER, PLAN, 3.0, 0)) \
            == [488]                          # a re-INVITE of a live session without a timer: refused, as before
    assert not byes(ln.handle_timer(1000.0, 0)) and {"u", "n"} <= set(ln.dialogs)


def test_a_refresh_that_changes_the_media_is_refused_and_does_not_refresh():
    ln = lane()
    sv, ok = timed(ln, 1.0)
    moved = offer().replace(b"m=video 40000", b"m=video 40002")
    assert statuses(ln.on_sip(timed_invite(cseq=21, to_tag=ok.to.tag, body=moved), PEER, PLAN, 50.0, 0)) == [488]
    assert records(ln.handle_timer(1.3 + 88.0, 0), "viewer_lost")
