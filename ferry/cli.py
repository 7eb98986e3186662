"""The ``ferry`` command line.

Exit codes: 0 success; 1 the check failed (tampered trail, unaccounted
objects, invalid policy, a demo where something went wrong); 2 usage,
configuration or I/O errors.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ferry import __version__
from ferry.agents import inner as inner_agent
from ferry.agents import outer as outer_agent
from ferry.agents.common import setup_logging
from ferry.config import ConfigError, InnerConfig, OuterConfig, load_config
from ferry.audit import AuditError
from ferry.audit.cli import add_parser as add_audit
from ferry.crypto import CryptoError
from ferry.crypto.keys import init_keys
from ferry.demo import run_demo
from ferry.kernel import KernelError
from ferry.kernel.cli import add_parser as add_kernel
from ferry.mgmt.cli import add_policy_commands
from ferry.mgmt.client import ManagementError
from ferry.mgmt.ops import _check_targets, _connection_args, connect, targets
from ferry.mgmt.ops import add_commands as add_ops
from ferry.policy import PolicyError
from ferry.policy.cli import add_parser as add_policy
from ferry.provision import add_parser as add_provision

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _cmd_keys_init(args: argparse.Namespace) -> int:
    try:
        written = init_keys(Path(args.dir), tuple(args.names) if getattr(args, "names", None) else ("outer", "inner"))
    except CryptoError as e:
        print(f"ferry keys init: {e}", file=sys.stderr)
        return EXIT_USAGE
    for p in written:
        print(p)
    return EXIT_OK


def _run_agent(args: argparse.Namespace, role: str) -> int:
    setup_logging(args.verbose)
    try:
        cfg = load_config(Path(args.config), OuterConfig if role == "outer" else InnerConfig)
    except ConfigError as e:
        print(f"ferry {role}: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if isinstance(cfg, OuterConfig):
            return outer_agent.main(cfg)
        return inner_agent.main(cfg)
    except (ConfigError, CryptoError, PolicyError, AuditError, KernelError, OSError) as e:
        # start-up failures: key and policy file modes, stored bundle, keys, policy, audit trail, sockets
        print(f"ferry {role}: {e}", file=sys.stderr)
        return EXIT_USAGE


ASK_REQUESTS = ("start_stream", "stop_stream", "ptz", "catalog_query")


def _cmd_ask(args: argparse.Namespace) -> int:
    """``ferry ask``: one reverse-lane request through an inner agent; 0 accepted, 1 refused, 2 usage."""
    params: dict[str, str] = {}
    for p in args.param or ():
        key, sep, value = p.partition("=")
        if not sep or not key:
            print(f"ferry ask: --param {p!r}: expected KEY=VALUE", file=sys.stderr)
            return EXIT_USAGE
        if key in params:
            print(f"ferry ask: --param {key} given twice", file=sys.stderr)
            return EXIT_USAGE
        params[key] = value
    if not _check_targets("ask", args):
        return EXIT_USAGE
    found = targets(args)
    if len(found) != 1:
        print("ferry ask: name exactly one inner agent (--socket or --address)", file=sys.stderr)
        return EXIT_USAGE
    kind, where = found[0]
    try:
        with connect(args, kind, where) as c:
            r = c.ask(args.request, args.device_id, params, args.operator, address=args.source,
                      destination=args.to or "")
    except ManagementError as e:
        print(f"ferry ask: {e}", file=sys.stderr)
        return EXIT_USAGE
    if r.accepted:
        print(f"accepted: object {r.object_id} sent on the reverse link (rule {r.rule}): {r.reason}")
        return EXIT_OK
    print(f"refused ({r.code}, rule {r.rule or '-'}): {r.reason}")
    return EXIT_FAILED


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(Path(args.workdir) if args.workdir else None, keep=args.keep, timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ferry", description="ferry: a one-way, policy-checked boundary access appliance.",
                                epilog="Exit codes: 0 ok, 1 check failed, 2 usage/configuration/I-O error.")
    p.add_argument("--version", action="version", version=f"ferry {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    keys = sub.add_parser("keys", help="SM2 key management")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    ksub.required = True
    kinit = ksub.add_parser("init", help="write the outer and inner SM2 key pairs (PEM)")
    kinit.add_argument("--dir", required=True, help="folder for outer.key outer.pub inner.key inner.pub")
    kinit.set_defaults(func=_cmd_keys_init)
    knew = ksub.add_parser("new", help="write other named SM2 key pairs, e.g. the policy administrator's signing key")
    knew.add_argument("names", nargs="+", metavar="NAME", help="key name: writes NAME.key and NAME.pub")
    knew.add_argument("--dir", required=True, help="folder for the key files")
    knew.set_defaults(func=_cmd_keys_init)

    for role, text in (("outer", "run the outer agent (internet / e-government side)"),
                       ("inner", "run the inner agent (police video network side)")):
        a = sub.add_parser(role, help=text)
        a.add_argument("--config", required=True, help="agent configuration file (TOML)")
        a.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        a.set_defaults(func=lambda args, role=role: _run_agent(args, role))

    add_audit(sub)
    add_policy(sub, more=add_policy_commands)
    add_kernel(sub)
    add_provision(sub)
    add_ops(sub)

    ask = sub.add_parser(
        "ask", help="send a reverse-lane request (start/stop a stream, PTZ, catalog query) through the inner agent",
        description="Ask the outer side, through the inner agent's reverse ferry, for a stream, a stop, a PTZ move "
                    "or a catalog query. The inner agent checks the request against the policy's reverse rules, "
                    "the request's closed schema and the rate limits per operator and per device, audits it and "
                    "sends it; the outer agent checks it again. Parameters: start_stream transport=udp|tcp; "
                    "stop_stream stream=ID; ptz cmd=<16 hex digits, a GB/T 28181 PTZCmd> or "
                    "direction=left|right|up|down|upleft|upright|downleft|downright|zoomin|zoomout|stop "
                    "[speed=1-255]; catalog_query none.",
        epilog="Exit codes: 0 accepted (sent on the reverse link), 1 refused (the reason is printed), "
               "2 usage or the agent could not be reached.")
    ask.add_argument("request", choices=ASK_REQUESTS, help="what to ask for")
    ask.add_argument("device_id", metavar="DEVICE", help="the GB/T 28181 device ID (20 digits)")
    ask.add_argument("--operator", required=True, help="who asks (recorded, rate-limited per operator)")
    ask.add_argument("--param", action="append", metavar="KEY=VALUE", help="a request parameter; repeat")
    ask.add_argument("--from", dest="source", default="127.0.0.1", metavar="ADDRESS",
                     help="the requesting workstation or platform, matched by the reverse rule's source "
                          "(default 127.0.0.1: the inner agent's own host)")
    ask.add_argument("--to", metavar="DESTINATION",
                     help="the policy destination (default: the inner agent's [reverse] destination)")
    _connection_args(ask)
    ask.set_defaults(func=_cmd_ask)

    demo = sub.add_parser("demo", help="run an outer and an inner agent on this machine and push files through")
    demo.add_argument("--workdir",
                      help="folder for keys, policy, spools and audit trails (default: a new temporary folder)")
    demo.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    demo.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for every file (default 60)")
    demo.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except KeyboardInterrupt:
        return 130
