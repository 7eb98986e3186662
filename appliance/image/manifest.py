"""A manifest of a root file system tarball: one line per member, sorted by name.

    python3 appliance/image/manifest.py ROOTFS.tar[.gz] > ROOTFS.manifest

Each line is ``KIND MODE UID:GID SHA256-or-target NAME`` (KIND f file, d directory, l symlink,
h hard link, c/b device, p fifo; a directory's and a device's third field is ``-``). Member
order and times are left out: two builds are the same root file system when their manifests are
equal, and ``diff`` of two manifests names each file that differs. Exit 0, or 2 naming the file
when it cannot be read as a tarball. Standard library only (it runs on the build host).
"""
from __future__ import annotations

import hashlib
import lzma
import sys
import tarfile
import zlib

KINDS = {tarfile.REGTYPE: "f", tarfile.AREGTYPE: "f", tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l",
         tarfile.LNKTYPE: "h", tarfile.CHRTYPE: "c", tarfile.BLKTYPE: "b", tarfile.FIFOTYPE: "p",
         tarfile.CONTTYPE: "f"}


def _name(name: str) -> str:
    name = name.rstrip("/")
    if not name.startswith("./"):
        name = "./" + name.lstrip("/") if name not in ("", ".") else "."
    return name


def manifest(path: str) -> list[str]:
    lines: list[tuple[str, str]] = []
    with tarfile.open(path, mode="r:*") as t:
        for m in t:
            kind = KINDS.get(m.type, "?")
            if m.isreg():
                f = t.extractfile(m)
                assert f is not None
                h = hashlib.sha256()
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                what = h.hexdigest()
            elif m.issym() or m.islnk():
                what = "-> " + m.linkname
            elif m.ischr() or m.isblk():
                what = f"{m.devmajor},{m.devminor}"
            else:
                what = "-"
            # the name comes last: it may hold spaces; escape newlines so one member is one line
            name = _name(m.name).replace("\\", "\\\\").replace("\n", "\\n")
            lines.append((name, f"{kind} {m.mode:04o} {m.uid}:{m.gid} {what} {name}"))
    return [line for _name_, line in sorted(lines)]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: manifest.py ROOTFS.tar[.gz|.xz]", file=sys.stderr)
        return 2
    try:
        lines = manifest(argv[0])
    except (OSError, tarfile.TarError, EOFError, ValueError, zlib.error, lzma.LZMAError) as e:
        print(f"manifest.py: {argv[0]}: not a readable tarball: {e}", file=sys.stderr)
        return 2
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
