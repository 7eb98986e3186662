"""What the outer agent keeps across restarts so that no file is lost that never left:

- the kept folder (``<spool>.sent``, beside the spool like ``<spool>.refused``): a spool file
  recorded ``object_sent`` is moved there (as ``<object id>``: names never collide, and the
  spool watcher never sees it again) and stays until its last block has left plus
  ``[files] keep_after_sent`` seconds;
- ``sent.journal`` in the state directory: one line per kept file (``keep``, fsync'd before
  the file's ``object_sent`` record, so before any of its blocks can leave), when its blocks
  left (``left``) and when it was removed (``gone``); compacted at start and once it holds far
  more lines than live entries (``ferry.lanes.sent.KeptFiles``).

A restarted agent reads the journal back, before it scans the spool, and re-sends, forgets or
names lost each entry (``ferry.lanes.sent.after_restart``). Only I/O here; what the bytes mean is
in ``ferry.lanes.sent``.
"""
from __future__ import annotations

import os
from pathlib import Path

from ferry import limits
from ferry.agents.spool import changed_since, read_whole_file
from ferry.durable import replace_durably
from ferry.lanes.files import SpoolStat
from ferry.lanes.sent import Kept, KeptFiles

JOURNAL_FILE = "sent.journal"


class FileChangedError(OSError):
    """A sent spool file changed or replaced since it was read: not kept, not removed."""


class OuterState:
    def __init__(self, state_dir: Path, kept_dir: Path, keep_after_sent: float) -> None:
        self.dir, self.kept_dir = state_dir, kept_dir
        self.kept = KeptFiles(keep_after_sent)
        self.journal = state_dir / JOURNAL_FILE
        self._fd: int | None = None

    def load(self) -> list[str]:
        """Read the journal (once, at start); a sentence for each problem found."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.kept_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        problems = []
        try:
            bad = self.kept.load(self.journal.read_bytes())
            if bad:
                problems.append(f"{self.journal}: {bad} torn or corrupt line(s) skipped")
        except FileNotFoundError:
            pass
        except OSError as err:
            problems.append(f"{self.journal}: {err.strerror or err}: starting without the sent-file journal")
        return problems

    def compact(self) -> None:
        """Rewrite the journal with the live entries only, and open it for appending."""
        self.close()
        replace_durably(self.journal, self.kept.compacted())
        self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def append(self, lines: bytes, sync: bool = False) -> None:
        """Journal lines; ``sync``: durable before this returns (OSError if the disk fails)."""
        if not lines:
            return
        if self._fd is None:
            self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.write(self._fd, lines)
        if sync:
            os.fsync(self._fd)
        if self.kept.needs_compaction():
            self.compact()

    def path(self, k: Kept) -> Path:
        return self.kept_dir / k.file

    def keep(self, files: list[tuple[Kept, Path, SpoolStat | None]]) -> list[tuple[Kept, Path, OSError | None]]:
        """Journal these files (one fsync), then move each from the spool into the kept folder,
        unless a writer changed or replaced it since it was read (what ``SpoolStat`` saw): that
        is not the file sent, it stays in the spool as a new one. A file not moved is named with
        its error (the caller removes it as before, if unchanged: ``spool.remove_if_same``)."""
        self.append(b"".join(self.kept.keep(k) for k, _, _ in files), sync=True)
        out: list[tuple[Kept, Path, OSError | None]] = []
        for k, src, seen in files:
            try:
                changed = changed_since(src, seen)
                if changed is not None:
                    raise FileChangedError(f"{src} changed since it was sent ({changed}): left in the spool "
                                           "as a new file")
                os.rename(src, self.path(k))
                out.append((k, src, None))
            except OSError as err:
                self.append(self.kept.gone(k.object_id))
                out.append((k, src, err))
        return out

    def remove(self, k: Kept) -> None:
        """The kept file is no longer needed (or was moved aside): delete it if it is still
        there, journal ``gone``."""
        try:
            self.path(k).unlink()
        except FileNotFoundError:
            pass
        self.append(self.kept.gone(k.object_id))

    def read(self, k: Kept, max_size: int = limits.FILE_MAX) -> bytes | None:
        """The kept file's content now (None: gone, unreadable or too large)."""
        return self.read_at(self.path(k), max_size)

    @staticmethod
    def read_at(path: Path, max_size: int = limits.FILE_MAX) -> bytes | None:
        try:
            return read_whole_file(path, max_size)
        except OSError:
            return None

    def orphans(self) -> list[Path]:
        """Files in the kept folder that no live entry names (a crash between journal and move,
        or a removal whose ``gone`` was journaled before the unlink): nothing needs them."""
        names = {k.file for k in self.kept.entries.values()}
        try:
            return [p for p in self.kept_dir.iterdir() if p.name not in names]
        except OSError:
            return []

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
