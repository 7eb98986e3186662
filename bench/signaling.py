"""Benchmark: GB/T 28181 signaling through real agents (issue 13) — on-demand video start-up and
MESSAGE throughput, each against what the same run measures without ferry.

1. INVITE to first frame. Real outer and inner agents on loopback with [media] on-demand on both
   and the reverse ferry between them; ferry's test camera in SIP mode (`python -m ferry.camera
   --sip-listen`, a [[media.camera]] with a fixed contact). A platform (this script's own small
   UAC, UDP) INVITEs the camera from the inner agent, `--requests` times (50) one after the
   other: the inner agent asks start_stream over the reverse ferry, the outer agent INVITEs the
   camera, the first key frame crosses, the inner agent answers 200 and sends RTP/PS with the
   platform's SSRC. Measured per request: the INVITE sent -> the last RTP packet of the first
   access unit received (its marker bit); that access unit is checked to decode (ffmpeg, >= 1
   frame). After each call's BYE the bench waits for the outer agent to end the camera's dialog
   (stop_stream), so each request is a cold start (a request that found the camera still streaming
   is counted as `warm`). Baseline in the same run: the same UAC INVITEs the camera directly.
2. MESSAGE throughput. `--devices` (10,000) devices, configured on the outer agent's [signaling],
   register with digest from one SIPp (device_register.xml, an injection CSV); then each sends one
   Keepalive MESSAGE (device_keepalive.xml, `--rate` calls/s offered, no cap on open calls unless
   `--concurrent`).
   The inner agent has [signaling] too (cascading to a platform socket that never answers), so
   each keepalive is delivered there: the device kept alive under its mapped ID.
   Measured: keepalives delivered inside / seconds from SIPp's start until the inner agent's
   trail accounts for every keepalive the outer agent sealed (each crossed as its own signaling
   object; the time of the last one's record, wall clock); the outer agent's keepalives per
   CPU-second are printed too (less sensitive to the machine's other load).

    .venv/bin/python bench/signaling.py [--requests 50] [--devices 10000] [--rate 5000] [--keep DIR]

Progress goes to stderr. Last line: invite_to_first_frame_p99_ms=N messages_per_s=M
(goal: p99 <= 1000 ms, M >= 2000). Needs ffmpeg (libx264) and sipp (Debian sip-tester).
"""
from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from ferry import camera as gb28181  # noqa: E402  (the GB/T 28181 test camera)
from appliance import Appliance, free_udp_port, read_trail  # noqa: E402  (tests/support)
from ferry.mgmt.client import ManagementClient  # noqa: E402

CAMERA = "43090000001320000001"
SERVER, DOMAIN = "43090000002000000001", "4309000000"           # ferry, as outer devices see it
PLATFORM, PLATFORM_DOMAIN = "43010000002000000001", "4301000000"
SECONDS = 10                                                     # the camera's picture, looped

POLICY = """
policy: bench-signaling
version: 1
default: deny
sources:
  outer-spool: {kind: spool}
  yiyang: {kind: devices, match: [{region: "4309"}]}
  platform: {kind: addresses, addresses: ["127.0.0.0/8"]}
destinations:
  police-sip: {kind: platform}
  police-vms: {kind: vms}
  outer-platform: {kind: platform}
rules:
  - id: yiyang-signaling
    lane: signaling
    from: yiyang
    to: police-sip
    signaling: {roots: [Notify, Response], cmd_types: [Keepalive, Alarm, Catalog], max_body_bytes: 8192}
  - id: yiyang-video
    lane: video
    from: yiyang
    to: police-vms
    video: {codecs: [h264, h265], max_width: 1920, max_height: 1080, max_frame_rate: 30, max_bitrate_kbps: 20000}
  - id: platform-opens-cameras
    lane: reverse
    from: platform
    to: outer-platform
    rate: {per_second: 20, burst: 40}      # the workload: a start and a stop per request, back to back
    reverse: {requests: [start_stream, stop_stream]}
"""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def events(trail: Path, name: str) -> list[dict]:
    return [r for r in read_trail(trail) if r["event"] == name]


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


# -- a minimal GB/T 28181 platform UAC: INVITE, ACK, BYE over UDP -------------------------------
@dataclass
class Call:
    first_frame_s: float | None     # INVITE sent -> last packet of the first access unit
    status: int
    decodes: bool


