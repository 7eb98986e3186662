"""``ferry kernel rules|link-up``: the host's kernel side from the policy.

    ferry kernel rules --config /etc/ferry/outer.toml [--apply]
    ferry kernel rules --policy DIR --role outer --link-if ferry0 --link-port 47000 --peer 10.0.9.2 \
        [--reverse-port 47100 [--reverse-peer 10.0.9.2] [--reverse-if rev0]] [--apply]
    ferry kernel link-up --role outer --if ferry0 --address 10.0.9.1/30 --peer-ip 10.0.9.2 --peer-mac 02:..

Exit status: 0 ok; 1 the policy is invalid or nft refused the ruleset;
2 usage, parameter, netlink or I/O error.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path

from ferry.config import ConfigError, InnerConfig, OuterConfig, load_config
from ferry.kernel import KernelError
from ferry.kernel import netlink, nft
from ferry.kernel.agent_rules import reverse_of
from ferry.policy import PolicyError, load_plan

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_DESCRIPTION = """The host's kernel side from the policy: nftables rules and the ferry link.

    ferry kernel rules --config /etc/ferry/outer.toml [--apply]
    ferry kernel rules --policy DIR --role outer --link-if ferry0 --link-port 47000 --peer 10.0.9.2 \
        [--reverse-port 47100 [--reverse-peer 10.0.9.2] [--reverse-if rev0]] [--apply]
    ferry kernel link-up --role outer --if ferry0 --address 10.0.9.1/30 --peer-ip 10.0.9.2 --peer-mac 02:..

