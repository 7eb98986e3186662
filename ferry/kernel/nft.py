"""The policy compiled to an nftables ruleset (nft syntax text).

Outer host (``role="outer"``), table ``inet ferry``:
  * input from the outer network to the agent's ports (every port a source
    names) is accepted only from the networks, ports and protocol of the
    policy's sources (kind ``addresses``, and ``devices`` with ``addresses`` and
    ``ports``); everything else to those ports is dropped (counter
    ``ingest_refused``; accepted packets count in ``ingest_accepted``);
  * nothing is accepted from the link (``from_link``); only datagrams to the
    inner agent's address and port leave on it (``link_out``).
Inner host (``role="inner"``): the link is receive-only (``toward_outer`` counts
what the host tried to send on it, ``link_in`` what the outer agent sent), and
table ``arp ferry`` drops ARP output on the link.

The reverse ferry (``reverse=Reverse(...)``, from ``[reverse]``: the inner agent sends, the outer
agent receives), on its own interface or the link's. Outer host: its port accepts only the inner's
address on that interface (``reverse_in``); anything else to the port, from anywhere, is dropped
(``reverse_refused``), and nothing leaves from the port nor toward the inner on a reverse interface
of its own (``reverse_out``). Inner host: only datagrams to the outer's reverse address and port
leave on that interface (``reverse_out``, before the link's drop), anything else toward that
address there is dropped (``reverse_refused``), and nothing from it comes in (``from_reverse_peer``).

The text replaces the tables in one transaction (``table``/``delete table``/the
definition), so a reload never leaves the host without rules. Output is
deterministic: a test can compare text. ``link_file(role)`` renders the
link-only rules with ``nft -D`` variables: the shipped
``appliance/nftables/{outer,inner}-link.nft`` are generated from it
(``python -m ferry.kernel.nft appliance/nftables [--check]``).

``compile_ruleset`` reads from the plan only ``plan.name``, ``plan.hash`` and
``plan.sources`` (name -> compiled source with ``kind``, ``networks``
(ipaddress networks), ``ports`` and ``protocol``). ``apply_ruleset``,
``check_ruleset`` and ``read_counters`` talk to libnftables (pip-nftables) in
the current network namespace.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import re
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nftables  # pip-nftables: loads libnftables only when an Nftables() is made

from ferry.kernel import KernelError

ROLES = ("outer", "inner")
TABLE = "ferry"                 # the compiled ruleset's tables: inet ferry, arp ferry
LINK_TABLE = "ferry_link"       # the shipped link-only files' tables
PROTOCOLS = ("udp", "tcp", "any")
IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")   # IFNAMSIZ - 1; no quotes, blanks, slashes
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}\Z")  # policy and source names (ferry.policy.models)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Opening:
    """Who may reach the outer agent: one source, one address family."""

    source: str
    kind: str
    family: int                      # 4 or 6
    networks: tuple[Network, ...]    # collapsed, sorted
    ports: tuple[int, ...]           # sorted, distinct
    protocol: str                    # udp | tcp | any


@dataclass(frozen=True, slots=True)
class Reverse:
    """The reverse ferry as the host's rules see it. Outer: ``port`` is its listening port and
    ``peer`` the inner host's address the requests come from; inner: the outer's listening port
    and address. ``interface``: the reverse ferry's interface (None: the link's)."""

    port: int
    peer: str
    interface: str | None = None


@dataclass(frozen=True, slots=True)
class Ingest:
    """The policy's part of the outer host's rules."""

    openings: tuple[Opening, ...]
    agent_ports: tuple[int, ...]     # every port a source names
    notes: tuple[str, ...]           # sources that open nothing, and why


# --- reading the plan ---------------------------------------------------------------

def ingest_of(plan: Any) -> Ingest:
    """Who may reach which port of the outer agent, from ``plan.sources``."""
    openings: list[Opening] = []
    notes: list[str] = []
    agent_ports: set[int] = set()
    sources = getattr(plan, "sources", None)
    if sources is None:     # a plan without compiled sources: read the validated model
        sources = getattr(getattr(plan, "policy", None), "sources", None) or {}
    for name in sorted(sources):
        src = sources[name]
        kind = str(getattr(src, "kind", ""))
        if kind not in ("addresses", "devices"):
            continue
        _check_name(name, "source name")
        ports = _ports(name, getattr(src, "ports", None) or ())
        agent_ports.update(ports)
        networks = _networks(name, _get_networks(src))
        protocol = str(getattr(src, "protocol", None) or "any")
        if protocol not in PROTOCOLS:
            raise KernelError(f"source {name}: unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
        if not networks:
            notes.append(f"source {name} ({kind}): no addresses, opens nothing in the kernel")
            continue
        if not ports:
            notes.append(f"source {name} ({kind}): no ports, opens nothing in the kernel")
            continue
        for family in (4, 6):
            nets = tuple(n for n in networks if n.version == family)
            if nets:
                openings.append(Opening(name, kind, family, nets, ports, protocol))
    return Ingest(tuple(openings), tuple(sorted(agent_ports)), tuple(notes))


def _get_networks(src: Any) -> Iterable[Any]:
    nets = getattr(src, "networks", None)
    if nets is None:
        nets = getattr(src, "addresses", None)
    return nets or ()


def _networks(source: str, values: Iterable[Any]) -> tuple[Network, ...]:
    """Collapsed and sorted; IPv4-mapped IPv6 networks become the IPv4 networks
    (such packets arrive as IPv4)."""
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for value in values:
        try:
            net = value if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)) \
                else ipaddress.ip_network(str(value), strict=True)
        except ValueError as e:
            raise KernelError(f"source {source}: bad network {value!r}: {e}") from None
        if isinstance(net, ipaddress.IPv6Network):
            if net.network_address.scope_id is not None:
                # ipaddress >= 3.9 can carry a zone in an address; nft cannot match one
                raise KernelError(f"source {source}: network {net} has a scope id")
            mapped = net.network_address.ipv4_mapped
            if mapped is not None and net.prefixlen >= 96:
                v4.append(ipaddress.IPv4Network((mapped, net.prefixlen - 96)))
                continue
            v6.append(net)
        else:
            v4.append(net)
    return tuple(ipaddress.collapse_addresses(v4)) + tuple(ipaddress.collapse_addresses(v6))


def _ports(source: str, values: Iterable[Any]) -> tuple[int, ...]:
    ports: set[int] = set()
    for p in values:
        if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 65535:
            raise KernelError(f"source {source}: bad port {p!r}")
        ports.add(p)
    return tuple(sorted(ports))


# --- parameters -----------------------------------------------------------------------

def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or NAME.match(value) is None:
        raise KernelError(f"bad {what} {value!r}")
    return value


def check_ifname(value: str, what: str) -> str:
    if not isinstance(value, str) or IFNAME.match(value) is None or value in (".", ".."):
        raise KernelError(f"bad {what} {value!r} (1-15 of A-Z a-z 0-9 _ . -)")
    return value


def _port(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise KernelError(f"bad link port {value!r}")
    return value


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise KernelError(f"bad peer address {value!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        raise KernelError(f"bad peer address {value!r}: scope ids are not supported")
    return addr


# --- rendering ---------------------------------------------------------------------

def _q(name: str) -> str:
    return f'"{name}"'


def _set(items: Iterable[object]) -> str:
    texts = [str(i) for i in items]
    return texts[0] if len(texts) == 1 else "{ " + ", ".join(texts) + " }"


def _table(family: str, name: str, counters: Iterable[str], chains: list[tuple[str, list[str]]]) -> list[str]:
    """One table replaced atomically: declare, delete, define."""
    lines = [f"table {family} {name}", f"delete table {family} {name}", f"table {family} {name} {{"]
    lines += [f"  counter {c} {{ }}" for c in counters]
    for hook, rules in chains:
        lines += [f"  chain {hook} {{", f"    type filter hook {hook} priority filter; policy accept;"]
        lines += [f"    {r}" for r in rules]
        lines.append("  }")
    lines.append("}")
    return lines


def _link(role: str, link_if: str, peer: str, port: str, ip: str) -> tuple[list[str], dict[str, list[str]]]:
    """Counters and per-hook rules that make the link one-way on ``role``'s host."""
    if role == "outer":
        return ["from_link", "link_out"], {
            "input": [f"iifname {link_if} counter name from_link drop"],
            "output": [f"oifname {link_if} {ip} daddr {peer} udp dport {port} counter name link_out accept",
                       f"oifname {link_if} drop"],
        }
    return ["toward_outer", "link_in"], {
        "input": [f"iifname {link_if} {ip} saddr {peer} udp dport {port} counter name link_in accept",
                  f"iifname {link_if} drop"],
        "output": [f"oifname {link_if} counter name toward_outer drop"],
    }


