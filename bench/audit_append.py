"""Audit records per second: what one object_sent / object_delivered record costs an agent.

    .venv/bin/python bench/audit_append.py [--records N] [--runs N]

A fixed workload of typical records (alternately an outer keepalive's ``object_sent`` and an
inner ``object_delivered``, object IDs, serial numbers, sizes and device IDs varying), timed
three ways, each in a fresh directory, the median of --runs passes. The figure is CPU time
(``time.process_time``, system calls included) per record: on a shared machine the wall clock
mostly measures the neighbours.

- ``baseline``: a bare ``json.dumps(sort_keys=True)`` of the same dicts and one ``os.write``
  per line on an O_APPEND file: the floor any JSON Lines trail pays;
- ``trail``: ``AuditTrail.append`` (validation, time stamp, SM3 chain, the write, and the
  SM2-signed, fdatasync'd checkpoint every AUDIT_CHECKPOINT_EVERY records);
- ``queue``: ``AuditQueue.append``, what the agents call (the plan's hash added, then the trail).

The trails written are verified afterwards (``ferry audit verify``'s verify_dir), outside
the timing. The goal (issue 13) is ``trail`` <= 25 us per record.
Last line: ``baseline_us=A trail_us=B queue_us=C trail_over_baseline=R``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ferry.agents.common import AuditQueue  # noqa: E402
from ferry.audit.trail import AuditTrail  # noqa: E402
from ferry.audit.verify import verify_dir  # noqa: E402
from ferry.crypto import SM2PrivateKey  # noqa: E402

WALL = 1_765_000_000.0
STEP = 0.0005                   # 2000 records/s of wall clock
POLICY_HASH = "b808c70d593abcdd5673f97ab53f1da31e42829645cead18a27cad30a522bfcc"


def workload(n: int) -> list[dict[str, Any]]:
    """``n`` typical records, as the lanes hand them to the agent (no time/agent/policy_hash)."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        device = f"4309000000132{i % 10000:07d}"
        if i % 2 == 0:
            out.append({
                "event": "object_sent", "verdict": "sent", "lane": "signaling",
                "object_id": 30064771074 + i, "object_type": "Notify/Keepalive", "size": 170 + i % 9,
                "source": {"address": f"192.0.2.{i % 250 + 1}", "device_id": device},
                "destination": "platform", "rule": "yiyang-signaling",
                "reason": "allowed by yiyang-signaling",
                "detail": {"root": "Notify", "cmd_type": "Keepalive", "sn": i % 100000, "transport": "udp"},
                "epoch": 1700000000, "blocks": [12 + i]})
        else:
            out.append({
                "event": "object_delivered", "verdict": "delivered", "lane": "signaling",
                "object_id": 30064771073 + i, "epoch": 1700000000, "blocks": [11 + i],
                "rule": "yiyang-signaling", "reason": "allowed by yiyang-signaling",
                "object_type": "signaling", "source": {"address": f"192.0.2.{i % 250 + 1}", "device_id": device},
                "destination": "platform",
                "detail": {"root": "Notify", "cmd_type": "Keepalive", "inner_id": f"3402000000132{i % 10000:07d}",
                           "forwarded": False, "items": None, "devices": 10000}})
    return out


def run_baseline(d: Path, records: list[dict[str, Any]]) -> float:
    fd = os.open(d / "baseline.jsonl", os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        t = time.process_time()
        for rec in records:
            os.write(fd, json.dumps(rec, sort_keys=True, separators=(",", ":"),
                                    ensure_ascii=False).encode() + b"\n")
        return time.process_time() - t
    finally:
        os.close(fd)


def run_trail(d: Path, records: list[dict[str, Any]], key: SM2PrivateKey) -> float:
    trail = AuditTrail(d, "outer", "bench-outer", key)
    now = WALL
    t = time.process_time()
    for rec in records:
        now += STEP
        trail.append(now, policy_hash=POLICY_HASH, **rec)
    dt = time.process_time() - t
    trail.close(now + STEP)
    return dt


class _Plan:
    hash = bytes.fromhex(POLICY_HASH)


def run_queue(d: Path, records: list[dict[str, Any]], key: SM2PrivateKey) -> float:
    trail = AuditTrail(d, "outer", "bench-outer", key)
    plan = _Plan()
    queue = AuditQueue(trail, lambda: plan, "signaling")     # type: ignore[arg-type,return-value]
    t = time.process_time()
    for rec in records:
        queue.append(rec)
    dt = time.process_time() - t
    trail.close(time.time())
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    records = workload(args.records)
    key = SM2PrivateKey.generate()
    times: dict[str, list[float]] = {"baseline": [], "trail": [], "queue": []}
    with tempfile.TemporaryDirectory(prefix="ferry-bench-audit-", dir=os.environ.get("FERRY_BENCH_DIR")) as tmp:
        for run in range(args.runs):
            for name in times:
                d = Path(tmp) / f"{name}-{run}"
                d.mkdir()
                if name == "baseline":
                    dt = run_baseline(d, records)
                else:
                    dt = (run_trail if name == "trail" else run_queue)(d, records, key)
                    result = verify_dir(d, key.public_key())
                    if not result.ok or result.records - result.checkpoints != len(records):
                        print(f"{name}: the trail written does not verify: {result}", file=sys.stderr)
                        return 1
                times[name].append(dt / len(records) * 1e6)
            print(f"run {run + 1}: " + " ".join(f"{k}={v[-1]:.1f}us" for k, v in times.items()))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"baseline_us={med['baseline']:.1f} trail_us={med['trail']:.1f} queue_us={med['queue']:.1f} "
          f"trail_over_baseline={med['trail'] / med['baseline']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
