"""Faults an operator meets, injected into a real appliance: three network namespaces joined by a
forwarding link namespace, the link cut with an nftables rule (its counter proves the cut), a wall
clock moved under one agent with libfaketime, status and health read from the management socket.
Used by tests/e2e/test_faults.py and bench/soak.py.

    outer ns  o-l 10.232.1.1 ──veth── l-o 10.232.1.2  link ns  l-i 10.232.2.2 ──veth── i-l 10.232.2.1  inner ns

The wall clock: libfaketime (Debian package ``faketime``) preloaded into one agent, reading its offset
from a file on every call (FAKETIME_NO_CACHE=1), so the offset moves while the agent runs; the
monotonic clock is left alone (FAKETIME_DONT_FAKE_MONOTONIC=1), as an NTP step leaves it.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from netns import LinkAddresses, add_namespaces, delete_namespaces, sh, wire_one_way_link

OUTER_IP, LINK_O, LINK_I, INNER_IP = "10.232.1.1", "10.232.1.2", "10.232.2.2", "10.232.2.1"
ADDRESSES = LinkAddresses(OUTER_IP, LINK_O, LINK_I, INNER_IP, inner_net="10.232.2.0/24")

LINK_RULES = """
table inet ferry {
  chain forward {
    type filter hook forward priority 0; policy drop;
    iifname "l-o" oifname "l-i" accept
  }
}
"""
CUT_TABLE = "ferry_fault"
CUT_RULES = f"""
table inet {CUT_TABLE} {{
  counter cut {{ }}
  chain forward {{
    type filter hook forward priority -20; policy accept;
    counter name cut drop
  }}
}}
"""


@contextmanager
def namespaces(tag: str | None = None):
    """Three namespaces {'outer', 'link', 'inner'}: the link ns forwards outer -> inner only and
    neighbours are static (a one-way link cannot resolve ARP backwards). Deleted on exit."""
    tag = tag or f"{os.getpid() % 100000}"
    names = {"outer": f"xo{tag}", "link": f"xl{tag}", "inner": f"xi{tag}"}
    try:
        add_namespaces(names)
        wire_one_way_link(names, ADDRESSES)
        sh("nft", "-f", "-", ns=names["link"], stdin=LINK_RULES)
        yield names
    finally:
        delete_namespaces(names)


def netns_appliance(factory_or_class, names: dict, **kw):
    """An Appliance whose outer agent runs in names['outer'] and inner agent in names['inner']."""
    return factory_or_class(outer_host=INNER_IP, inner_host=INNER_IP, bind_host=OUTER_IP,
                            outer_netns=names["outer"], inner_netns=names["inner"], **kw)


# -- the link cut --------------------------------------------------------------------------------
def cut_link(link_ns: str) -> None:
    """Drop everything the link namespace would forward (both ways), counted."""
    sh("nft", "-f", "-", ns=link_ns, stdin=CUT_RULES)


def restore_link(link_ns: str) -> int:
    """Remove the cut; return how many packets it dropped."""
    dropped = cut_count(link_ns)
    sh("nft", "delete", "table", "inet", CUT_TABLE, ns=link_ns)
    return dropped


def cut_count(link_ns: str) -> int:
    out = json.loads(sh("nft", "-j", "list", "counter", "inet", CUT_TABLE, "cut", ns=link_ns))
    return next(x["counter"]["packets"] for x in out["nftables"] if "counter" in x)


# -- the wall clock ------------------------------------------------------------------------------
def libfaketime() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    return found[0] if found else None


class FakeClock:
    """The wall clock of the processes started with `env()`: real time plus `set(seconds)`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lib = libfaketime()
        self.set(0)

    def set(self, offset_s: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{offset_s:+d}\n")
        os.replace(tmp, self.path)       # the agent reads the file on every clock call: never half-written

    def env(self) -> dict[str, str]:
        assert self.lib, "libfaketime not installed (Debian package faketime)"
        site = str(Path(__file__).resolve().parent / "faketime_site")    # time.sleep without clock_nanosleep
        path = os.pathsep.join(x for x in (site, os.environ.get("PYTHONPATH")) if x)
        return {"LD_PRELOAD": self.lib, "FAKETIME_TIMESTAMP_FILE": str(self.path), "FAKETIME_NO_CACHE": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1", "PYTHONPATH": path}


@contextmanager
def environment(extra: dict[str, str]):
    """os.environ plus `extra` while starting a process (Appliance.start_role copies os.environ)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- what an operator reads ----------------------------------------------------------------------
def ferry(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def status(socket: Path) -> dict:
    """`ferry policy status --json` of one agent."""
    r = ferry("policy", "status", "--json", "--socket", socket, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    [doc] = json.loads(r.stdout)
    return doc


def health(socket: Path) -> str | None:
    """The standard gRPC health service's answer for the whole server ('SERVING', 'NOT_SERVING'), or
    None where the agent does not serve it yet (helper "grpc" adds it on its branch)."""
    import grpc  # noqa: PLC0415
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    with grpc.insecure_channel(f"unix:{socket}") as ch:
        try:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)


def reconcile(outer_audit: Path, inner_audit: Path) -> tuple[int, dict]:
    r = ferry("audit", "reconcile", outer_audit, inner_audit, "--json")
    try:
        return r.returncode, json.loads(r.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"ferry audit reconcile: {r.stdout}{r.stderr}") from None


def camera(ns: str, port: int, *, seconds: float = 4.0, loops: int = 1, ssrc: int = 0x0BEBC201,
           size: str = "320x240") -> subprocess.Popen:
    """A GB/T 28181 camera (python -m ferry.camera) in namespace `ns`, sending in real time to the
    outer agent's port on that namespace's loopback. The caller waits for it (or kills it)."""
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "ferry.camera", "--to",
                             f"127.0.0.1:{port}", "--size", size, "--seconds", str(seconds), "--loops", str(loops),
                             "--ssrc", hex(ssrc)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def fates(a) -> dict[str, str]:
    """File name -> 'delivered' / 'refused' / 'lost', as reconciliation of both trails tells it (a
    block_lost record names many objects at once); files not yet accounted for are left out."""
    from appliance import read_trail  # noqa: PLC0415 - tests/support on sys.path
    from ferry.audit import reconcile as reconcile_trails  # noqa: PLC0415

    outer, inner = read_trail(a.outer_audit), read_trail(a.inner_audit)
    names = {r["object_id"]: r["detail"]["name"] for r in outer if r["event"] == "object_sent"}
    out = {(r.get("detail") or {}).get("name"): "refused" for r in outer if r["event"] == "object_refused"}
    report = reconcile_trails(outer, inner)
    for ids, fate in ((report.delivered, "delivered"), (report.refused_inner, "refused"), (report.lost, "lost")):
        out.update({names[i]: fate for i in ids if i in names})
    return out
