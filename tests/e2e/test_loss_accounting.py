"""Loss accounting across an inner restart (issue 10 item 4): the inner agent is killed (-9)
during a bulk transfer and started again; the transfer goes on.

The inner trail must then record a loss once per gap (one `block_lost` with its block range)
and once per object (one `object_lost`), never for an object it delivered, and `ferry audit
reconcile` must find every object the outer agent sent delivered or lost (it now also fails
on an object both delivered and lost).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from appliance import ROOT, Appliance, read_trail
from ferry import limits
from ferry.audit.reconcile import reconcile

pytestmark = pytest.mark.e2e

FILES, FILE_SIZE = 30, 2 << 20
AFTER = 5                # files dropped once the restarted agent has the key
RATE_MBPS = 100.0        # ~5 s of link time for the bulk: the restart falls in the middle of it


def _events(records: list[dict], name: str) -> list[dict]:
    return [r for r in records if r["event"] == name]


def _start_inner(a: Appliance) -> None:
    """Start the inner agent again (as Appliance.start does) and wait for its agent_started."""
    before = len(_events(read_trail(a.inner_audit), "agent_started"))
    log = open(a.work / "logs" / "inner.log", "ab")
    a.procs["inner"] = subprocess.Popen(
        [sys.executable, "-m", "ferry", "inner", "--config", str(a.work / "inner.toml")],
        stdout=log, stderr=subprocess.STDOUT, cwd=a.work,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "FERRY_STRICT": "1"})
    log.close()
    a.wait_for(lambda: len(_events(read_trail(a.inner_audit), "agent_started")) > before, 30, "inner agent restart")


def _lost_ranges(inner: list[dict]) -> list[tuple[int, int, int]]:
    """(epoch, first, end) of every block_lost record."""
    out = []
    for r in _events(inner, "block_lost"):
        first = r["blocks"][0]
        out.append((r["epoch"], first, first + (r.get("detail") or {}).get("count", 1)))
    return out


def _gaps(ranges: list[tuple[int, int, int]]) -> int:
    """Maximal runs of consecutive lost blocks (per epoch) the records cover."""
    gaps = 0
    last: dict[int, int] = {}
    for epoch, first, end in sorted(ranges):
        if last.get(epoch) != first:
            gaps += 1
        last[epoch] = max(end, last.get(epoch, end))
    return gaps


def test_an_inner_restart_during_a_bulk_records_each_loss_once_and_never_a_delivered_object(
        appliance_factory, tmp_path):
    pol = tmp_path / "bulk-policy"
    shutil.copytree(ROOT / "policy" / "demo", pol)
    text = (pol / "policy.yaml").read_text()
    (pol / "policy.yaml").write_text(text.replace("max_size: 1048576", f"max_size: {8 << 20}", 1))
    a = appliance_factory(policy_dir=pol, rate_mbps=RATE_MBPS).start()
    staging = a.work / "staging"
    staging.mkdir()
    names = [f"bulk{i:02d}.txt" for i in range(FILES)]
    for n in names:                        # text/plain content, every file different
        (staging / n).write_bytes(os.urandom(FILE_SIZE // 2).hex().encode())
    for n in names:
        os.rename(staging / n, a.outer_spool / n)

    a.wait_for(lambda: len(_events(read_trail(a.inner_audit), "object_delivered")) >= 3, 60,
               "the first files delivered")
    a.procs["inner"].send_signal(signal.SIGKILL)       # kill -9 in the middle of the bulk
    a.procs["inner"].wait()
    delivered_before = {r["object_id"] for r in _events(read_trail(a.inner_audit), "object_delivered")}
    _start_inner(a)
    # the restarted agent gets the key (once the announcement is through), then a second batch
    # goes to it: the accounting after the restart is exercised on traffic it sees whole
    a.wait_for(lambda: len(_events(read_trail(a.inner_audit), "key_accepted")) >= 2, 60, "the key again")
    second = [f"after{i:02d}.txt" for i in range(AFTER)]
    for n in second:
        (staging / n).write_bytes(os.urandom(FILE_SIZE // 2).hex().encode())
        os.rename(staging / n, a.outer_spool / n)

    def settled() -> bool:
        outer = read_trail(a.outer_audit)
        if len(_events(outer, "object_sent")) + len(_events(outer, "object_refused")) < FILES + AFTER:
            return False
        r = reconcile(outer, read_trail(a.inner_audit))
        return not r.unaccounted

    a.wait_for(lambda: set(second) <= set(a.outcomes()), 60, "the second batch accounted for")
    # objects the restarted agent saw in part are lost by OBJECT_TIMEOUT at the latest
    deadline = time.monotonic() + limits.OBJECT_TIMEOUT + limits.BLOCK_TIMEOUT
    a.wait_for(lambda: settled() or time.monotonic() > deadline, 60, "every file accounted for, or the timeouts")
    time.sleep(1.0)                        # (scenario) the last records reach the trail
    outer, inner = read_trail(a.outer_audit), read_trail(a.inner_audit)
    sent = {r["object_id"]: r for r in _events(outer, "object_sent")}
    assert len(sent) == FILES + AFTER and delivered_before
    names_of = {oid: (r.get("detail") or {}).get("name") for oid, r in sent.items()}

    # 1. no object both delivered and lost: by an object_lost, or by a block_lost of a block
    #    that carried it (the outer trail's blocks)
    delivered = {r["object_id"] for r in _events(inner, "object_delivered")}
    lost_ids = {r["object_id"] for r in _events(inner, "object_lost")}
    ranges = _lost_ranges(inner)
    in_lost_blocks = {oid for oid, s in sent.items()
                      if any(e == s["epoch"] and first <= b < end for e, first, end in ranges for b in s["blocks"])}
    assert not delivered & lost_ids, f"delivered and object_lost: {sorted(delivered & lost_ids)}"
    assert not delivered & in_lost_blocks, f"delivered and in a block_lost: {sorted(delivered & in_lost_blocks)}"
    # each object lost once
    assert len(_events(inner, "object_lost")) == len(lost_ids)

    # 2. a loss once per gap, with its block range: no two block_lost records adjacent or
    #    overlapping, a handful of them, not one per block
    blocks_lost = _events(inner, "block_lost")
    print(f"{len(delivered)} delivered ({len(delivered_before)} before the restart), {len(lost_ids)} object_lost, "
          f"{len(blocks_lost)} block_lost records covering {sum(e - f for _, f, e in ranges)} blocks "
          f"in {_gaps(ranges)} gaps")
    assert len(blocks_lost) <= _gaps(ranges), ranges
    assert len(blocks_lost) <= 10, ranges
    for r in blocks_lost:
        assert r["code"] and len(r["blocks"]) == 1 and (r.get("detail") or {}).get("count", 1) >= 1, r

    # 3. reconcile: a delivered-and-lost object is a failure, and every object is accounted for
    report = reconcile(outer, inner)
    unaccounted_second = [u for u in report.unaccounted if names_of[u["object_id"]] in second]
    assert not unaccounted_second, unaccounted_second
    assert not report.delivered_and_lost and not report.duplicates and not report.unexpected
    a.stop()
    r = subprocess.run([sys.executable, "-m", "ferry", "audit", "reconcile", str(a.outer_audit),
                        str(a.inner_audit)], capture_output=True, text=True, timeout=60)
    # the restarted agent resumed from its stored link state: the blocks sent while it was down
    # are one gap, so every object sent is delivered or named lost
    assert not report.unaccounted, report.unaccounted
    assert report.ok and r.returncode == 0, r.stdout + r.stderr
