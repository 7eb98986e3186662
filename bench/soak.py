"""Soak: files and video through real agents for a set time while faults are injected at random.

Not a CI test. Both agents run in network namespaces (outer -> link -> inner, as
tests/e2e/test_faults.py; needs root, ip, nft), the outer agent under libfaketime (Debian package
faketime) so its wall clock can be stepped. A feeder drops text files of random size into the
outer spool; a GB/T 28181 test camera (ferry.camera) streams into the outer agent throughout.
The outer agent rotates its key every `--key-lifetime` seconds. At random intervals
(`--fault-every` seconds on average) one fault from this list:

    link_cut     the link drops everything (nftables) for 10-60 s, then is restored
    clock_step   the outer agent's wall clock jumps an hour forward or back for 10-30 s
    reload       a signed policy bundle (alternately v2 and v1) is applied to both agents

(the log server down and back waits for audit forwarding, issue 14 item 2: not injected yet.)
At the end the faults are undone, the agents drain and stop, and `ferry audit reconcile` of the
two trails decides. Last line:

    soak_hours=H objects=N lost_unaccounted=U

N: objects the outer agent sent (reconcile's `sent`), U: those with no outcome on the inner trail
(reconcile's `unaccounted`); the exit code is 1 unless U == 0 and reconcile says ok.

    .venv/bin/python bench/soak.py [--hours 0.05] [--seed S] [--fault-every 40] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from appliance import Appliance, free_udp_port, read_trail  # noqa: E402
from faults import (FakeClock, camera, cut_link, environment, ferry, libfaketime, namespaces,  # noqa: E402
                    netns_appliance, reconcile, restore_link)

CAMERA = "43090000001320000001"       # the demo policy's cameras: region 4309, type 132
HOUR = 3600


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def setup(work: Path, names: dict, key_lifetime: float, rate_mbps: float) -> tuple[Appliance, int, Path, Path]:
    """The appliance (not started), the camera's port, and two policy folders differing in one limit."""
    a = netns_appliance(Appliance, names, work=work, rate_mbps=rate_mbps, management=True)
    cfg = a.work / "outer.toml"
    cfg.write_text(cfg.read_text().replace("[link]\n", f"[link]\nkey_lifetime = {key_lifetime}\n", 1))
    port = free_udp_port()
    a.append_config("outer", f'[[video]]\nname = "cam"\ntransport = "udp"\nlisten = "127.0.0.1:{port}"\n'
                             f'device_id = "{CAMERA}"\npayload = "ps"\ndestination = "police-vms"\n')
    a.append_config("inner", '[[video_output]]\ndestination = "police-vms"\nform = "ps"\ntransport = "file"\n'
                             'path = "recordings/{stream}.ps"\n')
    folders = []
    text = (a.work / "policy" / "policy.yaml").read_text()
    for v, limit in (("v2", "1048000"), ("v1", "1048576")):
        d = work / f"policy-{v}"
        d.mkdir()
        (d / "policy.yaml").write_text(text.replace("max_size: 1048576", f"max_size: {limit}"))
        folders.append(d)
    return a, port, folders[0], folders[1]


def reload(a: Appliance, folder: Path) -> str:
    """Sign `folder` now (a bundle older than the running one is refused: rollback protection) and
    apply it to both agents, inner first."""
    bundle = folder.with_suffix(".ferrypolicy")
    r = ferry("policy", "sign", folder, "--key", a.admin_key, "-o", bundle)
    if r.returncode:
        return f"sign failed: {r.stdout}{r.stderr}"
    r = ferry("policy", "apply", bundle, "--socket", a.inner_socket, "--socket", a.outer_socket)
    return "applied to both agents" if r.returncode == 0 else f"not applied: {r.stdout}{r.stderr}"


