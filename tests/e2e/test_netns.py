"""End to end as root in three network namespaces: outer host, link, inner host.

    outer ns  o-l 10.231.1.1 ──veth── l-o 10.231.1.2  link ns  l-i 10.231.2.2 ──veth── i-l 10.231.2.1  inner ns

The link namespace forwards outer -> inner only; the shipped nftables rules
(appliance/nftables/) on both hosts make the link one-way (the inner host drops everything it
would send on it, the outer host accepts nothing from it), ARP cannot work backwards so neighbours are static, and
``tc netem`` (or, on a kernel without it, an nftables random drop) makes the
link lossy.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import read_trail
from netns import LinkAddresses, add_namespaces, delete_namespaces, sh, wire_one_way_link
from rootcheck import need_root

from ferry.audit import reconcile

pytestmark = [pytest.mark.root, pytest.mark.e2e]

OUTER_IP, LINK_O, LINK_I, INNER_IP = "10.231.1.1", "10.231.1.2", "10.231.2.2", "10.231.2.1"


NFT_DIR = Path(__file__).resolve().parents[2] / "appliance" / "nftables"
LINK_RULES = """
table inet ferry {
  counter inner_to_outer { }
  chain forward {
    type filter hook forward priority 0; policy drop;
    iifname "l-o" oifname "l-i" accept
    iifname "l-i" counter name inner_to_outer drop
  }
}
"""


LOSS_RULES = """
table inet ferry {
  counter link_loss { }
  chain loss {
    type filter hook forward priority -10; policy accept;
    oifname "%(dev)s" numgen random mod 100 < %(percent)d counter name link_loss drop
  }
}
"""


def counter(ns: str, table: str, name: str) -> int:
    out = json.loads(sh("nft", "-j", "list", "counter", "inet", table, name, ns=ns))
    return next(x["counter"]["packets"] for x in out["nftables"] if "counter" in x)


@pytest.fixture
def namespaces():
    need_root("ip", "nft", "tc")
    tag = f"{os.getpid() % 100000}"
    names = {"outer": f"fo{tag}", "link": f"fl{tag}", "inner": f"fi{tag}"}
    try:
        add_namespaces(names)
        wire_one_way_link(names, LinkAddresses(OUTER_IP, LINK_O, LINK_I, INNER_IP, inner_net="10.231.2.0/24"))
        # A NIC puts each GSO segment on the wire as its own frame, and a lossy link
        # loses frames: make the outer host's veth segment before transmitting too.
        sh("ip", "link", "set", "dev", "o-l", "gso_max_segs", "1", ns=names["outer"])
        yield names
    finally:
        delete_namespaces(names)


def _apply(ns: str, rules: str, tmp_path, name: str) -> None:
    f = tmp_path / f"{name}.nft"
    f.write_text(rules)
    sh("nft", "-f", str(f), ns=ns)


def _add_loss(ns: str, dev: str, percent: int, tmp_path) -> bool:
    """Random loss on the link toward the inner host: tc netem where the kernel has
    it, else an nftables rule dropping a random ``percent`` of forwarded packets
    (this machine's kernel is built without sch_netem). True if netem was used."""
    r = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "loss",
                        f"{percent}%"], capture_output=True, text=True)
    if r.returncode == 0:
        return True
    assert "unknown" in r.stderr.lower(), r.stderr
    _apply(ns, LOSS_RULES % {"dev": dev, "percent": percent}, tmp_path, "loss")
    return False


def _apply_shipped(ns: str, name: str, **defines) -> None:
    args = [x for k, v in defines.items() for x in ("-D", f"{k}={v}")]
    sh("nft", *args, "-f", str(NFT_DIR / name), ns=ns)