def _reverse(role: str, rev: Reverse, link_if: str) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    """Counters, rules before the link's and rules after the link's accepts, per hook."""
    rif = _q(check_ifname(rev.interface, "reverse interface") if rev.interface else link_if)
    own_if = rev.interface is not None and rev.interface != link_if
    try:
        port = _port(rev.port)
    except KernelError:
        raise KernelError(f"bad reverse port {rev.port!r}") from None
    peer = _address(rev.peer)
    ip = "ip" if peer.version == 4 else "ip6"
    if role == "outer":
        out = [f"udp sport {port} counter name reverse_out drop"]
        if own_if:
            out.append(f"oifname {rif} {ip} daddr {peer} counter name reverse_out drop")
        return ["reverse_in", "reverse_refused", "reverse_out"], {
            "input": [f"iifname {rif} {ip} saddr {peer} udp dport {port} counter name reverse_in accept",
                      f"udp dport {port} counter name reverse_refused drop"],
            "output": out,
        }, {"input": [], "output": []}
    out = [f"oifname {rif} {ip} daddr {peer} udp dport {port} counter name reverse_out accept"]
    if own_if:      # on the link's interface, its own drop (toward_outer) takes the rest
        out.append(f"oifname {rif} {ip} daddr {peer} counter name reverse_refused drop")
    return ["reverse_out", "reverse_refused", "from_reverse_peer"], {"input": [], "output": out}, \
        {"input": [f"iifname {rif} {ip} saddr {peer} counter name from_reverse_peer drop"], "output": []}


