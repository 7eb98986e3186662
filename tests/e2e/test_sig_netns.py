"""The whole signaling appliance in network namespaces (issue 13, "Tests that must exist"): SIPp
devices and ferry's test camera on an outer host, the outer agent on the outer box, the forward
ferry on one link and the reverse ferry on another (own veth pairs, own namespaces), the inner
agent on the inner box, SIPp as the police platform and an RTP receiver on an inner host
(tests/support/sig_netns.py draws it).

Outside, devices register with digest, send keepalives and an alarm; ferry's test camera registers
too. Inside, the platform takes ferry's cascade registration, queries its catalog and INVITEs the
camera under its inner ID: the inner agent asks start_stream over the reverse ferry, the outer
agent INVITEs the camera, its video crosses in the video lane and reaches the receiver with the
platform's SSRC. Then, from tshark on both host sides and both links and from nftables counters:

- the host sides carry only well-formed SIP (tshark: no malformed frame, no warning);
- each link carries only its own ferry's UDP datagrams, in its own direction (the link
  namespaces' counters: nothing the other way, nothing else; the boxes': nothing arrived the
  wrong way);
- the links carry no SIP and no RTP (no SIP text, Call-ID or MANSCDP in any datagram; no RTP
  header with the camera's or the platform's SSRC);
- no Call-ID, branch or tag seen on one side appears on the other;
- the video the receiver got decodes (ffmpeg) to a run of the camera's source frames, bit exact.
"""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

import gb28181
from appliance import read_trail, uncoded
from rootcheck import need_root
from sig_netns import (FWD_IN, FWD_OUT, INNER_BOX, INNER_HOST, OUTER_BOX, OUTER_HOST, REV_IN, REV_OUT, Capture,
                       RtpReceiver, ns_sipp, read_pcap, rtp_with_ssrc, sdp_ssrcs, sip_messages, sip_tokens,
                       six_namespaces)
from tshark import tshark_sip

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.timeout(420)]

SCENARIOS = Path(__file__).resolve().parents[1] / "support" / "sipp"
OUTER_SERVER, OUTER_REALM = "43090000002000000002", "4309000000"     # ferry, as outer devices see it
LOCAL_ID, PLATFORM_ID, DOMAIN = "43010000002000000099", "43010000002000000001", "4301000000"
CAMERA = "43090000001320000001"                                      # ferry's test camera (SIP mode)
INNER_CAMERA = "43010000001320000001"                                # the same, as the platform sees it
DEVICES = [f"4309000000132000001{n}" for n in range(3)]              # SIPp devices
SIP_PORT = 5060
PLATFORM_SSRC = "0430100077"

POLICY = f"""
policy: sig-netns-e2e
version: 1
default: deny
sources:
  outer-spool: {{kind: spool}}
  yiyang: {{kind: devices, match: [{{region: "4309"}}]}}
  police-platform: {{kind: addresses, addresses: ["{INNER_HOST}/32"]}}
destinations:
  police-sip: {{kind: platform}}
  police-vms: {{kind: vms}}
  outer-platform: {{kind: platform}}
rules:
  - id: yiyang-signaling
    lane: signaling
    from: yiyang
    to: police-sip
    signaling: {{roots: [Notify, Response], cmd_types: [Keepalive, Alarm, Catalog], max_body_bytes: 8192}}
  - id: yiyang-video
    lane: video
    from: yiyang
    to: police-vms
    video: {{codecs: [h264, h265], max_width: 1920, max_height: 1080, max_frame_rate: 30, max_bitrate_kbps: 20000}}
  - id: platform-opens-cameras
    lane: reverse
    from: police-platform
    to: outer-platform
    reverse: {{requests: [start_stream, stop_stream]}}
"""


def _needs() -> None:
    need_root("ip", "nft", "tshark", "sipp", "ffmpeg")
    missing = [n for n in ("device_register.xml", "device_keepalive.xml", "device_alarm.xml", "platform_uas.xml",
                           "media_inner_invite.xml", "sig-inner_catalog_query.xml",
                           "sig-inner_catalog_pages_ooc.xml") if not (SCENARIOS / n).exists()]
    try:
        import ferry.agents.media_outer  # noqa: F401, PLC0415
        import ferry.agents.reverse_receiver  # noqa: F401, PLC0415
        import ferry.agents.sip_inner  # noqa: F401, PLC0415
        import ferry.agents.sip_outer  # noqa: F401, PLC0415
        import ferry.lanes.signaling.inner_media  # noqa: F401, PLC0415
    except ImportError as e:
        missing.append(str(e))
    if missing:
        pytest.skip("a signaling part has not landed: " + ", ".join(missing))


