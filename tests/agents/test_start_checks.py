"""Issue 11 item 7: an agent refuses to start on keys, policy or state that other users may read or
change, naming the file and the fix (exit 2, like other configuration errors)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import Appliance, read_trail
from ferry.config import InnerConfig, OuterConfig, load_config, mode_problems


@pytest.fixture
def work(tmp_path) -> Appliance:
    return Appliance(tmp_path / "a", management=True)


def _start(a: Appliance, role: str) -> subprocess.CompletedProcess:
    """The agent as an operator starts it; one that starts is stopped by the timeout (and fails the test)."""
    return subprocess.run([sys.executable, "-m", "ferry", role, "--config", str(a.work / f"{role}.toml")],
                          capture_output=True, text=True, timeout=30, cwd=a.work)


# (role, path under the appliance's folder, mode, the fix the message must give)
CASES = [
    ("inner", "keys/inner.key", 0o644, "chmod 600"),          # world-readable private key
    ("outer", "keys/outer.key", 0o602, "chmod 600"),          # world-writable private key
    ("inner", "keys/inner.key", 0o640, "chmod 600"),          # group-readable private key
    ("inner", "keys/outer.pub", 0o666, "chmod 644"),          # the peer's public key
    ("outer", "keys/admin.pub", 0o646, "chmod 644"),          # a policy signer
    ("inner", "keys", 0o777, "chmod o-w"),                    # the keys' folder
    ("outer", "policy", 0o777, "chmod o-w"),                  # the policy folder
    ("inner", "policy/policy.yaml", 0o666, "chmod o-w"),      # a file in it
    ("inner", "policy/tests", 0o777, "chmod o-w"),            # its tests folder
    ("inner", "audit/inner-state", 0o777, "chmod 700"),       # the state directory
]


@pytest.mark.parametrize("role,rel,mode,fix", CASES, ids=[f"{c[1]}-{c[2]:o}" for c in CASES])
def test_exposed_file_refuses_the_start(work, role, rel, mode, fix):
    path = work.work / rel
    if rel.endswith("-state"):
        path.mkdir(mode=0o700, parents=True)
    os.chmod(path, mode)
    r = _start(work, role)
    assert r.returncode == 2, r.stderr
    assert f"{fix} {path}" in r.stderr, r.stderr
    assert f"mode {mode:04o}" in r.stderr
    trail = work.inner_audit if role == "inner" else work.outer_audit
    assert not [x for x in read_trail(trail) if x["event"] == "agent_started"]


def test_stored_bundle_anyone_may_change_refuses_the_start(work):
    state = work.work / "audit" / "inner-state"
    state.mkdir(mode=0o700, parents=True)
    stored = state / "policy.ferrypolicy"
    stored.write_bytes(b"")
    stored.chmod(0o666)
    r = _start(work, "inner")
    assert r.returncode == 2 and f"chmod 600 {stored}" in r.stderr, r.stderr


def test_every_problem_is_listed_at_once(work):
    (work.work / "keys" / "inner.key").chmod(0o644)
    (work.work / "policy").chmod(0o777)
    cfg = load_config(work.work / "inner.toml", InnerConfig)
    problems = mode_problems(cfg.agent, cfg.management)
    assert len(problems) == 2
    assert "[agent] key" in problems[0] and "[agent] policy" in problems[1]


def test_what_keys_init_and_the_test_appliance_write_passes(work):
    for role, kind in (("inner", InnerConfig), ("outer", OuterConfig)):
        cfg = load_config(work.work / f"{role}.toml", kind)
        assert mode_problems(cfg.agent, cfg.management, Path(cfg.agent.state_dir) / "policy.ferrypolicy") == []
    assert (work.work / "keys" / "inner.key").stat().st_mode & 0o777 == 0o600


def test_a_sticky_world_writable_key_folder_is_allowed(work):
    """/tmp-like folders (sticky): others cannot replace a file they do not own."""
    (work.work / "keys").chmod(0o1777)
    cfg = load_config(work.work / "inner.toml", InnerConfig)
    assert mode_problems(cfg.agent, cfg.management) == []
