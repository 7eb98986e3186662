"""``ferry kernel rules|link-up``: the host's kernel side from the policy.

    ferry kernel rules --policy DIR --role outer --link-if ferry0 --link-port 47000 --peer 10.0.9.2 [--apply]
    ferry kernel link-up --role outer --if ferry0 --address 10.0.9.1/30 --peer-ip 10.0.9.2 --peer-mac 02:..

Exit status: 0 ok; 1 the policy is invalid or nft refused the ruleset;
2 usage, parameter, netlink or I/O error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ferry.kernel import KernelError
from ferry.kernel import netlink, nft
from ferry.policy import PolicyError, load_plan

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``kernel`` and its subcommands on an argparse subparsers object."""
    p = subparsers.add_parser("kernel", help="nftables rules and the ferry link from the policy",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kernel_command", metavar="ACTION", required=True)

    r = sub.add_parser("rules", help="print (and with --apply, apply) the host's nftables ruleset")
    r.add_argument("--policy", required=True, type=Path, help="policy folder")
    r.add_argument("--role", required=True, choices=("outer", "inner"))
    r.add_argument("--link-if", required=True, help="the ferry link's interface")
    r.add_argument("--link-port", required=True, type=int, help="the inner agent's UDP port on the link")
    r.add_argument("--peer", required=True,
                   help="the other end of the link (outer: the inner agent's address; inner: the outer's)")
    r.add_argument("--ingest-if", help="outer: the only interface ingest may arrive on "
                   "(default: any but the link and lo)")
    r.add_argument("--apply", action="store_true", help="apply the ruleset in one nftables transaction")
    r.set_defaults(func=cmd_rules)

    u = sub.add_parser("link-up", help="bring the ferry link up (address, no IPv6, static neighbour / no ARP)")
    u.add_argument("--role", required=True, choices=("outer", "inner"))
    u.add_argument("--if", dest="ifname", required=True, help="the ferry link's interface")
    u.add_argument("--address", required=True, help="this host's address on the link, ADDRESS/PREFIX")
    u.add_argument("--peer-ip", help="outer: the inner host's address on the link")
    u.add_argument("--peer-mac", help="outer: the inner host's MAC on the link")
    u.set_defaults(func=cmd_link_up)
    return p


def _err(msg: str) -> None:
    print(f"ferry kernel: {msg}", file=sys.stderr)


def cmd_rules(args: argparse.Namespace) -> int:
    try:
        plan = load_plan(args.policy)
    except PolicyError as e:
        for problem in e.errors:
            _err(str(problem))
        return EXIT_FAILED
    try:
        text = nft.compile_ruleset(plan, args.role, link_if=args.link_if, link_port=args.link_port,
                                   peer_addr=args.peer, ingest_if=args.ingest_if)
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


def cmd_link_up(args: argparse.Namespace) -> int:
    try:
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
