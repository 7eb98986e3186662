"""Spool folders: picking up whole files on the outer host, writing them
atomically on the inner host. This module does file I/O; the decisions about
names and content live in ``ferry.lanes.files``.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ferry.lanes.files import SpoolSettle, spool_candidate

@dataclass(frozen=True, slots=True)
class SpoolEntry:
    name: str
    path: Path
    regular: bool
    size: int
    kind: str          # "file", "symlink", "directory", "fifo", "device", "socket", "other"


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "other"


class SpoolWatcher:
    """Reports a spool entry once it has settled (``ferry.lanes.files.SpoolSettle``)."""

    def __init__(self, directory: Path, settle: float) -> None:
        self.directory = directory
        self.settle = SpoolSettle(settle)

    def scan(self, now: float) -> list[SpoolEntry]:
        found: dict[str, tuple[str, os.stat_result]] = {}
        try:
            it = os.scandir(self.directory)
        except FileNotFoundError:
            return []
        with it:
            for d in it:
                if spool_candidate(d.name):
                    try:
                        found[d.name] = (d.path, d.stat(follow_symlinks=False))
                    except FileNotFoundError:
                        continue
        ready = self.settle.observe({n: (st.st_size, st.st_mtime_ns, st.st_mode) for n, (_, st) in found.items()}, now)
        return [SpoolEntry(n, Path(found[n][0]), stat.S_ISREG(found[n][1].st_mode), found[n][1].st_size,
                           _kind(found[n][1].st_mode)) for n in ready]

    def forget(self, name: str) -> None:
        self.settle.forget(name)


def read_whole_file(path: Path, max_size: int) -> bytes | None:
    """Read a regular file without following links; None if it is larger than max_size."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path}: not a regular file")
        if st.st_size > max_size:
            return None
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_size + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_size:
                return None
        return b"".join(chunks)
    finally:
        os.close(fd)


def move_aside(path: Path, folder: Path) -> Path:
    """Move a spool entry (of any kind) into ``folder`` without overwriting."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        target = folder / (path.name if i == 0 else f"{path.name}.{i}")
        if not os.path.lexists(target):
            os.rename(path, target)
            return target
    raise OSError(f"cannot move {path} aside: too many entries named like it in {folder}")


def write_atomically(folder: Path, candidates: Iterable[str], content: bytes) -> Path:
    """Write content to a fresh file in folder under the first free candidate name.

    The data goes to a hidden temporary file first, is fsynced, then linked to its
    final name (``link`` fails if the name exists: nothing is ever overwritten),
    and the folder is fsynced. Special files cannot be created this way.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".ferry-{os.getpid()}-{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(content)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        for name in candidates:
            final = folder / name
            if final.parent != folder:          # defence in depth: names are checked upstream
                continue
            try:
                os.link(tmp, final)
            except FileExistsError:
                continue
            dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            return final
        raise FileExistsError(f"no free name in {folder}")
    finally:
        os.unlink(tmp)

