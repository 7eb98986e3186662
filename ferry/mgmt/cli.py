"""``ferry policy sign | apply | status``: signed bundles to running agents.

    ferry policy sign policy/yiyang --key admin.key [-o yiyang.ferrypolicy]
    ferry policy apply yiyang.ferrypolicy --socket /run/ferry/inner.sock --socket /run/ferry/outer.sock
    ferry policy apply older.ferrypolicy --rollback --socket ... --socket ...
    ferry policy status --socket /run/ferry/inner.sock

Apply to the inner agent first, then the outer: the inner accepts objects
sealed under the previous policy for a grace period after its reload, and
re-checks them under the new one. A bundle signed before the one an agent
runs is refused (older_bundle) unless ``--rollback`` asks for it; the agent
audits the rollback. Exit codes: 0 ok, 1 refused or invalid, 2 usage, I/O or
an agent that cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ferry import limits
from ferry.crypto import CryptoError
from ferry.crypto.keys import load_private_key
from ferry.durable import replace_durably
from ferry.mgmt.client import ManagementClient, ManagementError
from ferry.policy import PolicyError, compile_policy, parse_policy, policy_hash, read_policy_files
from ferry.policy.bundle import BUNDLE_SUFFIX, BundleError, make_bundle, parse_bundle, policy_files

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def read_bundle_files(directory: str | os.PathLike[str]) -> dict[str, bytes]:
    """A policy folder's top-level *.yaml plus tests/*.yaml, as bundle names -> bytes."""
    base = Path(directory)
    files = dict(read_policy_files(base))
    tests = base / "tests"
    if tests.is_dir():
        files.update({f"tests/{n}": c for n, c in read_policy_files(tests).items()})
    return files


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "-"


def _err(msg: str) -> None:
    print(f"ferry policy: {msg}", file=sys.stderr)


def cmd_sign(args) -> int:
    directory = Path(args.dir)
    if not directory.is_dir():
        _err(f"{directory}: not a policy folder")
        return EXIT_USAGE
    try:
        files = read_bundle_files(directory)
    except PolicyError as e:
        _err(str(e))
        return EXIT_USAGE
    try:
        top = policy_files(files)
        plan = compile_policy(parse_policy(top, base=str(directory)), policy_hash(top))
    except PolicyError as e:
        _err(f"not signing an invalid policy: {e}")
        return EXIT_FAILED
    try:
        key = load_private_key(Path(args.key))
    except CryptoError as e:
        _err(str(e))
        return EXIT_USAGE
    try:
        bundle = make_bundle(files, key, time.time())
    except BundleError as e:
        _err(str(e))
        return EXIT_FAILED
    out = Path(args.output) if args.output else Path(directory.resolve().name + BUNDLE_SUFFIX)
    try:
        replace_durably(out, bundle.SerializeToString(deterministic=True), 0o644)
    except OSError as e:
        _err(f"cannot write {out}: {e.strerror}")
        return EXIT_USAGE
    print(f"{out}: policy {plan.name} sm3 {plan.hash.hex()} signed by {bundle.signer_key_id.hex()} "
          f"({len(files)} files)")
    return EXIT_OK


def _read_bundle(path: Path):
    with open(path, "rb") as f:
        data = f.read(limits.POLICY_BUNDLE_MAX + 1)
    return parse_bundle(data)


def cmd_apply(args) -> int:
    try:
        bundle = _read_bundle(Path(args.bundle))
    except OSError as e:
        _err(f"cannot read {args.bundle}: {e.strerror}")
        return EXIT_USAGE
    except BundleError as e:
        _err(f"{args.bundle}: {e}")
        return EXIT_FAILED
    for sock in args.socket:
        try:
            with ManagementClient(sock, timeout=args.timeout) as c:
                r = c.apply_policy(bundle, rollback=args.rollback)
        except ManagementError as e:
            _err(f"not applied: {e}")
            if sock != args.socket[-1]:
                _err(f"stopped; not tried: {', '.join(args.socket[args.socket.index(sock) + 1:])}")
            return EXIT_FAILED if e.refused else EXIT_USAGE
        what = ("rolled back" if r.rollback else "applied") if r.changed else "already running"
        print(f"{sock}: {r.role} agent {r.agent}: policy {r.policy_name} {what}: "
              f"{r.old_hash.hex()} -> {r.new_hash.hex()} (signer {r.signer_key_id.hex()[:16]}, "
              f"signed {_iso(r.signed_at)}{', was ' + _iso(r.previous_signed_at) if r.rollback else ''})")
    return EXIT_OK


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d" if d else "") + f"{h:02d}h{m:02d}m{s:02d}s"


