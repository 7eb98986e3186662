"""The appliance's files (appliance/): the systemd units verify and rate "OK" or better with
`systemd-analyze security`; the sysctl file and the nftables base ruleset load; the sysusers
file and `ferry provision` create the same users.

`systemd-analyze verify --root=DIR` needs the unit's ExecStart binaries and the targets it
depends on inside DIR: the tests copy the host's /usr/lib/systemd/system and put stubs at
/usr/local/bin/ferry and /usr/sbin/nft (helper "image" runs the same checks on the real root).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ferry.provision import SYSUSERS
from rootcheck import need_root

pytestmark = pytest.mark.root

APPLIANCE = Path(__file__).resolve().parents[2] / "appliance"
UNIT_FILES = ("ferry-outer.service", "ferry-inner.service", "ferry-link@.service", "ferry-provision@.service")
UNITS = ("ferry-outer.service", "ferry-inner.service", "ferry-link@outer.service", "ferry-link@inner.service",
         "ferry-provision@outer.service", "ferry-provision@inner.service")
AGENTS = ("ferry-outer.service", "ferry-inner.service")
BINARIES = ("usr/local/bin/ferry", "usr/sbin/nft")
OK_OR_BETTER = ("OK", "SAFE", "PERFECT")      # systemd's scale: OK is an exposure below 5.0
_OVERALL = re.compile(r"Overall exposure level for (\S+): (\d+\.\d) (\w+)")


def _root_with(tmp: Path, units: dict[str, str]) -> Path:
    """A root for systemd-analyze: the host's system units, stub binaries, ``units``."""
    if not Path("/usr/lib/systemd/system/sysinit.target").exists():
        pytest.skip("needs systemd's unit files (/usr/lib/systemd/system)")
    root = tmp / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for b in BINARIES:
        (root / b).parent.mkdir(parents=True, exist_ok=True)
        (root / b).write_text("#!/bin/sh\n")
        (root / b).chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name, text in units.items():
        (root / "etc/systemd/system" / name).write_text(text)
    return root


def _ours() -> dict[str, str]:
    return {name: (APPLIANCE / "systemd" / name).read_text() for name in UNIT_FILES}


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory) -> Path:
    need_root("systemd-analyze")
    return _root_with(tmp_path_factory.mktemp("units"), _ours())


def _analyze(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args, f"--root={root}"], capture_output=True, text=True,
                          timeout=120)


def _security(root: Path, unit: str, threshold: int = 49) -> tuple[subprocess.CompletedProcess, float, str]:
    done = _analyze(root, "security", "--offline=yes", f"--threshold={threshold}", "--no-pager", unit)
    m = _OVERALL.search(done.stdout)
    assert m, f"no overall exposure for {unit}:\n{done.stdout}\n{done.stderr}"
    assert m.group(1) == unit
    return done, float(m.group(2)), m.group(3)


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies(unit_root: Path, unit: str) -> None:
    """`systemd-analyze verify` accepts each unit without a single warning (it exits 0 even for an
    unknown key, so its output must be empty too)."""
    done = _analyze(unit_root, "verify", unit)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stderr


def test_verify_reports_a_mistake(tmp_path: Path) -> None:
    """The check above can fail: a misspelled key and a missing binary are reported."""
    need_root("systemd-analyze")
    text = _ours()["ferry-outer.service"].replace("UMask=", "UMaks=").replace("/usr/local/bin/ferry", "/nope/ferry")
    done = _analyze(_root_with(tmp_path, {"bad.service": text}), "verify", "bad.service")
    assert "Unknown key 'UMaks'" in done.stderr
    assert "/nope/ferry" in done.stderr and done.returncode != 0


@pytest.mark.parametrize("unit", UNITS)
def test_unit_security_rating_ok_or_better(unit_root: Path, unit: str) -> None:
    """`systemd-analyze security --offline` rates each unit OK or better (exposure < 5.0), and
    --threshold=49 (4.9) agrees through its exit status."""
    done, exposure, label = _security(unit_root, unit)
    assert label in OK_OR_BETTER and exposure < 5.0, done.stdout[-400:]
    assert done.returncode == 0, done.stderr


