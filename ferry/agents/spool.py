"""Spool folders: picking up whole files on the outer host, writing them on the inner
host under a temporary name and putting them in place (after their record). This module
does file I/O; the decisions about names and content live in ``ferry.lanes.files`` and
``ferry.lanes.delivered``.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import signal
import stat
import threading
from collections.abc import Callable, Container
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ferry import limits
from ferry.lanes.files import SpoolSettle, SpoolStat, SpoolWaiting, spool_candidate

log = logging.getLogger("ferry.spool")


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    name: str
    path: Path
    regular: bool
    size: int
    kind: str          # "file", "symlink", "directory", "fifo", "device", "socket", "other"
    stat: SpoolStat | None = None   # what the settle saw: the file read must still be this one


class StillWriting(Exception):
    """A settled spool file is still being written: open for writing, or changed since it settled
    (size, mtime, ctime, inode: appended, truncated, rewritten, replaced by a rename)."""


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


def spool_stat(st: os.stat_result) -> SpoolStat:
    return SpoolStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_ino, st.st_dev)


def changed_since(path: Path, seen: SpoolStat | None) -> str | None:
    """What changed at ``path`` since ``seen`` (None: the same file, unchanged, or nothing to
    compare with). A sent spool file a writer changed or replaced since it was read is not
    what crossed: it stays in the spool, to be taken as a new file."""
    if seen is None:
        return None
    try:
        return seen.change(spool_stat(os.lstat(path)))
    except FileNotFoundError:
        return "it is gone"


def remove_if_same(path: Path, seen: SpoolStat | None) -> str | None:
    """Remove a sent spool file unless it changed since it was read (``changed_since``): returns
    what changed (the file stays), or None (removed, or already gone). OSError if it cannot be."""
    changed = changed_since(path, seen)
    if changed is None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    return None if changed == "it is gone" else changed


def _sigio_ignored() -> bool:
    """A lease broken while it is held (a writer opening the file in that instant) sends SIGIO,
    whose default action ends the process: ignore it (nothing in ferry uses SIGIO)."""
    handler = signal.getsignal(signal.SIGIO)
    if handler not in (signal.SIG_DFL, None):
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGIO, signal.SIG_IGN)
    return True


def open_for_writing(fd: int) -> bool | None:
    """Whether any process has the file of ``fd`` (opened read-only) open for writing: Linux
    refuses a read lease then (fcntl F_SETLEASE, EAGAIN). The lease is let go at once. None when
    the lease cannot tell (not the file's owner without CAP_LEASE, a file system without leases)."""
    if not _sigio_ignored():
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as e:
        if e.errno == errno.EAGAIN:
            return True
        raise LeaseUnavailable(e) from e
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return False


class LeaseUnavailable(Exception):
    """A read lease cannot be taken on spool files (permission, file system)."""


def _read_to_end(fd: int, max_size: int) -> bytes | None:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(1 << 20, max_size + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > max_size:
            return None


class SpoolWatcher:
    """Reports a spool entry once it has settled (``ferry.lanes.files.SpoolSettle``), reads it only
    if it is still the file that settled, and notes the names writers are still using.

    ``read`` and ``recheck`` raise ``StillWriting`` for a file that changed since it settled or is
    open for writing (put it back with ``busy``), FileNotFoundError for one that left the spool."""

    def __init__(self, directory: Path, settle: float, waiting_cap: int = limits.SPOOL_WAITING_NAMES) -> None:
        self.directory = directory
        self.settle = SpoolSettle(settle)
        self.waiting = SpoolWaiting(waiting_cap)
        self.leases: bool | None = None      # False once a read lease could not be taken (logged once)
        self._present: frozenset[str] = frozenset()
        self._partial: list[str] = []

    def scan(self, now: float) -> list[SpoolEntry]:
        found: dict[str, tuple[str, os.stat_result]] = {}
        others: list[str] = []
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
                else:
                    others.append(d.name)
        self._present = frozenset(found).union(others)
        self._partial.extend(n for n in sorted(others) if self.waiting.first(n, self._present))
        stats = {n: spool_stat(st) for n, (_, st) in found.items()}
        ready = self.settle.observe(stats, now)
        return [SpoolEntry(n, Path(found[n][0]), stat.S_ISREG(found[n][1].st_mode), found[n][1].st_size,
                           _kind(found[n][1].st_mode), stats[n]) for n in ready]

    def partial_names(self) -> list[str]:
        """Names under a dot-name or a partial suffix seen for the first time (this agent run)
        since the last call: each to be recorded once."""
        names, self._partial = self._partial, []
        return names

    def first_busy(self, name: str) -> bool:
        """True the first time (this agent run) ``name`` is found still being written."""
        return self.waiting.first(name, self._present)

    def busy(self, name: str, now: float) -> float:
        """``name`` is still being written: back to settling; returns how long it must stay unchanged."""
        return self.settle.busy(name, now)

    def forget(self, name: str) -> None:
        self.settle.forget(name)

    def read(self, entry: SpoolEntry, max_size: int) -> bytes | None:
        """The content of a settled regular file, None if it is larger than ``max_size``; no link
        followed. It must be the file that settled before, during and after the read, under its name."""
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"{entry.path}: not a regular file")
            self._same(entry, spool_stat(st), "since it settled")
            self._no_writer(fd, entry)
            if st.st_size > max_size:
                return None
            content = _read_to_end(fd, max_size)
            self._same(entry, spool_stat(os.fstat(fd)), "while it was read")
        finally:
            os.close(fd)
        self._same(entry, spool_stat(os.lstat(entry.path)), "under its name while it was read")
        if content is not None and entry.stat is not None and len(content) != entry.stat.size:
            raise StillWriting(f"read {len(content)} bytes of {entry.stat.size}")
        return content

    def recheck(self, entry: SpoolEntry) -> None:
        """Just before a file is sealed (or refused): still the entry that settled, not open for writing."""
        self._same(entry, spool_stat(os.lstat(entry.path)), "before it was sealed")
        if entry.regular:
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                raise
            except OSError:
                return              # unreadable (refused as such): its name's stat is all there is
            try:
                self._same(entry, spool_stat(os.fstat(fd)), "before it was sealed")
                self._no_writer(fd, entry)
            finally:
                os.close(fd)

    @staticmethod
    def _same(entry: SpoolEntry, seen: SpoolStat, when: str) -> None:
        if entry.stat is not None and (change := entry.stat.change(seen)) is not None:
            raise StillWriting(f"{change} {when}")

    def _no_writer(self, fd: int, entry: SpoolEntry) -> None:
        try:
            writing = open_for_writing(fd)
        except LeaseUnavailable as e:
            if self.leases is not False:
                self.leases = False
                log.warning("cannot tell whether files in %s are still open for writing (read lease on %s: %s); "
                            "only their size, times and inode are checked: run the outer agent as the spool "
                            "files' owner or with CAP_LEASE, and have writers write under a dot-name or .part "
                            "and rename",
                            self.directory, entry.name, e.__cause__)
            return
        if writing is None:
            return
        if writing:
            raise StillWriting("open for writing by another process")


def read_whole_file(path: Path, max_size: int) -> bytes | None:
    """Read a regular file without following links; None if it is larger than max_size."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path}: not a regular file")
        if st.st_size > max_size:
            return None
        return _read_to_end(fd, max_size)
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