def feeder(a: Appliance, stop: threading.Event, rng: random.Random, counts: dict) -> None:
    n = 0
    while not stop.is_set():
        size = rng.choice((200, 5_000, 50_000, 300_000))
        line = f"soak file {n}\n".encode()
        a.drop(f"soak-{n:06d}.txt", (line * (size // len(line) + 1))[:size])
        n += 1
        counts["files"] = n
        stop.wait(rng.uniform(0.1, 0.6))       # the offered load's pace


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=0.05, help="how long to run (default 0.05: 3 minutes)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: from the time)")
    p.add_argument("--fault-every", type=float, default=40.0, help="mean seconds between faults (default 40)")
    p.add_argument("--key-lifetime", type=float, default=30.0, help="outer [link] key_lifetime (default 30)")
    p.add_argument("--rate-mbps", type=float, default=20.0, help="outer [link] rate_mbps (default 20)")
    p.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = p.parse_args(argv)
    if not libfaketime():
        raise SystemExit("soak: needs libfaketime (apt-get install faketime)")
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="ferry-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"soak: {args.hours} h, seed {seed}, work {work}")
    faults: dict[str, int] = {"link_cut": 0, "clock_step": 0, "reload": 0}
    counts: dict[str, int] = {}
    t_start = time.monotonic()
    with namespaces() as names:
        clock = FakeClock(work / "faketime")
        a, port, v2, v1 = setup(work / "appliance", names, args.key_lifetime, args.rate_mbps)
        cam = None
        stop = threading.Event()
        feed = threading.Thread(target=feeder, args=(a, stop, rng, counts))
        try:
            a.start_role("inner")
            with environment(clock.env()):
                a.start_role("outer")
            seconds = args.hours * HOUR
            cam = camera(names["outer"], port, seconds=10.0, loops=int(seconds / 10) + 3)
            feed.start()
            t_start = time.monotonic()                 # the soak's time: from the first file and picture
            end = t_start + seconds
            next_policy = v2
            while (left := end - time.monotonic()) > 0:
                wait = min(left, rng.expovariate(1.0 / args.fault_every))
                stop.wait(wait)                        # the time between faults (scenario)
                if end - time.monotonic() < 15:
                    break
                fault = rng.choice(sorted(faults))
                faults[fault] += 1
                if fault == "link_cut":
                    length = rng.uniform(10, 60)
                    log(f"fault: link cut for {length:.0f} s")
                    cut_link(names["link"])
                    stop.wait(length)
                    log(f"       link restored ({restore_link(names['link'])} packets dropped)")
                elif fault == "clock_step":
                    step, length = rng.choice((HOUR, -HOUR)), rng.uniform(10, 30)
                    log(f"fault: outer wall clock {step:+d} s for {length:.0f} s")
                    clock.set(step)
                    stop.wait(length)
                    clock.set(0)
                    log("       clock back")
                else:
                    log(f"fault: policy reload {next_policy.name}: {reload(a, next_policy)}")
                    next_policy = v1 if next_policy == v2 else v2
        finally:
            stop.set()
            if feed.is_alive():
                feed.join()
            if cam is not None:
                cam.kill()
                cam.wait()
            clock.set(0)
            try:
                restore_link(names["link"])
            except RuntimeError:
                pass                                   # no cut in place
        soak_s = time.monotonic() - t_start
        log(f"draining: {counts.get('files', 0)} files dropped; faults {faults}")
        try:
            a.wait_for(lambda: not any(p.is_file() for p in a.outer_spool.iterdir()), 300, "the outer spool drained",
                       interval=1.0)
            a.wait_for(lambda: reconcile(a.outer_audit, a.inner_audit)[1]["unaccounted"] == [], 120,
                       "every sent object accounted for", interval=2.0)
        except AssertionError as e:
            log(f"soak: {str(e).splitlines()[0]}")
        a.stop()
    rc, report = reconcile(a.outer_audit, a.inner_audit)
    for d in (a.outer_audit, a.inner_audit):
        v = ferry("audit", "verify", d)
        log(f"ferry audit verify {d.name}: {'ok' if v.returncode == 0 else v.stdout + v.stderr}")
    inner = read_trail(a.inner_audit)
    epochs = len({r["epoch"] for r in inner if r["event"] == "key_accepted"})
    streams = report.get("streams", [])
    log(f"reconcile: ok={report['ok']} sent={report['sent']} delivered={len(report['delivered'])} "
        f"lost={len(report['lost'])} refused_inner={len(report['refused_inner'])} "
        f"refused_outer={len(report['refused_outer']) + report['refused_outer_unnumbered']} "
        f"key_epochs={epochs} streams={len(streams)} faults={json.dumps(faults)}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    unaccounted = len(report["unaccounted"])
    print(f"soak_hours={soak_s / HOUR:.3f} objects={report['sent']} lost_unaccounted={unaccounted}", flush=True)
    return 0 if rc == 0 and unaccounted == 0 and report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