def configure(a, tmp_path: Path) -> int:
    """[signaling], [media] and [reverse] on both agents; returns the reverse ferry's port."""
    from reverse import add_reverse  # noqa: PLC0415 - tests/support/reverse.py (part "reverse")

    rport = add_reverse(a, outer_host=REV_OUT, inner_host=REV_IN)
    devices = "".join(f'[[signaling.device]]\nid = "{d}"\npassword = "pw-{d[-4:]}"\n' for d in [CAMERA, *DEVICES])
    a.append_config("outer", f"""
[signaling]
listen_udp = "{OUTER_BOX}:{SIP_PORT}"
server_id = "{OUTER_SERVER}"
realm = "{OUTER_REALM}"
destination = "police-sip"
catalog_query = false
{devices}
[media]
mode = "on-demand"
media_address = "{OUTER_BOX}"
port_range = [30000, 30099]
destination = "police-vms"
invite_timeout = 5.0
""")
    a.append_config("inner", f"""
[signaling]
local = "{INNER_BOX}:{SIP_PORT}"
platform = "{INNER_HOST}:{SIP_PORT}"
platform_id = "{PLATFORM_ID}"
local_id = "{LOCAL_ID}"
password = "cascade-secret"
keepalive_interval = 2.0
[signaling.id_map]
prefix = {{ "4309" = "4301" }}
[media]
mode = "on-demand"
media_address = "{INNER_BOX}"
port_min = 31000
port_max = 31099
invite_timeout = 15.0
linger = 1.0
""")
    return rport


def events(trail: Path, name: str) -> list[dict]:
    return [r for r in read_trail(trail) if r["event"] == name]


