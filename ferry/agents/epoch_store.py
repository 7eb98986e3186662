"""The outer agent's key epoch numbers across its restarts: ``<state_dir>/link-epoch``.

A fresh sender numbers its first epoch int(wall), above any earlier run's as long as the clock
only goes forward. When it did not (an earlier run's clock was ahead, or a wall-clock step had
the sender rotate to int(wall) of a clock that was ahead: ferry/wire/sender.py), the inner
agent's epoch floor would refuse the new run's announcements (``old_epoch``) until the clock
caught up with that number. So the outer agent writes the newest epoch it announced (at start,
before anything is sent, and at each new epoch; atomically, fsync'd) and a restarted agent
starts above it: max(int(wall), stored + EPOCH_RESTART_GAP). The gap covers epochs a run killed
-9 may have begun after its last write (a rotation by time or clock is written before its
announcement is handed to the link writer; one by volume in the video path may not be).

An unreadable file is reported and ignored: the first epoch is int(wall), as before the file.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ferry import limits
from ferry.wire.frame import EPOCH_MAX

log = logging.getLogger("ferry.outer")

FILE_NAME = "link-epoch"


class EpochStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self.saved: int | None = None

    def load(self) -> tuple[int | None, str | None]:
        """(the stored epoch, None), (None, None) if there is none, or (None, why it is unusable)."""
        try:
            text = self.path.read_text(encoding="ascii")
        except FileNotFoundError:
            return None, None
        except (OSError, UnicodeDecodeError) as e:
            return None, f"{self.path}: cannot be read ({e}); the first key epoch is numbered from the clock"
        try:
            epoch = int(text.strip())
        except ValueError:
            return None, (f"{self.path}, line 1: {text.strip()[:40]!r} is not an epoch number; the first key "
                          "epoch is numbered from the clock")
        if not 0 <= epoch <= EPOCH_MAX - limits.EPOCH_RESTART_GAP:
            return None, (f"{self.path}, line 1: epoch {epoch} out of range; the first key epoch is numbered "
                          "from the clock")
        return epoch, None

    def first_epoch(self, wall: float) -> int:
        """The first epoch of this run: above the clock's second and above the stored epoch."""
        stored, problem = self.load()
        if problem is not None:
            log.warning("%s", problem)
        first = int(wall)
        if stored is not None and stored + limits.EPOCH_RESTART_GAP > first:
            log.warning("key epoch %d of an earlier run is ahead of the clock (%d): this run starts at %d",
                        stored, first, stored + limits.EPOCH_RESTART_GAP)
            first = stored + limits.EPOCH_RESTART_GAP
        return min(first, EPOCH_MAX)

    def save(self, epoch: int) -> None:
        """Record the newest epoch announced (only ever higher). OSError to the caller."""
        if self.saved is not None and epoch <= self.saved:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{epoch}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.saved = epoch