Exit status: 0 ok; 1 the policy is invalid or nft refused the ruleset;
2 usage, parameter, netlink or I/O error."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``kernel`` and its subcommands on an argparse subparsers object."""
    p = subparsers.add_parser("kernel", help="nftables rules and the ferry link from the policy",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kernel_command", metavar="ACTION", required=True)

    r = sub.add_parser("rules", help="print (and with --apply, apply) the host's nftables ruleset",
                       description="The host's nftables ruleset from the policy. With --config, the policy, "
                       "the role and the link are read from the agent's configuration (as the agent applies "
                       "them with [kernel] apply); a flag given as well wins.")
    r.add_argument("--config", type=Path, help="the agent's configuration (outer.toml or inner.toml): "
                   "policy from [agent], link port and peer from [link] (inner: [kernel] peer_addr), "
                   "interfaces from [kernel]")
    r.add_argument("--policy", type=Path, help="policy folder (default: the agent's, with --config)")
    r.add_argument("--role", choices=("outer", "inner"), help="which host (default: the agent's, with --config)")
    r.add_argument("--link-if", help="the ferry link's interface")
    r.add_argument("--link-port", type=int, help="the inner agent's UDP port on the link")
    r.add_argument("--peer", help="the other end of the link (outer: the inner agent's address; inner: the outer's)")
    r.add_argument("--ingest-if", help="outer: the only interface ingest may arrive on "
                   "(default: any but the link and lo)")
    r.add_argument("--reverse-port", type=int, help="the reverse ferry's port, the outer agent's "
                   "(with --config: [reverse] listen_port / peer_port; none: no reverse ferry)")
    r.add_argument("--reverse-peer", help="the reverse ferry's other end (outer: the inner host's address, "
                   "default --peer; inner: the outer agent's reverse address)")
    r.add_argument("--reverse-if", help="the reverse ferry's interface (default: the link's)")
    r.add_argument("--apply", action="store_true", help="apply the ruleset in one nftables transaction")
    r.set_defaults(func=cmd_rules)

    u = sub.add_parser("link-up", help="bring the ferry link up (address, no IPv6, static neighbour / no ARP)")
    u.add_argument("--role", required=True, choices=("outer", "inner"))
    u.add_argument("--if", dest="ifname", required=True, help="the ferry link's interface")
    u.add_argument("--address", required=True, help="this host's address on the link, ADDRESS/PREFIX")
    u.add_argument("--peer-ip", help="outer: the inner host's address on the link; inner: the outer host's, "
                   "only where the reverse ferry shares the link")
    u.add_argument("--peer-mac", help="the peer's MAC on the link (a static neighbour: no ARP on the link)")
    u.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to this long for the interface to appear (a NIC whose driver or udev "
                   "rename comes late at boot); default 0: it must be there")
    u.set_defaults(func=cmd_link_up)
    return p


def _err(msg: str) -> None:
    print(f"ferry kernel: {msg}", file=sys.stderr)


def load_agent_config(path: Path, role: str | None) -> OuterConfig | InnerConfig:
    """The outer or inner agent's configuration; without ``role``, whichever the file is
    (an outer's [link] has peer_host, an inner's listen_host). ConfigError otherwise."""
    if role is None:
        try:
            with open(path, "rb") as f:
                link = tomllib.load(f).get("link") or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from None
        role = "inner" if isinstance(link, dict) and "listen_host" in link else "outer"
    return load_config(path, OuterConfig if role == "outer" else InnerConfig)


def _from_config(args: argparse.Namespace) -> str | None:
    """Fill the parameters not given from the agent configuration; an error message, or None."""
    try:
        cfg = load_agent_config(args.config, args.role)
    except ConfigError as e:
        return str(e)
    role = "outer" if isinstance(cfg, OuterConfig) else "inner"
    k = cfg.kernel
    peer: str | None
    if isinstance(cfg, OuterConfig):
        port, peer = cfg.link.peer_port, cfg.link.peer_host
    else:
        port, peer = cfg.link.listen_port, (k.peer_addr if k is not None else "") or None
    given = {"role": role, "policy": Path(cfg.agent.policy), "link_port": port, "peer": peer,
             "link_if": (k.link_if if k is not None else "") or cfg.link.interface or None,
             "ingest_if": (k.ingest_if if k is not None else "") or None}
    rev = reverse_of(cfg, role)
    if rev is not None:
        given |= {"reverse_port": rev.port, "reverse_peer": rev.peer, "reverse_if": rev.interface}
    for name, value in given.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return None


_NEEDED = (("policy", "--policy", "[agent] policy"), ("role", "--role", "the kind of configuration"),
           ("link_if", "--link-if", "[kernel] link_if"),
           ("link_port", "--link-port", "[link] peer_port / listen_port"),
           ("peer", "--peer", "[link] peer_host (outer) or [kernel] peer_addr (inner)"))


def cmd_rules(args: argparse.Namespace) -> int:
    if args.config is not None and (wrong := _from_config(args)) is not None:
        _err(wrong)
        return EXIT_USAGE
    missing = [(flag, key) for name, flag, key in _NEEDED if getattr(args, name) is None]
    if missing:
        where = (f"in {args.config}" if args.config is not None
                 else "or --config with the agent's configuration")
        _err("missing " + ", ".join(f"{flag} ({key})" for flag, key in missing) + f": give them {where}")
        return EXIT_USAGE
    if not args.policy.is_dir():
        _err(f"{args.policy}: no such policy folder")
        return EXIT_USAGE
    try:
        plan = load_plan(args.policy)
    except PolicyError as e:
        for problem in e.errors:
            _err(str(problem))
        return EXIT_FAILED
    reverse = None
    if args.reverse_port is not None:
        peer = args.reverse_peer or (args.peer if args.role == "outer" else None)
        if peer is None:
            _err("missing --reverse-peer (the outer agent's [reverse] address): give it with --reverse-port")
            return EXIT_USAGE
        reverse = nft.Reverse(args.reverse_port, peer, args.reverse_if)
    elif args.reverse_peer is not None or args.reverse_if is not None:
        _err("--reverse-peer and --reverse-if need --reverse-port")
        return EXIT_USAGE
    try:
        text = nft.compile_ruleset(plan, args.role, link_if=args.link_if, link_port=args.link_port,
                                   peer_addr=args.peer, ingest_if=args.ingest_if, reverse=reverse)
    except KernelError as e:
        _err(str(e))
        return EXIT_USAGE
    sys.stdout.write(text)
    if args.apply:
        try:
            nft.apply_ruleset(text)
        except KernelError as e:
            _err(str(e))
            return EXIT_FAILED
        _err(f"applied: policy {plan.name} sm3 {plan.hash.hex()} ({args.role})")
    return EXIT_OK


def _wait_for_link(ifname: str, seconds: float) -> bool:
    """Poll for the interface; say once on stderr that we wait, and how long it took."""
    deadline = time.monotonic() + seconds
    said = False
    while not netlink.link_exists(ifname):
        if time.monotonic() >= deadline:
            return False
        if not said:
            _err(f"waiting up to {seconds:g} s for interface {ifname}")
            said = True
        time.sleep(min(_WAIT_POLL, max(0.0, deadline - time.monotonic())))
    if said:
        _err(f"interface {ifname} appeared")
    return True


_WAIT_POLL = 0.2


def cmd_link_up(args: argparse.Namespace) -> int:
    if args.wait < 0:
        _err("--wait must be 0 or more seconds")
        return EXIT_USAGE
    try:
        if args.wait and not _wait_for_link(args.ifname, args.wait):
            _err(f"no interface {args.ifname!r} appeared within {args.wait:g} s")
            return EXIT_USAGE
        state = netlink.bring_up_link(args.role, args.ifname, args.address,
                                      peer_ip=args.peer_ip, peer_mac=args.peer_mac)
    except KernelError as e:
        _err(str(e))
        return EXIT_USAGE
    extra = f" neighbour {state.neighbour[0]} lladdr {state.neighbour[1]} permanent" if state.neighbour else ""
    print(f"{state.ifname}: up {state.address} mac {state.mac}{' noarp' if state.noarp else ''}{extra}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m ferry.kernel.cli rules|link-up ...`` (the same as ``ferry kernel ...``)."""
    parser = argparse.ArgumentParser(prog="ferry")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["kernel", *(sys.argv[1:] if argv is None else argv)])
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