def test_signaling_and_on_demand_video_cross_only_as_sealed_datagrams(appliance_factory, tmp_path):
    _needs()
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "policy.yaml").write_text(POLICY)
    src = gb28181.make_source(None, "h264", seconds=20)       # the camera's picture (cached: it encodes it once)
    source_md5 = gb28181.framemd5(src)
    with six_namespaces() as topo:
        ns = topo.ns
        a = appliance_factory(inner_host=FWD_IN, bind_host=FWD_OUT, outer_netns=ns["ob"], inner_netns=ns["ib"],
                              outer_iface="o-f", inner_iface="i-f", policy_dir=policy)
        rport = configure(a, tmp_path)
        topo.apply_rules(a.port, rport)
        outside, inside = ns_sipp(ns["oh"]), ns_sipp(ns["ih"])
        caps = {k: Capture(ns[n], dev, tmp_path / f"{k}.pcap") for k, (n, dev) in {
            "outer_host": ("oh", "h-o"), "inner_host": ("ih", "h-i"),
            "forward_link": ("lf", "f-o"), "reverse_link": ("lr", "r-i")}.items()}
        procs: list = []
        camera = receiver = None
        try:
            for c in caps.values():
                c.start()
            platform = inside("platform_uas.xml", local_ip=INNER_HOST, local_port=SIP_PORT, timeout=400,
                              injection_csv=[(LOCAL_ID, "cascade-secret")], variables={"domain": DOMAIN},
                              work_dir=tmp_path / "sipp-platform").start()
            procs.append(platform)
            a.start()
            a.wait_for(lambda: events(a.inner_audit, "platform_registered"), 60, "ferry registered with the platform")

            # outside: three devices register (digest), each sends a keepalive, one an alarm
            accounts = [(d, f"pw-{d[-4:]}") for d in DEVICES]
            keys = {"server_id": OUTER_SERVER, "domain": OUTER_REALM}
            for scenario, n, extra in (("device_register.xml", 3, {"hold_ms": "0"}),
                                       ("device_keepalive.xml", 3, {}), ("device_alarm.xml", 1, {})):
                s = outside(scenario, (OUTER_BOX, SIP_PORT), local_ip=OUTER_HOST, local_port=5070,
                            injection_csv=accounts, calls=n, variables={**keys, **extra}, timeout=60,
                            work_dir=tmp_path / f"sipp-{scenario[:-4]}")
                procs.append(s)
                with s:
                    assert s.wait(90).successful == n
            # ferry's test camera registers too (and waits for an INVITE)
            camera = _camera(ns["oh"], tmp_path)
            a.wait_for(lambda: f"<DeviceID>{INNER_CAMERA}</DeviceID>" in platform_log(platform), 60,
                       "the camera's ON notice at the platform")
            a.wait_for(lambda: "<CmdType>Alarm</CmdType>" in platform_log(platform), 60, "the alarm at the platform")
            alarm = platform_log(platform).split("<CmdType>Alarm</CmdType>", 1)[1][:400]
            assert f"<DeviceID>{inner_id(DEVICES[0])}</DeviceID>" in alarm, alarm

            # inside: the platform queries ferry's catalog
            q = inside("sig-inner_catalog_query.xml", (INNER_BOX, SIP_PORT), local_ip=INNER_HOST, local_port=5062,
                       variables={"platform_id": PLATFORM_ID, "domain": DOMAIN, "target_id": LOCAL_ID, "sn": "77"},
                       extra_args=["-d", "3000", "-oocsf", str(SCENARIOS / "sig-inner_catalog_pages_ooc.xml")],
                       calls=1, timeout=60, work_dir=tmp_path / "sipp-catalog")
            procs.append(q)
            with q:
                pages = q.wait(90).received("MESSAGE")
            listed = b"".join(m.body for m in pages)
            assert b"<SumNum>" in listed, listed[:2000]
            for d in (CAMERA, *DEVICES):     # every registered device, under the ID the platform sees only
                assert inner_id(d).encode() in listed and d.encode() not in listed, (d, listed[:2000])

            # inside: the platform INVITEs the camera under its inner ID; the video comes to the receiver
            receiver = RtpReceiver(ns["ih"], INNER_HOST, 40000, tmp_path / "viewer.rtp")
            inv = inside("media_inner_invite.xml", (INNER_BOX, SIP_PORT), local_ip=INNER_HOST, local_port=5064,
                         variables={"platform_id": PLATFORM_ID, "domain": DOMAIN, "device_id": INNER_CAMERA,
                                    "rtp_ip": INNER_HOST, "rtp_port": "40000", "ssrc": PLATFORM_SSRC,
                                    "hold_ms": "5000", "media_proto": "RTP/AVP"},
                         calls=1, timeout=90, work_dir=tmp_path / "sipp-invite")
            procs.append(inv)
            with inv:
                call = inv.wait(120)
            assert call.received("200"), call.report()
            a.wait_for(lambda: [r for r in events(a.outer_audit, "request_received")
                                if r["detail"]["request"] == "stop_stream"], 60, "stop_stream on the outer agent")
            try:        # the last viewer's BYE -> stop_stream -> the outer agent BYEs the camera
                a.wait_for(lambda: events(a.outer_audit, "stream_stopped"), 30, "the camera's dialog ended (BYE)")
                camera_released = ""
            except AssertionError as e:
                camera_released = str(e)[:2000]
            # counted while both agents run (a stopped agent's box would answer the other's datagrams)
            counts = topo.counters()
        finally:
            if receiver is not None:
                receiver.stop()
            if camera is not None:
                _stop(camera)
            a.stop()
            for p in procs:
                p.stop()
            for c in caps.values():
                c.stop()

        # the chain happened as the parts say: start_stream over the reverse ferry, the camera INVITEd
        sent = [r["detail"]["request"] for r in events(a.inner_audit, "request_sent")]
        assert sent[:1] == ["start_stream"] and "stop_stream" in sent, sent
        assert events(a.outer_audit, "stream_requested") and events(a.outer_audit, "stream_answered")
        assert not uncoded(a.trails())

        # each link carries its own ferry one way, and nothing else (nftables)
        assert counts["lf.ferry"] > 0 and counts["lr.ferry"] > 0, counts          # the rules were live
        for k in ("lf.other", "lf.back", "lf.local", "lr.other", "lr.back", "lr.local",
                  "ob.in_wrong_way", "ob.in_other", "ib.in_wrong_way", "ib.in_other"):
            assert counts[k] == 0, (k, counts)

        frames = {k: read_pcap(c.path) for k, c in caps.items()}
        outer_sip, inner_sip = sip_messages(frames["outer_host"]), sip_messages(frames["inner_host"])
        # tshark: well-formed SIP on each host side
        for k, port_list in (("outer_host", [SIP_PORT, 5070, 5080]), ("inner_host", [SIP_PORT, 5062, 5064])):
            rows = tshark_sip(caps[k].path, ports=port_list)
            assert rows, k
            bad = [r for r in rows if r["malformed"]]
            assert not bad, (k, bad[:5])
        assert any(m.startswith(b"INVITE sip:" + CAMERA.encode()) for m in outer_sip)      # ferry INVITEd the camera
        assert any(m.startswith(b"REGISTER ") for m in inner_sip)                          # the cascade
        # the links: only the ferry's datagrams (tshark saw them too), no SIP, no RTP of either SSRC
        ssrcs = sdp_ssrcs(outer_sip) | sdp_ssrcs(inner_sip)
        assert int(PLATFORM_SSRC) in ssrcs and len(ssrcs) >= 2, ssrcs
        tokens = sip_tokens(outer_sip) | sip_tokens(inner_sip)
        for k, (src, dst, port) in (("forward_link", (FWD_OUT, FWD_IN, a.port)),
                                    ("reverse_link", (REV_IN, REV_OUT, rport))):
            assert frames[k], k
            others = [f for f in frames[k] if (f.proto, f.src, f.dst, f.dport) != (17, src, dst, port)]
            assert not others, (k, others[:3])
            for f in frames[k]:
                assert not rtp_with_ssrc(f.payload, ssrcs), (k, "an RTP packet on the link")
                for text in (b"SIP/2.0", b"MANSCDP", b"<?xml", CAMERA.encode(), INNER_CAMERA.encode()):
                    assert text not in f.payload, (k, text)
                for t in tokens:
                    assert t.split(":", 1)[1].encode() not in f.payload, (k, t)
        # what identifies a dialog or transaction never crosses (ferry builds every message afresh)
        out_tokens, in_tokens = sip_tokens(outer_sip), sip_tokens(inner_sip)
        assert out_tokens and in_tokens
        assert not out_tokens & in_tokens, out_tokens & in_tokens
        inner_raw, outer_raw = b"".join(inner_sip), b"".join(outer_sip)
        assert not [t for t in out_tokens if t.split(":", 1)[1].encode() in inner_raw]
        assert not [t for t in in_tokens if t.split(":", 1)[1].encode() in outer_raw]
        assert CAMERA.encode() not in inner_raw and INNER_CAMERA.encode() not in outer_raw

        # the video: RTP with the platform's SSRC from ferry, decoding to a run of the source's frames
        got = receiver.datagrams() if receiver is not None else []
        assert got, "no RTP reached the platform's receiver"
        rtp = [d for _, d in got]
        assert {struct.unpack_from("!I", d, 8)[0] for d in rtp} == {int(PLATFORM_SSRC)}
        seqs = [struct.unpack_from("!H", d, 2)[0] for d in rtp]
        assert all((y - x) % 65536 == 1 for x, y in zip(seqs, seqs[1:])), "RTP lost or reordered"
        rebuilt = tmp_path / "viewer.ps"
        rebuilt.write_bytes(b"".join(d[12:] for d in rtp))
        decoded = gb28181.framemd5(rebuilt)
        assert len(decoded) >= 25, len(decoded)
        start = source_md5.index(decoded[0])
        assert decoded == source_md5[start:start + len(decoded)]
        # the platform's BYE ended the camera's dialog too (BYE on either side tears down both)
        stops = [r["detail"] for r in events(a.outer_audit, "request_served") if r["object_type"] == "stop_stream"]
        assert not camera_released, ("stop_stream did not end the camera's dialog", stops, camera_released)


def inner_id(outer_id: str) -> str:
    """[signaling.id_map] prefix 4309 -> 4301."""
    return "4301" + outer_id[4:]


def platform_log(platform) -> str:
    p = platform.work / "messages.log"
    return p.read_bytes().decode("latin-1") if p.exists() else ""


def _camera(ns: str, tmp_path: Path):
    log = open(tmp_path / "camera.log", "wb")
    try:
        return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "ferry.camera",
                                 "--sip-server", f"{OUTER_BOX}:{SIP_PORT}", "--sip-listen", f"{OUTER_HOST}:5080",
                                 "--device-id", CAMERA, "--password", f"pw-{CAMERA[-4:]}", "--server-id",
                                 OUTER_SERVER, "--domain", OUTER_REALM, "--seconds", "20", "--keepalive", "5"],
                                stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def _stop(p) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

