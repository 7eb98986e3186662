"""`ferry audit reconcile` accounts for the reverse ferry on real trails: requests the inner agent
sent are found received (or refused) in the outer agent's trail; one sent while the outer agent
was down is unaccounted, named, and the reconcile fails."""
from __future__ import annotations

import subprocess
import sys

import pytest

from appliance import read_trail
from reverse import CAMERA, add_reverse, ask, reverse_policy

pytestmark = pytest.mark.e2e


def _reconcile(a) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", "audit", "reconcile", str(a.outer_audit),
                           str(a.inner_audit)], capture_output=True, text=True, timeout=120)


def _received(a) -> list[dict]:
    return [r for r in read_trail(a.outer_audit) if r["event"] == "request_received"]


def test_reconcile_accounts_for_reverse_requests_and_names_one_the_outer_never_saw(appliance_factory, tmp_path):
    a = appliance_factory(management=True, policy_dir=reverse_policy(tmp_path / "policy-src"))
    add_reverse(a)
    a.start()
    for n, request in enumerate(("start_stream", "catalog_query", "stop_stream"), 1):
        params = ("stream=s1",) if request == "stop_stream" else ()
        assert ask(a, request, CAMERA, "alice", *params).returncode == 0
        a.wait_for(lambda: len(_received(a)) == n, 60, f"request {n} received by the outer agent")
    r = _reconcile(a)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reverse ferry: 3 requests sent by the inner agent, 3 received, 0 refused by the outer agent, " \
           "0 lost on the reverse link, 0 unaccounted" in r.stdout, r.stdout

    a.kill("outer")                     # the reverse link's receiver is gone: what is sent now is lost unseen
    assert ask(a, "start_stream", CAMERA, "bob").returncode == 0
    a.stop()
    [late] = [x for x in read_trail(a.inner_audit) if x["event"] == "request_sent" and x["detail"]["operator"] == "bob"]
    r = _reconcile(a)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "NOT RECONCILED" in r.stdout and "4 requests sent by the inner agent, 3 received" in r.stdout
    assert f"unaccounted: reverse request {late['object_id']} (start_stream)" in r.stdout, r.stdout