def _arp_table(name: str, link_if: str) -> list[str]:
    return _table("arp", name, (), [("output", [f"oifname {link_if} drop"])])


def _ingest_rules(ingest: Ingest, link_if: str, ingest_if: str | None) -> list[str]:
    rules: list[str] = []
    iif = f"iifname {_q(ingest_if)}" if ingest_if else f"iifname != {_set(sorted({_q('lo'), _q(link_if)}))}"
    for note in ingest.notes:
        rules.append(f"# {note}")
    same: dict[tuple[int, tuple[Network, ...], tuple[int, ...], str], list[str]] = {}
    for o in ingest.openings:      # sources opening the same networks and ports share one rule
        same.setdefault((o.family, o.networks, o.ports, o.protocol), []).append(o.source)
    for (family, networks, ports, protocol), names in same.items():
        proto = "meta l4proto { tcp, udp }" if protocol == "any" else f"meta l4proto {protocol}"
        saddr = "ip saddr" if family == 4 else "ip6 saddr"
        who = ("source " if len(names) == 1 else "sources ") + ", ".join(names)
        rules.append(f"{iif} {saddr} {_set(networks)} {proto} th dport {_set(ports)} "
                     f"counter name ingest_accepted accept comment {_q(who)}")
    if ingest.agent_ports:
        rules.append(f'iifname != "lo" meta l4proto {{ tcp, udp }} th dport {_set(ingest.agent_ports)} '
                     f"counter name ingest_refused drop")
    else:
        rules.append("# no source names a port: no ingest rules")
    return rules


