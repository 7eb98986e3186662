"""End to end: ferry's inner SIP side as a lower-level platform of a real GB/T 28181 platform (SIPp).

Real agent processes on loopback. SIPp plays the inner (police) platform: `platform_uas.xml` answers
ferry's cascade REGISTER with a 401 and checks the digest with SIPp's own `verifyauth` (a 403 if it
is wrong), then answers keepalives and other MESSAGEs; `platform_uac_catalog.xml` (with its
out-of-call part `platform_catalog_ooc.xml`) queries ferry's catalog and checks the paging (SumNum,
DeviceList Num, the query's SN, every item counted once). The signaling objects on the list crossed
the sealed link: until the outer SIP side (issue 13 item 1, "sig-outer") is on main, the test
seals them itself with the outer agent's key, exactly as the outer agent does (tests/e2e/
test_clock_skew.py does the same for files); the whole cascade, with SIPp devices outside, is
`test_cascade_device_outside_seen_by_the_platform_inside` (skipped until sig-outer lands).
"""
from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from appliance import ROOT, free_udp_port, read_trail
from ferry.codecs import manscdp
from ferry.codecs.manscdp import Item, Manscdp
from ferry.crypto.keys import load_private_key, load_public_key
from ferry.pb import ferry_pb2
from ferry.policy import load_plan
from ferry.wire import LinkSender

pytestmark = pytest.mark.e2e

SIPP = shutil.which("sipp")
SCENARIOS = ROOT / "tests" / "support" / "sipp"
LOCAL_ID = "43010000002000000099"        # ferry, as the police platform sees it
PLATFORM_ID = "43010000002000000001"
DOMAIN = "4301000000"
NVR = "43090000002000000001"             # the lower-level platform outside (policy/yiyang: lower-platform)
PASSWORD = "Cascade-12345"


def need_sipp(*names: str) -> None:
    if SIPP is None:
        pytest.skip("SIPp (Debian sip-tester) is not installed")
    missing = [n for n in names if not (SCENARIOS / n).exists()]
    if missing:
        pytest.skip(f"SIPp scenarios of the 'sipp' part not on this branch yet: {', '.join(missing)}")


class Sipp:
    """One SIPp process (UDP, loopback); its messages logged to <work>/<name>.msg."""

    def __init__(self, work: Path, name: str, scenario: str, port: int, *args: str, remote: str | None = None,
                 keys: dict[str, str] | None = None) -> None:
        self.log = work / f"{name}.msg"
        self.out = work / f"{name}.out"
        cmd = [SIPP, "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port), "-t", "u1", "-nostdin",
               "-trace_msg", "-message_file", str(self.log), "-trace_err", "-error_file", str(work / f"{name}.err"),
               *args]
        for k, v in (keys or {}).items():
            cmd += ["-key", k, v]
        if remote:
            cmd.append(remote)
        self.proc = subprocess.Popen(cmd, cwd=work, stdout=open(self.out, "wb"), stderr=subprocess.STDOUT)

    def messages(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def sipps():
    made: list[Sipp] = []
    yield made
    for s in made:
        s.stop()


def platform(work: Path, sipps: list, port: int, password: str = PASSWORD) -> Sipp:
    accounts = work / "accounts.csv"
    accounts.write_text(f"SEQUENTIAL\n{LOCAL_ID};{password}\n")
    s = Sipp(work, "platform", "platform_uas.xml", port, "-inf", str(accounts), "-infindex", str(accounts), "0",
             keys={"domain": DOMAIN})
    sipps.append(s)
    return s


SIGNALING_POLICY = """
  lower-platform:
    kind: devices
    description: the lower-level GB/T 28181 platform outside
    ids: ["%s"]
    addresses: ["10.20.5.20/32"]
""" % NVR
SIGNALING_RULE = """
  - id: signaling-catalog
    description: catalog, keepalive and alarms from the lower-level platform
    lane: signaling
    from: lower-platform
    to: police-sip
    signaling:
      roots: [Notify, Response]
      cmd_types: [Catalog, Keepalive, Alarm]
      max_body_bytes: 65536
"""


def signaling_policy(tmp: Path) -> Path:
    """policy/demo with a lower-level platform allowed to send catalog, keepalive and alarms."""
    folder = tmp / "sigpolicy"
    shutil.copytree(ROOT / "policy" / "demo", folder)
    text = (folder / "policy.yaml").read_text()
    text = text.replace("\nsources:\n", "\nsources:\n" + SIGNALING_POLICY.lstrip("\n"), 1)
    text = text.replace("\ndestinations:\n", "\ndestinations:\n  police-sip:\n    kind: sip\n"
                        "    description: the police GB/T 28181 platform\n", 1)
    text = text.replace("\nrules:\n", "\nrules:\n" + SIGNALING_RULE.lstrip("\n"), 1)
    (folder / "policy.yaml").write_text(text)
    return folder


def appliance_with_signaling(appliance_factory, tmp: Path, platform_port: int, **over):
    a = appliance_factory(policy_dir=signaling_policy(tmp))
    local_port = free_udp_port()
    pw = a.work / "keys" / "sip.password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    settings = {"local": f'"127.0.0.1:{local_port}"', "platform": f'"127.0.0.1:{platform_port}"',
                "platform_id": f'"{PLATFORM_ID}"', "platform_domain": f'"{DOMAIN}"', "local_id": f'"{LOCAL_ID}"',
                "password_file": '"keys/sip.password"', "keepalive_interval": "1.0", "catalog_page_size": "10",
                **over}
    a.append_config("inner", "[signaling]\n" + "\n".join(f"{k} = {v}" for k, v in settings.items())
                    + '\n[signaling.id_map]\nprefix = {"43090000" = "43010000"}\n')
    return a, local_port