class Uac:
    def __init__(self) -> None:
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.port = self.sip.getsockname()[1]
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp_port = self.rtp.getsockname()[1]
        self.n = 0

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    def _recv_sip(self, deadline: float) -> bytes | None:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sip.settimeout(left)
            try:
                return self.sip.recv(65536)
            except socket.timeout:
                return None

    def call(self, target: tuple[str, int], device: str, domain: str, work: Path, timeout: float = 20.0) -> Call:
        """INVITE `device` at `target`, take the first access unit, BYE; time the first frame."""
        self.n += 1
        n, tag, call_id = self.n, secrets.token_hex(6), f"{secrets.token_hex(10)}@127.0.0.1"
        ssrc = f"04301{n % 100000:05d}"
        while True:                      # no datagram of an earlier call in the way
            self.rtp.setblocking(False)
            try:
                self.rtp.recv(65536)
            except BlockingIOError:
                break
        self.rtp.setblocking(True)
        sdp = (f"v=0\r\no={PLATFORM} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nu={device}:0\r\nc=IN IP4 127.0.0.1\r\n"
               f"t=0 0\r\nm=video {self.rtp_port} RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny={ssrc}\r\n")
        head = (f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK{secrets.token_hex(8)}\r\n"
                f"From: <sip:{PLATFORM}@{PLATFORM_DOMAIN}>;tag={tag}\r\nTo: <sip:{device}@{domain}>\r\n"
                f"Call-ID: {call_id}\r\n")
        invite = (f"INVITE sip:{device}@{domain} SIP/2.0\r\n{head}CSeq: 1 INVITE\r\n"
                  f"Contact: <sip:{PLATFORM}@127.0.0.1:{self.port}>\r\nMax-Forwards: 70\r\n"
                  f"Subject: {device}:{ssrc},{PLATFORM}:0\r\nContent-Type: APPLICATION/SDP\r\n"
                  f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()
        t0 = time.monotonic()
        self.sip.sendto(invite, target)
        deadline, resend = t0 + timeout, t0 + 0.5
        answer = None
        while answer is None:
            msg = self._recv_sip(min(deadline, resend))
            if msg is None:
                if time.monotonic() >= deadline:
                    return Call(None, 0, False)
                self.sip.sendto(invite, target)                 # UDP: retransmit (T1)
                resend = time.monotonic() + 0.5
                continue
            status = int(msg.split(b" ", 2)[1]) if msg.startswith(b"SIP/2.0 ") else 0
            if status >= 200 and b"CSeq: 1 INVITE" in msg:
                answer = msg
            elif status >= 100:
                resend = deadline                               # provisional: no more retransmissions
        status = int(answer.split(b" ", 2)[1])
        to = next(line for line in answer.split(b"\r\n") if line.lower().startswith(b"to:")).decode()
        ack_to = to.split(":", 1)[1].strip()
        ack = (f"ACK sip:{device}@{domain} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK{secrets.token_hex(8)}\r\n"
               f"From: <sip:{PLATFORM}@{PLATFORM_DOMAIN}>;tag={tag}\r\nTo: {ack_to}\r\nCall-ID: {call_id}\r\n"
               f"CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
        self.sip.sendto(ack, target)
        if status != 200:
            return Call(None, status, False)
        first, packets = None, []
        self.rtp.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            while first is None:
                d = self.rtp.recv(65536)
                if len(d) < 12 or struct.unpack_from("!I", d, 8)[0] != int(ssrc):
                    continue
                packets.append(d)
                if d[1] & 0x80:                                 # marker: the access unit's last packet
                    first = time.monotonic() - t0
        except socket.timeout:
            pass
        bye = (f"BYE sip:{device}@{domain} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK{secrets.token_hex(8)}\r\n"
               f"From: <sip:{PLATFORM}@{PLATFORM_DOMAIN}>;tag={tag}\r\nTo: {ack_to}\r\nCall-ID: {call_id}\r\n"
               f"CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
        self.sip.sendto(bye, target)
        end = time.monotonic() + 5
        while (msg := self._recv_sip(end)) is not None and b"CSeq: 2 BYE" not in msg:
            pass
        decodes = False
        if first is not None:
            au = work / f"first-au-{n}.ps"
            au.write_bytes(b"".join(p[12:] for p in packets))
            try:
                decodes = len(gb28181.framemd5(au)) >= 1
            except subprocess.CalledProcessError:
                decodes = False
            au.unlink()
        return Call(first, status, decodes)


class CameraProcess:
    def __init__(self, work: Path, port: int) -> None:
        self.log = work / "camera.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ferry.camera", "--device-id", CAMERA, "--sip-listen", f"127.0.0.1:{port}",
                 "--seconds", str(SECONDS), "--loops", "3", "--server-id", SERVER, "--domain", DOMAIN],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait(cond, timeout: float, what: str, interval: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


# -- 1: INVITE to first frame --------------------------------------------------------------------
def invite_bench(work: Path, requests: int) -> dict:
    from reverse import add_reverse  # noqa: PLC0415 - tests/support/reverse.py

    policy = work / "policy-src"
    policy.mkdir(parents=True)
    (policy / "policy.yaml").write_text(POLICY)
    a = Appliance(work / "invite", policy_dir=policy)
    add_reverse(a)
    cam_port, out_sip, in_sip = free_udp_port(), free_udp_port(), free_udp_port()
    # media ports below the kernel's ephemeral range (32768-) and off the [media] defaults (30000-30999)
    # that other agents on a shared machine may use: a port taken is a 500 from the inner agent
    base = 21000 + (in_sip % 80) * 100
    a.append_config("outer", f"""
[media]
mode = "on-demand"
media_address = "127.0.0.1"
port_range = [{base + 200}, {base + 299}]
destination = "police-vms"
sip_listen = "127.0.0.1:{out_sip}"
server_id = "{SERVER}"
domain = "{DOMAIN}"
[[media.camera]]
device_id = "{CAMERA}"
contact = "udp:127.0.0.1:{cam_port}"
""")
    a.append_config("inner", f"""
[media]
mode = "on-demand"
listen = "127.0.0.1:{in_sip}"
media_address = "127.0.0.1"
port_min = {base}
port_max = {base + 99}
invite_timeout = 10.0
linger = 0.0
""")
    say("invite: camera source (ffmpeg, cached) ...")
    gb28181.make_source(None, "h264", seconds=SECONDS)
    camera = CameraProcess(work, cam_port)
    uac = Uac()
    direct: list[float] = []
    ferry: list[float] = []
    warm = failed = undecodable = 0
    try:
        a.start()
        time.sleep(1.0)          # the reverse ferry's first heartbeat
        for i in range(requests):
            # the camera on its own (no ferry)
            c = uac.call(("127.0.0.1", cam_port), CAMERA, DOMAIN, work)
            if c.first_frame_s is not None:
                direct.append(c.first_frame_s)
            time.sleep(0.2)
            # through ferry: the inner agent's INVITE answer, the reverse ferry, the outer INVITE, the video lane
            stopped = len(events(a.outer_audit, "stream_stopped"))
            requested = len(events(a.outer_audit, "stream_requested"))
            c = uac.call(("127.0.0.1", in_sip), CAMERA, DOMAIN, work)
            # cold: the outer agent INVITEd the camera for this request (else it was still streaming)
            was_streaming = len(events(a.outer_audit, "stream_requested")) == requested
            if c.first_frame_s is None:
                failed += 1
                say(f"invite {i + 1}/{requests}: no first frame through ferry (status {c.status})")
            else:
                ferry.append(c.first_frame_s)
                warm += was_streaming
                undecodable += not c.decodes
            try:        # stop_stream: the outer agent BYEs the camera (next request starts cold)
                wait(lambda: len(events(a.outer_audit, "stream_stopped")) > stopped, 10, "the camera released")
            except TimeoutError:
                pass
            say(f"invite {i + 1}/{requests}: ferry {ferry[-1] * 1000 if ferry else 0:.0f} ms, "
                f"direct {direct[-1] * 1000 if direct else 0:.0f} ms")
    finally:
        uac.close()
        a.stop()
        camera.stop()
    return {"ferry": ferry, "direct": direct, "warm": warm, "failed": failed, "undecodable": undecodable}


# -- 2: keepalive throughput ---------------------------------------------------------------------
def message_bench(work: Path, devices: int, rate: float, concurrent: int) -> dict:
    from sipp import Sipp  # noqa: PLC0415 - tests/support/sipp.py

    policy = work / "policy-msg"
    policy.mkdir(parents=True)
    (policy / "policy.yaml").write_text(POLICY)
    a = Appliance(work / "messages", policy_dir=policy, management=True)
    sip_port = free_udp_port()
    ids = [f"4309000000131{n:07d}" for n in range(1, devices + 1)]
    entries = "".join(f'[[signaling.device]]\nid = "{d}"\npassword = "pw{d[-7:]}"\n' for d in ids)
    a.append_config("outer", f"""
[signaling]
listen_udp = "127.0.0.1:{sip_port}"
server_id = "{SERVER}"
realm = "{DOMAIN}"
destination = "police-sip"
catalog_query = false
{entries}""")
    # the inner agent cascades to a police platform (a socket here that never answers: ferry keeps
    # asking to register), so each keepalive is delivered there (the device kept alive under its
    # mapped ID), not refused for want of an output
    platform = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    platform.bind(("127.0.0.1", 0))
    a.append_config("inner", f"""
[signaling]
local = "127.0.0.1:{free_udp_port()}"
platform = "127.0.0.1:{platform.getsockname()[1]}"
platform_id = "43010000002000000001"
local_id = "43010000002000000002"
password = "bench-platform"
[signaling.id_map]
prefix = {{"43090000" = "43010000"}}
""")
    accounts = [(d, f"pw{d[-7:]}") for d in ids]
    keys = {"server_id": SERVER, "domain": DOMAIN}
    local = free_udp_port()
    cap = ["-l", str(concurrent)] if concurrent > 0 else []
    try:
        a.start()
        say(f"messages: {devices} devices register ...")
        t = time.monotonic()
        reg = Sipp("device_register.xml", ("127.0.0.1", sip_port), local_port=local, injection_csv=accounts,
                   calls=devices, rate=rate, variables={**keys, "hold_ms": "0"}, timeout=600,
                   extra_args=cap, work_dir=work / "sipp-register")
        with reg:
            r = reg.wait(900, expect=None)
        say(f"messages: {r.successful} registered in {time.monotonic() - t:.1f} s ({r.failed} failed)")
        before = {x["object_id"] for x in events(a.outer_audit, "object_sent")}
        say(f"messages: {devices} keepalives at up to {rate:g}/s ...")
        pids = {role: p.pid for role, p in a.procs.items()}
        cpu0 = {role: cpu_seconds(pid) for role, pid in pids.items()}
        sipp_cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0, t0_wall = time.monotonic(), time.time()
        ka = Sipp("device_keepalive.xml", ("127.0.0.1", sip_port), local_port=local, injection_csv=accounts,
                  calls=devices, rate=rate, variables=keys, timeout=600, extra_args=cap,
                  work_dir=work / "sipp-keepalive")
        with ka:
            k = ka.wait(900, expect=None)
        answered = time.monotonic() - t0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)        # SIPp, reaped (the agents still run)
        sipp_cpu = ru.ru_utime + ru.ru_stime - sipp_cpu0.ru_utime - sipp_cpu0.ru_stime
        retrans = k.stats.get("Retransmissions(C)", "?")
        say(f"messages: SIPp done in {answered:.1f} s: {k.successful} answered 200, {k.failed} failed, "
            f"{retrans} retransmissions, SIPp CPU {sipp_cpu:.1f} s")

        def sent() -> set[int]:
            return {x["object_id"] for x in events(a.outer_audit, "object_sent")
                    if (x.get("detail") or {}).get("cmd_type") == "Keepalive" and x["object_id"] not in before}

        when: dict[int, float] = {}     # object ID -> when the inner agent recorded its outcome (wall clock)

        def inside() -> dict[str, set[int]]:
            got: dict[str, set[int]] = {"object_delivered": set(), "object_refused": set(), "object_lost": set()}
            for x in read_trail(a.inner_audit):
                if x["event"] in got:
                    got[x["event"]].add(x.get("object_id"))
                    when[x.get("object_id")] = datetime.fromisoformat(x["time"].replace("Z", "+00:00")).timestamp()
            return got

        def accounted() -> int:
            want = sent()
            return len(want & set().union(*inside().values())) if len(want) >= k.successful else 0

        # polled slowly (reading both trails costs CPU the agents share); the time is the inner
        # trail's own: when it recorded the outcome of the last keepalive
        try:
            wait(lambda: accounted() >= k.successful, 120, "every keepalive accounted for by the inner agent", 0.5)
            crossed_s = max(when[oid] for oid in sent()) - t0_wall
        except TimeoutError as e:
            say(f"messages: {e}")
            crossed_s = time.monotonic() - t0
        cpu = {role: cpu_seconds(pid) - cpu0[role] for role, pid in pids.items()}
        with ManagementClient(a.outer_socket) as c:
            counters = dict(c.get_status().counters)
        say(f"messages: since it started (registrations too) the outer agent answered "
            f"{counters.get('sip_retransmissions', '?')} retransmissions again and dropped "
            f"{counters.get('sip_retransmissions_waiting', '?')} whose first copy still waited")
        n_sent, n_crossed = len(sent()), accounted()
        n_delivered = len(sent() & inside()["object_delivered"])
    finally:
        a.stop()
        platform.close()
    return {"answered": k.successful, "sealed": n_sent, "crossed": n_crossed, "delivered": n_delivered,
            "seconds": crossed_s,
            "sipp_seconds": answered, "registered": r.successful, "cpu": {**cpu, "sipp": sipp_cpu},
            "retransmissions": retrans}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Last line: invite_to_first_frame_p99_ms=N messages_per_s=M")
    ap.add_argument("--requests", type=int, default=50, help="INVITEs through ferry (and as many direct) (50)")
    ap.add_argument("--devices", type=int, default=10_000, help="registered devices sending one keepalive (10000)")
    ap.add_argument("--rate", type=float, default=5000.0, help="SIPp calls per second offered (5000)")
    ap.add_argument("--concurrent", type=int, default=0,
                    help="SIPp calls open at once at most (0: no cap, the devices are independent)")
    ap.add_argument("--keep", help="keep the work folder here")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))      # stop the agents and the camera on the way out
    if args.requests < 1 or args.devices < 1:
        ap.error("--requests and --devices must be at least 1")
    for tool in ("ffmpeg", "sipp"):
        if shutil.which(tool) is None:
            say(f"{tool} not installed")
            return 2
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ferry-bench-signaling-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        inv = invite_bench(work, args.requests)
        msg = message_bench(work, args.devices, args.rate, args.concurrent)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    f, d = inv["ferry"], inv["direct"]
    p50 = statistics.median(f) * 1000 if f else float("nan")
    p99 = percentile(f, 99) * 1000 if f else float("nan")
    if d:
        print(f"camera direct: INVITE -> first frame p50 {statistics.median(d) * 1000:.0f} ms, "
              f"p99 {percentile(d, 99) * 1000:.0f} ms ({len(d)} requests)")
    print(f"through ferry: INVITE -> first frame p50 {p50:.0f} ms, p99 {p99:.0f} ms ({len(f)} of {args.requests} "
          f"requests; {inv['failed']} failed, {inv['undecodable']} first access units not decodable, "
          f"{inv['warm']} found the camera still streaming)")
    rate = msg["delivered"] / msg["seconds"] if msg["seconds"] > 0 else 0.0      # delivered inside per second
    print(f"keepalives: {msg['registered']} devices registered; {msg['answered']} answered 200, {msg['sealed']} "
          f"sealed, {msg['crossed']} accounted for inside ({msg['delivered']} delivered) in {msg['seconds']:.1f} s "
          f"(SIPp done after {msg['sipp_seconds']:.1f} s, {msg['retransmissions']} retransmissions); CPU meanwhile: "
          + ", ".join(f"{role} {s:.1f} s" for role, s in sorted(msg["cpu"].items())))
    outer_cpu = msg["cpu"].get("outer", 0.0)
    if outer_cpu > 0:
        print(f"outer agent: {msg['sealed'] / outer_cpu:.0f} keepalives per CPU-second (the rate one core would "
              f"allow it; the wall-clock figure below includes SIPp and the machine's other load)")
    print(f"invite_to_first_frame_p99_ms={p99:.0f} messages_per_s={rate:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
