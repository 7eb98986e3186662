"""Spool folders: picking up whole files on the outer host, writing them on the inner
host under a temporary name and putting them in place (after their record). This module
does file I/O; the decisions about names and content live in ``ferry.lanes.files`` and
``ferry.lanes.delivered``.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Callable, Container
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


# --- the inner side: a file is written under a temporary name, put in place after its record ----

AT_FDCWD = -100
RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def _fsync_folder(folder: Path) -> None:
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_temporary(folder: Path, name: str, content: bytes) -> Path:
    """Write ``content`` to a new file ``folder/name`` (never through a link, never over a file),
    fsync it and the folder: after a crash it is there whole, or (if this raised) not at all
    (OSError; nothing is left behind)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    _fsync_folder(folder)
    return path


def free_name(folder: Path, candidates: Iterable[str], claimed: Container[str] = ()) -> str | None:
    """The first candidate that names nothing in ``folder`` and is not ``claimed`` (names chosen
    for files still waiting for their record), or None."""
    for name in candidates:
        if (folder / name).parent != folder:      # defence in depth: names are checked upstream
            continue
        if name not in claimed and not os.path.lexists(folder / name):
            return name
    return None


def _rename_noreplace(src: Path, dst: Path) -> None:
    if _renameat2 is not None:
        if _renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):   # the file system lacks it: link below
            raise OSError(err, os.strerror(err), str(dst))
    os.link(src, dst)            # FileExistsError if the name is taken
    os.unlink(src)


def publish(folder: Path, temp: str, name: str) -> Path:
    """Rename ``folder/temp`` to ``folder/name`` without overwriting (FileExistsError if the
    name is taken meanwhile), then fsync the folder."""
    final = folder / name
    if final.parent != folder:
        raise OSError(f"{name!r} is not a plain file name")
    try:
        _rename_noreplace(folder / temp, final)
    except FileExistsError:
        if not os.path.samefile(folder / temp, final):
            raise
        os.unlink(folder / temp)   # a crash between link and unlink (file systems without renameat2)
    _fsync_folder(folder)
    return final


def discard(folder: Path, name: str) -> None:
    """Remove ``folder/name`` (gone already is fine) and fsync the folder."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(folder / name)
    _fsync_folder(folder)


def leftovers(folder: Path, is_leftover: Callable[[str], bool]) -> list[tuple[str, os.stat_result]]:
    """The regular files in ``folder`` whose names ``is_leftover`` takes, with their lstat."""
    out = []
    try:
        it = os.scandir(folder)
    except FileNotFoundError:
        return []
    with it:
        for d in it:
            if is_leftover(d.name):
                with contextlib.suppress(FileNotFoundError):
                    st = d.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        out.append((d.name, st))
    return sorted(out)