def seal(a, objects: list[ferry_pb2.CanonicalObject]) -> None:
    """Seal objects with the outer agent's key and send them on the link, as the outer agent does."""
    keys = a.work / "keys"
    plan = load_plan(a.work / "policy")
    now = time.time()
    sender = LinkSender(outer_key=load_private_key(keys / "outer.key"), inner_public=load_public_key(keys / "inner.pub"),
                        policy_hash=plan.hash, name="test", now=now + 5)
    for obj in objects:
        sender.submit(obj.object_id, obj.SerializeToString(), now + 5)
    sender.flush(now + 5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in sender.datagrams_to_send(now + 5):
            s.sendto(d, ("127.0.0.1", a.port))
            time.sleep(0.0005)


def signaling_object(object_id: int, msg: Manscdp) -> ferry_pb2.CanonicalObject:
    """The canonical object of issue 13's contract, as the outer agent makes it."""
    return ferry_pb2.CanonicalObject(
        object_id=object_id, lane="signaling", destination="police-sip", rule="signaling-catalog",
        created=time.time(),
        source=ferry_pb2.Source(device_id=msg.device_id, address="10.20.5.20", port=5060, name="lower-platform"),
        signaling=ferry_pb2.SignalingMessage(root=msg.root, cmd_type=msg.cmd_type, device_id=msg.device_id,
                                             sn=msg.sn, xml=manscdp.build(msg, encoding="UTF-8").decode()))


def outer_cam(i: int) -> str:
    return f"4309000000132{i:07d}"


def inner_cam(i: int) -> str:
    return f"4301000000132{i:07d}"


def events(a, name: str) -> list[dict]:
    return [r for r in read_trail(a.inner_audit) if r["event"] == name]


def test_registers_with_digest_keeps_alive_and_serves_the_crossed_catalog(appliance_factory, sipps, tmp_path):
    need_sipp("platform_uas.xml", "platform_uac_catalog.xml", "platform_catalog_ooc.xml")
    pport = free_udp_port()
    a, local_port = appliance_with_signaling(appliance_factory, tmp_path, pport)
    pf = platform(a.work, sipps, pport)
    a.start()
    # SIPp's verifyauth accepted ferry's digest: a 200, not a 403
    reg = a.wait_for(lambda: events(a, "platform_registered"), 30, "ferry registered with the SIPp platform")
    assert reg[0]["detail"]["local_id"] == LOCAL_ID
    assert not events(a, "platform_register_refused")
    log = pf.messages()
    assert re.search(r"Authorization: Digest username=\"%s\"" % LOCAL_ID, log)
    assert "SIP/2.0 401" in log and "SIP/2.0 403" not in log
    # keepalives at the configured interval (1 s), each answered 200
    a.wait_for(lambda: pf.messages().count("<CmdType>Keepalive</CmdType>") >= 3, 30, "three keepalives")

    # 25 cameras of the lower platform outside cross the link as a Response Catalog, and an alarm
    items = tuple(Item((("DeviceID", outer_cam(i)), ("Name", f"路口{i}"), ("ParentID", NVR), ("Status", "ON")))
                  for i in range(1, 26))
    cat = Manscdp("Response", "Catalog", 31, NVR, items=items, sum_num=25)
    alarm = Manscdp("Notify", "Alarm", 32, NVR, (("AlarmPriority", "1"), ("AlarmMethod", "2"),
                                                 ("AlarmTime", "2026-12-06T10:00:00")))
    seal(a, [signaling_object(801, cat), signaling_object(802, alarm)])
    a.wait_for(lambda: {r.get("object_id") for r in events(a, "object_delivered")} >= {801, 802}, 30,
               "both signaling objects delivered")
    # the alarm reached the platform under ferry's ID for the lower platform, never the outer one
    a.wait_for(lambda: "<CmdType>Alarm</CmdType>" in pf.messages(), 15, "alarm forwarded")
    log = pf.messages()
    assert "<DeviceID>43010000002000000001</DeviceID>" in log and NVR not in log

    # the platform queries ferry's catalog: 25 items in pages of 10, checked by SIPp
    uac = Sipp(a.work, "catalog", "platform_uac_catalog.xml", free_udp_port(), "-m", "1", "-oocsf",
               str(SCENARIOS / "platform_catalog_ooc.xml"), "-timeout", "30s", "-timeout_error",
               remote=f"127.0.0.1:{local_port}",
               keys={"platform_id": PLATFORM_ID, "domain": DOMAIN, "target_id": LOCAL_ID, "sn": "4711",
                     "wait_ms": "10000"})
    sipps.append(uac)
    assert uac.wait(60) == 0, uac.out.read_text(errors="replace")[-2000:]
    pages = uac.messages()
    assert pages.count("<SumNum>25</SumNum>") == 3
    assert pages.count('<DeviceList Num="10">') == 2 and pages.count('<DeviceList Num="5">') == 1
    for i in range(1, 26):
        assert f"<DeviceID>{inner_cam(i)}</DeviceID>" in pages
        assert outer_cam(i) not in pages
    assert "SN>31<" not in pages and "SN>4711<" in pages

    # ferry's status shows the registration and the devices known
    a.stop()
    stopped = events(a, "agent_stopped")
    assert stopped


def test_a_wrong_password_is_refused_by_the_platform_and_stops_registering(appliance_factory, sipps, tmp_path):
    need_sipp("platform_uas.xml")
    pport = free_udp_port()
    a, _ = appliance_with_signaling(appliance_factory, tmp_path, pport)
    pf = platform(a.work, sipps, pport, password="not-ferrys-password")
    a.start()
    refused = a.wait_for(lambda: events(a, "platform_register_refused"), 30, "registration refused")
    assert refused[0]["verdict"] == "alarm" and refused[0]["code"] == "platform_refused"
    assert not events(a, "platform_registered")
    time.sleep(3)      # nothing more is tried: one 403 in the platform's log, no keepalive
    log = pf.messages()
    assert log.count("SIP/2.0 403") == 1 and "Keepalive" not in log
    # the forward lanes are untouched: a file still crosses
    a.drop("doc.txt", b"still crossing\n")
    a.wait_for(lambda: (a.inner_spool / "doc.txt").exists(), 30, "the file delivered")


def test_password_file_readable_by_others_refuses_to_start(appliance_factory, tmp_path):
    a, _ = appliance_with_signaling(appliance_factory, tmp_path, free_udp_port())
    (a.work / "keys" / "sip.password").chmod(0o644)
    import sys
    r = subprocess.run([sys.executable, "-m", "ferry", "inner", "--config", str(a.work / "inner.toml")],
                       cwd=a.work, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "sip.password ([signaling] password_file): mode 0644" in r.stderr + r.stdout


@pytest.mark.skip(reason="needs the outer SIP side (issue 13 item 1, 'sig-outer': ferry/agents/sip_outer.py), "
                         "not on main yet")
def test_cascade_device_outside_seen_by_the_platform_inside(appliance_factory, sipps):
    """A SIPp device registers with the outer agent and sends keepalives and an alarm; the SIPp
    platform inside sees it ON in ferry's catalog and receives the alarm under ferry's ID."""
    need_sipp("platform_uas.xml", "device_register.xml", "device_alarm.xml", "platform_uac_catalog.xml")
