"""Benchmark: concurrent GB/T 28181 streams through real agents, against a remux-and-seal floor.

Workload: N cameras, each a 4 Mbps 1080p25 H.264 stream as RTP/PS over UDP in real time (the
test camera of ferry/camera.py: one ffmpeg-made source, per-stream SSRC and sequence
numbers, start phases spread over a frame), into a real outer agent on loopback, across the
sealed link, out of a real inner agent as fresh RTP/PS over UDP, one output port per stream.
N climbs a bounded ladder (1, 5, 10, 20, 30, 40, 50, 60, 80, 100, 110, 120; `--ladder`), `--seconds` (10) per
trial; the search stops at the first N that fails. A trial passes when every stream's output has
contiguous sequence numbers and every frame (marker count), the trails record no loss or refusal,
sampled outputs (first and last stream) decode with ffmpeg to the source's framemd5, and ferry
keeps up with real time (p99 added latency <= --max-latency-ms, 200; no backlog at the end).

Measured per passing trial: latency added by ferry (camera sent a frame's last packet -> the
receiver got the rebuilt frame's last packet, p50/p99 over all frames), and ferry's CPU seconds
per stream-second (outer + inner agent, /proc/<pid>/stat utime+stime).
Floor, in the same run: CPU seconds per stream-second of `ffmpeg -c copy` remuxing the same
program stream (20 passes minus 1 pass, so start-up does not count), plus SM4-GCM sealing and
opening one second of the stream in link-sized blocks (ferry.crypto.SM4GCM).
Senders (one process per 20 streams) and the receiver share the machine with the agents, so the
numbers are pessimistic on small machines.

    .venv/bin/python bench/video.py [--seconds 10] [--ladder 1,5,10,20,...,120] [--keep DIR]
                                    [--perf DIR] [--profile DIR]

`--perf DIR` samples each agent with perf and splits its CPU per stream-second into the cipher
(SM4/GCM symbols), the Python interpreter, the kernel, libc and the rest, then prints what
cpu_vs_floor <= 1.5 leaves for everything but the cipher. `--profile DIR` samples the agents'
Python stacks with py-spy. Both samplers load the machine: the latency of that run suffers.

Last line: streams_zero_loss=N cpu_vs_floor=R (R: ferry's CPU per stream-second at the largest
passing N over the floor's).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import resource
import selectors
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from ferry import camera as gb28181  # noqa: E402  (the GB/T 28181 test camera)
from ferry.codecs.rtp import HEADER, parse_rtp  # noqa: E402
from ferry import limits  # noqa: E402
from ferry.crypto import SM4GCM, random_key  # noqa: E402
from ferry.wire import fec  # noqa: E402
from ferry.wire.frame import SYMBOL_HEADER_SIZE  # noqa: E402
from appliance import Appliance, read_trail  # noqa: E402  (tests/support)

CODEC = "h264"
SOURCE = dict(codec=CODEC, size="1920x1080", seconds=10, rate=25,
              extra="-b:v 4M -maxrate 4M -bufsize 2M")
STREAMS_PER_SENDER = 20
PT = 96
CLK_TCK = os.sysconf("SC_CLK_TCK")


def source_path() -> Path:
    return gb28181.make_source(None, **SOURCE)


def device_id(i: int) -> str:
    return f"4309000000132{i:07d}"  # region 4309, IP camera (132), serial i


# --- policy and configs -----------------------------------------------------------------------
def write_policy(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    dests = "\n".join(f"  vms-{i}: {{kind: vms, description: bench output {i}}}" for i in range(n))
    rules = "\n".join(f"""  - id: video-{i}
    lane: video
    from: bench-cameras
    to: vms-{i}
    video:
      codecs: [h264, h265]
      max_width: 1920
      max_height: 1080
      max_frame_rate: 30
      max_bitrate_kbps: 8000
      audio: false
      keep_sei: false
      mode: remux""" for i in range(n))
    (folder / "policy.yaml").write_text(f"""policy: bench-video
