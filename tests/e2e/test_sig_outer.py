"""The outer SIP side on real agents (issue 13 item 1): SIPp plays GB/T 28181 devices that
register with digest authentication over UDP and TCP and send keepalives, a catalog, an alarm,
a CmdType the policy does not name and XML bombs; a device with a wrong password and an unknown
device are refused, and so are malformed SIP and an oversized body. The outer trail records each
outcome with its reason code; the signaling objects cross the link, and the inner agent
re-checks them against the policy (it has no SIP output yet: it records them `no_output`, which
it says only of objects the policy allows)."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import free_udp_port, read_trail
from sipp import Sipp, free_port, write_catalog
from ferry.codecs import sip

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240),
              pytest.mark.skipif(not shutil.which("sipp"), reason="SIPp (Debian sip-tester) not installed")]

BOMB = ('<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">'
        '<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>')
XXE = '<!DOCTYPE n [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
SCENARIOS = Path(__file__).resolve().parents[1] / "support" / "sipp"
SERVER = "43090000002000000001"
REALM = "4309000000"
UDP_CAM = "43090000001320000001"
TCP_CAM = "43090000001320000002"
BAD_PASSWORD_CAM = "43090000001320000003"
STRANGER = "43090000001320000999"       # inside the policy's region, but no [[signaling.device]]
CHANNEL = "43090000001310000011"

POLICY = """
policy: sig-outer-e2e
version: 1
default: deny
sources:
  yiyang-devices: {kind: devices, match: [{region: "4309"}]}
destinations:
  police-platform: {kind: platform}
rules:
  - id: yiyang-signaling
    lane: signaling
    from: yiyang-devices
    to: police-platform
    signaling: {roots: [Notify, Response], cmd_types: [Keepalive, Alarm, Catalog], max_body_bytes: 8192}
"""


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def appliance(factory, tmp_path: Path, extra: str = "", **kw):
    policy = tmp_path / "sig-policy"
    policy.mkdir(exist_ok=True)
    (policy / "policy.yaml").write_text(POLICY)
    a = factory(policy_dir=policy, **kw)
    udp, tcp = free_udp_port(), free_tcp_port()
    secret = a.work / "keys" / "cam2.password"
    secret.write_text("tcp-cam-secret\n")
    secret.chmod(0o600)
    a.append_config("outer", f"""
