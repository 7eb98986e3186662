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