version: 1
description: bench/video.py - N cameras, one VMS output each
default: deny
sources:
  bench-cameras:
    kind: devices
    description: synthetic cameras on loopback
    match:
      - region: "4309"
        type: ["132"]
    addresses: ["127.0.0.0/8"]
    protocol: udp
destinations:
{dests}
rules:
{rules}
""")


def video_config(in_ports: list[int], out_ports: list[int]) -> tuple[str, str]:
    outer, inner = [], []
    for i, (pin, pout) in enumerate(zip(in_ports, out_ports)):
        outer.append(f"""[[video]]
name = "cam-{i}"
transport = "udp"
listen = "127.0.0.1:{pin}"
device_id = "{device_id(i)}"
ssrc = 0
payload = "ps"
destination = "vms-{i}"
""")
        inner.append(f"""[[video_output]]
destination = "vms-{i}"
form = "ps"
transport = "udp"
address = "127.0.0.1:{pout}"
payload_type = {PT}
""")
    return "\n".join(outer), "\n".join(inner)


def free_udp_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --- camera senders ---------------------------------------------------------------------------
def base_packets(path: Path) -> list[tuple[float, bool, int, bytes]]:
    """(offset, marker, timestamp, payload) of the camera stream, SSRC and sequence left out."""
    out = []
    for data, offset in gb28181.ps_packets(path, CODEC, ssrc=1, payload_type=PT):
        p = parse_rtp(data)
        out.append((offset, p.marker, p.timestamp, bytes(p.payload)))
    return out


def sender(streams: list[tuple[int, int, int, float]], path: str, start_at: float, result_q) -> None:
    """Streams (index, port, ssrc, phase) in real time from `start_at` (time.monotonic)."""
    base = base_packets(Path(path))
    schedule = sorted((phase + off, k, j) for k, (_i, _p, _s, phase) in enumerate(streams)
                      for j, (off, _m, _t, _d) in enumerate(base))
    addrs = [("127.0.0.1", port) for _i, port, _s, _ph in streams]
    ssrcs = [s for _i, _p, s, _ph in streams]
    seqs = [random.Random(s).randrange(65536) for s in ssrcs]
    sent: list[list[float]] = [[] for _ in streams]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    pack, now = HEADER.pack, time.monotonic
    lag = 0.0
    while time.monotonic() < start_at - 0.002:
        time.sleep(0.001)
    cpu0 = time.process_time()
    for t, k, j in schedule:
        due = start_at + t
        delay = due - now()
        if delay > 0.0005:
            time.sleep(delay)
        elif -delay > lag:
            lag = -delay
        _off, marker, ts, payload = base[j]
        sock.sendto(pack(0x80, (0x80 if marker else 0) | PT, (seqs[k] + j) & 0xFFFF, ts, ssrcs[k]) + payload,
                    addrs[k])
        if marker:
            sent[k].append(now())
    sock.close()
    result_q.put(("sent", [i for i, *_ in streams], sent, lag, time.process_time() - cpu0))


# --- receiver -----------------------------------------------------------------------------------
def receiver(n: int, keep: list[int], port_q, result_q, stop) -> None:
    """One socket per output stream; per stream: packets, sequence gaps, SSRCs, marker times."""
    socks = []
    sel = selectors.DefaultSelector()
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        socks.append(s)
    port_q.put([s.getsockname()[1] for s in socks])
    packets = [0] * n
    gaps = [0] * n
    last = [None] * n
    ssrcs: list[set] = [set() for _ in range(n)]
    pts: list[set] = [set() for _ in range(n)]
    markers: list[list[float]] = [[] for _ in range(n)]
    ps = {i: [] for i in keep}
    idle_since = time.monotonic()
    now = time.monotonic
    cpu0 = None
    while True:
        events = sel.select(0.2)
        t = now()
        if not events:
            if stop.is_set() and t - idle_since > 1.5:
                break
            continue
        idle_since = t
        if cpu0 is None:
            cpu0 = time.process_time()
        for key, _ in events:
            i, s = key.data, key.fileobj
            while True:
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    break
                if len(data) < 12:
                    gaps[i] += 1
                    continue
                b1, seq, _ts, ssrc = struct.unpack_from("!xBHII", data)
                packets[i] += 1
                ssrcs[i].add(ssrc)
                pts[i].add(b1 & 0x7F)
                if last[i] is not None and seq != (last[i] + 1) & 0xFFFF:
                    gaps[i] += 1
                last[i] = seq
                if b1 & 0x80:
                    markers[i].append(t)
                if i in ps:
                    ps[i].append(data[12:])
    result_q.put(("received", time.process_time() - (cpu0 or 0.0), packets, gaps, [sorted(s) for s in ssrcs],
                  [sorted(p) for p in pts], markers,
                  {i: b"".join(v) for i, v in ps.items()}))


# --- CPU -----------------------------------------------------------------------------------------
def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat, all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v) - idle) / CLK_TCK, sum(v) / CLK_TCK


def child_cpu(cmd: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def floor(path: Path, work: Path) -> dict:
    """CPU seconds per stream-second: ffmpeg -c copy (steady state) + SM4-GCM seal + open."""
    one = gb28181.ps_stream(gb28181.ps_packets(path, CODEC, ssrc=1))
    passes = 20
    long = gb28181.ps_stream(gb28181.ps_packets(path, CODEC, ssrc=1, loops=passes))
    (work / "one.mpg").write_bytes(one)
    (work / "long.mpg").write_bytes(long)
    seconds = SOURCE["seconds"]

    def copy(name: str) -> float:
        return child_cpu(["ffmpeg", "-v", "error", "-nostdin", "-f", "mpeg", "-i", str(work / name),
                          "-map", "0:v", "-c", "copy", "-f", "mpeg", "-y", "/dev/null"])

    samples = []
    for _ in range(3):
        samples.append((copy("long.mpg") - copy("one.mpg")) / ((passes - 1) * seconds))
    ffmpeg_copy = max(statistics.median(samples), 1e-6)

    block = fec.block_capacity(16, 1472, SYMBOL_HEADER_SIZE)
    aead = SM4GCM(random_key())
    nonce, aad = bytes(12), b"hdr"
    blocks = [one[i:i + block] for i in range(0, len(one), block)]
    sealed = [aead.seal(nonce, b, aad) for b in blocks]
    reps = 5
    t = time.process_time()
    for _ in range(reps):
        for b in blocks:
            aead.seal(nonce, b, aad)
    seal = (time.process_time() - t) / (reps * seconds)
    t = time.process_time()
    for _ in range(reps):
        for s in sealed:
            aead.open(nonce, s, aad)
    opened = (time.process_time() - t) / (reps * seconds)
    return {"ffmpeg_copy": ffmpeg_copy, "sm4_seal": seal, "sm4_open": opened,
            "total": ffmpeg_copy + seal + opened, "stream_mbps": len(one) * 8 / seconds / 1e6,
            "block_bytes": block}


class _Direct:
    """Stands in for the appliance in --direct runs."""

    procs: dict = {}

    def append_config(self, role: str, text: str) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


# --- trial -----------------------------------------------------------------------------------------
def audit_problems(appliance) -> list[dict]:
    bad = []
    for trail in (appliance.outer_audit, appliance.inner_audit):
        for r in read_trail(trail):
            event = r.get("event", "")
            detail = r.get("detail") or {}
            lost = any(("lost" in k or "refused" in k or "dropped" in k) and isinstance(v, (int, float)) and v > 0
                       for k, v in detail.items())
            if "lost" in event or "loss" in event or "refused" in event or r.get("verdict") == "alarm" or lost:
                bad.append(r)
    return bad


# where an agent's CPU goes, by what runs (perf samples: shared object and symbol)
PERF_KINDS = ("cipher", "interpreter", "kernel", "libc", "other")
_CIPHER_SYMBOL = re.compile(r"sm4|gcm|ghash", re.I)


def perf_kind(dso: str, symbol: str) -> str:
    if _CIPHER_SYMBOL.search(symbol):
        return "cipher"
    if dso.startswith("libpython") or dso.startswith("python3"):
        return "interpreter"
    if dso.startswith("[kernel"):
        return "kernel"
    if dso.startswith("libc.so") or dso.startswith("libc-"):
        return "libc"
    return "other"


def perf_shares(data: Path) -> dict[str, float]:
    """Share of a `perf record` file's samples per PERF_KINDS (fractions summing to about 1)."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "dso,sym", "-g", "none",
                          "--stdio", "--percent-limit", "0"], capture_output=True, text=True, check=True).stdout
    shares = dict.fromkeys(PERF_KINDS, 0.0)
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$", line)
        if m:
            shares[perf_kind(m.group(2), m.group(3))] += float(m.group(1)) / 100
    return shares


