"""``ferry status``, ``ferry flows`` and ``ferry tail``: what running agents say, for a person.

    ferry status --socket /run/ferry/inner.sock --socket /run/ferry/outer.sock [--json]
    ferry flows --socket /run/ferry/outer.sock [--json]
    ferry status --address 192.0.2.10:7443 --tls-ca ca.pem --tls-cert me.pem --tls-key me.key
    ferry tail --socket /run/ferry/inner.sock -n 20 [--follow]

A table for a person, ``--json`` for scripts (a list, one object per agent; an agent that
cannot be reached: its error). Exit codes: 0 every agent answered, 2 one could not be reached
or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ferry import limits
from ferry.mgmt.cli import _duration, _iso, status_dict
from ferry.mgmt.client import ManagementClient, ManagementError, Tls

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _err(cmd: str, msg: str) -> None:
    print(f"ferry {cmd}: {msg}", file=sys.stderr)


def targets(args) -> list[tuple[str, str]]:
    """(kind, where) for every --socket and --address, in order."""
    return [("socket", s) for s in args.socket or ()] + [("address", a) for a in args.address or ()]


@contextmanager
def connect(args, kind: str, where: str) -> Iterator[ManagementClient]:
    if kind == "socket":
        c = ManagementClient(where, timeout=args.timeout)
    else:
        tls = Tls(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca and args.tls_cert and args.tls_key else None
        c = ManagementClient(timeout=args.timeout, address=where, tls=tls)
    try:
        yield c
    finally:
        c.close()


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()   # noqa: E731
    return "\n".join([line(header), *(line(r) for r in rows)])


def _check_targets(cmd: str, args) -> bool:
    if not targets(args):
        _err(cmd, "name at least one agent: --socket PATH or --address HOST:PORT")
        return False
    if args.address and not (args.tls_ca and args.tls_cert and args.tls_key):
        _err(cmd, "--address needs --tls-ca, --tls-cert and --tls-key (the management port takes mutual TLS only)")
        return False
    return True


def full_status(where: str, c: ManagementClient) -> dict:
    s = c.get_status()
    d = status_dict(where, s)
    d["health"] = s.health or c.health()
    d["key_epoch"] = s.key_epoch
    d["policy"]["serial"] = d["policy"]["signed"]
    return d


def _ask_each(command: str, args, ask) -> tuple[int, list[dict]]:
    """``ask(where, client)`` of every agent named on the command line: the answers, and an
    ``{kind: where, "error": ...}`` entry (exit 2) for each agent that could not be asked."""
    rc, out = EXIT_OK, []
    for kind, where in targets(args):
        try:
            with connect(args, kind, where) as c:
                out.append(ask(where, c))
        except ManagementError as e:
            _err(command, str(e))
            rc = EXIT_USAGE
            out.append({kind: where, "error": str(e)})
    return rc, out


def cmd_status(args) -> int:
    if not _check_targets("status", args):
        return EXIT_USAGE
    rc, out = _ask_each("status", args, full_status)
    if args.json:
        print(json.dumps(out, indent=2))
        return rc
    ok = [d for d in out if "error" not in d]
    rows = [[d["role"], d["name"], d["health"], (d["link"] or {}).get("state", "?"), str(d["key_epoch"]),
             d["policy"]["name"], d["policy"]["sm3"][:16], d["policy"]["signed"], d["audit"],
             _duration(d["uptime_s"]), d["socket"]] for d in ok]
    if rows:
        print(table(rows, ["ROLE", "AGENT", "HEALTH", "LINK", "KEY EPOCH", "POLICY", "SM3", "SERIAL (SIGNED)",
                           "AUDIT", "UP", "WHERE"]))
    for d in ok:
        link = d["link"]
        print(f"\n{d['role']} {d['name']}: link {link['state']} since {link['since']} ({link['detail']})" if link
              else f"\n{d['role']} {d['name']}: link unknown")
        counters = [[lane, k, str(v)] for lane, cs in d["lanes"].items() for k, v in cs.items()]
        if counters:
            print(table(counters, ["LANE", "COUNTER", "VALUE"]))
    return rc


def flows_dict(where: str, f) -> dict:
    return {"socket": where, "role": f.role, "name": f.name,
            "streams": [{"name": s.name, "stream_id": s.stream_id, "device_id": s.device_id, "source": s.source,
                         "destination": s.destination, "started": _iso(s.started), "started_at": s.started,
                         "access_units": s.access_units, "bytes": s.bytes} for s in f.streams],
            "files": [{"name": x.name, "object_id": x.object_id, "size": x.size, "state": x.state,
                       "received": x.received} for x in f.files]}


def cmd_flows(args) -> int:
    if not _check_targets("flows", args):
        return EXIT_USAGE
    rc, out = _ask_each("flows", args, lambda where, c: flows_dict(where, c.flows()))
    if args.json:
        print(json.dumps(out, indent=2))
        return rc
    ok = [d for d in out if "error" not in d]
    streams = [[d["role"], d["name"], s["name"], s["device_id"], s["source"], s["destination"], s["started"],
                str(s["access_units"]), str(s["bytes"])] for d in ok for s in d["streams"]]
    files = [[d["role"], d["name"], x["name"] or "-", str(x["object_id"]), str(x["size"]), x["state"],
              str(x["received"]) if x["state"] == "receiving" else "-"] for d in ok for x in d["files"]]
    print(f"video streams: {len(streams)}")
    if streams:
        print(table(streams, ["ROLE", "AGENT", "NAME", "DEVICE", "SOURCE", "DESTINATION", "STARTED",
                              "ACCESS UNITS", "BYTES"]))
    print(f"files in flight: {len(files)}")
    if files:
        print(table(files, ["ROLE", "AGENT", "FILE", "OBJECT", "SIZE", "STATE", "RECEIVED"]))
    return rc


def cmd_tail(args) -> int:
    if not _check_targets("tail", args):
        return EXIT_USAGE
    if len(targets(args)) != 1:
        _err("tail", "name one agent (one --socket or one --address)")
        return EXIT_USAGE
    kind, where = targets(args)[0]
    try:
        with connect(args, kind, where) as c:
            for line in c.tail_audit(args.lines, args.follow):
                print(line, flush=True)
    except ManagementError as e:
        _err("tail", str(e))
        return EXIT_USAGE
    return EXIT_OK


def _connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", action="append", help="an agent's management socket ([management] socket); repeat")
    p.add_argument("--address", action="append",
                   help="an agent's TCP management address HOST:PORT ([management] listen), mutual TLS; repeat")
    p.add_argument("--tls-ca", help="CA certificate (PEM) the agents' server certificates chain to")
    p.add_argument("--tls-cert", help="this client's certificate (PEM), issued by the agents' tls_client_ca")
    p.add_argument("--tls-key", help="this client's private key (PEM)")
    p.add_argument("--timeout", type=float, default=limits.MGMT_CALL_TIMEOUT, help=argparse.SUPPRESS)


def add_commands(sub) -> None:
    """Register ``status``, ``flows`` and ``tail`` at the top level of ``ferry``."""
    st = sub.add_parser("status", help="health, link, key epoch, policy and counters of running agents (a table)")
    _connection_args(st)
    st.add_argument("--json", action="store_true", help="print a JSON list, one object per agent")
    st.set_defaults(func=cmd_status)
    fl = sub.add_parser("flows", help="video streams and files in flight on running agents (a table)")
    _connection_args(fl)
    fl.add_argument("--json", action="store_true", help="print a JSON list, one object per agent")
    fl.set_defaults(func=cmd_flows)
    tl = sub.add_parser("tail", help="the last audit records of a running agent, then (--follow) new ones")
    _connection_args(tl)
    tl.add_argument("-n", "--lines", type=int, default=10,
                    help=f"records from the end of the trail (default 10, at most {limits.AUDIT_TAIL_MAX})")
    tl.add_argument("-f", "--follow", action="store_true", help="go on printing records as they are written")
    tl.set_defaults(func=cmd_tail)
