"""bring_up_link in a namespace: address, IPv6 off, up; outer: permanent
neighbour; inner: NOARP; idempotent; bad parameters refused before netlink."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from .kernel_support import REPO, py, py_json, sh
from ferry.kernel import KernelError
from ferry.kernel.netlink import bring_up_link

UP = ("import json; from ferry.kernel.netlink import bring_up_link as up; "
      "s = up({args}); print(json.dumps([s.ifname, s.mac, s.address, s.noarp, s.neighbour]))")
PEER_MAC = "02:00:00:00:01:02"


@pytest.fixture
def pair(netns):
    a, b = netns("nla"), netns("nlb")
    sh("ip", "link", "add", "x-a", "netns", a, "type", "veth", "peer", "name", "x-b", "netns", b)
    return a, b


def _addrs(ns: str, dev: str) -> list[dict]:
    return json.loads(sh("ip", "-j", "addr", "show", "dev", dev, ns=ns).stdout)[0]["addr_info"]


@pytest.mark.root
def test_inner_link_is_up_noarp_ipv6_off_and_idempotent(pair):
    _, b = pair
    for _ in range(2):
        ifname, mac, address, noarp, neighbour = py_json(b, UP.format(args="'inner', 'x-b', '10.232.7.2/30'"))
        assert (ifname, address, noarp, neighbour) == ("x-b", "10.232.7.2/30", True, None)
    link = json.loads(sh("ip", "-j", "link", "show", "x-b", ns=b).stdout)[0]
    assert "NOARP" in link["flags"] and "UP" in link["flags"] and link["address"] == mac
    assert [(x["family"], x["local"], x["prefixlen"]) for x in _addrs(b, "x-b")] == [("inet", "10.232.7.2", 30)]
    assert sh("cat", "/proc/sys/net/ipv6/conf/x-b/disable_ipv6", ns=b).stdout.strip() == "1"


@pytest.mark.root
def test_outer_link_gets_a_permanent_neighbour_and_arp_stays_on(pair):
    a, b = pair
    inner_mac = py_json(b, UP.format(args="'inner', 'x-b', '10.232.7.2/30'"))[1]
    sh("ip", "link", "set", "x-a", "arp", "off", ns=a)        # the outer role turns ARP back on
    args = f"'outer', 'x-a', '10.232.7.1/30', peer_ip='10.232.7.2', peer_mac='{inner_mac.upper()}'"
    for _ in range(2):
        _, _, _, noarp, neighbour = py_json(a, UP.format(args=args))
        assert noarp is False and neighbour == ["10.232.7.2", inner_mac]
    neigh = json.loads(sh("ip", "-j", "neigh", "show", "dev", "x-a", ns=a).stdout)
    assert [(n["dst"], n["lladdr"], n["state"]) for n in neigh] == [("10.232.7.2", inner_mac, ["PERMANENT"])]
    assert len(_addrs(a, "x-a")) == 1
    assert sh("cat", "/proc/sys/net/ipv6/conf/x-a/disable_ipv6", ns=a).stdout.strip() == "1"
    # a changed peer MAC replaces the entry (idempotent, not additive)
    py(a, UP.format(args=f"'outer', 'x-a', '10.232.7.1/30', peer_ip='10.232.7.2', peer_mac='{PEER_MAC}'"))
    neigh = json.loads(sh("ip", "-j", "neigh", "show", "dev", "x-a", ns=a).stdout)
    assert [(n["dst"], n["lladdr"]) for n in neigh] == [("10.232.7.2", PEER_MAC)]


@pytest.mark.root
def test_missing_interface_is_a_kernel_error(pair):
    a, _ = pair
    r = py(a, "from ferry.kernel import KernelError\nfrom ferry.kernel.netlink import bring_up_link\n"
              "try:\n    bring_up_link('inner', 'nosuch0', '10.232.7.2/30')\n"
              "except KernelError as e:\n    print('error:', e)\n")
    assert "error: no interface 'nosuch0'" in r.stdout


@pytest.mark.parametrize("args,kw,why", [
    (("middle", "x", "10.0.0.1/30"), {}, "role"),
    (("outer", "x", "10.0.0.1/30"), {}, "peer"),
    (("outer", "x", "10.0.0.1/30"), {"peer_ip": "10.0.0.2"}, "peer"),
    (("outer", "x", "10.0.0.1/30"), {"peer_ip": "10.0.1.2", "peer_mac": PEER_MAC}, "not in the link"),
    (("outer", "x", "10.0.0.1/30"), {"peer_ip": "10.0.0.2", "peer_mac": "01:00:5e:00:00:01"}, "MAC"),
    (("outer", "x", "10.0.0.1/30"), {"peer_ip": "10.0.0.2", "peer_mac": "02:00:00:00:01"}, "MAC"),
    (("outer", "x", "10.0.0.1/30"), {"peer_ip": "10.0.0.2", "peer_mac": "00:00:00:00:00:00"}, "MAC"),
    (("outer", "x", "10.0.0.1/30"), {"peer_ip": "nope", "peer_mac": PEER_MAC}, "peer IP"),
    (("inner", "x", "10.0.0.2/30"), {"peer_ip": "10.0.0.1"}, "no peer"),
    (("inner", "x", "10.0.0.2/30"), {"peer_mac": PEER_MAC}, "both --peer-ip and --peer-mac"),
    (("inner", "x", "10.0.0.2/30"), {"peer_ip": "10.0.1.1", "peer_mac": PEER_MAC}, "not in the link"),
    (("inner", "x", "10.0.0.2"), {}, "ADDRESS/PREFIX"),
    (("inner", "x", "10.0.0.2/33"), {}, "ADDRESS/PREFIX"),
    (("inner", "x", "fd00::2/64"), {}, "IPv4 only"),
    (("inner", 'x" y', "10.0.0.2/30"), {}, "interface"),
])
def test_bad_parameters_are_refused_before_netlink(args, kw, why):
    with pytest.raises(KernelError, match=why):
        bring_up_link(*args, **kw)


LINK_UP_CLI = "import sys; from ferry.kernel.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.root
def test_link_up_waits_for_an_interface_that_comes_late_and_gives_up_on_one_that_never_does(netns):
    """The ferry-link@ unit runs `link-up --wait 120`: a link NIC that appears after the unit
    starts (late driver, udev rename) is brought up once it is there; one that never appears
    ends the wait with exit 2 naming it."""
    a = netns("nlw")
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    base = ["ip", "netns", "exec", a, sys.executable, "-c", LINK_UP_CLI, "link-up", "--role", "inner",
            "--address", "10.232.9.2/30"]
    proc = subprocess.Popen(base + ["--if", "late0", "--wait", "20"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        # it says that it waits (however long its start takes on a loaded machine), then the interface comes
        first = proc.stderr.readline() if proc.stderr is not None else ""
        assert proc.poll() is None, (first, proc.communicate())     # still waiting: the interface is not there
        sh("ip", "link", "add", "late0", "type", "veth", "peer", "name", "late1", ns=a)
        out, err = proc.communicate(timeout=20)
        err = first + err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "waiting up to 20 s for interface late0" in err and "late0 appeared" in err
    assert out.startswith("late0: up 10.232.9.2/30")
    t0 = time.monotonic()
    r = subprocess.run(base + ["--if", "never0", "--wait", "0.6"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=20)
    assert r.returncode == 2 and "no interface 'never0' appeared within 0.6 s" in r.stderr
    assert 0.5 < time.monotonic() - t0 < 15
