"""Replacing a small file durably (shell: touches files): a crash leaves the old file or the
new one, never a mix. Used for policy bundles (mgmt) and the inner agent's link state."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


def replace_durably(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to a temporary file beside `path` (never through a symlink), fsync it,
    rename it over `path` and fsync the directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)            # a leftover of a crashed run with the same pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