def trial(n: int, path: Path, work: Path, expected_md5: list[str], seconds_cap: float, direct: bool = False,
          max_latency_ms: float = 200.0, profile: Path | None = None, perf: Path | None = None) -> dict:
    """One run of N streams; `direct`: cameras straight to the receiver (checks the harness itself)."""
    work.mkdir(parents=True)
    write_policy(work / "policy-src", n)
    keep = sorted({0, n - 1})
    ctx = mp.get_context("spawn")
    port_q, result_q, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    rx = ctx.Process(target=receiver, args=(n, keep, port_q, result_q, stop), daemon=True)
    rx.start()
    out_ports = port_q.get(timeout=30)
    # the link port is drawn with the cameras' ports: drawn apart, the OS could hand out one twice
    *in_ports, link_port = free_udp_ports(n + 1)
    if direct:
        in_ports = out_ports
    app = _Direct() if direct else Appliance(work / "appliance", policy_dir=work / "policy-src", port=link_port,
                                             rate_mbps=max(200.0, n * 4 * 2.0 + 50))
    outer_cfg, inner_cfg = video_config(in_ports, out_ports)
    app.append_config("outer", outer_cfg)
    app.append_config("inner", inner_cfg)
    senders = []
    try:
        app.start()
        time.sleep(1.0)
        pids = [p.pid for p in app.procs.values()]
        roles = list(app.procs)
        rng = random.Random(n)
        streams = [(i, in_ports[i], 0x10000000 + rng.randrange(1 << 27), 0.04 * i / n) for i in range(n)]
        start_at = time.monotonic() + 2.0 + 0.2 * (n // STREAMS_PER_SENDER)  # senders precompute first
        for g in range(0, n, STREAMS_PER_SENDER):
            p = ctx.Process(target=sender, args=(streams[g:g + STREAMS_PER_SENDER], str(path), start_at, result_q),
                            daemon=True)
            p.start()
            senders.append(p)
        while time.monotonic() < start_at - 0.05:
            time.sleep(0.01)
        cpu0 = [proc_cpu(pid) for pid in pids]
        m0 = machine_busy()
        t0 = time.monotonic()
        spies = [] if profile is None else [
            subprocess.Popen(["py-spy", "record", "--pid", str(p.pid), "--format", "raw", "--nonblocking", "--threads",
                              "--duration", str(int(seconds_cap)), "--output", str(profile / f"n{n}-{role}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for role, p in app.procs.items()]
        if perf is not None:
            spies += [subprocess.Popen(["perf", "record", "-F", "499", "-p", str(p.pid), "-o",
                                        str(perf / f"n{n}-{role}.data"), "--", "sleep", str(int(seconds_cap))],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for role, p in app.procs.items()]
        results = []
        deadline = start_at + seconds_cap + 60
        while len(results) < len(senders):
            results.append(result_q.get(timeout=max(1.0, deadline - time.monotonic())))
        time.sleep(1.0)  # the last frames cross
        for spy in spies:
            spy.wait(30)
        cpu1 = [proc_cpu(pid) for pid in pids]
        m1 = machine_busy()
        t1 = time.monotonic()
        if not direct:  # the last access units leave when the streams end (idle)
            time.sleep(limits.VIDEO_STREAM_IDLE + 1.0)
        stop.set()
        received = result_q.get(timeout=30)
        rx.join(10)
        for p in senders:
            p.join(10)
        agents_alive = all(p.poll() is None for p in app.procs.values())
        problems = [] if direct else audit_problems(app)
    finally:
        stop.set()
        app.stop()
        for p in senders + [rx]:
            if p.is_alive():
                p.terminate()
    sent = [None] * n
    lag = 0.0
    harness = 0.0
    for kind, idxs, times, sender_lag, sender_cpu in results:
        lag = max(lag, sender_lag)
        harness += sender_cpu
        for i, ts in zip(idxs, times):
            sent[i] = ts
    _kind, receiver_cpu, packets, gaps, ssrcs, pts, markers, ps = received
    harness += receiver_cpu
    frames = len(sent[0]) if sent and sent[0] else 0
    reasons = []
    if not agents_alive:
        reasons.append("an agent exited")
    for i in range(n):
        if packets[i] == 0:
            reasons.append(f"stream {i}: no output")
        elif gaps[i] or len(markers[i]) != frames or len(ssrcs[i]) != 1:
            reasons.append(f"stream {i}: {gaps[i]} gaps, {len(markers[i])}/{frames} frames, {len(ssrcs[i])} SSRCs")
    if problems:
        reasons.append(f"{len(problems)} loss/refusal audit records, first: {json.dumps(problems[0])[:300]}")
    for i, data in ps.items():
        f = work / f"out-{i}.mpg"
        f.write_bytes(data)
        try:
            md5 = gb28181.framemd5(f, "mpeg")
        except subprocess.CalledProcessError as exc:
            reasons.append(f"stream {i}: ffmpeg cannot decode the output ({exc.returncode})")
            continue
        if md5 != expected_md5:
            same = sum(a == b for a, b in zip(md5, expected_md5))
            reasons.append(f"stream {i}: output framemd5 differs ({same}/{len(expected_md5)} frames equal)")
    # frames received after the streams went quiet were flushed by the idle end of the stream
    # (an assembler holds the last access units until it sees what follows): counted apart
    quiet = t1 - 0.5
    latencies = [r - s for i in range(n) if sent[i] and len(markers[i]) == len(sent[i])
                 for s, r in zip(sent[i], markers[i]) if r < quiet]
    held = sum(r >= quiet for i in range(n) for r in markers[i])
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    # where the worst latencies sit: p99 per second of the run (the first holds every camera's keyframe)
    per_second: dict[int, list[float]] = {}
    t_first = min((ts[0] for ts in sent if ts), default=0.0)
    for i in range(n):
        if sent[i] and len(markers[i]) == len(sent[i]):
            for s, r in zip(sent[i], markers[i]):
                if r < quiet:
                    per_second.setdefault(int(s - t_first), []).append(r - s)
    p99_by_second = [round(statistics.quantiles(v, n=100)[98] * 1000) if len(v) >= 2 else None
                     for _k, v in sorted(per_second.items())]
    # keeping up: ferry must not fall behind real time (its CPU is then measured over work done)
    if q[98] * 1000 > max_latency_ms:
        reasons.append(f"behind real time: latency p99 {q[98] * 1000:.0f} ms > {max_latency_ms:.0f} ms")
    if held > 2 * n:
        reasons.append(f"behind real time: {held} frames came out after the cameras stopped")
    stream_seconds = n * frames / SOURCE["rate"]
    cpu_each = [b - a for a, b in zip(cpu0, cpu1)]
    breakdown = {}    # role -> kind -> CPU s per stream-s
    if perf is not None and stream_seconds:
        for role, cpu in zip(roles, cpu_each):
            shares = perf_shares(perf / f"n{n}-{role}.data")
            breakdown[role] = {k: v * cpu / stream_seconds for k, v in shares.items()}
    return {"n": n, "breakdown": breakdown, "ok": not reasons, "reasons": reasons[:5],
            "sender_lag_s": lag, "held_frames": held,
            "latency_p50_ms": q[49] * 1000, "latency_p99_ms": q[98] * 1000, "p99_by_second": p99_by_second,
            "cpu_s": sum(cpu1) - sum(cpu0), "wall_s": t1 - t0,
            "cpu_each": cpu_each, "harness_cpu_s": harness,
            "machine_busy": (m1[0] - m0[0]) / max(1e-9, m1[1] - m0[1]),
            "cpu_per_stream_s": (sum(cpu1) - sum(cpu0)) / stream_seconds if stream_seconds else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="stream length per trial (the source)")
    ap.add_argument("--ladder", default="1,5,10,20,30,40,50,60,80,100,110,120")
    ap.add_argument("--keep", help="keep the work folder here")
    ap.add_argument("--max-latency-ms", type=float, default=200.0,
                    help="a trial whose p99 added latency exceeds this has fallen behind real time: fail")
    ap.add_argument("--direct", action="store_true", help="no agents: cameras straight to the receiver")
    ap.add_argument("--perf", help="sample each agent with perf (Debian: linux-perf) into this folder and print "
                    "where its CPU goes: the cipher, the Python interpreter, the kernel, libc, the rest")
    ap.add_argument("--profile", help="sample each agent with py-spy (pip install py-spy) into this folder; "
                    "the sampler's own CPU load skews the figures of that run")
    args = ap.parse_args()
    samplers = [(folder, tool) for folder, tool in ((args.profile, "py-spy"), (args.perf, "perf")) if folder]
    for tool in ["ffmpeg", "ffprobe"] + [tool for _folder, tool in samplers]:
        if shutil.which(tool) is None:
            print(f"{tool} not installed", file=sys.stderr)
            return 2
    for folder, _tool in samplers:
        Path(folder).mkdir(parents=True, exist_ok=True)
    SOURCE["seconds"] = args.seconds
    ladder = [int(x) for x in args.ladder.split(",") if x.strip()]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ferry-bench-video-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        path = source_path()
        expected = gb28181.source_framemd5(path)
        fl = floor(path, work)
        print(f"source: {path.name}, {fl['stream_mbps']:.2f} Mbit/s of program stream, {len(expected)} frames")
        print(f"floor (CPU s per stream-s): ffmpeg -c copy {fl['ffmpeg_copy']:.5f} + SM4-GCM seal "
              f"{fl['sm4_seal']:.5f} + open {fl['sm4_open']:.5f} = {fl['total']:.5f} "
              f"({fl['block_bytes']}-byte blocks)")
        best = None
        for n in ladder:
            r = trial(n, path, work / f"n{n}", expected, args.seconds, args.direct, args.max_latency_ms,
                      Path(args.profile) if args.profile else None, Path(args.perf) if args.perf else None)
            state = "ok" if r["ok"] else "FAIL " + "; ".join(r["reasons"])
            print(f"N={n:4d} latency p50 {r['latency_p50_ms']:.1f} ms p99 {r['latency_p99_ms']:.1f} ms, "
                  f"ferry CPU {r['cpu_s']:.2f} s ({'+'.join(f'{c:.2f}' for c in r['cpu_each'])}) over "
                  f"{r['wall_s']:.1f} s = {r['cpu_per_stream_s']:.5f} per stream-s, cameras and receiver "
                  f"{r['harness_cpu_s']:.2f} s, machine {r['machine_busy'] * 100:.0f}% busy, "
                  f"sender lag {r['sender_lag_s'] * 1000:.0f} ms, {r['held_frames']} frames out at "
                  f"stream end: {state}", flush=True)
            print(f"       p99 ms by second of the run: {r['p99_by_second']}", flush=True)
            for role, kinds in r["breakdown"].items():
                print(f"       {role} CPU s per stream-s: " + ", ".join(f"{k} {v:.5f}" for k, v in kinds.items()))
            if r["breakdown"]:
                total = {k: sum(b[k] for b in r["breakdown"].values()) for k in PERF_KINDS}
                rest = sum(total.values()) - total["cipher"]
                print(f"       both agents: cipher {total['cipher']:.5f} "
                      f"(floor's SM4 {fl['sm4_seal'] + fl['sm4_open']:.5f}), "
                      f"everything else {rest:.5f}; cpu_vs_floor 1.5 leaves "
                      f"{1.5 * fl['total'] - total['cipher']:.5f} for everything else", flush=True)
            if not r["ok"]:
                break
            best = r
        n_best = best["n"] if best else 0
        ratio = best["cpu_per_stream_s"] / fl["total"] if best else float("nan")
        print(f"streams_zero_loss={n_best} cpu_vs_floor={ratio:.2f}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
