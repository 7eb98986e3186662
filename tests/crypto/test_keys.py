import os
import stat

import pytest

from ferry.crypto import CryptoError, init_keys, load_private_key, load_public_key

NAMES = ["outer.key", "outer.pub", "inner.key", "inner.pub"]


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_init_keys_writes_four_files(tmp_path):
    d = tmp_path / "keys"
    paths = init_keys(d)
    assert [p.name for p in paths] == NAMES
    assert sorted(os.listdir(d)) == sorted(NAMES)
    assert _mode(d / "outer.key") == 0o600 and _mode(d / "inner.key") == 0o600
    assert _mode(d / "outer.pub") == 0o644 and _mode(d / "inner.pub") == 0o644
    outer, inner = load_private_key(d / "outer.key"), load_private_key(d / "inner.key")
    assert outer.public_key() == load_public_key(d / "outer.pub")
    assert inner.public_key() == load_public_key(d / "inner.pub")
    assert outer.public_key() != inner.public_key()


def test_private_mode_ignores_umask(tmp_path):
    old = os.umask(0)
    try:
        init_keys(tmp_path)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "outer.key") == 0o600


@pytest.mark.parametrize("name", NAMES)
def test_refuses_to_overwrite(tmp_path, name):
    (tmp_path / name).write_bytes(b"precious")
    with pytest.raises(CryptoError, match=name):
        init_keys(tmp_path)
    assert (tmp_path / name).read_bytes() == b"precious"
    assert os.listdir(tmp_path) == [name]  # nothing else written


def test_refuses_dangling_symlink(tmp_path):
    (tmp_path / "outer.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CryptoError):
        init_keys(tmp_path)
    assert not (tmp_path / "elsewhere").exists()


def test_second_init_refused(tmp_path):
    init_keys(tmp_path)
    before = (tmp_path / "outer.key").read_bytes()
    with pytest.raises(CryptoError):
        init_keys(tmp_path)
    assert (tmp_path / "outer.key").read_bytes() == before


def test_load_errors_name_the_path(tmp_path):
    init_keys(tmp_path)
    missing = tmp_path / "nope.key"
    with pytest.raises(CryptoError, match="nope.key"):
        load_private_key(missing)
    with pytest.raises(CryptoError, match="outer.pub"):
        load_private_key(tmp_path / "outer.pub")
    with pytest.raises(CryptoError, match="outer.key"):
        load_public_key(tmp_path / "outer.key")
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(CryptoError, match="junk.pem"):
        load_private_key(junk)
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * 100_000)
    with pytest.raises(CryptoError, match="big.pem"):
        load_public_key(big)
    with pytest.raises(CryptoError, match=str(tmp_path.name)):
        load_public_key(tmp_path)  # a directory
