"""The inner agent's SIP glue (ferry/agents/sip_inner.py) in one process, on loopback: INVITE, ACK,
BYE, CANCEL, INFO and INVITE/BYE responses go to an attached media part, everything else to the
signaling lane; without a media part an INVITE is refused 403 with the contract's Warning."""
from __future__ import annotations

import asyncio
import socket

import pytest

from appliance import free_udp_port
from ferry.codecs.sip import SipRequest, SipResponse, build_request, build_response, parse_message
from ferry.config import InnerSignaling
from ferry.agents.sip_inner import SipInner

LOCAL_ID = "43010000002000000099"


def request(method: str, port: int, branch: str) -> bytes:
    return build_request(method, f"sip:{LOCAL_ID}@127.0.0.1:{port}", [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}"), ("From", "<sip:a@b>;tag=1"),
        ("To", f"<sip:{LOCAL_ID}@4301000000>"), ("Call-ID", f"call-{branch}"), ("CSeq", f"1 {method}"),
        ("Max-Forwards", "70")])


def response(status: int, method: str, port: int) -> bytes:
    return build_response(status, "OK", [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKresp{method}"), ("From", "<sip:a@b>;tag=1"),
        ("To", f"<sip:{LOCAL_ID}@4301000000>;tag=2"), ("Call-ID", "c"), ("CSeq", f"1 {method}")])


class Media:
    def __init__(self) -> None:
        self.got: list[str] = []
        self.send = None

    def set_sender(self, send) -> None:
        self.send = send

    def on_sip(self, msg, peer) -> None:
        self.got.append(msg.method if isinstance(msg, SipRequest) else f"{msg.status}/{msg.cseq[1]}")


def glue(platform_port: int, audits: list) -> SipInner:
    cfg = InnerSignaling(local=f"127.0.0.1:{free_udp_port()}", platform=f"127.0.0.1:{platform_port}",
                         platform_id="43010000002000000001", local_id=LOCAL_ID, password="pw")
    return SipInner(cfg, audits.extend)


async def _exchange(media: Media | None) -> tuple[list[bytes], list, Media | None]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as platform:
        platform.bind(("127.0.0.1", 0))
        platform.setblocking(False)
        port = platform.getsockname()[1]
        audits: list = []
        sip = glue(port, audits)
        if media is not None:
            sip.attach_media(media)
            assert media.send == sip.send
        stop = asyncio.Event()
        await sip.start(stop)
        local = sip.endpoint.udp_address
        loop = asyncio.get_running_loop()
        got: list[bytes] = []
        try:
            got.append(await asyncio.wait_for(loop.sock_recv(platform, 65535), 5))      # ferry's REGISTER
            for i, m in enumerate(["INVITE", "ACK", "BYE", "CANCEL", "INFO", "OPTIONS"]):
                platform.sendto(request(m, port, f"b{i}"), local)
            platform.sendto(response(200, "INVITE", port), local)
            platform.sendto(response(200, "BYE", port), local)
            platform.sendto(b"NOT SIP\r\n\r\n", local)
            end = loop.time() + 1.0
            while loop.time() < end:
                try:
                    got.append(await asyncio.wait_for(loop.sock_recv(platform, 65535), end - loop.time()))
                except asyncio.TimeoutError:
                    break
        finally:
            stop.set()
            await sip.stop()
        return got, audits, media


def test_media_methods_go_to_the_media_part():
    got, audits, media = asyncio.run(_exchange(Media()))
    assert media is not None
    assert media.got == ["INVITE", "ACK", "BYE", "CANCEL", "INFO", "200/INVITE", "200/BYE"]
    replies = [parse_message(g) for g in got[1:]]
    # only OPTIONS is the lane's (200); the unparsable datagram is refused and recorded
    assert [(r.status, r.cseq[1]) for r in replies if isinstance(r, SipResponse)] == [(200, "OPTIONS")]
    assert any(a.fields["code"] == "malformed_sip" for a in audits)


def test_without_media_an_invite_is_refused_403():
    got, audits, _ = asyncio.run(_exchange(None))
    replies = {r.cseq[1]: r for r in (parse_message(g) for g in got[1:]) if isinstance(r, SipResponse)}
    assert replies["INVITE"].status == 403
    assert "on-demand video not configured" in replies["INVITE"].header("Warning")
    assert replies["BYE"].status == 481 and replies["OPTIONS"].status == 200
    assert "ACK" not in replies


pytestmark = pytest.mark.e2e
