"""The ferry command line: help, exit codes, messages an operator can act on."""
import subprocess
import sys
from pathlib import Path


def ferry(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ferry", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_help_lists_the_commands():
    r = ferry("--help")
    assert r.returncode == 0
    for cmd in ("keys", "outer", "inner", "audit", "policy", "demo"):
        assert cmd in r.stdout


def test_no_command_is_a_usage_error():
    assert ferry().returncode == 2


def test_keys_init_writes_pairs_and_refuses_to_overwrite(tmp_path):
    r = ferry("keys", "init", "--dir", str(tmp_path / "k"))
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert names == ["inner.key", "inner.pub", "outer.key", "outer.pub"]
    assert (tmp_path / "k" / "outer.key").stat().st_mode & 0o077 == 0
    before = (tmp_path / "k" / "outer.key").read_bytes()
    r = ferry("keys", "init", "--dir", str(tmp_path / "k"))
    assert r.returncode == 2 and "exist" in r.stderr
    assert (tmp_path / "k" / "outer.key").read_bytes() == before


def test_agent_with_missing_key_file_exits_2_naming_it(tmp_path):
    cfg = tmp_path / "inner.toml"
    cfg.write_text('[agent]\nname = "i"\nkey = "nokey.pem"\npeer_public = "nopub.pem"\npolicy = "p"\n'
                   'audit_dir = "a"\n[link]\nlisten_host = "127.0.0.1"\nlisten_port = 47000\n')
    r = ferry("inner", "--config", str(cfg))
    assert r.returncode == 2
    assert "nokey.pem" in r.stderr


def test_keys_new_writes_an_admin_key_that_signs_a_policy(tmp_path):
    r = ferry("keys", "new", "admin", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "admin.key").stat().st_mode & 0o077 == 0

    repo = Path(__file__).resolve().parents[1]
    r = ferry("policy", "sign", str(repo / "policy" / "demo"), "--key", str(tmp_path / "admin.key"),
              "-o", str(tmp_path / "demo.ferrypolicy"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "demo.ferrypolicy").stat().st_size > 0
    assert ferry("keys", "new", "admin", "--dir", str(tmp_path)).returncode == 2
