"""``ferry audit verify|reconcile|export``: the auditor's commands.

Exit status: 0 intact / all accounted, 1 tampered, incomplete or unaccounted,
2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from ferry.audit.errors import AuditError
from ferry.audit.errors import RecordError
from ferry.audit.export import RangeSelector, export_csv, export_jsonl, export_syslog, lines_in
from ferry.audit.reconcile import INNER_EVENTS, OUTER_EVENTS, reconcile
from ferry.audit.records import Record, format_time, parse_line
from ferry.audit.syslog import AgentChoice, SyslogError, read_messages, select_agent
from ferry.audit.verify import TRAIL_FILE, VerifyResult, iter_file_lines, verify_dir, verify_lines
from ferry.crypto import CryptoError, SM2PublicKey, load_public_key

EXIT_OK, EXIT_BAD, EXIT_ERROR = 0, 1, 2


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``audit`` and its subcommands on an argparse subparsers object."""
    p = subparsers.add_parser("audit", help="verify, reconcile and export audit trails",
                              description="The auditor's commands: verify, reconcile and export audit trails. "
                              "Exit status: 0 intact / all accounted, 1 tampered, incomplete or unaccounted, "
                              "2 usage or I/O error.")
    sub = p.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)

    v = sub.add_parser("verify", help="prove a trail, an exported range or a log server's copy untampered",
                       description="DIR: a whole trail (from seq 0). FILE: an export (jsonl, or syslog "
                       "with --syslog) or a log server's file (--syslog); a range is proved from its first "
                       "record's prev hash through its last checkpoint (README, Audit).")
    v.add_argument("dir", type=Path, metavar="DIR|FILE", help="trail directory (holds audit.jsonl), or a file")
    v.add_argument("--key", type=Path, help="the agent's SM2 public key (PEM); "
                   "default: DIR/signer.pub (required for a FILE)")
    v.add_argument("--open-tail", action="store_true",
                   help="accept records after the last checkpoint (a trail still being written)")
    v.add_argument("--syslog", action="store_true",
                   help="FILE holds syslog messages: an export --format syslog, or a log server's file "
                   "(one MSG or RFC 5424 message a line); identical duplicates are dropped")
    v.add_argument("--agent", help="with --syslog: the agent whose records to verify ('outer', 'inner' or "
                   "its agent_name), when the file holds several")
    v.set_defaults(func=cmd_verify)

    r = sub.add_parser("reconcile", help="account for every object sent, object by object")
    r.add_argument("outer_dir", type=Path, metavar="OUTER", help="the outer agent's trail directory")
    r.add_argument("inner_dir", type=Path, metavar="INNER", help="the inner agent's trail directory")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.set_defaults(func=cmd_reconcile)

    e = sub.add_parser("export", help="export a verified trail")
    e.add_argument("dir", type=Path, help="trail directory (holds audit.jsonl)")
    e.add_argument("--format", choices=("csv", "jsonl", "syslog"), default="jsonl",
                   help="jsonl: the lines as stored, verifiable (default); csv: fixed columns for spreadsheets; "
                   "syslog: RFC 5424 messages in RFC 6587 octet-counting frames, verifiable with verify --syslog")
    e.add_argument("--since", type=_when, metavar="T",
                   help="first record at or after T (ISO 8601, UTC unless it says, or seconds since the epoch)")
    e.add_argument("--until", type=_when, metavar="T",
                   help="last record at or before T; the export goes on to the checkpoint that signs it")
    e.add_argument("-o", "--output", type=Path, help="output file (default: stdout)")
    e.add_argument("--key", type=Path, help="SM2 public key (PEM); default: DIR/signer.pub")
    e.set_defaults(func=cmd_export)
    return p