def test_security_rating_catches_a_bare_unit(tmp_path: Path) -> None:
    """The rating check can fail: the outer agent's unit without its sandbox rates worse than OK."""
    need_root("systemd-analyze")
    ours = _ours()["ferry-outer.service"]
    bare = ours.split("# What it may write")[0] + "\n[Install]\nWantedBy=multi-user.target\n"
    done, exposure, label = _security(_root_with(tmp_path, {"bare.service": bare}), "bare.service")
    assert label not in OK_OR_BETTER and exposure >= 5.0
    assert done.returncode != 0


def _checks(root: Path, unit: str) -> dict[str, bool]:
    """systemd-analyze's own verdict per check (JSON): name -> whether the unit is safe there."""
    done = _analyze(root, "security", "--offline=yes", "--json=short", "--no-pager", unit)
    assert done.returncode == 0, done.stderr
    return {c["name"]: c["exposure"] in (None, 0, 0.0) for c in json.loads(done.stdout)}


@pytest.mark.parametrize("unit", AGENTS)
def test_agents_have_no_network_capability(unit_root: Path, unit: str) -> None:
    """The long-running agents get no CAP_NET_ADMIN, no netlink, no raw sockets, no device
    access and cannot create writable executable memory; only ferry-link@ has CAP_NET_ADMIN."""
    checks = _checks(unit_root, unit)
    for name in ("CapabilityBoundingSet=~CAP_NET_ADMIN", "RestrictAddressFamilies=~AF_NETLINK",
                 "RestrictAddressFamilies=~AF_PACKET", "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)",
                 "MemoryDenyWriteExecute=", "NoNewPrivileges=", "ProtectSystem=", "PrivateTmp=",
                 "PrivateDevices=", "SystemCallArchitectures=", "SystemCallFilter=~@privileged",
                 "User=/DynamicUser=", "CapabilityBoundingSet=~CAP_SYS_ADMIN"):
        assert checks[name], f"{unit}: {name}"
    link = _checks(unit_root, "ferry-link@outer.service")
    assert not link["CapabilityBoundingSet=~CAP_NET_ADMIN"] and not link["RestrictAddressFamilies=~AF_NETLINK"]
    assert link["User=/DynamicUser="]


def test_units_limits_and_restart() -> None:
    """Memory and task limits are set; a configuration error (exit 2) is not restarted."""
    for name in AGENTS:
        text = (APPLIANCE / "systemd" / name).read_text()
        for line in ("MemoryMax=", "TasksMax=", "Restart=on-failure", "RestartPreventExitStatus=2",
                     "ProtectSystem=strict", "UMask=0"):
            assert re.search(rf"^{re.escape(line)}", text, re.M), f"{name}: {line}"


def _sysctl_lines() -> list[tuple[str, str, bool]]:
    out = []
    for raw in (APPLIANCE / "sysctl.d" / "90-ferry.conf").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"90-ferry.conf: not KEY = VALUE: {raw!r}"
        optional = key.startswith("-")
        out.append((key.strip().lstrip("-"), value.strip(), optional))
    return out


def test_sysctl_file_parses_and_names_real_keys() -> None:
    """Every key of appliance/sysctl.d/90-ferry.conf exists in this kernel (under /proc/sys),
    unless marked "-" (absent in some kernels); the hardening keys are there; `sysctl -p` reads
    the file (in a throw-away network namespace, for the net.* keys)."""
    lines = _sysctl_lines()
    keys = {k: v for k, v, _ in lines}
    for k in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.all.accept_redirects", "net.ipv4.conf.all.send_redirects",
              "net.ipv4.conf.all.accept_source_route", "kernel.kptr_restrict", "kernel.dmesg_restrict",
              "kernel.unprivileged_bpf_disabled", "net.ipv4.ip_forward"):
        assert k in keys, k
    missing = [k for k, _, optional in lines if not optional and not Path("/proc/sys", *k.split(".")).exists()]
    assert not missing, f"keys this kernel does not have: {missing}"


