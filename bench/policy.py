"""Policy decisions per second: 10,000 device rules, 100,000 distinct device IDs.

    .venv/bin/python bench/policy.py [--rules N] [--ids N] [--runs N] [--big-only]

Builds a policy in memory (half the sources match devices by region code and
type code, half list exact IDs; one video rule each), builds the canonical
objects first (70% of the IDs match a source, the rest are strangers and
look-alikes; one in ten of the others exceeds the bitrate
limit), pins itself to one core and measures Plan.decide over all the
objects: one cold pass (memo empty), then the median of --runs passes. The
goal is >= 500,000 decisions/s.

First (issue 11 item 6), in a child process of its own so its memory is its own: a 4 MiB
policy of 15,000 sources and 21,000 rules (tests/support/bigpolicy.py) is written to a
folder, then loaded as ``ferry policy check`` loads it (read, parse, hash, compile:
``compile_s``) and linted (``check_s`` is the two together, ``peak_mb`` the child's peak
resident memory, imports included). The goal is under 5 s and 200 MB.
Last lines: ``compile_s=X check_s=Y peak_mb=Z`` and then ``decisions_per_s=N``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))      # tests.support, when run as bench/policy.py

from ferry.pb import ferry_pb2  # noqa: E402
from ferry.policy import compile_policy, load_plan  # noqa: E402
from ferry.policy.lint import lint  # noqa: E402
from ferry.policy.models import Policy  # noqa: E402
from tests.support.bigpolicy import big_policy_yaml  # noqa: E402

VIDEO = {"codecs": ["h264", "h265"], "max_width": 1920, "max_height": 1080, "max_frame_rate": 30,
         "max_bitrate_kbps": 8000}


def build_policy(n_rules: int, rng: random.Random) -> tuple[dict, list[str]]:
    """The policy document and some device IDs that match it."""
    sources: dict[str, dict] = {}
    rules: list[dict] = []
    matching: list[str] = []
    for i in range(n_rules):
        name = f"src-{i:05d}"
        region8 = f"43{i // 100:02d}{i % 100:02d}00"          # a distinct 8-digit centre code per source
        if i % 2 == 0:
            sources[name] = {"kind": "devices", "match": [{"region": region8, "type": ["131", "132"]}]}
            matching += [f"{region8}00{rng.choice(('131', '132'))}{rng.randrange(10**7):07d}" for _ in range(14)]
        else:
            ids = [f"{region8}01132{rng.randrange(10**7):07d}" for _ in range(5)]
            sources[name] = {"kind": "devices", "ids": sorted(set(ids))}
            matching += sorted(set(ids))
        rules.append({"id": f"video-{i:05d}", "lane": "video", "from": name, "to": "police-vms",
                      "video": VIDEO})
    doc = {"policy": "bench", "version": 1, "default": "deny", "timezone": "Asia/Shanghai",
           "sources": sources, "destinations": {"police-vms": {"kind": "vms"}}, "rules": rules}
    return doc, matching


def build_objects(matching: list[str], n_ids: int, rng: random.Random) -> list[ferry_pb2.CanonicalObject]:
    ids: set[str] = set(rng.sample(matching, min(len(matching), n_ids * 7 // 10)))
    while len(ids) < n_ids:   # strangers (other regions, wrong types) and look-alikes
        r = rng.randrange(4)
        if r == 0:
            ids.add(f"44{rng.randrange(10**18):018d}")
        elif r == 1:
            ids.add(f"4300000000200{rng.randrange(10**7):07d}")
        elif r == 2:
            ids.add(rng.choice(matching) + "0")                       # 21 digits
        else:
            ids.add(rng.choice(matching)[:19])                        # 19 digits
    order = sorted(ids)
    rng.shuffle(order)
    # Built in the order they are decided (as an agent builds each object just before deciding it).
    objects = []
    for device_id in order:
        obj = ferry_pb2.CanonicalObject(lane="video", destination="police-vms", created=1.7e9,
                                        source=ferry_pb2.Source(device_id=device_id, address="10.20.1.1"))
        obj.access_unit.codec = "h264"
        obj.access_unit.width, obj.access_unit.height = 1920, 1080
        obj.access_unit.frame_rate, obj.access_unit.bitrate_kbps = 25.0, 4000 if rng.random() < 0.9 else 9000
        objects.append(obj)
    return objects


def big_policy_check(folder: str) -> None:
    """In the child: load, compile and lint the policy in ``folder``; print the figures."""
    t1, c1 = time.perf_counter(), time.process_time()
    plan = load_plan(folder)
    t2, c2 = time.perf_counter(), time.process_time()
    findings = lint(plan)
    t3, c3 = time.perf_counter(), time.process_time()
    with open("/proc/self/status") as f:     # VmHWM: ru_maxrss would carry the parent's over execve
        peak = int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) / 1024
    print(f"big policy: {len(plan.rules)} rules, {len(plan.sources)} sources, {len(findings)} findings; "
          f"load+compile {t2 - t1:.2f} s (cpu {c2 - c1:.2f}), "
          f"lint {t3 - t2:.2f} s (cpu {c3 - c2:.2f})")
    print(f"compile_s={t2 - t1:.2f} check_s={t3 - t1:.2f} peak_mb={peak:.0f}")


def big_policy() -> str:
    """Write the 4 MiB policy, check it in a child process, return its figures line."""
    with tempfile.TemporaryDirectory(prefix="ferry-bigpol-") as folder:
        data = big_policy_yaml()
        (Path(folder) / "policy.yaml").write_bytes(data)
        print(f"big policy: {len(data):,} bytes in {folder}/policy.yaml")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        out = subprocess.run([sys.executable, __file__, "--check-folder", folder], env=env, check=True,
                             capture_output=True, text=True).stdout.splitlines()
    for line in out[:-1]:
        print(line)
    return out[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rules", type=int, default=10_000)
    p.add_argument("--ids", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--big-only", action="store_true", help="only the 4 MiB policy's compile_s/check_s/peak_mb")
    p.add_argument("--check-folder", help=argparse.SUPPRESS)   # the child's part
    args = p.parse_args()
    if args.check_folder:
        big_policy_check(args.check_folder)
        return
    big = big_policy()
    print(big)
    if args.big_only:
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = random.Random(4309)
    doc, matching = build_policy(args.rules, rng)
    t0 = time.perf_counter()
    policy = Policy.model_validate(doc)
    t1 = time.perf_counter()
    plan = compile_policy(policy, b"\0" * 32)
    t2 = time.perf_counter()
    print(f"policy: {len(plan.rules)} rules, {len(plan.sources)} sources; "
          f"validate {t1 - t0:.3f} s, compile {t2 - t1:.3f} s")
    objects = build_objects(matching, args.ids, rng)
    decide = plan.decide
    t0 = time.perf_counter()
    verdicts = [decide(o) for o in objects]
    cold = len(objects) / (time.perf_counter() - t0)
    allowed = sum(d.allowed for d in verdicts)
    denied = sum(d.rule == "default-deny" for d in verdicts)
    print(f"objects: {len(objects)} distinct device IDs; allowed {allowed}, refused by a rule "
          f"{len(objects) - allowed - denied}, default-deny {denied}")
    print(f"cold pass (memo empty): {cold:,.0f} decisions/s")
    rates = []
    for run in range(args.runs):
        t0 = time.perf_counter()
        for o in objects:
            decide(o)
        rates.append(len(objects) / (time.perf_counter() - t0))
        print(f"run {run + 1}: {rates[-1]:,.0f} decisions/s")
    print(big)
    print(f"decisions_per_s={statistics.median(rates):.0f}")


if __name__ == "__main__":
    main()