class _Progress:
    """A count of records on stderr, rewritten in place about 5 times a second, only when stderr is a
    terminal (a log or a pipe gets nothing); ``done`` leaves the final count on its own line."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label, self.total, self.n = label, total, 0
        self.on = sys.stderr.isatty()
        self.shown = 0.0

    def tick(self, *_: object) -> None:
        self.n += 1
        if self.on and (self.n == 1 or (self.n & 1023 == 0 and time.monotonic() - self.shown >= 0.2)):
            self._show()

    def _show(self, end: str = "") -> None:
        pct = f" ({100 * self.n // self.total}%)" if self.total else ""
        sys.stderr.write(f"\r{self.label}: {self.n:,} records{pct}{end}")
        sys.stderr.flush()
        self.shown = time.monotonic()

    def done(self) -> None:
        if self.on and self.n:
            self._show("\n")


_EPOCH = re.compile(r"\d+(\.\d+)?\Z")


def _when(text: str) -> float:
    """--since/--until: ISO 8601 (no zone: UTC) or seconds since the epoch."""
    if _EPOCH.match(text):
        return float(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither ISO 8601 (2026-12-06T09:00:00Z) nor seconds "
                                         "since the epoch") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _key(path: Path | None) -> SM2PublicKey | None:
    return None if path is None else load_public_key(path)


def describe(path: Path, r: VerifyResult) -> str:
    """Words for an auditor: intact, or which record is bad and why."""
    lines = []
    if r.ok and r.first:
        lines.append(f"OK: {path} {r.reason}: a range of {r.records} records, seq {r.first} to "
                     f"{r.first + r.records - 1}, {r.checkpoints} signed checkpoints, agent {r.agent}, key_id "
                     f"{r.key_id} ({r.key_source})")
        if r.signed > r.first:
            lines.append(f"  it proves records {r.first}..{r.signed - 1} are as the agent signed them, in order, "
                         f"none missing or added between them (anchored at the prev hash of seq {r.first}); "
                         f"it says nothing about records before seq {r.first}")
        else:
            lines.append("  no checkpoint in the range signs any of it: nothing is proved (an open tail)")
    elif r.ok:
        lines.append(f"OK: {path} {r.reason}: {r.records} records, {r.checkpoints} signed "
                     f"checkpoints, agent {r.agent}, key_id {r.key_id} ({r.key_source})")
    else:
        where = "" if r.first_bad is None else f" at line {r.first_bad_line} (seq {r.first_bad})"
        if r.claimed_seq is not None and r.claimed_seq != r.first_bad:
            where += f", which says seq {r.claimed_seq}"
        lines.append(f"FAILED: {path}{where}: {r.reason}")
        if r.last_time is not None and r.signed < r.records and r.first_bad == r.signed:
            lines.append(f"  the newest record was written {_age(r.last_time)} ago ({r.last_time})")
        lines.append(f"  {r.records} records before it verified; the last signed checkpoint "
                     f"covers records 0..{r.signed - 1}" if r.signed else
                     f"  {r.records} records before it verified; none is covered by a checkpoint")
    lines += [f"warning: {w}" for w in r.warnings]
    return "\n".join(lines)


def _age(iso: str, now: float | None = None) -> str:
    """How long ago an ISO 8601 record time was, in words (s, min, h, days)."""
    then = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
    secs = max(0.0, (time.time() if now is None else now) - then)
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if secs >= 2 * size:
            return f"{secs / size:.0f} {unit}"
    return f"{secs:.0f} s"


def cmd_verify(args: argparse.Namespace) -> int:
    if args.syslog or args.dir.is_file():
        return _verify_file(args)
    if args.agent:
        _err("--agent goes with --syslog")
        return EXIT_ERROR
    progress = _Progress(f"verifying {args.dir / TRAIL_FILE}")
    try:
        r = verify_dir(args.dir, _key(args.key), allow_open_tail=args.open_tail, on_record=progress.tick)
    except (AuditError, CryptoError) as exc:
        _err(str(exc))
        return EXIT_ERROR
    finally:
        progress.done()
    print(describe(args.dir / TRAIL_FILE, r))
    return EXIT_OK if r.ok else EXIT_BAD


def _verify_file(args: argparse.Namespace) -> int:
    """An exported range (jsonl, or syslog frames) or a log server's copy (--syslog): the records
    in seq order (identical duplicates dropped), proved as a range anchored at the first one's prev."""
    path: Path = args.dir
    if args.key is None:
        _err(f"{path} is a file: give the agent's public key with --key (its audit_dir/signer.pub, "
             "compared with the provisioned key)")
        return EXIT_ERROR
    try:
        key = load_public_key(args.key)
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        _err(f"cannot read {path}: {exc.strerror or exc}")
        return EXIT_ERROR
    except CryptoError as exc:
        _err(f"--key: {exc}")
        return EXIT_ERROR
    notes: list[str] = []
    try:
        if args.syslog:
            picked, names = select_agent(read_messages(data), args.agent)
        else:
            picked, names = select_agent(data.splitlines(), args.agent)
    except AgentChoice as exc:
        _err(f"{path}: {exc}")
        return EXIT_ERROR
    except (SyslogError, RecordError) as exc:
        print(f"FAILED: {path}: {exc}")
        return EXIT_BAD
    if not picked.lines:
        _err(f"{path} holds no records of agent {args.agent!r}; agents there: {', '.join(names) or 'none'}")
        return EXIT_BAD
    if picked.conflict:
        print(f"FAILED: {path}: {picked.conflict}")
        return EXIT_BAD
    if picked.duplicates:
        notes.append(f"  {picked.duplicates} identical duplicate(s) dropped (at-least-once forwarding re-sends "
                     "from its cursor: README, Audit)")
    r = verify_lines(picked.lines, key, allow_open_tail=args.open_tail, range_ok=True)
    print(describe(path, r))
    if r.ok:
        print(f"  records from seq {r.first} to {r.first + r.records - 1}")
    for n in notes:
        print(n)
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
          f"agent, {len(report.lost)} lost on the link, "
          f"{len(report.refused_outer) + report.refused_outer_unnumbered} refused "
          "by the outer agent")
    streams, bad = report.streams, report.streams_not_reconciled
    print(f"{len(streams)} video stream{'' if len(streams) == 1 else 's'}: "
          f"{sum(s['status'] == 'reconciled' for s in streams)} reconciled, "
          f"{sum(s['status'] == 'lost_on_link' for s in streams)} with objects lost on the link, "
          f"{len(bad)} not reconciled")
    if report.reverse_sent or report.reverse_unexpected:
        print(f"reverse ferry: {report.reverse_sent} request{'' if report.reverse_sent == 1 else 's'} sent by "
              f"the inner agent, {len(report.reverse_received)} received, {len(report.reverse_refused)} refused "
              f"by the outer agent, {len(report.reverse_lost)} lost on the reverse link, "
              f"{len(report.reverse_unaccounted)} unaccounted")
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
    for s in report.reverse_unaccounted:
        print(f"unaccounted: reverse request {s['object_id']} ({s.get('request')}) sent by the inner agent at "
              f"{s.get('time')} (inner seq {s.get('seq')}) has no outcome in the outer trail")
    for u in report.reverse_unexpected:
        print(f"ALARM unexpected: outer {u['event']} of reverse request {u['object_id']} "
              f"(outer seq {u['seq']}) that the inner agent never sent")
    for oid in report.duplicates:
        print(f"ALARM duplicate: object {oid} delivered more than once")
    for oid in report.delivered_and_lost:
        print(f"ALARM delivered and lost: object {oid} is both delivered and lost in the inner trail")
    if report.unmatched:
        print(f"note: {len(report.unmatched)} inner refusal/loss records name objects without an outer "
              "object_sent (lanes accounted per stream, such as video: see their stream records)")
    return report.exit_status