def test_sysctl_file_applies_in_a_network_namespace(tmp_path: Path) -> None:
    """The net.* keys apply (procps `sysctl -p`) in a new network namespace and read back."""
    need_root("unshare", "sysctl")
    net = tmp_path / "net.conf"
    net.write_text("".join(f"{k} = {v}\n" for k, v, _ in _sysctl_lines()
                           if k.startswith("net.") and not k.startswith("net.core.")))
    script = f"sysctl -q -p {net} && sysctl -n net.ipv4.conf.all.accept_redirects net.ipv4.conf.all.rp_filter"
    done = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1"]


BASE_DEFINES = ("-D", "LINK_IF=ferry0", "-D", "LINK_PORT=47000", "-D", "ADMIN_IF=eth0", "-D", "ADMIN_TCP={22,9443}",
                "-D", "INGEST_IF=eth1", "-D", "INGEST_UDP={5060,30000-30999}", "-D", "INGEST_TCP={5060}")


def test_nftables_base_ruleset_checks() -> None:
    """`nft -c` accepts the base ruleset with the definitions `ferry provision` writes."""
    need_root("nft")
    done = subprocess.run(["nft", "-c", *BASE_DEFINES, "-f", str(APPLIANCE / "nftables" / "base.nft")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text = (APPLIANCE / "nftables" / "base.nft").read_text()
    assert re.search(r"hook input priority filter \+ 10; policy drop;", text)
    assert re.search(r"hook forward priority filter \+ 10; policy drop;", text)


def test_sysusers_file_matches_provision() -> None:
    """appliance/sysusers.d/ferry.conf and `ferry provision` create the same users."""
    lines = [x for x in (APPLIANCE / "sysusers.d" / "ferry.conf").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    assert lines == SYSUSERS.splitlines()


_RECEIVER = """
import json, select, socket, sys, time
socks = {}
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    socks[s] = port
print("ready", flush=True)
got = set()
end = time.monotonic() + 20
while time.monotonic() < end and len(got) < len(socks):
    for s in select.select(list(socks), [], [], 0.2)[0]:
        s.recv(2048)
        got.add(socks[s])
    if sys.stdin in select.select([sys.stdin], [], [], 0)[0]:
        break
print(json.dumps(sorted(got)), flush=True)
"""


def test_nftables_base_ruleset_in_a_namespace() -> None:
    """Loaded in a network namespace (the inner host: INGEST_IF=none), the base ruleset lets UDP
    to the link port in on the link interface and drops any other port there (counted in
    base_refused); nothing is forwarded."""
    need_root("ip", "nft")
    tag = f"fb{os.getpid() % 100000}"
    a, b = f"{tag}a", f"{tag}b"
    defines = ("-D", f"LINK_IF={b}", "-D", "LINK_PORT=47000", "-D", "ADMIN_IF=none", "-D", "ADMIN_TCP={22}",
               "-D", "INGEST_IF=none", "-D", "INGEST_UDP={9}", "-D", "INGEST_TCP={9}")

    def sh(*args: str) -> str:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{args}: {done.stderr}"
        return done.stdout
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "link", "add", a, "netns", a, "type", "veth", "peer", "name", b, "netns", b)
        for ns, addr in ((a, "10.77.0.1/30"), (b, "10.77.0.2/30")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", ns)
            sh("ip", "-n", ns, "link", "set", ns, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", b, "nft", *defines, "-f", str(APPLIANCE / "nftables" / "base.nft"))
        recv = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c", _RECEIVER, "47000", "47001"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
            send = ("import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                    "for _ in range(20):\n"
                    "    s.sendto(b'x', ('10.77.0.2', 47000)); s.sendto(b'x', ('10.77.0.2', 47001)); time.sleep(0.1)\n")
            sh("ip", "netns", "exec", a, sys.executable, "-c", send)
            time.sleep(0.5)
            out, _ = recv.communicate("stop\n", timeout=60)
        finally:
            if recv.poll() is None:
                recv.kill()
                recv.wait(timeout=10)
        assert json.loads(out.strip().splitlines()[-1]) == [47000]
        counter = json.loads(sh("ip", "netns", "exec", b, "nft", "-j", "list", "counter", "inet", "ferry_base",
                                "base_refused"))
        packets = [x["counter"]["packets"] for x in counter["nftables"] if "counter" in x]
        assert packets and packets[0] >= 20
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=60)