@pytest.mark.parametrize("loss", [0, 5])
def test_files_cross_a_one_way_link(namespaces, appliance_factory, tmp_path, loss):
    o, lk, i = namespaces["outer"], namespaces["link"], namespaces["inner"]
    a = appliance_factory(outer_host=OUTER_IP, inner_host=INNER_IP, bind_host=OUTER_IP,
                          outer_netns=o, inner_netns=i, fec_m=8 if loss else 4, rate_mbps=100.0,
                          outer_iface="o-l", inner_iface="i-l")
    _apply_shipped(i, "inner-link.nft", LINK_IF="i-l", OUTER_ADDR=OUTER_IP, LINK_PORT=a.port)
    _apply_shipped(o, "outer-link.nft", LINK_IF="o-l", INNER_ADDR=INNER_IP, LINK_PORT=a.port)
    _apply(lk, LINK_RULES, tmp_path, "link")
    netem = False
    if loss:
        netem = _add_loss(lk, "l-i", loss, tmp_path)
    a.start()
    files = {f"file-{n:02d}.txt": (f"payload {n}\n".encode() * (1000 + 3000 * n)) for n in range(12)}
    for name, content in files.items():
        a.drop(name, content)
    a.wait_for(lambda: set(files) <= set(a.outcomes()), 60, "every file")
    assert a.outcomes() == {n: "delivered" for n in files}
    for name, content in files.items():
        assert (a.inner_spool / name).read_bytes() == content
    a.stop()
    assert counter(i, "ferry_link", "toward_outer") == 0, "the inner host tried to send on the link"
    assert counter(lk, "ferry", "inner_to_outer") == 0, "a packet crossed the link from inner to outer"
    assert counter(o, "ferry_link", "from_link") == 0, "the outer host received something from the link"
    # and the rules were live: the link carried the transfer
    assert counter(i, "ferry_link", "link_in") > 0 and counter(o, "ferry_link", "link_out") > 0
    inner = read_trail(a.inner_audit)
    assert not [r for r in inner if r["event"] in ("object_lost", "block_lost")]
    if loss:
        # the loss really happened on the link
        if netem:
            stats = sh("tc", "-s", "qdisc", "show", "dev", "l-i", ns=lk)
            dropped = int(stats.split("dropped ")[1].split(",")[0])
        else:
            dropped = counter(lk, "ferry", "link_loss")
        assert dropped > 0
        recovered = [r for r in inner if r["event"] == "object_delivered"]
        assert len(recovered) == len(files)


def test_loss_beyond_fec_is_named_not_silent(namespaces, appliance_factory, tmp_path):
    """25% loss with k=16, m=4 loses most multi-block files: each one that does not
    arrive is reported lost by the inner agent and named by reconciliation."""
    o, lk, i = namespaces["outer"], namespaces["link"], namespaces["inner"]
    a = appliance_factory(outer_host=OUTER_IP, inner_host=INNER_IP, bind_host=OUTER_IP,
                          outer_netns=o, inner_netns=i, fec_m=4, rate_mbps=50.0)
    _apply(lk, LINK_RULES, tmp_path, "link")
    _add_loss(lk, "l-i", 25, tmp_path)
    a.start()
    files = {f"f{n:02d}.txt": (f"{n} ".encode() * (50 + 20000 * (n % 4))) for n in range(12)}
    for name, content in files.items():
        a.drop(name, content)
    a.wait_for(lambda: sum(r["event"] == "object_sent" for r in read_trail(a.outer_audit)) == len(files), 30,
               "every file sent")
    # heartbeats (themselves lossy) prove which blocks were sent: wait until the inner trail
    # accounts for every object the outer one sent (delivered, refused or lost)
    a.wait_for(lambda: not reconcile(read_trail(a.outer_audit), read_trail(a.inner_audit)).unaccounted, 60,
               "every sent object accounted for by the inner agent", interval=0.5)
    a.stop()
    r = subprocess.run([sys.executable, "-m", "ferry", "audit", "reconcile", str(a.outer_audit),
                        str(a.inner_audit), "--json"], capture_output=True, text=True)
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["unaccounted"] == [], r.stdout + r.stderr
    sent = {r["object_id"]: r["detail"]["name"] for r in read_trail(a.outer_audit) if r["event"] == "object_sent"}
    delivered = {sent[x] for x in report["delivered"]}
    lost = {sent[x] for x in report["lost"]}
    assert lost, "25% loss with m=4 should lose some multi-block file"
    assert delivered | lost == set(files) and not delivered & lost
    for name in delivered:
        assert (a.inner_spool / name).read_bytes() == files[name]
    for name in lost:
        assert not (a.inner_spool / name).exists()
