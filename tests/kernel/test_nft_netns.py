"""As root, in network namespaces: applying a policy changes which outer
addresses can reach the outer agent (nftables), and the link stays one-way.

    cam ns  c-o 10.232.0.10 + .11 ──veth── o-c 10.232.0.1  outer ns  o-l 10.232.1.1 ──veth── i-l 10.232.1.2  inner ns

A plain UDP and TCP listener on port 5060 in the outer namespace stands in for
the outer agent's ingest; another on the inner host's link port stands in for
the inner agent. The link is brought up with ``bring_up_link`` (static
neighbour on the outer host, NOARP on the inner host) and the rules are
applied with ``ferry kernel rules --apply`` inside each namespace.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from waiting import wait_until

from .kernel_support import py, py_json, sh

pytestmark = pytest.mark.root

CAM_A, CAM_B, OUTER_IN = "10.232.0.10", "10.232.0.11", "10.232.0.1"
OUTER_LINK, INNER_LINK = "10.232.1.1", "10.232.1.2"
AGENT_PORT, LINK_PORT = 5060, 47000

POLICY = """\
policy: {name}
version: 1
default: deny
sources:
  platform:
    kind: addresses
    addresses: ["{allowed}/32"]
    ports: [{port}]
    protocol: any
destinations:
  police-sip: {{kind: sip}}
rules:
  - id: signaling-basic
    lane: signaling
    from: platform
    to: police-sip
    signaling:
      roots: [Notify]
      cmd_types: [Keepalive]
      max_body_bytes: 4096
"""

# Records "proto source-address payload" for every datagram / connection, one line each.
LISTENER = r"""
import selectors, socket, sys
out = open(sys.argv[1], "a", buffering=1)
sel = selectors.DefaultSelector()
for spec in sys.argv[2:]:
    proto, host, port = spec.split(":")
    if proto == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    if proto == "tcp":
        s.listen(16)
    sel.register(s, selectors.EVENT_READ, proto)
out.write("ready\n")
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if key.data == "udp":
            data, addr = s.recvfrom(2048)
        else:
            c, addr = s.accept()
            c.settimeout(2)
            try:
                data = c.recv(2048)
            except OSError:
                data = b""
            c.close()
        out.write(f"{key.data} {addr[0]} {data.decode(errors='replace')}\n")
"""

# From the camera namespace: one datagram and one connection from each address.
SEND = r"""
import json, socket
tag = {tag!r}
result = {{}}
for src in ({a!r}, {b!r}):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((src, 0))
    u.sendto(f"{{tag}} {{src}}".encode(), ({dst!r}, {port}))
    u.close()
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind((src, 0))
    t.settimeout(1.0)
    try:
        t.connect(({dst!r}, {port}))
        t.sendall(f"{{tag}} {{src}}".encode())
        result[src] = True
    except OSError:
        result[src] = False
    t.close()
print(json.dumps(result))
"""

# Send one datagram; report the errno the kernel answered with (0 = sent).
SEND_ONE = r"""
import json, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(({src!r}, 0))
try:
    s.sendto(b"{payload}", ({dst!r}, {port}))
    print(json.dumps(0))
except OSError as e:
    print(json.dumps(e.errno))