[signaling]
listen_udp = "127.0.0.1:{udp}"
listen_tcp = "127.0.0.1:{tcp}"
server_id = "{SERVER}"
realm = "{REALM}"
destination = "police-platform"
{extra}
[[signaling.device]]
id = "{UDP_CAM}"
password = "udp-cam-secret"
[[signaling.device]]
id = "{TCP_CAM}"
password_file = "{secret}"
[[signaling.device]]
id = "{BAD_PASSWORD_CAM}"
password = "the-right-one"
""")
    return a, udp, tcp


def sipp(a, scenario: str, port: int, device: str, password: str, transport: str = "u1") -> subprocess.CompletedProcess:
    csv = a.work / f"sipp-{device}.csv"
    csv.write_text(f"SEQUENTIAL\n{device};{password};\n")
    cmd = ["sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIOS / scenario), "-inf", str(csv), "-m", "1", "-l", "1",
           "-t", transport, "-i", "127.0.0.1", "-nostdin", "-timeout", "60s", "-timeout_error",
           "-recv_timeout", "20s", "-key", "server_id", SERVER, "-key", "domain", REALM, "-key", "channel", CHANNEL,
           "-key", "bomb_doctype", BOMB, "-key", "xxe_doctype", XXE,
           "-auth_uri", f"{SERVER}@{REALM}", "-trace_err", "-max_recv_loops", "100"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=a.work)


def events(trail: Path, event: str) -> list[dict]:
    return [r for r in read_trail(trail) if r["event"] == event]


def test_devices_register_with_digest_and_their_messages_cross_udp_and_tcp(appliance_factory, tmp_path):
    a, udp, tcp = appliance(appliance_factory, tmp_path, management=True)
    a.start()
    for device, password, port, transport in ((UDP_CAM, "udp-cam-secret", udp, "u1"),
                                              (TCP_CAM, "tcp-cam-secret", tcp, "t1")):
        run = sipp(a, "sig-outer_device.xml", port, device, password, transport)
        errors = "".join(p.read_text(errors="replace") for p in a.work.glob("sig-outer_device_*_errors.log"))
        assert run.returncode == 0, f"SIPp {transport} {device}: {run.stdout[-2000:]}\n{run.stderr[-2000:]}\n{errors}"
    for device, password, port, transport in ((BAD_PASSWORD_CAM, "a-wrong-guess", udp, "u1"),
                                              (STRANGER, "whatever", tcp, "t1")):
        run = sipp(a, "sig-outer_refused.xml", port, device, password, transport)
        assert run.returncode == 0, f"SIPp refused {device}: {run.stdout[-2000:]}\n{run.stderr[-2000:]}"

    # malformed SIP (no answer) over UDP and TCP, and an oversized MANSCDP body (413)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"REGISTER sip:x SIP/2.0\nVia: nothing\n\n", ("127.0.0.1", udp))
        big = sip.build_request("MESSAGE", f"sip:{SERVER}@{REALM}", [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{s.getsockname()[1] or 1};branch=z9hG4bKbig"),
            ("From", f"<sip:{UDP_CAM}@{REALM}>;tag=1"), ("To", f"<sip:{SERVER}@{REALM}>"), ("Call-ID", "big@x"),
            ("CSeq", "1 MESSAGE"), ("Content-Type", "Application/MANSCDP+xml")], b"<" * 40_000)
        s.settimeout(10)
        s.sendto(big, ("127.0.0.1", udp))
        answer = sip.parse_message(s.recv(65535))
        assert isinstance(answer, sip.SipResponse) and answer.status == 413
    with socket.create_connection(("127.0.0.1", tcp), timeout=10) as c:
        c.sendall(b"MESSAGE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP x;branch=z9hG4bK1\r\n\x00\r\n\r\n")
        assert c.recv(100) == b""                 # refused: the connection closed, nothing answered

    # 2 devices x (ON, Response Catalog, Keepalive, Alarm) objects sent
    sent = a.wait_for(lambda: (s := events(a.outer_audit, "object_sent")) and len(s) >= 8 and s, 30,
                      "8 signaling objects sent")
    assert all(r["lane"] == "signaling" and r["rule"] == "yiyang-signaling" for r in sent)
    kinds = sorted((r["source"]["device_id"], r["object_type"]) for r in sent)
    assert kinds == sorted((d, k) for d in (UDP_CAM, TCP_CAM)
                           for k in ("Notify/Catalog", "Response/Catalog", "Notify/Keepalive", "Notify/Alarm"))
    alarms = [r for r in sent if r["object_type"] == "Notify/Alarm"]
    assert all(r["detail"]["channel"] == CHANNEL for r in alarms)       # a channel the catalog named
    assert {r["detail"]["transport"] for r in sent} == {"udp", "tcp"}
    registered = {r["source"]["device_id"]: r for r in events(a.outer_audit, "device_registered")}
    assert set(registered) == {UDP_CAM, TCP_CAM}

    refused = events(a.outer_audit, "signaling_refused")
    by_code: dict[str, list[dict]] = {}
    for r in refused:
        by_code.setdefault(r["code"], []).append(r)
    assert [r["source"]["device_id"] for r in by_code["wrong_password"]] == [BAD_PASSWORD_CAM]
    assert [r["source"]["device_id"] for r in by_code["sip_unknown_device"]] == [STRANGER]
    policy = by_code["content_limit"]
    assert sorted(r["source"]["device_id"] for r in policy) == [UDP_CAM, TCP_CAM]
    assert all("MobilePosition" in r["reason"] and r["rule"] == "yiyang-signaling" for r in policy)
    # the billion laughs and the external entity of each device: refused by the hardened parser
    # (the second of a device within SIGNALING_REFUSAL_AUDIT_INTERVAL is counted into a later record)
    assert {r["source"]["device_id"] for r in by_code["bad_manscdp"]} == {UDP_CAM, TCP_CAM}
    assert BAD_PASSWORD_CAM not in registered
    trail_text = (a.outer_audit / "audit.jsonl").read_text()
    assert "udp-cam-secret" not in trail_text and "tcp-cam-secret" not in trail_text
    assert "the-right-one" not in trail_text and "a-wrong-guess" not in trail_text

    # every object crossed: the inner agent re-checked it (allowed) and has no SIP output for it yet
    ids = {r["object_id"] for r in sent}
    inner = a.wait_for(lambda: (got := {r["object_id"]: r for r in read_trail(a.inner_audit)
                                        if r.get("object_id") in ids}) and len(got) == len(ids) and got, 30,
                       "the inner outcome of every signaling object")
    outcomes = {(r["event"], r["lane"], r["code"]) for r in inner.values()}
    assert outcomes == {("object_refused", "signaling", "no_output")}

    # ferry asked each device for its catalog when it came online (its own MESSAGE, which these
    # SIPp devices log as a request outside their call)
    seen = "".join(p.read_text(errors="replace") for p in a.work.glob("sig-outer_device_*_errors.log"))
    for device in (UDP_CAM, TCP_CAM):
        assert f"MESSAGE sip:{device}@127.0.0.1" in seen
    assert seen.count("<CmdType>Catalog</CmdType>") == 2 and seen.count("<Query>") == 2

    # `ferry status`: the signaling lane's line
    r = subprocess.run([sys.executable, "-m", "ferry", "status", "--socket", str(a.outer_socket), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    [outer] = json.loads(r.stdout)
    lane = outer["lanes"]["signaling"]
    assert (lane["sent"], lane["devices_registered"], lane["devices_online"]) == (8, 2, 2)
    # taken: 2 x (catalog, keepalive, alarm, position); refused: 2 x (position, bomb, entity), 2 REGISTERs,
    # 2 malformed, 1 too large
    assert lane["messages"] == 8 and lane["refused"] == 11
    assert outer["counters"]["sip_devices_online"] == 2

    # stopped: the aggregated refusals are written; every refusal is counted
    a.stop()
    total = {}
    for r in events(a.outer_audit, "signaling_refused"):
        total[r["code"]] = total.get(r["code"], 0) + r["detail"]["messages"]
    assert total == {"bad_manscdp": 4, "content_limit": 2, "wrong_password": 1, "sip_unknown_device": 1,
                     "malformed_sip": 2, "body_too_large": 1}


def test_a_silent_device_goes_offline_and_the_inner_side_hears_of_it(appliance_factory, tmp_path):
    """Three missed keepalives (here a 4 s timeout): the device is offline, and a Notify Catalog
    with its Item's Event OFF crosses, as its Event ON did when it registered."""
    a, udp, _tcp = appliance(appliance_factory, tmp_path, "keepalive_timeout = 4.0")
    a.start()
    run = sipp(a, "sig-outer_device.xml", udp, UDP_CAM, "udp-cam-secret")
    assert run.returncode == 0, run.stdout[-2000:]
    offline = a.wait_for(lambda: events(a.outer_audit, "device_offline"), 30, "the silent device offline")
    assert [r["source"]["device_id"] for r in offline] == [UDP_CAM] and "no keepalive" in offline[0]["reason"]
    a.wait_for(lambda: len([r for r in events(a.outer_audit, "object_sent")
                            if r["object_type"] == "Notify/Catalog"]) == 2, 10, "the OFF notice sent")
    notices = [r for r in events(a.outer_audit, "object_sent") if r["object_type"] == "Notify/Catalog"]
    registered = events(a.outer_audit, "device_registered")
    assert notices[0]["seq"] < offline[0]["seq"] < notices[1]["seq"]       # ON when it came, OFF when it left
    assert [r["source"]["device_id"] for r in registered] == [UDP_CAM] and registered[0]["seq"] < notices[0]["seq"]
    ids = {r["object_id"] for r in notices}
    a.wait_for(lambda: ids <= {r.get("object_id") for r in read_trail(a.inner_audit)}, 20, "both notices across")


