"""Network namespaces for the root tests: run a command in one, and join three into a one-way link.

    outer ns  o-l OUTER_IP ──veth── l-o LINK_O  link ns  l-i LINK_I ──veth── i-l INNER_IP  inner ns

The link namespace forwards outer -> inner; neighbours toward the inner side are static (a
one-way link cannot resolve ARP backwards). Each user names its own addresses, so tests that
may run at once do not share a subnet.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass


def sh(*args: str, ns: str | None = None, check: bool = True, stdin: str | None = None) -> str:
    """Run a command (in namespace `ns` if given); its stdout; a failure raises with its stderr."""
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, input=stdin)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def mac(ns: str, dev: str) -> str:
    """The MAC address of `dev` in namespace `ns`."""
    return json.loads(sh("ip", "-j", "link", "show", dev, ns=ns))[0]["address"]


def add_namespaces(names: dict[str, str]) -> None:
    """Each namespace made, its loopback up."""
    for ns in names.values():
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)


def delete_namespaces(names: dict[str, str]) -> None:
    for ns in names.values():
        sh("ip", "netns", "del", ns, check=False)


@dataclass(frozen=True)
class LinkAddresses:
    outer: str          # o-l, the outer host's end
    link_outer: str     # l-o
    link_inner: str     # l-i
    inner: str          # i-l, the inner host's end
    inner_net: str      # the inner side's /24, routed from the outer host via the link


def wire_one_way_link(names: dict[str, str], at: LinkAddresses) -> None:
    """The veth pairs between names['outer'], names['link'] and names['inner'], IPv4 only (no IPv6
    autoconfiguration chatter on the link), the link namespace forwarding, the outer host routing
    the inner side via the link, and static neighbours toward the inner side."""
    o, lk, i = names["outer"], names["link"], names["inner"]
    sh("ip", "link", "add", "o-l", "netns", o, "type", "veth", "peer", "name", "l-o", "netns", lk)
    sh("ip", "link", "add", "i-l", "netns", i, "type", "veth", "peer", "name", "l-i", "netns", lk)
    for ns, dev, addr in ((o, "o-l", at.outer), (lk, "l-o", at.link_outer), (lk, "l-i", at.link_inner),
                          (i, "i-l", at.inner)):
        sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", ns=ns)
        sh("ip", "addr", "add", f"{addr}/24", "dev", dev, ns=ns)
        sh("ip", "link", "set", dev, "up", ns=ns)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=lk)
    sh("ip", "route", "add", at.inner_net, "via", at.link_outer, ns=o)
    sh("ip", "neigh", "replace", at.link_outer, "lladdr", mac(lk, "l-o"), "dev", "o-l", "nud", "permanent", ns=o)
    sh("ip", "neigh", "replace", at.inner, "lladdr", mac(i, "i-l"), "dev", "l-i", "nud", "permanent", ns=lk)