"""

COUNTERS = "import json; from ferry.kernel.nft import read_counters; print(json.dumps(read_counters()))"


def _kernel(ns: str, *args: str) -> subprocess.CompletedProcess:
    r = sh(sys.executable, "-m", "ferry.kernel.cli", *args, ns=ns, check=False)
    assert r.returncode == 0, r.stderr
    return r


def _listen(ns: str, out: Path, *specs: str) -> subprocess.Popen:
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER, str(out), *specs],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    def running() -> None:
        assert p.poll() is None, p.stderr.read()

    wait_until(lambda: out.exists() and "ready" in out.read_text(), 10, "the listener starting", check=running)
    return p


def _heard(out: Path, tag: str) -> set[tuple[str, str]]:
    """(proto, source address) of every message carrying ``tag``."""
    got = set()
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == tag:
            got.add((parts[0], parts[1]))
    return got


@pytest.fixture
def layout(netns):
    cam, outer, inner = netns("cam"), netns("out"), netns("inn")
    sh("ip", "link", "add", "c-o", "netns", cam, "type", "veth", "peer", "name", "o-c", "netns", outer)
    sh("ip", "link", "add", "o-l", "netns", outer, "type", "veth", "peer", "name", "i-l", "netns", inner)
    for addr in (CAM_A, CAM_B):
        sh("ip", "addr", "add", f"{addr}/24", "dev", "c-o", ns=cam)
    sh("ip", "link", "set", "c-o", "up", ns=cam)
    sh("ip", "addr", "add", f"{OUTER_IN}/24", "dev", "o-c", ns=outer)
    sh("ip", "link", "set", "o-c", "up", ns=outer)
    # the link, with ferry.kernel.netlink
    state = py_json(inner, "import json; from ferry.kernel.netlink import bring_up_link as up; "
                           f"s = up('inner', 'i-l', '{INNER_LINK}/24'); print(json.dumps([s.mac, s.noarp]))")
    inner_mac, noarp = state
    assert noarp
    py(outer, "from ferry.kernel.netlink import bring_up_link as up; "
              f"up('outer', 'o-l', '{OUTER_LINK}/24', peer_ip='{INNER_LINK}', peer_mac='{inner_mac}')")
    return {"cam": cam, "outer": outer, "inner": inner}


def _policy(tmp_path: Path, name: str, allowed: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "policy.yaml").write_text(POLICY.format(name=name, allowed=allowed, port=AGENT_PORT))
    return d


def _apply(layout, policy: Path) -> None:
    out = _kernel(layout["outer"], "rules", "--policy", str(policy), "--role", "outer", "--link-if", "o-l",
                  "--link-port", str(LINK_PORT), "--peer", INNER_LINK, "--ingest-if", "o-c", "--apply")
    assert f"policy {policy.name} sm3" in out.stdout
    _kernel(layout["inner"], "rules", "--policy", str(policy), "--role", "inner", "--link-if", "i-l",
            "--link-port", str(LINK_PORT), "--peer", OUTER_LINK, "--apply")


def _probe(layout, ingest: Path, tag: str) -> tuple[dict, set]:
    sent = py_json(layout["cam"], SEND.format(tag=tag, a=CAM_A, b=CAM_B, dst=OUTER_IN, port=AGENT_PORT))
    # a probe's window (scenario): what passes the rules arrives within it, what they drop never does
    time.sleep(0.3)
    return sent, _heard(ingest, tag)


def test_policy_decides_who_reaches_the_outer_agent_and_the_link_stays_one_way(layout, tmp_path):
    outer, inner = layout["outer"], layout["inner"]
    ingest, link = tmp_path / "ingest.log", tmp_path / "link.log"
    procs = []
    try:
        procs.append(_listen(outer, ingest, f"udp:0.0.0.0:{AGENT_PORT}", f"tcp:0.0.0.0:{AGENT_PORT}"))
        procs.append(_listen(inner, link, f"udp:{INNER_LINK}:{LINK_PORT}"))

        # without rules both cameras get through: the rules below are what stops .11
        sent, heard = _probe(layout, ingest, "none")
        assert sent == {CAM_A: True, CAM_B: True}
        assert heard == {("udp", CAM_A), ("tcp", CAM_A), ("udp", CAM_B), ("tcp", CAM_B)}

        # policy A: only .10
        _apply(layout, _policy(tmp_path, "netns-a", CAM_A))
        sent, heard = _probe(layout, ingest, "a")
        assert sent == {CAM_A: True, CAM_B: False}
        assert heard == {("udp", CAM_A), ("tcp", CAM_A)}
        c = py_json(outer, COUNTERS)
        assert c["ingest_refused"] >= 2 and c["ingest_accepted"] > 0

        # policy B: only .11, applied over A in one transaction
        _apply(layout, _policy(tmp_path, "netns-b", CAM_B))
        sent, heard = _probe(layout, ingest, "b")
        assert sent == {CAM_A: False, CAM_B: True}
        assert heard == {("udp", CAM_B), ("tcp", CAM_B)}
        c = py_json(outer, COUNTERS)
        assert c["ingest_refused"] >= 2 and c["ingest_accepted"] > 0
        listed = sh("nft", "list", "table", "inet", "ferry", ns=outer).stdout
        assert CAM_B in listed and CAM_A not in listed

        # the link carries outer -> inner on the link port only
        assert py_json(outer, SEND_ONE.format(src=OUTER_LINK, dst=INNER_LINK, port=LINK_PORT, payload="link")) == 0
        assert py_json(outer, SEND_ONE.format(src=OUTER_LINK, dst=INNER_LINK, port=LINK_PORT + 1,
                                              payload="other")) != 0
        # the inner host cannot send on it: not to the agent's port, not to anything
        for port in (AGENT_PORT, LINK_PORT):
            errno = py_json(inner, SEND_ONE.format(src=INNER_LINK, dst=OUTER_LINK, port=port, payload="back"))
            assert errno != 0, "the inner host sent a datagram on the link"
        wait_until(lambda: _heard(link, "link") == {("udp", OUTER_LINK)}, 10,
                   "the outer host's datagram on the link")
        assert not _heard(ingest, "back")
        inner_c, outer_c = py_json(inner, COUNTERS), py_json(outer, COUNTERS)
        assert inner_c["link_in"] >= 1 and outer_c["link_out"] >= 1
        assert inner_c["toward_outer"] >= 2, "the inner host's sends were not counted"
        assert outer_c["from_link"] == 0, "the outer host received something from the link"
        # the outer host reaches the inner one without ARP: the neighbour entry is static
        neigh = sh("ip", "neigh", "show", "dev", "o-l", ns=outer).stdout
        assert f"{INNER_LINK} lladdr" in neigh and "PERMANENT" in neigh
        assert "NOARP" in sh("ip", "link", "show", "i-l", ns=inner).stdout
        assert "inet6" not in sh("ip", "addr", "show", "i-l", ns=inner).stdout
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=5)
