"""Shared code of the kernel tests: commands and Python snippets run inside
network namespaces this test creates (and always deletes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rootcheck import need_root

REPO = Path(__file__).resolve().parents[2]


def sh(*args: str, ns: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


def py(ns: str, code: str, *, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run Python ``code`` (with the repository importable) inside namespace ``ns``."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", code]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    if check and r.returncode != 0:
        raise RuntimeError(f"python in {ns}: {r.stderr.strip()}")
    return r


def py_json(ns: str, code: str) -> object:
    """Run ``code`` in ``ns``; its last stdout line is JSON."""
    return json.loads(py(ns, code).stdout.strip().splitlines()[-1])


@pytest.fixture
def netns():
    """Factory: make(name) -> a fresh namespace (lo up) named ``fk<pid><name>``; all deleted after."""
    need_root("ip", "nft")
    made: list[str] = []

    def make(name: str) -> str:
        ns = f"fk{os.getpid() % 100000}{name}"
        sh("ip", "netns", "add", ns)
        made.append(ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        return ns

    try:
        yield make
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)
