"""Export of a trail for log systems: CSV (fixed columns) and JSON Lines (the lines as stored).

The JSON Lines export is byte-identical to the trail, so ``ferry audit verify``
proves it. The CSV is for people and spreadsheets: text cells that a spreadsheet
would run as a formula (starting with = + - @ or a control character) get a
leading apostrophe (OWASP "CSV injection").
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import IO

from ferry.audit.records import Record

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
