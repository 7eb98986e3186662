"""``ferry audit verify|reconcile|export``: the auditor's commands.

Exit status: 0 intact / all accounted, 1 tampered, incomplete or unaccounted,
2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from ferry.audit.errors import AuditError, RecordError
from ferry.audit.export import export_csv, export_jsonl
from ferry.audit.reconcile import INNER_EVENTS, OUTER_EVENTS, reconcile
from ferry.audit.records import Record, parse_line
from ferry.audit.verify import TRAIL_FILE, VerifyResult, iter_file_lines, verify_dir
from ferry.crypto import CryptoError, SM2PublicKey, load_public_key

EXIT_OK, EXIT_BAD, EXIT_ERROR = 0, 1, 2


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``audit`` and its subcommands on an argparse subparsers object."""
    p = subparsers.add_parser("audit", help="verify, reconcile and export audit trails",
                              description=__doc__)
    sub = p.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)

    v = sub.add_parser("verify", help="prove a trail complete and untampered")
    v.add_argument("dir", type=Path, help="trail directory (holds audit.jsonl)")
    v.add_argument("--key", type=Path, help="the agent's SM2 public key (PEM); "
                   "default: DIR/signer.pub")
    v.add_argument("--open-tail", action="store_true",
                   help="accept records after the last checkpoint (a trail still being written)")
    v.set_defaults(func=cmd_verify)

    r = sub.add_parser("reconcile", help="account for every object sent, object by object")
    r.add_argument("outer_dir", type=Path)
    r.add_argument("inner_dir", type=Path)
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.set_defaults(func=cmd_reconcile)

    e = sub.add_parser("export", help="export a verified trail")
    e.add_argument("dir", type=Path)
    e.add_argument("--format", choices=("csv", "jsonl"), required=True)
    e.add_argument("-o", "--output", type=Path, help="output file (default: stdout)")
    e.add_argument("--key", type=Path, help="SM2 public key (PEM); default: DIR/signer.pub")
    e.set_defaults(func=cmd_export)
    return p


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _key(path: Path | None) -> SM2PublicKey | None:
    return None if path is None else load_public_key(path)


def describe(path: Path, r: VerifyResult) -> str:
    """Words for an auditor: intact, or which record is bad and why."""
    lines = []
    if r.ok:
        lines.append(f"OK: {path} {r.reason}: {r.records} records, {r.checkpoints} signed "
                     f"checkpoints, agent {r.agent}, key_id {r.key_id} ({r.key_source})")
    else:
        where = "" if r.first_bad is None else f" at line {r.first_bad_line} (seq {r.first_bad})"
        if r.claimed_seq is not None and r.claimed_seq != r.first_bad:
            where += f", which says seq {r.claimed_seq}"
        lines.append(f"FAILED: {path}{where}: {r.reason}")
        lines.append(f"  {r.records} records before it verified; the last signed checkpoint "
                     f"covers records 0..{r.signed - 1}" if r.signed else
                     f"  {r.records} records before it verified; none is covered by a checkpoint")
    lines += [f"warning: {w}" for w in r.warnings]
    return "\n".join(lines)


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        r = verify_dir(args.dir, _key(args.key), allow_open_tail=args.open_tail)
    except (AuditError, CryptoError) as exc:
        _err(str(exc))
        return EXIT_ERROR
    print(describe(args.dir / TRAIL_FILE, r))
    return EXIT_OK if r.ok else EXIT_BAD


def _collect(directory: Path, keep: tuple[str, ...]) -> tuple[VerifyResult, list[Record]]:
    records: list[Record] = []

    def on_record(rec: Record) -> None:
        if rec["event"] in keep:
            records.append(rec)

    r = verify_dir(directory, None, allow_open_tail=True, on_record=on_record)
    return r, records


