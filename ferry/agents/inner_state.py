"""What the inner agent keeps on disk across restarts (crash-safe), in its state directory:

- ``link.json``: the receiver's `LinkState` (ferry/wire/resume.py): the newest epoch accepted,
  its announcement, the highest block opened per epoch. Replaced atomically (write a temporary
  file, fsync it, rename, fsync the directory) when a new epoch is accepted, every
  STATE_SAVE_INTERVAL while blocks arrive, and on stop.
- ``delivered.journal``: one record per delivered file (ferry/lanes/delivered.py), appended
  and fsync'd before the file's audit record; compacted (atomically) at start, and while running
  once it holds more than twice the live entries plus JOURNAL_SLACK records (after the link
  state is saved, which keeps the highest blocks the compacted records carried).

At start it also reads back the end of the audit trail for what it says of the objects whose
temporary files a crash left in the output folder (``trail_records``; the decision is
``ferry.lanes.delivered.recover``).

Only I/O here; what the bytes mean is in the pure modules.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from ferry import limits
from ferry.durable import replace_durably
from ferry.lanes.delivered import Remember, parse_journal
from ferry.wire.resume import LinkState, ResumeError, decode, encode

LINK_FILE = "link.json"
JOURNAL_FILE = "delivered.journal"


class InnerState:
    """The state directory: load once, then save the link state and journal deliveries."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._journal: int | None = None
        self.records = 0   # records in the journal file (since the last compaction, plus what it kept)

    def load(self) -> tuple[LinkState | None, list[Remember], list[str]]:
        """The stored link state (None if there is none or it is unusable), the journal's
        records, and a sentence for each problem found (for the audit trail)."""
        problems: list[str] = []
        state = None
        link = self.dir / LINK_FILE
        try:
            state = decode(link.read_bytes())
        except FileNotFoundError:
            pass
        except (OSError, ResumeError) as err:
            problems.append(f"{link}: {err}: starting without the stored link state")
        records: list[Remember] = []
        journal = self.dir / JOURNAL_FILE
        try:
            records, bad = parse_journal(journal.read_bytes())
            if bad:
                problems.append(f"{journal}: {bad} torn or corrupt record(s) skipped")
        except FileNotFoundError:
            pass
        except OSError as err:
            problems.append(f"{journal}: {err}: starting without the delivered-object journal")
        return state, records, problems

    def compact(self, records: list[Remember]) -> None:
        """Rewrite the journal with `records` only, and open it for appending."""
        self.close()
        path = self.dir / JOURNAL_FILE
        replace_durably(path, b"".join(r.record() for r in records))
        self._journal = os.open(path, os.O_WRONLY | os.O_APPEND)
        self.records = len(records)

    def needs_compaction(self, live: int) -> bool:
        """The journal holds more than twice the live entries plus JOURNAL_SLACK records."""
        return self.records > 2 * live + limits.JOURNAL_SLACK

    def remember(self, r: Remember) -> None:
        """Append one delivered object and make it durable (OSError if the disk fails)."""
        if self._journal is None:
            self._journal = os.open(self.dir / JOURNAL_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._journal, r.record())
        os.fsync(self._journal)
        self.records += 1

    def save_link(self, state: LinkState) -> None:
        replace_durably(self.dir / LINK_FILE, encode(state))

    def close(self) -> None:
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None


_TIME = re.compile(rb'"time":"([^"]*)"')   # the record's own is the last one on its line (keys are sorted)
TRAIL_CHUNK = 1 << 20


def trail_records(trail: Path, object_ids: Collection[int], since: str,
                  wanted: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The records of ``trail`` (an audit.jsonl) that name one of ``object_ids`` and that
    ``wanted`` takes, read backwards from the end to the first record older than ``since``
    (a record time, ISO 8601 UTC: those compare as strings), newest first. Lines that do not
    parse (a torn tail) are skipped. A missing trail has none."""
    ids = set(object_ids)
    out: list[dict[str, Any]] = []
    if not ids:
        return out
    try:
        f = open(trail, "rb")
    except FileNotFoundError:
        return out
    with f:
        pos = f.seek(0, os.SEEK_END)
        rest = b""                      # the start of a line whose beginning is in an earlier chunk
        while pos > 0:
            step = min(TRAIL_CHUNK, pos)
            pos -= step
            f.seek(pos)
            lines = (f.read(step) + rest).split(b"\n")
            rest = lines.pop(0) if pos > 0 else b""
            for line in reversed(lines):
                at = line.rfind(b'"time":"')
                m = _TIME.match(line, at) if at >= 0 else None
                if m is None:
                    continue
                if m.group(1).decode("ascii", "replace") < since:
                    return out
                if b'"object_id":' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(rec, dict) and type(rec.get("object_id")) is int and rec["object_id"] in ids \
                        and wanted(rec):
                    out.append(rec)
    return out
