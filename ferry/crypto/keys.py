"""SM2 key files: PEM PKCS#8 private keys (mode 0600) and SPKI public keys.

The one module of ferry.crypto that touches the filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path

from ferry.crypto.errors import CryptoError
from ferry.crypto.sm2 import SM2PrivateKey, SM2PublicKey

ROLES = ("outer", "inner")
MAX_KEY_FILE = 64 * 1024  # a PEM key is a few hundred bytes


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively with ``mode`` (never follows or replaces an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        os.fchmod(fd, mode)  # umask must not widen or narrow it
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def init_keys(directory: Path, names: tuple[str, ...] = ROLES) -> list[Path]:
    """Write NAME.key NAME.pub (PEM) into ``directory`` for each name (default: outer, inner).

    Private keys get mode 0600, public keys 0644. Refuses with CryptoError if any
    of the files already exists; nothing is written in that case.
    """
    directory = Path(directory)
    for name in names:
        if not name or "/" in name or name.startswith(".") or len(name) > 64:
            raise CryptoError(f"bad key name {name!r}")
    paths = [directory / f"{role}.{ext}" for role in names for ext in ("key", "pub")]
    existing = [p for p in paths if os.path.lexists(p)]
    if existing:
        raise CryptoError(f"refusing to overwrite existing key files: {', '.join(map(str, existing))}")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for role in names:
            key = SM2PrivateKey.generate()
            _write_new(directory / f"{role}.key", key.to_pem(), 0o600)
            _write_new(directory / f"{role}.pub", key.public_key().to_pem(), 0o644)
    except FileExistsError as exc:  # raced with another writer
        raise CryptoError(f"refusing to overwrite existing key file: {exc.filename}") from None
    except OSError as exc:
        raise CryptoError(f"cannot write key files in {directory}: {exc.strerror}") from None
    return paths


def _read(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise CryptoError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise CryptoError(f"{what} {path}: file too large")
    return data


def load_private_key(path: Path) -> SM2PrivateKey:
    """Load a PKCS#8 PEM SM2 private key; CryptoError naming ``path`` on any problem."""
    data = _read(path, "private key")
    try:
        return SM2PrivateKey.from_pem(data)
    except CryptoError as exc:
        raise CryptoError(f"{path}: {exc}") from None


def load_public_key(path: Path) -> SM2PublicKey:
    """Load an SPKI PEM SM2 public key; CryptoError naming ``path`` on any problem."""
    data = _read(path, "public key")
    try:
        return SM2PublicKey.from_pem(data)
    except CryptoError as exc:
        raise CryptoError(f"{path}: {exc}") from None
