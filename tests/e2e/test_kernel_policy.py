"""Applying a signed policy to running agents changes the kernel's rules too:
which outer addresses reach the outer agent's ports follows the policy, and the
link stays one-way (as root, in network namespaces)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance import ROOT, read_trail
from rootcheck import need_root
from waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.e2e]

CAM_A, CAM_B, OUTER_CAM = "10.233.0.10", "10.233.0.11", "10.233.0.1"
OUTER_LINK, INNER_LINK = "10.233.1.1", "10.233.1.2"
INGEST_PORT = 5060

CAMERAS = """
  cameras:
    kind: addresses
    description: the school's camera platform
    addresses: ["%s/32"]
    ports: [%d]
    protocol: udp
"""
VIDEO_RULE = """
  - id: video-cameras
    lane: video
    from: cameras
    to: police-vms
    video: {codecs: [h264], max_width: 1920, max_height: 1080, max_frame_rate: 30, max_bitrate_kbps: 8000}
"""

LISTENER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
with open(sys.argv[2], "a", buffering=1) as out:
    out.write("ready\n")
    while True:
        data, addr = s.recvfrom(2048)
        out.write(f"{addr[0]} {data.decode()}\n")
"""
PROBE = r"""
import socket, sys
for src in sys.argv[3:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    for _ in range(3):
        s.sendto(sys.argv[2].encode(), (sys.argv[1], %d))
    s.close()
""" % INGEST_PORT


def sh(*args, ns=None, check=True):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def make_policy(tmp: Path, name: str, camera: str) -> Path:
    d = tmp / name
    shutil.copytree(ROOT / "policy" / "demo", d)
    text = (d / "policy.yaml").read_text()
    text = text.replace("\nsources:\n", "\nsources:\n" + CAMERAS % (camera, INGEST_PORT), 1)
    if "  police-vms:" not in text:
        text = text.replace("\ndestinations:\n", "\ndestinations:\n  police-vms:\n    kind: vms\n", 1)
    (d / "policy.yaml").write_text(text + VIDEO_RULE)
    return d


@pytest.fixture
def hosts():
    need_root("ip", "nft")
    tag = os.getpid() % 100000
    ns = {"cam": f"kc{tag}", "outer": f"ko{tag}", "inner": f"ki{tag}"}
    try:
        for n in ns.values():
            sh("ip", "netns", "add", n)
            sh("ip", "link", "set", "lo", "up", ns=n)
        sh("ip", "link", "add", "c-o", "netns", ns["cam"], "type", "veth", "peer", "name", "o-c", "netns", ns["outer"])
        sh("ip", "link", "add", "o-i", "netns", ns["outer"], "type", "veth", "peer", "name", "i-o",
           "netns", ns["inner"])
        for n, dev, addrs in ((ns["cam"], "c-o", [CAM_A, CAM_B]), (ns["outer"], "o-c", [OUTER_CAM])):
            for a in addrs:
                sh("ip", "addr", "add", f"{a}/24", "dev", dev, ns=n)
            sh("ip", "link", "set", dev, "up", ns=n)
        # the link, brought up by ferry itself (pyroute2): static neighbour on the outer host, NOARP inside
        inner_mac = json.loads(sh("ip", "-j", "link", "show", "i-o", ns=ns["inner"]))[0]["address"]
        up = ("from ferry.kernel.netlink import bring_up_link; import sys; "
              "bring_up_link(*sys.argv[1:4], **dict(a.split('=') for a in sys.argv[4:]))")
        env_py = [sys.executable, "-c", up]
        sh(*env_py, "inner", "i-o", f"{INNER_LINK}/30", ns=ns["inner"])
        sh(*env_py, "outer", "o-i", f"{OUTER_LINK}/30", f"peer_ip={INNER_LINK}", f"peer_mac={inner_mac}",
           ns=ns["outer"])
        yield ns
    finally:
        for n in ns.values():
            sh("ip", "netns", "del", n, check=False)


def heard(path: Path, tag: str) -> set[str]:
    if not path.exists():
        return set()
    return {line.split()[0] for line in path.read_text().splitlines() if line.endswith(" " + tag)}


def probe(hosts, out: Path, tag: str) -> set[str]:
    sh(sys.executable, "-c", PROBE, OUTER_CAM, tag, CAM_A, CAM_B, ns=hosts["cam"])
    # a probe's window (scenario): what passes the rules arrives within it, what they drop never does
    time.sleep(0.5)
    return heard(out, tag)


def ferry(*args):
    return subprocess.run([sys.executable, "-m", "ferry", *args], capture_output=True, text=True, timeout=60)


def test_policy_apply_changes_who_reaches_the_outer_agent(hosts, appliance_factory, tmp_path):
    pol_a = make_policy(tmp_path, "policy-a", CAM_A)
    pol_b = make_policy(tmp_path, "policy-b", CAM_B)
    a = appliance_factory(outer_host=OUTER_LINK, inner_host=INNER_LINK, bind_host=OUTER_LINK,
                          outer_netns=hosts["outer"], inner_netns=hosts["inner"], outer_iface="o-i",
                          inner_iface="i-o", management=True, policy_dir=pol_a)
    a.append_config("outer", '[kernel]\napply = true\nlink_if = "o-i"\ningest_if = "o-c"\n')
    a.append_config("inner", f'[kernel]\napply = true\nlink_if = "i-o"\npeer_addr = "{OUTER_LINK}"\n')
    out = tmp_path / "heard.txt"
    listener = subprocess.Popen(["ip", "netns", "exec", hosts["outer"], sys.executable, "-c", LISTENER,
                                 str(INGEST_PORT), str(out)])
    try:
        wait_until(lambda: out.exists() and "ready" in out.read_text(), 10, "the listener starting")
        assert probe(hosts, out, "before") == {CAM_A, CAM_B}      # no rules yet: both reach the port
        a.start()
        assert probe(hosts, out, "policy-a") == {CAM_A}
        a.drop("a.txt", b"crosses under policy a\n")
        a.wait_for(lambda: a.outcomes().get("a.txt") == "delivered", 20, "a.txt")
        bundle = tmp_path / "b.ferrypolicy"
        r = ferry("policy", "sign", str(pol_b), "--key", str(a.admin_key), "-o", str(bundle))
        assert r.returncode == 0, r.stdout + r.stderr
        r = ferry("policy", "apply", str(bundle), "--socket", str(a.inner_socket), "--socket", str(a.outer_socket))
        assert r.returncode == 0, r.stdout + r.stderr
        assert probe(hosts, out, "policy-b") == {CAM_B}
        a.drop("b.txt", b"crosses under policy b\n")
        a.wait_for(lambda: a.outcomes().get("b.txt") == "delivered", 20, "b.txt")
    finally:
        listener.kill()
        listener.wait()
    a.stop()
    for trail in (a.outer_audit, a.inner_audit):
        recs = read_trail(trail)
        applied = [r for r in recs if r["event"] == "kernel_rules_applied"]
        assert len(applied) == 2 and applied[0]["policy_hash"] != applied[1]["policy_hash"], applied
        assert any(r["event"] == "policy_applied" for r in recs)
    # the link stayed one-way: the inner host never sent on it
    counters = json.loads(sh(sys.executable, "-c", "import json; from ferry.kernel.nft import read_counters; "
                             "print(json.dumps(read_counters()))", ns=hosts["inner"]))
    assert counters["toward_outer"] == 0 and counters["link_in"] > 0, counters