def test_a_sipp_device_answers_the_repeated_catalog_query_in_pages(appliance_factory, tmp_path):
    """A device registers (the SIPp harness's device_register.xml), then serves on the same port
    (device_uas.xml): ferry's first catalog query went unanswered (nobody listened yet), the one
    it asks again after catalog_retry gets the catalog in three pages, each crossing."""
    a, udp, _tcp = appliance(appliance_factory, tmp_path, "catalog_retry = 2.0")
    a.start()
    port = free_port("u1")
    with Sipp("device_register.xml", remote=("127.0.0.1", udp), local_port=port,
              injection_csv=[(UDP_CAM, "udp-cam-secret")], variables={"server_id": SERVER, "domain": REALM}, calls=1,
              work_dir=tmp_path / "register") as reg:
        assert reg.wait(30).successful == 1
    channels = [f"430900000013100000{n:02d}" for n in range(1, 6)]
    catalog = write_catalog(tmp_path / "catalog", channels, per_page=2)
    with Sipp("device_uas.xml", local_port=port, variables={**catalog, "domain": REALM}, timeout=60,
              work_dir=tmp_path / "uas") as device:
        pages = a.wait_for(lambda: (p := [r for r in events(a.outer_audit, "object_sent")
                                         if r["object_type"] == "Response/Catalog"]) and len(p) == 3 and p, 40,
                           "the three catalog pages sent")
        result = device.stop()
    queries = [m for m in result.received("MESSAGE") if b"<Query>" in m.body]
    assert queries and all(b"<CmdType>Catalog</CmdType>" in q.body for q in queries)
    assert {r["source"]["device_id"] for r in pages} == {UDP_CAM}
    ids = {r["object_id"] for r in pages}
    a.wait_for(lambda: ids <= {r.get("object_id") for r in read_trail(a.inner_audit)}, 20, "the pages across")