def status_dict(sock: str, s) -> dict:
    """One agent's status as `--json` prints it (times: ISO 8601 UTC and seconds since the epoch)."""
    p = s.policy
    return {
        "socket": sock, "role": s.role, "name": s.name,
        "policy": {"name": p.name, "sm3": p.hash.hex(), "source": p.source,
                   "signer": p.signer_key_id.hex() or None, "applied": _iso(p.applied_at),
                   "signed": _iso(p.signed_at), "signed_at": p.signed_at, "stored": p.stored or None},
        "audit": "ok" if s.audit_available else "down",
        "started": _iso(s.started_at), "started_at": s.started_at, "uptime_s": round(s.uptime, 3),
        "link": ({"state": s.link.state, "since": _iso(s.link.since), "since_at": s.link.since,
                  "detail": s.link.detail} if s.HasField("link") else None),
        "lanes": {lane: dict(sorted(c.counters.items())) for lane, c in sorted(s.lanes.items())},
        "counters": dict(sorted(s.counters.items())),
    }


def _print_status(sock: str, s) -> None:
    p = s.policy
    signer = p.signer_key_id.hex()[:16] if p.signer_key_id else "-"
    print(f"{sock}: {s.role} agent {s.name}: policy {p.name} sm3 {p.hash.hex()} source {p.source} "
          f"signer {signer} signed {_iso(p.signed_at)} applied {_iso(p.applied_at)} "
          f"audit {'ok' if s.audit_available else 'DOWN'}")
    link = (f"link {s.link.state} since {_iso(s.link.since)} ({s.link.detail})" if s.HasField("link")
            else "link unknown")
    print(f"  up {_duration(s.uptime)} (started {_iso(s.started_at)}); {link}")
    for lane, c in sorted(s.lanes.items()):
        print(f"  {lane}: " + " ".join(f"{k}={v}" for k, v in sorted(c.counters.items())))
    print("  all: " + " ".join(f"{k}={v}" for k, v in sorted(s.counters.items())))


def cmd_status(args) -> int:
    rc = EXIT_OK
    out: list[dict] = []
    for sock in args.socket:
        try:
            with ManagementClient(sock, timeout=args.timeout) as c:
                s = c.get_status()
        except ManagementError as e:
            _err(str(e))
            rc = EXIT_USAGE
            out.append({"socket": sock, "error": str(e)})
            continue
        if args.json:
            out.append(status_dict(sock, s))
        else:
            _print_status(sock, s)
    if args.json:
        print(json.dumps(out, indent=2))
    return rc


def add_policy_commands(psub) -> None:
    """Register ``sign``, ``apply`` and ``status`` under ``ferry policy``."""
    sign = psub.add_parser("sign", help="sign a policy folder into a bundle (SM2)")
    sign.add_argument("dir", help="policy folder (policy.yaml, tests/*.yaml)")
    sign.add_argument("--key", required=True, help="the administrator's SM2 private key (PKCS#8 PEM)")
    sign.add_argument("-o", "--output", help="bundle file to write (default: ./<folder name>.ferrypolicy)")
    sign.set_defaults(func=cmd_sign)

    apply = psub.add_parser("apply", help="apply a signed bundle to running agents (inner first, then outer)")
    apply.add_argument("bundle", help="a .ferrypolicy file from 'ferry policy sign'")
    apply.add_argument("--socket", action="append", required=True,
                       help="an agent's management socket; repeat, in order: inner agent first, then outer")
    apply.add_argument("--rollback", action="store_true",
                       help="allow a bundle signed before the one the agents run (audited as a rollback)")
    apply.add_argument("--timeout", type=float, default=limits.MGMT_CALL_TIMEOUT, help=argparse.SUPPRESS)
    apply.set_defaults(func=cmd_apply)

    status = psub.add_parser("status", help="the policy, uptime, link state and per-lane counters of running agents")
    status.add_argument("--socket", action="append", required=True, help="an agent's management socket; repeat")
    status.add_argument("--json", action="store_true",
                        help="print a JSON list, one object per socket (an unreachable one: its error)")
    status.add_argument("--timeout", type=float, default=limits.MGMT_CALL_TIMEOUT, help=argparse.SUPPRESS)
    status.set_defaults(func=cmd_status)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m ferry.mgmt.cli policy ...``) until the top level wires it."""
    p = argparse.ArgumentParser(prog="ferry")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    pol = sub.add_parser("policy")
    psub = pol.add_subparsers(dest="policy_command", metavar="ACTION")
    psub.required = True
    add_policy_commands(psub)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
