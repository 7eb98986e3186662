"""Dead viewers are reaped (issue 13 leftover, part "viewers"), pure.

An inner platform that crashes, reboots or loses its network never sends BYE. The dialog lane ends
its dialogs when the cascade declares it lost (`platform_gone`), when a UDP viewer's RTP sends are
refused by ICMP for a few seconds (`viewer_unreachable`), when a TCP viewer's connection closes
(`viewer_closed`): viewer stopped, `viewer_lost` record (code `viewer_lost`), BYE best effort, and in
on-demand mode the reverse `stop_stream` for the device's last viewer."""
from __future__ import annotations


from ferry.codecs.sip import SipRequest
from ferry.lanes.signaling.inner_media import Ask, InnerMediaLane, StartViewer, StopViewer
from tests.lanes.signaling.test_inner_media import (CAMERA, PEER, PLAN, Peer, invite, lane, request, sent)

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
