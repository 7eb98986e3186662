"""The two ferries' directions, counted by nftables in a link namespace between an outer and an
inner host (issue 13: "on the links, only sealed datagrams in each ferry's own direction"):

    outer ns  o-l 10.232.1.1 ──veth── l-o  link ns  l-i ──veth── i-l 10.232.2.1  inner ns

Each host lets out on its link interface only its own ferry (the outer host the forward one, the
inner host the reverse one); the link namespace forwards the forward ferry's port outer -> inner and
the reverse ferry's port inner -> outer, and counts everything else in each direction (dropped).
Cut, the reverse direction is dropped whole: files keep crossing, and the trails reconcile.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from appliance import read_trail
from ferry.audit import reconcile
from reverse import CAMERA, add_reverse, ask, reverse_policy
from rootcheck import need_root

pytestmark = [pytest.mark.root, pytest.mark.e2e]

OUTER_IP, LINK_O, LINK_I, INNER_IP = "10.232.1.1", "10.232.1.2", "10.232.2.2", "10.232.2.1"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"

RULES = """
table inet ferry {
  counter forward_ferry { }
  counter forward_other { }
  counter reverse_ferry { }
  counter reverse_other { }
  chain forward {
    type filter hook forward priority 0; policy drop;
    iifname "l-o" oifname "l-i" ip saddr %(outer)s ip daddr %(inner)s udp dport %(port)d \
      counter name forward_ferry accept
    iifname "l-o" counter name forward_other drop
    iifname "l-i" oifname "l-o" ip saddr %(inner)s ip daddr %(outer)s udp dport %(rport)d \
      counter name reverse_ferry %(verdict)s
    iifname "l-i" counter name reverse_other drop
  }
}
"""

# Each host lets out only its own ferry, as appliance/nftables/*-link.nft do for the forward one
# (and drops the kernel's ICMP answers, e.g. port unreachable while the other agent starts).
HOST_RULES = """
table inet ferry_hosts {
  chain output {
    type filter hook output priority filter; policy accept;
    oifname "%(dev)s" ip daddr %(peer)s udp dport %(port)d accept
    oifname "%(dev)s" drop
  }
}
"""


def sh(*args: str, ns: str | None = None, check: bool = True) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def mac(ns: str, dev: str) -> str:
    return json.loads(sh("ip", "-j", "link", "show", dev, ns=ns))[0]["address"]


def counter(ns: str, name: str) -> int:
    out = json.loads(sh("nft", "-j", "list", "counter", "inet", "ferry", name, ns=ns))
    return next(x["counter"]["packets"] for x in out["nftables"] if "counter" in x)


@pytest.fixture
def namespaces():
    need_root("ip", "nft")
    tag = f"{os.getpid() % 100000}"
    names = {"outer": f"ro{tag}", "link": f"rl{tag}", "inner": f"ri{tag}"}
    try:
        for ns in names.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        o, lk, i = names["outer"], names["link"], names["inner"]
        sh("ip", "link", "add", "o-l", "netns", o, "type", "veth", "peer", "name", "l-o", "netns", lk)
        sh("ip", "link", "add", "i-l", "netns", i, "type", "veth", "peer", "name", "l-i", "netns", lk)
        for ns, dev, addr in ((o, "o-l", OUTER_IP), (lk, "l-o", LINK_O), (lk, "l-i", LINK_I), (i, "i-l", INNER_IP)):
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", ns=ns)
            sh("ip", "addr", "add", f"{addr}/24", "dev", dev, ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=lk)
        sh("ip", "route", "add", "10.232.2.0/24", "via", LINK_O, ns=o)
        sh("ip", "route", "add", "10.232.1.0/24", "via", LINK_I, ns=i)
        # static neighbours: neither ferry needs ARP answered from the far side
        sh("ip", "neigh", "replace", LINK_O, "lladdr", mac(lk, "l-o"), "dev", "o-l", "nud", "permanent", ns=o)
        sh("ip", "neigh", "replace", LINK_I, "lladdr", mac(lk, "l-i"), "dev", "i-l", "nud", "permanent", ns=i)
        sh("ip", "neigh", "replace", INNER_IP, "lladdr", mac(i, "i-l"), "dev", "l-i", "nud", "permanent", ns=lk)
        sh("ip", "neigh", "replace", OUTER_IP, "lladdr", mac(o, "o-l"), "dev", "l-o", "nud", "permanent", ns=lk)
        yield names
    finally:
        for ns in names.values():
            sh("ip", "netns", "del", ns, check=False)


@pytest.mark.parametrize("cut", [False, True])
def test_each_ferry_carries_only_its_own_direction(namespaces, appliance_factory, tmp_path, cut):
    o, lk, i = namespaces["outer"], namespaces["link"], namespaces["inner"]
    policy = reverse_policy(tmp_path / "policy-src")
    text = (policy / "policy.yaml").read_text().replace('addresses: ["127.0.0.0/8"]', f'addresses: ["{INNER_IP}/32"]')
    (policy / "policy.yaml").write_text(text)
    a = appliance_factory(outer_host=OUTER_IP, inner_host=INNER_IP, bind_host=OUTER_IP, outer_netns=o,
                          inner_netns=i, management=True, policy_dir=policy)
    rport = add_reverse(a, outer_host=OUTER_IP, inner_host=INNER_IP)
    f = tmp_path / "link.nft"
    f.write_text(RULES % {"outer": OUTER_IP, "inner": INNER_IP, "port": a.port, "rport": rport,
                          "verdict": "drop" if cut else "accept"})
    sh("nft", "-f", str(f), ns=lk)
    for ns, dev, peer, port in ((o, "o-l", INNER_IP, a.port), (i, "i-l", OUTER_IP, rport)):
        f = tmp_path / f"{ns}.nft"
        f.write_text(HOST_RULES % {"dev": dev, "peer": peer, "port": port})
        sh("nft", "-f", str(f), ns=ns)
    a.start()
    for n in range(3):
        r = ask(a, "start_stream", CAMERA, f"op{n}", source=INNER_IP)
        assert r.returncode == 0, r.stdout + r.stderr
    names = [f"doc{n}.pdf" for n in range(4)]
    for name in names:
        a.drop(name, PDF)
    a.wait_for(lambda: all(a.outcomes().get(n) == "delivered" for n in names), 60, "files delivered")
    outer_requests = lambda: [r for r in read_trail(a.outer_audit) if r["event"] == "request_received"]  # noqa: E731
    if not cut:
        a.wait_for(lambda: len(outer_requests()) == 3, 60, "the three requests on the outer agent")
    else:
        a.wait_for(lambda: counter(lk, "reverse_ferry") > 0, 30, "the reverse ferry tried")
    # counted while both agents run (a stopped agent's host answers the other's datagrams with ICMP)
    seen = {n: counter(lk, n) for n in ("forward_ferry", "forward_other", "reverse_ferry", "reverse_other")}
    a.stop()
    assert seen["forward_other"] == 0, "something but the forward ferry went outer -> inner"
    assert seen["reverse_other"] == 0, "something but the reverse ferry went inner -> outer"
    assert seen["forward_ferry"] > 0 and seen["reverse_ferry"] > 0    # the rules were live
    if cut:
        assert outer_requests() == []
    report = reconcile(read_trail(a.outer_audit), read_trail(a.inner_audit))
    assert not report.unaccounted and len(report.delivered) == len(names)
    # cut: the three requests are named unaccounted (the outer trail knows nothing of them)
    assert len(report.reverse_unaccounted) == (3 if cut else 0) and report.reverse_sent == 3
    assert report.ok == (not cut)