# Why the chains' policy is accept: this table rules only the link and the agent's ingest ports
# (each with its own drop rule above); a drop policy would also cut the host's other traffic
# (its management access, DNS, time), which its own firewall decides.
_WHY_ACCEPT = {
    "outer": ("# chains: policy accept, because this table rules only the ferry link and the agent's ports",
              "# from the outer network (each ends in its own drop rule); the host's other traffic is left",
              "# to its own firewall"),
    "inner": ("# chains: policy accept, because this table rules only the ferry link (it ends in its own",
              "# drop rules); the host's other traffic is left to its own firewall"),
}


def compile_ruleset(plan: Any, role: str, *, link_if: str, link_port: int, peer_addr: str,
                    ingest_if: str | None = None, reverse: Reverse | None = None) -> str:
    """The host's whole ferry ruleset for ``role`` ("outer" or "inner").

    ``peer_addr`` is the other end of the link: the inner agent's address on
    the outer host, the outer agent's on the inner host. ``ingest_if`` (outer
    only) limits ingest to one interface; default: any but the link and lo.
    ``reverse``: the reverse ferry's port, peer and interface (None: no reverse ferry).
    """
    if role not in ROLES:
        raise KernelError(f"bad role {role!r} (outer or inner)")
    link_if = check_ifname(link_if, "link interface")
    if ingest_if is not None:
        ingest_if = check_ifname(ingest_if, "ingest interface")
        if ingest_if in (link_if, "lo"):
            raise KernelError(f"ingest interface {ingest_if!r} cannot be the link or lo")
    port = _port(link_port)
    peer = _address(peer_addr)
    name = _check_name(str(getattr(plan, "name", "")), "policy name")
    digest = bytes(getattr(plan, "hash", b"")).hex()
    ip = "ip" if peer.version == 4 else "ip6"
    counters, hooks = _link(role, _q(link_if), str(peer), str(port), ip)
    if reverse is not None:
        more, before, after = _reverse(role, reverse, link_if)
        counters += more
        for hook in ("input", "output"):
            # before the link's rules (its drops); after its accepts but before its last drop
            link_rules = hooks[hook]
            hooks[hook] = before[hook] + link_rules[:-1] + after[hook] + link_rules[-1:]
    lines = [f"# ferry {role} host: policy {name} sm3 {digest}",
             "# generated by ferry.kernel.nft from the policy; do not edit",
             *_WHY_ACCEPT[role]]
    if role == "outer":
        ingest = ingest_of(plan)
        if reverse is not None and reverse.port in ingest.agent_ports:
            raise KernelError(f"the reverse port {reverse.port} is also a port a source of the policy names "
                              "(ingest): give the reverse ferry a port of its own")
        counters += ["ingest_accepted", "ingest_refused"]
        hooks["input"] += _ingest_rules(ingest, link_if, ingest_if)
        lines += _table("inet", TABLE, counters, [("input", hooks["input"]), ("output", hooks["output"])])
    else:
        lines += _table("inet", TABLE, counters, [("input", hooks["input"]), ("output", hooks["output"])])
        lines += _arp_table(TABLE, _q(link_if))
    return "\n".join(lines) + "\n"


# --- the shipped link-only files ----------------------------------------------------

_LINK_HEADERS = {
    "outer": """\
#!/usr/sbin/nft -f
# Outer host: the ferry link is send-only.
#   nft -D LINK_IF=ferry0 -D INNER_ADDR=10.0.9.2 -D LINK_PORT=47000 -f outer-link.nft
# Nothing is accepted from the link (counted); only datagrams to the inner
# agent's address and port leave on it.
""",
    "inner": """\
#!/usr/sbin/nft -f
# Inner host: the ferry link is receive-only.
#   nft -D LINK_IF=ferry0 -D OUTER_ADDR=10.0.9.1 -D LINK_PORT=47000 -f inner-link.nft
# Nothing leaves on the link interface (counted, so a test or an operator can
# prove it stayed at zero); only the outer agent's datagrams to the inner
# agent's port come in; ARP is never answered on the link (the outer host has a
# static neighbour entry instead).
""",
}
_GENERATED = "# Generated by ferry.kernel.nft (python -m ferry.kernel.nft appliance/nftables); do not edit.\n"