def cmd_export(args: argparse.Namespace) -> int:
    progress = _Progress(f"verifying {args.dir / TRAIL_FILE}")
    window = RangeSelector(None if args.since is None else format_time(args.since),
                           None if args.until is None else format_time(args.until))

    def on_record(rec: Record) -> None:
        progress.tick()
        window.feed(rec)

    try:
        r = verify_dir(args.dir, _key(args.key), allow_open_tail=True, on_record=on_record)
    except (AuditError, CryptoError) as exc:
        _err(str(exc))
        return EXIT_ERROR
    finally:
        progress.done()
    if not r.ok:
        print(describe(args.dir / TRAIL_FILE, r), file=sys.stderr)
        return EXIT_BAD
    for w in r.warnings:
        print(f"warning: {w}", file=sys.stderr)
    span = (0, r.records - 1) if args.since is None and args.until is None else window.span()
    if span is None or r.records == 0:
        print(f"warning: no records in {args.dir / TRAIL_FILE} between {window.since or 'the start'} and "
              f"{window.until or 'the end'}: the export is empty", file=sys.stderr)
        span = (0, -1)
    elif span != (0, r.records - 1):
        how = ("up to the checkpoint that signs the last one in the window" if span[1] < r.signed else
               "an open tail: no checkpoint signs its end yet, verify it with --open-tail")
        print(f"exporting records {span[0]}..{span[1]} of {args.dir / TRAIL_FILE} ({how})", file=sys.stderr)
    try:
        with open(args.dir / TRAIL_FILE, "rb") as f, _all_or_nothing(args.output) as out:
            progress = _Progress(f"exporting {args.dir / TRAIL_FILE} as {args.format}", span[1] - span[0] + 1)
            lines = _counted(lines_in((line for _, line in iter_file_lines(f)), span), progress)
            if args.format == "jsonl":
                export_jsonl(lines, out)
            elif args.format == "syslog":
                export_syslog(lines, out)
            else:
                text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
                try:
                    export_csv((parse_line(line) for line in lines), text)
                finally:
                    text.detach()
        progress.done()
    except Exception as exc:    # noqa: BLE001 - whatever failed, the output is removed and the cause named
        progress.done()
        _err(f"export failed, nothing written: {type(exc).__name__}: {exc}")
        return EXIT_ERROR
    return EXIT_OK


def _counted(lines: Iterator[bytes], progress: _Progress) -> Iterator[bytes]:
    for line in lines:
        progress.tick()
        yield line


@contextlib.contextmanager
def _all_or_nothing(output: Path | None) -> Iterator[IO[bytes]]:
    """A binary file that becomes OUTPUT (or is copied to stdout) only if the block ends without an
    exception: a failed export leaves neither a partial file nor partial output."""
    if output is None:
        with tempfile.TemporaryFile() as tmp:
            yield tmp
            tmp.seek(0)
            shutil.copyfileobj(tmp, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        return
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent or ".")
    try:
        mask = os.umask(0o077)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)        # the mode open() would have given the file
        with os.fdopen(fd, "wb") as tmp:
            yield tmp
        os.replace(name, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
