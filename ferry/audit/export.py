"""Export of a trail for log systems: CSV (fixed columns), JSON Lines (the lines as stored) and
syslog (RFC 5424 messages in RFC 6587 octet-counting frames, see ferry.audit.syslog).

The JSON Lines export is byte-identical to the trail (or to a range of it), so ``ferry audit
verify`` proves it; so is each syslog message's MSG. The CSV is for people and spreadsheets:
text cells that a spreadsheet would run as a formula (starting with = + - @ or a control character) get a
leading apostrophe (OWASP "CSV injection").
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import IO

from ferry.audit.records import Record, parse_line
from ferry.audit.syslog import format_message, frame

CSV_COLUMNS = (
    "seq", "time", "agent", "agent_name", "event", "verdict", "lane", "flow",
    "source_device_id", "source_address", "source_name",
    "destination_device_id", "destination_address", "destination_name",
    "object_type", "size", "rule", "reason", "code", "policy_hash", "object_id", "epoch",
    "blocks", "sm3", "detail", "covers", "head", "key_id", "sig", "prev", "hash",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def _cell(v: object) -> str:
    if v is None:
        return ""
    if type(v) is str:
        return "'" + v if v.startswith(_FORMULA_START) else v
    if type(v) is int:
        return str(v)
    text = json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(record: Record) -> list[str]:
    """One record as cells in CSV_COLUMNS order."""
    flat = dict(record)
    for side in ("source", "destination"):
        peer = record.get(side)
        if type(peer) is str:           # a named destination from the policy (the video lanes)
            flat[f"{side}_name"] = peer
            continue
        for k, v in (peer or {}).items():
            flat[f"{side}_{k}"] = v
    if "blocks" in record:
        flat["blocks"] = " ".join(str(b) for b in record["blocks"])
    if "covers" in record:
        flat["covers"] = "{}-{}".format(*record["covers"])
    return [_cell(flat.get(c)) for c in CSV_COLUMNS]


def export_csv(records: Iterable[Record], out: IO[str]) -> int:
    """Write a header and one row per record; returns the number of rows."""
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    n = 0
    for rec in records:
        w.writerow(csv_row(rec))
        n += 1
    return n


def export_jsonl(lines: Iterable[bytes], out: IO[bytes]) -> int:
    """Copy the stored lines unchanged; returns the number of lines."""
    n = 0
    for line in lines:
        out.write(line)
        n += 1
    return n


def export_syslog(lines: Iterable[bytes], out: IO[bytes]) -> int:
    """One octet-counted RFC 5424 frame per stored line (HOSTNAME: the record's agent_name, the
    machine that wrote it, not the one exporting); returns the number of frames."""
    n = 0
    for line in lines:
        rec = parse_line(line)
        out.write(frame(format_message(rec, line, hostname=rec.get("agent_name", "-"))))
        n += 1
    return n


class RangeSelector:
    """Which records an export --since/--until takes, fed the trail's records in order. Pure.

    ``since``/``until`` are record times (``format_time``): ISO strings of one fixed format, so
    they compare as text. The range runs in seq order from the first record at or after ``since``
    to the last one at or before ``until`` (a clock stepped back does not reorder the trail), then
    on to the first checkpoint at or after it: the checkpoint that signs it, without which the
    range could not be proved. No checkpoint after it yet: the range ends there, an open tail."""

    def __init__(self, since: str | None, until: str | None) -> None:
        self.since, self.until = since, until
        self.first: int | None = None
        self.last: int | None = None        # last record inside the window
        self.end: int | None = None         # the checkpoint that signs ``last``

    def feed(self, rec: Record) -> None:
        seq, t = rec["seq"], rec["time"]
        if self.first is None and (self.since is None or t >= self.since):
            self.first = seq
        if self.first is not None and (self.until is None or t <= self.until):
            self.last, self.end = seq, None
        if rec["event"] == "checkpoint" and self.last is not None and self.end is None:
            self.end = seq

    def span(self) -> tuple[int, int] | None:
        """(first seq, last seq) to export, both included; None if no record is in the window."""
        if self.first is None or self.last is None:
            return None
        return self.first, self.last if self.end is None else self.end


def lines_in(lines: Iterable[bytes], span: tuple[int, int]) -> Iterator[bytes]:
    """The lines of records span[0]..span[1] of a trail given from seq 0 (its line n is seq n)."""
    for n, line in enumerate(lines):
        if n > span[1]:
            return
        if n >= span[0]:
            yield line