def cmd_reconcile(args: argparse.Namespace) -> int:
    try:
        ro, outer = _collect(args.outer_dir, OUTER_EVENTS)
        ri, inner = _collect(args.inner_dir, INNER_EVENTS)
    except (AuditError, CryptoError) as exc:
        _err(str(exc))
        return EXIT_ERROR
    for d, r, want in ((args.outer_dir, ro, "outer"), (args.inner_dir, ri, "inner")):
        if not r.ok:
            print(describe(d / TRAIL_FILE, r), file=sys.stderr)
            return EXIT_BAD
        if r.agent not in (None, want):
            _err(f"{d} holds the {r.agent} agent's trail, expected the {want} agent's")
            return EXIT_ERROR
    report = reconcile(outer, inner)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True, ensure_ascii=False))
        return report.exit_status
    print(f"{'OK' if report.ok else 'NOT RECONCILED'}: {report.sent} objects sent, "
          f"{len(report.delivered)} delivered, {len(report.refused_inner)} refused by the inner "
          f"agent, {len(report.lost)} lost on the link, {len(report.refused_outer)} refused "
          "by the outer agent")
    streams, bad = report.streams, report.streams_not_reconciled
    print(f"{len(streams)} video stream{'' if len(streams) == 1 else 's'}: "
          f"{sum(s['status'] == 'reconciled' for s in streams)} reconciled, "
          f"{sum(s['status'] == 'lost_on_link' for s in streams)} with objects lost on the link, "
          f"{len(bad)} not reconciled")
    for st in bad:
        print(f"stream {st['status']}: {st['flow']} (outer seq {st.get('seq')}): sent {st['sent']}, "
              f"received by the inner agent {st['received']} in {st['inner_streams']} inner stream(s), "
              f"missing {st['missing']}, of which the trail says lost on the link {st['lost_on_link']}")
    for s in report.unaccounted:
        print(f"unaccounted: object {s['object_id']} sent at {s.get('time')} "
              f"(outer seq {s.get('seq')}, lane {s.get('lane')}, flow {s.get('flow')}, "
              f"epoch {s.get('epoch')}, blocks {s.get('blocks')}) has no inner outcome")
    for u in report.unexpected:
        print(f"ALARM unexpected: inner {u['event']} of object {u['object_id']} "
              f"(inner seq {u['seq']}) that the outer agent never sent")
    for oid in report.duplicates:
        print(f"ALARM duplicate: object {oid} delivered more than once")
    for oid in report.delivered_and_lost:
        print(f"ALARM delivered and lost: object {oid} is both delivered and lost in the inner trail")
    if report.unmatched:
        print(f"note: {len(report.unmatched)} inner refusal/loss records name objects without an outer "
              "object_sent (lanes accounted per stream, such as video: see their stream records)")
    return report.exit_status


def cmd_export(args: argparse.Namespace) -> int:
    try:
        r = verify_dir(args.dir, _key(args.key), allow_open_tail=True)
    except (AuditError, CryptoError) as exc:
        _err(str(exc))
        return EXIT_ERROR
    if not r.ok:
        print(describe(args.dir / TRAIL_FILE, r), file=sys.stderr)
        return EXIT_BAD
    for w in r.warnings:
        print(f"warning: {w}", file=sys.stderr)
    try:
        with open(args.dir / TRAIL_FILE, "rb") as f:
            lines = (line for _, (_, line) in zip(range(r.records), iter_file_lines(f)))
            if args.format == "jsonl":
                out = open(args.output, "wb") if args.output else sys.stdout.buffer
                try:
                    export_jsonl(lines, out)
                finally:
                    if args.output:
                        out.close()
            else:
                out = (open(args.output, "w", encoding="utf-8", newline="") if args.output
                       else io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="",
                                             write_through=True))
                try:
                    export_csv((parse_line(line) for line in lines), out)
                finally:
                    if args.output:
                        out.close()
                    else:
                        out.detach()
    except (OSError, RecordError) as exc:
        _err(str(exc))
        return EXIT_ERROR
    return EXIT_OK
