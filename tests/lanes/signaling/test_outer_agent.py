"""The outer agent's SIP glue (ferry.agents.sip_outer) on a real loopback socket with a fake
agent: media messages go to an attached media part, nothing is taken while the trail is down,
objects are sealed before their records are written and handed over after."""
from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from ferry.agents.sip_outer import SipOuter
from ferry.codecs import sip
from ferry.config import OuterSignaling
from ferry.lanes.work import ObjectIds
from ferry.wire.events import BlockSealed
from tests.lanes.signaling.test_outer import CAM, PLAN, REALM, SERVER, Device, Peer



def config() -> OuterSignaling:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return OuterSignaling.model_validate({
        "listen_udp": f"127.0.0.1:{port}", "server_id": SERVER, "realm": REALM, "destination": "platform",
        "device": [{"id": CAM, "password": "cam-secret"}]})


class Host:
    """The outer agent as the glue sees it: records what happens, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.available = True
        self.glue: SipOuter | None = None

    def seal(self, obj, wall):
        self.log.append(("seal", obj.object_id))

    def seal_and_record(self, records, wall):
        assert self.glue is not None
        sealed = [oid for what, oid in self.log if what == "seal"]
        self.glue.block_sealed(BlockSealed(epoch=7, block_no=len(self.log), object_ids=tuple(sealed), size=100))
        for r in records():
            self.log.append(("record", r.fields))
        self.log.append(("handed over", None))

    def audit(self, **fields):
        self.log.append(("audit", fields))
        return True

    def audit_available(self):
        return self.available


class Media:
    def __init__(self) -> None:
        self.got: list = []

    def on_sip(self, msg, peer):
        self.got.append((msg, peer))


async def exchange(sock: socket.socket, port: int, req: sip.SipRequest, answer: bool = True) -> sip.SipResponse | None:
    data = sip.build_request(req.method, req.uri, [h for h in req.headers if h[0] != "Content-Length"], req.body)
    sock.sendto(data, ("127.0.0.1", port))
    loop = asyncio.get_running_loop()
    try:
        raw = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5 if answer else 0.5)
    except asyncio.TimeoutError:
        return None
    msg = sip.parse_message(raw)
    while isinstance(msg, sip.SipRequest):         # ferry's catalog query: not an answer
        msg = sip.parse_message(await asyncio.wait_for(loop.sock_recv(sock, 65535), 5))
    return msg


@pytest.mark.timeout(60)
def test_glue_carries_out_the_lane_with_media_dispatch_and_no_transfer_without_audit():
    async def main():
        host = Host()
        glue = SipOuter(config(), host, lambda: PLAN, ObjectIds(3))
        host.glue = glue
        glue.bind()
        port = glue.endpoint.udp_address[1]
        assert glue.lane.settings.local == {"udp": ("127.0.0.1", port)}
        await glue.start()
        dev_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dev_sock.bind(("127.0.0.1", 0))
        dev_sock.setblocking(False)
        cam = Device(CAM, "cam-secret", Peer("udp", "127.0.0.1", dev_sock.getsockname()[1]))
        try:
            r401 = await exchange(dev_sock, port, cam.register())
            assert r401.status == 401
            ok = await exchange(dev_sock, port, cam.register(auth=cam.answer(r401)))
            assert ok.status == 200 and glue.registry.online(CAM)
            assert (await exchange(dev_sock, port, cam.keepalive())).status == 200
            await asyncio.sleep(0.2)                      # SIGNALING_SUBMIT_DELAY passes
            # each object sealed, then its object_sent record (with its block), then handed to the writer
            sealed: set[int] = set()
            recorded: set[int] = set()
            for what, x in host.log:
                if what == "seal":
                    sealed.add(x)
                elif what == "record":
                    assert x["object_id"] in sealed
                    recorded.add(x["object_id"])
                elif what == "handed over":
                    assert recorded == sealed         # nothing handed over before its record
            assert host.log[-1][0] == "handed over" and len(recorded) == 2
            records = [f for what, f in host.log if what == "record"]
            assert {r["object_type"] for r in records} == {"Notify/Catalog", "Notify/Keepalive"}
            assert all(r["epoch"] == 7 and r["blocks"] for r in records)
            # the trail is down: the message is not taken, not answered
            host.available = False
            assert await exchange(dev_sock, port, cam.keepalive(), answer=False) is None
            assert glue.stats["held"] == 1
            host.available = True
            # without media an INVITE is the lane's (403); with media attached it is the media part's
            inv = await exchange(dev_sock, port, cam.request("INVITE"))
            assert inv.status == 403 and "on-demand video not configured" in inv.header("Warning")
            media = Media()
            glue.attach_media(media)
            assert media.send == glue.send
            assert await exchange(dev_sock, port, cam.request("INVITE"), answer=False) is None
            assert [m.method for m, _ in media.got] == ["INVITE"]
            assert media.got[0][1].host == "127.0.0.1"
            counters = glue.counters()
            assert counters["sip_devices_online"] == 1 and counters["sip_objects"] == 2
            assert glue.lane_counters()["sent"] == 2
        finally:
            dev_sock.close()
            await glue.stop()

    asyncio.run(main())
