"""Issue 16 item 3 end to end: agents left idle sign their trails' tails, so `ferry audit verify` passes
on a running appliance without --open-tail."""
from __future__ import annotations

import subprocess
import sys

import pytest

from appliance import read_trail

pytestmark = pytest.mark.e2e


def _signed(directory) -> bool:
    recs = read_trail(directory)
    return bool(recs) and recs[-1]["event"] == "checkpoint"


def _verify(directory) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", "audit", "verify", str(directory)],
                          capture_output=True, text=True, timeout=120)


def test_idle_agents_sign_their_tails(appliance_factory):
    a = appliance_factory()
    for role in ("outer", "inner"):                               # a short interval keeps the test short
        path = a.work / f"{role}.toml"
        path.write_text(path.read_text().replace("[agent]\n", "[agent]\ncheckpoint_interval = 2\n", 1))
    a.start()
    for d in (a.outer_audit, a.inner_audit):
        a.wait_for(lambda d=d: _signed(d), 60, f"{d.name} agent's tail signed while idle")
        a.wait_for(lambda d=d: _verify(d).returncode == 0, 60, f"{d.name} trail verifies", interval=1.0)
    # records after the first checkpoint (a file crossing) are signed too, with nothing written after them
    a.drop("notes.txt", b"camera online\n" * 10)
    a.wait_for(lambda: a.outcomes().get("notes.txt") == "delivered", 60, "notes.txt delivered")
    for d in (a.outer_audit, a.inner_audit):
        a.wait_for(lambda d=d: _signed(d) and any(r["event"] in ("object_sent", "object_delivered")
                                                   for r in read_trail(d)), 60, f"{d.name} tail signed")
        r = a.wait_for(lambda d=d: (v := _verify(d)).returncode == 0 and v, 60, f"{d.name} trail verifies",
                       interval=1.0)
        assert "intact:" in r.stdout and "open tail" not in r.stdout
