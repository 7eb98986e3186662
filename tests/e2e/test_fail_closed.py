"""No audit, no transfer: when the outer audit trail cannot be written, nothing
crosses until it can; then everything crosses and the trail says what happened."""
from __future__ import annotations

import subprocess
import sys

import pytest

from appliance import read_trail
from disk_full import fill
from waiting import file_size, wait_stable

pytestmark = [pytest.mark.root, pytest.mark.e2e]


def test_outer_lane_stops_while_audit_is_full(appliance_factory, small_disk):
    a = appliance_factory(outer_audit=small_disk / "outer").start()
    a.drop("before.txt", b"crosses while the disk has room\n")
    a.wait_for(lambda: a.outcomes().get("before.txt") == "delivered", 20, "before.txt")
    filler = small_disk / "filler"
    fill(filler)
    # The trail's last page may still have a few KiB of slack: send more records than fit.
    names = [f"during-{n:02d}.txt" for n in range(30)]
    for name in names:
        a.drop(name, f"{name} must wait for the audit trail\n".encode())
    # the outer agent has seen every file (scan interval 0.1 s) and done what it could: its trail
    # and the outcomes stop moving; a full second of stillness is ten scans
    wait_stable(lambda: (file_size(a.outer_audit / "audit.jsonl"), frozenset(a.outcomes().items())), 1.0, 30,
                "the outer trail and the outcomes", interval=0.1)
    held = [n for n in names if n not in a.outcomes()]
    assert held, "every file crossed although the audit trail could not be written"
    assert not any((a.inner_spool / n).exists() for n in held)
    # nothing crossed without its outer record: every delivered object has an object_sent
    outer = read_trail(a.outer_audit)
    sent_ids = {r["object_id"] for r in outer if r["event"] == "object_sent"}
    delivered_ids = {r["object_id"] for r in read_trail(a.inner_audit) if r["event"] == "object_delivered"}
    assert delivered_ids <= sent_ids
    filler.unlink()
    a.wait_for(lambda: all(a.outcomes().get(n) == "delivered" for n in names), 30, "all files after the disk has room")
    outer = read_trail(a.outer_audit)
    resumed = [r for r in outer if r["event"] == "audit_resumed"]
    assert resumed and resumed[0]["verdict"] == "alarm"
    held_sent = [r for r in outer if r["event"] == "object_sent" and r["detail"]["name"] in held]
    # every held file has exactly one record; those that did not fit were written after the trail came back
    assert len(held_sent) == len(held) and any(outer.index(resumed[0]) < outer.index(r) for r in held_sent)
    a.stop()
    r = subprocess.run([sys.executable, "-m", "ferry", "audit", "verify", str(a.outer_audit)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