def link_file(role: str) -> str:
    """The link-only rules of ``role`` with ``nft -D`` variables (the shipped files)."""
    if role not in ROLES:
        raise KernelError(f"bad role {role!r} (outer or inner)")
    peer = "$INNER_ADDR" if role == "outer" else "$OUTER_ADDR"
    counters, hooks = _link(role, "$LINK_IF", peer, "$LINK_PORT", "ip")
    lines = _table("inet", LINK_TABLE, counters, [("input", hooks["input"]), ("output", hooks["output"])])
    if role == "inner":
        lines += _arp_table(LINK_TABLE, "$LINK_IF")
    return _LINK_HEADERS[role] + _GENERATED + "\n".join(lines) + "\n"


def link_files() -> dict[str, str]:
    """File name -> text of every shipped link file."""
    return {f"{role}-link.nft": link_file(role) for role in ROLES}


# --- libnftables (I/O) --------------------------------------------------------------

def _nft() -> Any:
    try:
        return nftables.Nftables()
    except OSError as e:
        raise KernelError(f"libnftables is not available: {e}") from None


def _run(nft: Any, command: str) -> str:
    rc, out, err = nft.cmd(command)
    if rc != 0:
        raise KernelError(f"nft refused: {err.strip() or f'exit {rc}'}")
    return out


def _run_ruleset(nft: Any, text: str) -> None:
    """Run a whole ruleset as one transaction. It goes through a file so nft's
    errors name the right line (libnftables misplaces them in a buffer)."""
    with tempfile.TemporaryDirectory(prefix="ferry-nft-") as d:
        path = Path(d) / "ruleset.nft"
        path.write_text(text)
        rc, _out, err = nft.cmd(f'include "{path}"')
    if rc != 0:
        lines = [x.replace(str(path), "ruleset") for x in err.strip().splitlines()
                 if not x.startswith("In file included from")]
        raise KernelError("nft refused the ruleset: " + ("\n".join(lines) or f"exit {rc}"))


def apply_ruleset(text: str) -> None:
    """Apply ``text`` in one transaction in the current network namespace."""
    _run_ruleset(_nft(), text)


def check_ruleset(text: str) -> None:
    """Parse and evaluate ``text`` without committing it (``nft -c``)."""
    nft = _nft()
    try:
        lib = ctypes.CDLL("libnftables.so.1")
        lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
        lib.nft_ctx_set_dry_run(nft._Nftables__ctx, True)
    except (OSError, AttributeError) as e:
        raise KernelError(f"cannot set libnftables dry run: {e}") from None
    _run_ruleset(nft, text)


def read_counters(table: str = TABLE, family: str = "inet") -> dict[str, int]:
    """Named counter -> packets, for one table of the current network namespace."""
    if NAME.match(table.replace("_", "-")) is None or family not in ("inet", "ip", "ip6", "arp"):
        raise KernelError(f"bad table {family} {table}")
    nft = _nft()
    nft.set_json_output(True)
    out = _run(nft, f"list counters table {family} {table}")
    try:
        items = json.loads(out)["nftables"]
        return {x["counter"]["name"]: int(x["counter"]["packets"]) for x in items if "counter" in x}
    except (ValueError, KeyError, TypeError) as e:
        raise KernelError(f"unexpected nft JSON output: {e}") from None


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the shipped link files in a folder."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    if len(args) != 1:
        print("usage: python -m ferry.kernel.nft [--check] DIR", file=sys.stderr)
        return 2
    folder = Path(args[0])
    stale = []
    for name, text in link_files().items():
        path = folder / name
        current = path.read_text() if path.exists() else None
        if current != text:
            stale.append(str(path))
            if not check:
                path.write_text(text)
    for p in stale:
        print(f"{'stale' if check else 'wrote'}: {p}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
