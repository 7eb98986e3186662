"""As root, in two network namespaces: ``ferry kernel rules`` with the reverse ferry on the link
opens the outer host's reverse port to the inner host's address alone, lets the inner host send
there and nowhere else, and the forward link stays as it was (real datagrams, the rules applied).

    outer ns  o-l 10.232.1.1 (+ .4) ──veth── i-l 10.232.1.2 (+ .3)  inner ns

The link is brought up with ``bring_up_link``: a static neighbour each way (the inner host's for
the reverse ferry), NOARP on the inner host. Plain UDP listeners stand in for the agents. Each
check is made first without the rules, so what the rules stop is known to pass without them.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from waiting import wait_until

from .kernel_support import py, py_json, sh
from .test_nft_netns import COUNTERS, _heard, _listen

pytestmark = pytest.mark.root

OUTER, OUTER_OTHER, INNER, INNER_OTHER = "10.232.1.1", "10.232.1.4", "10.232.1.2", "10.232.1.3"
LINK_PORT, RPORT = 47000, 47100
BACK_PORT = 47005            # a port of the inner host's, off the forward link's
POLICY = "policy: rev-netns\nversion: 1\ndefault: deny\nsources: {}\ndestinations: {}\nrules: []\n"

# One datagram from (src, sport) to (dst, port); prints the errno the kernel answered (0: sent).
SEND = r"""
import json, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(({src!r}, {sport}))
try:
    s.sendto(b"{tag} x", ({dst!r}, {port}))
    print(json.dumps(0))
except OSError as e:
    print(json.dumps(e.errno))
