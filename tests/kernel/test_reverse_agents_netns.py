"""As root, real agents in two network namespaces with ``[kernel] apply = true`` and the reverse
ferry on the link's own interface: the rules each agent applies let the reverse requests cross
inner -> outer, the files cross outer -> inner, and nothing else goes either way on the link
(before, the outer host's rules dropped every reverse datagram: "keep the reverse ferry on
another interface than link_if").

    outer ns  o-i 10.234.1.1 ──veth── i-o 10.234.1.2  inner ns
"""
from __future__ import annotations

import sys

import pytest

from appliance import Appliance, read_trail, uncoded
from reverse import CAMERA, add_reverse, ask, reverse_policy

from .kernel_support import py_json, sh

pytestmark = [pytest.mark.root, pytest.mark.e2e]

OUTER_LINK, INNER_LINK = "10.234.1.1", "10.234.1.2"
COUNTERS = "import json; from ferry.kernel.nft import read_counters; print(json.dumps(read_counters()))"
UP = ("import json, sys; from ferry.kernel.netlink import bring_up_link; "
      "s = bring_up_link(*sys.argv[1:4], **dict(a.split('=') for a in sys.argv[4:])); print(json.dumps(s.mac))")
MAC = "import json; from ferry.kernel.netlink import link_mac; print(json.dumps(link_mac({dev!r})))"


@pytest.fixture
def hosts(netns):
    outer, inner = netns("rao"), netns("rai")
    sh("ip", "link", "add", "o-i", "netns", outer, "type", "veth", "peer", "name", "i-o", "netns", inner)
    outer_mac, inner_mac = py_json(outer, MAC.format(dev="o-i")), py_json(inner, MAC.format(dev="i-o"))
    # a static neighbour each way: the inner host's for the reverse ferry (the link stays NOARP there)
    sh(sys.executable, "-c", UP, "inner", "i-o", f"{INNER_LINK}/30", f"peer_ip={OUTER_LINK}",
       f"peer_mac={outer_mac}", ns=inner)
    sh(sys.executable, "-c", UP, "outer", "o-i", f"{OUTER_LINK}/30", f"peer_ip={INNER_LINK}",
       f"peer_mac={inner_mac}", ns=outer)
    return outer, inner


def test_reverse_requests_cross_on_the_link_with_the_agents_own_rules(hosts, tmp_path):
    outer, inner = hosts
    policy = reverse_policy(tmp_path / "policy-src")
    text = (policy / "policy.yaml").read_text().replace('addresses: ["127.0.0.0/8"]', f'addresses: ["{INNER_LINK}/32"]')
    (policy / "policy.yaml").write_text(text)
    a = Appliance(tmp_path / "a", outer_host=OUTER_LINK, inner_host=INNER_LINK, bind_host=OUTER_LINK,
                  outer_netns=outer, inner_netns=inner, outer_iface="o-i", inner_iface="i-o", management=True,
                  policy_dir=policy)
    add_reverse(a, outer_host=OUTER_LINK, inner_host=INNER_LINK)
    a.append_config("outer", '[kernel]\napply = true\nlink_if = "o-i"\n')
    a.append_config("inner", f'[kernel]\napply = true\nlink_if = "i-o"\npeer_addr = "{OUTER_LINK}"\n')
    try:
        a.start()
        for n in range(2):
            r = ask(a, "start_stream", CAMERA, f"op{n}", source=INNER_LINK)
            assert r.returncode == 0, r.stdout + r.stderr
        a.drop("doc.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")
        a.wait_for(lambda: len([r for r in read_trail(a.outer_audit) if r["event"] == "request_received"]) == 2,
                   60, "the two requests on the outer agent")
        a.wait_for(lambda: a.outcomes().get("doc.pdf") == "delivered", 60, "the file")
        a.wait_for(lambda: any(r["event"] == "reverse_link_up" for r in read_trail(a.outer_audit)), 30,
                   "the reverse link up (heartbeats through the rules)")
        # counted while both agents run (a stopped agent's host answers the other's datagrams)
        o, i = py_json(outer, COUNTERS), py_json(inner, COUNTERS)
        ruleset = sh("nft", "list", "table", "inet", "ferry", ns=outer).stdout
    finally:
        a.stop()
    assert isinstance(o, dict) and isinstance(i, dict)
    assert f'ip saddr {INNER_LINK} udp dport {a.reverse_port} counter name "reverse_in" accept' in ruleset
    # the reverse ferry came in on the link, through its own opening; nothing else came in
    assert o["reverse_in"] > 0 and o["from_link"] == 0 and o["reverse_refused"] == 0, o
    assert o["link_out"] > 0 and o["reverse_out"] == 0, o
    # the inner host sent the reverse ferry only: nothing else toward the outer one
    assert i["reverse_out"] > 0 and i["toward_outer"] == 0 and i["link_in"] > 0, i
    for trail in (a.outer_audit, a.inner_audit):
        applied = [r for r in read_trail(trail) if r["event"] == "kernel_rules_applied"]
        assert len(applied) == 1, applied
    assert not uncoded(a.trails())
