"""A disk that fills up, for the audit-outage tests (root): a 256 KiB tmpfs mounted on a folder,
and a file that takes its last free byte."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rootcheck import need_root


@contextmanager
def tmpfs(mnt: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs on the folder `mnt` (which exists), lazily unmounted on exit."""
    need_root("mount", "umount")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Write zeros to `path` until its disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)