"""


def send(ns: str, src: str, dst: str, port: int, tag: str, sport: int = 0) -> int:
    r = py_json(ns, SEND.format(src=src, sport=sport, dst=dst, port=port, tag=tag))
    assert isinstance(r, int)
    return r


@pytest.fixture
def link(netns):
    outer, inner = netns("rvo"), netns("rvi")
    sh("ip", "link", "add", "o-l", "netns", outer, "type", "veth", "peer", "name", "i-l", "netns", inner)
    mac = "import json; from ferry.kernel.netlink import link_mac; print(json.dumps(link_mac({dev!r})))"
    outer_mac, inner_mac = py_json(outer, mac.format(dev="o-l")), py_json(inner, mac.format(dev="i-l"))
    # the inner host: NOARP, with a static neighbour for the outer host (the reverse ferry needs one)
    state = py_json(inner, "import json; from ferry.kernel.netlink import bring_up_link as up; "
                           f"s = up('inner', 'i-l', '{INNER}/24', peer_ip='{OUTER}', peer_mac='{outer_mac}'); "
                           "print(json.dumps([s.noarp, s.neighbour]))")
    assert state == [True, [OUTER, outer_mac]]
    assert "PERMANENT" in sh("ip", "neigh", "show", "dev", "i-l", ns=inner).stdout
    py(outer, "from ferry.kernel.netlink import bring_up_link as up; "
              f"up('outer', 'o-l', '{OUTER}/24', peer_ip='{INNER}', peer_mac='{inner_mac}')")
    sh("ip", "addr", "add", f"{INNER_OTHER}/24", "dev", "i-l", ns=inner)
    sh("ip", "addr", "add", f"{OUTER_OTHER}/24", "dev", "o-l", ns=outer)
    return outer, inner


def _apply(outer: str, inner: str, policy: Path) -> None:
    for ns, args in ((outer, ["--role", "outer", "--link-if", "o-l", "--peer", INNER]),
                     (inner, ["--role", "inner", "--link-if", "i-l", "--peer", OUTER, "--reverse-peer", OUTER])):
        r = sh(sys.executable, "-m", "ferry.kernel.cli", "rules", "--policy", str(policy), *args,
               "--link-port", str(LINK_PORT), "--reverse-port", str(RPORT), "--apply", ns=ns, check=False)
        assert r.returncode == 0, r.stderr
        assert "reverse" in r.stdout


def test_the_reverse_port_opens_to_the_inner_host_alone_and_the_link_stays_one_way(link, tmp_path):
    outer, inner = link
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "policy.yaml").write_text(POLICY)
    at_outer, at_inner = tmp_path / "outer.log", tmp_path / "inner.log"
    procs = []
    try:
        procs.append(_listen(outer, at_outer, f"udp:{OUTER}:{RPORT}", f"udp:{OUTER}:{RPORT + 1}"))
        procs.append(_listen(inner, at_inner, f"udp:{INNER}:{LINK_PORT}", f"udp:{INNER}:{BACK_PORT}"))

        def probe(tag: str) -> dict[str, int]:
            """Every datagram of the test, tagged; the kernel's answer to each send."""
            return {
                "reverse": send(inner, INNER, OUTER, RPORT, f"{tag}-reverse"),
                "other_address": send(inner, INNER_OTHER, OUTER, RPORT, f"{tag}-other_address"),
                "other_port": send(inner, INNER, OUTER, RPORT + 1, f"{tag}-other_port"),
                "forward": send(outer, OUTER, INNER, LINK_PORT, f"{tag}-forward"),
                "from_reverse_port": send(outer, OUTER_OTHER, INNER, LINK_PORT, f"{tag}-from_reverse_port",
                                          sport=RPORT),
                "back": send(outer, OUTER, INNER, BACK_PORT, f"{tag}-back"),
            }

        def heard(tag: str) -> set[str]:
            got = set()
            for log in (at_outer, at_inner):
                for line in log.read_text().splitlines():
                    parts = line.split()
                    if len(parts) >= 3 and parts[2].startswith(f"{tag}-"):
                        got.add(parts[2][len(tag) + 1:])
            return got

        everything = {"reverse", "other_address", "other_port", "forward", "from_reverse_port", "back"}
        # without rules every one of them arrives: the rules below are what stops them
        assert set(probe("none").values()) == {0}
        wait_until(lambda: heard("none") == everything, 10, "every datagram without rules")

        _apply(outer, inner, policy)
        sent = probe("rules")
        # the inner host sends the reverse ferry and nothing else toward the outer; the outer host
        # sends the forward link only, never from its reverse port, nothing else to the inner
        # (the inner host's rule names the outer's address and port, not its own source address: the
        # datagram from its other address leaves, and the outer host's rules drop it)
        assert sent["reverse"] == 0 and sent["forward"] == 0 and sent["other_address"] == 0
        assert sent["other_port"] != 0
        assert sent["from_reverse_port"] != 0 and sent["back"] != 0
        wait_until(lambda: heard("rules") == {"reverse", "forward"}, 10, "the reverse ferry and the forward link")
        assert _heard(at_outer, "rules-reverse") == {("udp", INNER)}
        i = py_json(inner, COUNTERS)
        assert isinstance(i, dict)
        assert i["reverse_out"] >= 2 and i["toward_outer"] >= 1 and i["link_in"] >= 1      # counted too

        # a compromised inner host (its rules gone) still reaches the outer agent's reverse port only
        # from its address, and no other port of the outer host on the link
        sh("nft", "delete", "table", "inet", "ferry", ns=inner)
        hostile = {"reverse": send(inner, INNER, OUTER, RPORT, "hostile-reverse"),
                   "other_address": send(inner, INNER_OTHER, OUTER, RPORT, "hostile-other_address"),
                   "other_port": send(inner, INNER, OUTER, RPORT + 1, "hostile-other_port")}
        assert set(hostile.values()) == {0}
        wait_until(lambda: "reverse" in heard("hostile"), 10, "the reverse datagram")
        time.sleep(0.5)        # what the outer's rules drop never arrives; the allowed one above did
        assert heard("hostile") == {"reverse"}
        o = py_json(outer, COUNTERS)
        assert isinstance(o, dict)
        assert o["reverse_in"] >= 2 and o["reverse_refused"] >= 1 and o["from_link"] >= 1
        assert o["reverse_out"] >= 1 and o["link_out"] >= 1
        # and an outer host without its rules gets nothing back into the inner one but the forward link
        _apply(outer, inner, policy)
        sh("nft", "delete", "table", "inet", "ferry", ns=outer)
        assert send(outer, OUTER, INNER, BACK_PORT, "open-back") == 0
        assert send(outer, OUTER, INNER, LINK_PORT, "open-forward") == 0
        wait_until(lambda: "forward" in heard("open"), 10, "the forward link")
        time.sleep(0.5)
        assert heard("open") == {"forward"}

        i = py_json(inner, COUNTERS)
        assert isinstance(i, dict)
        assert i["from_reverse_peer"] >= 1 and i["link_in"] >= 1
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=5)