def test_after_kill_9_the_outer_agent_takes_its_devices_back_and_a_damaged_file_is_an_alarm(appliance_factory,
                                                                                            tmp_path):
    """The outer agent writes its registrations (<state_dir>/sip-registrations): killed -9 and
    started again it knows the device, whose keepalive crosses without a new REGISTER. With that
    file damaged, it says so (an alarm) and refuses the keepalive (403, not_registered) until the
    device registers again; then its messages cross."""
    a, udp, _tcp = appliance(appliance_factory, tmp_path)
    state = Path(f"{a.outer_audit}-state") / "sip-registrations"
    a.start()
    keys = {"server_id": SERVER, "domain": REALM}
    with Sipp("device_register.xml", remote=("127.0.0.1", udp), injection_csv=[(UDP_CAM, "udp-cam-secret")],
              variables=keys, calls=1, work_dir=tmp_path / "register1") as reg:
        assert reg.wait(30).successful == 1
    a.wait_for(lambda: events(a.outer_audit, "device_registered"), 20, "registered")
    a.wait_for(lambda: state.exists() and UDP_CAM.encode() in state.read_bytes(), 30, "the registrations written")
    a.kill("outer")
    a.start_role("outer")
    [loaded] = a.wait_for(lambda: events(a.outer_audit, "registrations_loaded"), 20, "registrations loaded")
    assert loaded["detail"] == {"restored": 1, "expired": 0, "dropped": 0}
    with Sipp("device_keepalive.xml", remote=("127.0.0.1", udp), injection_csv=[(UDP_CAM, "udp-cam-secret")],
              variables=keys, calls=1, work_dir=tmp_path / "ka1") as ka:
        assert ka.wait(30).successful == 1
    sent = a.wait_for(lambda: [r for r in events(a.outer_audit, "object_sent")
                               if r["object_type"] == "Notify/Keepalive"], 20, "the keepalive sent")
    assert [r["source"]["device_id"] for r in sent] == [UDP_CAM]
    assert len(events(a.outer_audit, "device_registered")) == 1          # no new REGISTER was needed

    a.kill("outer")
    state.write_bytes(state.read_bytes()[:-5])                           # torn
    a.start_role("outer")
    [alarm] = a.wait_for(lambda: events(a.outer_audit, "signaling_state_problem"), 20, "the alarm")
    assert alarm["verdict"] == "alarm" and "checksum" in alarm["reason"]
    with Sipp("device_keepalive.xml", remote=("127.0.0.1", udp), injection_csv=[(UDP_CAM, "udp-cam-secret")],
              variables=keys, calls=1, extra_args=["-recv_timeout", "5000"], work_dir=tmp_path / "ka2") as ka:
        refused = ka.wait(60, expect=None)
    assert refused.failed == 1 and refused.received("403")
    a.wait_for(lambda: [r for r in events(a.outer_audit, "signaling_refused") if r["code"] == "not_registered"],
               20, "the keepalive refused not_registered")
    with Sipp("device_register.xml", remote=("127.0.0.1", udp), injection_csv=[(UDP_CAM, "udp-cam-secret")],
              variables=keys, calls=1, work_dir=tmp_path / "register2") as reg:
        assert reg.wait(30).successful == 1
    with Sipp("device_keepalive.xml", remote=("127.0.0.1", udp), injection_csv=[(UDP_CAM, "udp-cam-secret")],
              variables=keys, calls=1, work_dir=tmp_path / "ka3") as ka:
        assert ka.wait(30).successful == 1
    a.wait_for(lambda: len([r for r in events(a.outer_audit, "object_sent")
                            if r["object_type"] == "Notify/Keepalive"]) == 2, 20, "the second keepalive sent")
    assert len(events(a.outer_audit, "device_registered")) == 2
