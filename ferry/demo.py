"""``ferry demo``: a whole appliance on this machine.

Provisions SM2 keys and the demo policy, starts an inner and an outer agent as
separate processes linked over loopback UDP, drops a handful of files into the
outer spool (some allowed, some refused), follows both audit trails while they
cross, then stops the agents, verifies both trails, reconciles them and prints
a summary. The last line is machine-readable: ``crossed=N refused=M lost=L``
(with ffmpeg: ``... signaling=S frames=F``).

With ffmpeg it also shows the headline use (issue 13): two cameras stream RTP/PS to
[[video]] entries, and ferry's SIP test camera registers with the outer agent
([signaling], digest) while the inner agent registers as a lower-level platform
with a small stand-in police platform (ferry/demo_platform.py); the platform
finds the camera in ferry's catalog under its mapped ID, INVITEs it (on demand:
start_stream over the reverse lane, the outer agent INVITEs the camera), counts
the frames ffmpeg decodes from the RTP/PS it receives, and BYEs. A camera with
a wrong password and an INVITE of a camera no video rule allows are refused.
"""
from __future__ import annotations

import io
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ferry.audit import reconcile, verify_dir
from ferry.camera import Camera, SipCamera, framemd5, looped, make_source, ps_packets
from ferry.crypto.keys import init_keys
from ferry.codecs import manscdp, sip
from ferry.codecs.sdp import Origin, RtpMap, Sdp, build_sdp
from ferry.codecs.sip_digest import Challenge, DigestError, parse_authorization, verify, www_authenticate

ROOT = Path(__file__).resolve().parent.parent
DEMO_POLICY = ROOT / "policy" / "demo"


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + b"".join(bytes((x * 4 % 256, y * 4 % 256, 128)) for x in range(width))
                    for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _pdf(text: str, pad: int = 0) -> bytes:
    body = f"%PDF-1.4\n% ferry demo\n1 0 obj << /Type /Catalog >> endobj\n% {text}\n".encode()
    return body + b"%" + b"x" * pad + b"\n%%EOF\n"


def sample_files() -> list[tuple[str, bytes, str]]:
    """(name, content, what should happen and why)."""
    return [
        ("patrol-report.pdf", _pdf("patrol report, district 3"), "allowed: PDF"),
        ("camera-map.png", _png(64, 48), "allowed: PNG"),
        ("shift-notes.txt", "Shift notes: cameras 4309 online.\n".encode() * 20, "allowed: plain text"),
        ("invoice.pdf", b"MZ\x90\x00" + os.urandom(2000), "refused: a Windows executable named .pdf"),
        ("update.txt", b"\x7fELF\x02\x01\x01" + os.urandom(4000), "refused: an ELF executable named .txt"),
        ("archive-export.pdf", _pdf("large export", pad=2 * 1024 * 1024), "refused: larger than the 1 MiB limit"),
        ("notes;rm -rf.txt", b"harmless text\n", "refused: name outside the allowed pattern"),
        ("site-photo.png", _png(32, 24) + _zip({"payload.txt": b"smuggled\n"}),
         "refused: a ZIP archive appended to a PNG"),
        ("readme.png", _pdf("a document dressed as a picture"), "refused: a PDF named .png"),
    ]


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CAMERAS = (  # (stream name, device ID, what should happen and why)
    ("school-gate", "43090000001320000001", "allowed: a Yiyang (4309) network camera (type 132)"),
    ("other-city", "44010000001320000009", "refused: a camera of another region (4401)"),
)


def _video_config(ports: dict[str, int]) -> tuple[str, str]:
    outer = "".join(f"""
[[video]]
name = "{name}"
transport = "udp"
listen = "127.0.0.1:{ports[name]}"
device_id = "{device}"
payload = "ps"
destination = "police-vms"
""" for name, device, _why in CAMERAS)
    inner = """
[[video_output]]
destination = "police-vms"
form = "ps"
transport = "file"
path = "recordings/{stream}.ps"
"""
    return outer, inner


# --- signaling and on-demand video (issue 13): a SIP camera outside, the police platform inside ---
SIP_CAMERA = "43090000001320000001"      # ferry's SIP test camera: registers, keepalives, INVITEd on demand
WRONG_PASSWORD_CAMERA = "43090000001320000003"   # configured, but registers with a wrong password
LOBBY_CAMERA = "43090000001310000005"    # named by the policy, but no video rule allows it
SIP_SERVER_ID = "43090000002000000001"   # the outer agent as the cameras' upper platform
SIP_REALM = "4309000000"
PLATFORM_ID = "43010000002000000001"     # the inner police platform (ferry.demo_platform)
PLATFORM_DOMAIN = "4301000000"
LOWER_ID = "43010000002000000099"        # the inner agent as the platform's lower-level platform


def inner_id(outer: str) -> str:
    """The ID the platform sees (the demo's id_map: 43090000... -> 43010000...)."""
    return "43010000" + outer[8:] if outer.startswith("43090000") else outer


SIGNALING_POLICY = (  # (where it goes in policy/demo's policy.yaml, what)
    ("\ndestinations:\n", """  lobby-cameras:
    kind: devices
    description: a lobby camera (type 131) the policy names but no video rule allows
    ids: ["%s"]
  platform-operators:
    kind: addresses
    description: the inner police platform, where reverse requests (start_stream) come from
    addresses: ["127.0.0.0/8"]
""" % LOBBY_CAMERA),
    ("\nrules:\n", """  police-platform:
    kind: platform
    description: the inner police GB/T 28181 platform (a small stand-in in the demo)
  outer-platform:
    kind: platform
    description: the outer agent's own platform, which serves reverse requests
"""),
    ("", """  - id: signaling-cameras
    description: keepalives and catalogs of the region's cameras, for the police platform
    lane: signaling
    from: demo-cameras
    to: police-platform
    signaling:
      roots: [Notify, Response]
      cmd_types: [Keepalive, Catalog]
      max_body_bytes: 8192
  - id: reverse-live-video
    description: the police platform may ask for live video (start_stream, stop_stream)
    lane: reverse
    from: platform-operators
    to: outer-platform
    reverse:
      requests: [start_stream, stop_stream]
"""),
)


def _write_signaling_policy(policy: Path) -> None:
    """policy/demo plus what the signaling part needs (sources, destinations, two rules)."""
    path = policy / "policy.yaml"
    text = path.read_text()
    for where, what in SIGNALING_POLICY:
        if where:
            text = text.replace(where, "\n" + what + where.lstrip("\n"), 1)
        else:
            text = text.rstrip("\n") + "\n" + what
    path.write_text(text)


def _signaling_config(ports: dict[str, int], passwords: dict[str, str]) -> tuple[str, str]:
    """[signaling], [media] and [reverse] of both agents (keys/*-reverse.* are the reverse ferry's)."""
    devices = "".join(f'[[signaling.device]]\nid = "{d}"\npassword = "{passwords[d]}"\n'
                      for d in (SIP_CAMERA, WRONG_PASSWORD_CAMERA))
    outer = f"""
[signaling]                          # ferry is the outer cameras' SIP server
listen_udp = "127.0.0.1:{ports['outer_sip']}"
server_id = "{SIP_SERVER_ID}"
realm = "{SIP_REALM}"
destination = "police-platform"
{devices}
[media]                              # on demand: INVITE the camera when the reverse lane asks
mode = "on-demand"
media_address = "127.0.0.1"
port_range = [{ports['outer_media']}, {ports['outer_media'] + 99}]
destination = "police-vms"
[[media.camera]]
device_id = "{SIP_CAMERA}"

[reverse]                            # the reverse ferry's receiver, with keys of its own
listen_host = "127.0.0.1"
listen_port = {ports['reverse']}
key = "keys/outer-reverse.key"
peer_public = "keys/inner-reverse.pub"
"""
    inner = f"""
[signaling]                          # ferry as a lower-level platform of the police platform
local = "127.0.0.1:{ports['inner_sip']}"
platform = "127.0.0.1:{ports['platform']}"
platform_id = "{PLATFORM_ID}"
platform_domain = "{PLATFORM_DOMAIN}"
local_id = "{LOWER_ID}"
password = "{passwords[LOWER_ID]}"
keepalive_interval = 2.0
[signaling.id_map]
prefix = {{"43090000" = "43010000"}}

[media]                              # the platform's INVITE -> start_stream over the reverse lane
mode = "on-demand"
media_address = "127.0.0.1"
port_min = {ports['inner_media']}
port_max = {ports['inner_media'] + 99}
invite_timeout = 25.0
linger = 1.0

[reverse]                            # the reverse ferry's sender (closed-schema requests only)
peer_host = "127.0.0.1"
peer_port = {ports['reverse']}
bind_host = "127.0.0.1"
key = "keys/inner-reverse.key"
peer_public = "keys/outer-reverse.pub"
destination = "outer-platform"
"""
    return outer, inner


SOCKET_PATH_MAX = 107     # bytes of a Unix socket path (sun_path, with its NUL)


def _management(work: Path, role: str) -> str:
    """The [management] section (a socket for ferry policy status), unless the work folder's path is
    too long for a Unix socket: then none, and the agents still run."""
    sock = work.resolve() / "mgmt" / f"{role}.sock"
    if len(os.fsencode(sock)) >= SOCKET_PATH_MAX:
        return f"\n# no [management]: {sock} is too long for a Unix socket\n"
    return f'\n[management]\nsocket = "mgmt/{role}.sock"      # ferry policy status --socket {sock}\n'


def _write_configs(work: Path, port: int, video: tuple[str, str] = ("", "")) -> tuple[Path, Path]:
    outer = work / "outer.toml"
    inner = work / "inner.toml"
    outer.write_text(f"""# ferry outer agent (demo)
[agent]
name = "demo-outer"
key = "keys/outer.key"
peer_public = "keys/inner.pub"
policy = "policy"
audit_dir = "audit/outer"

[link]
peer_host = "127.0.0.1"
peer_port = {port}
bind_host = "127.0.0.1"
rate_mbps = 200.0

[files]
spool = "spool/outer"
source = "outer-spool"
destination = "inner-spool"
settle = 0.3
scan_interval = 0.2
""" + _management(work, "outer") + video[0])
    inner.write_text(f"""# ferry inner agent (demo)
[agent]
name = "demo-inner"
key = "keys/inner.key"
peer_public = "keys/outer.pub"
policy = "policy"
audit_dir = "audit/inner"

[link]
listen_host = "127.0.0.1"
listen_port = {port}

[files]
spool = "spool/inner"
""" + _management(work, "inner") + video[1])
    return outer, inner


def _read_records(path: Path, offset: int) -> tuple[list[dict], int]:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    recs = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return recs, offset + end


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def run_demo(workdir: Path | None, keep: bool = False, timeout: float = 60.0) -> int:
    temporary = workdir is None
    work = Path(tempfile.mkdtemp(prefix="ferry-demo-")) if workdir is None else workdir.resolve()
    if not temporary:
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            print(f"ferry demo: {work} is not empty; give an empty or new folder", file=sys.stderr)
            return 2
    _say(f"ferry demo in {work}")
    init_keys(work / "keys")
    _say("  keys       SM2 key pairs for the outer and inner agents in keys/")
    shutil.copytree(DEMO_POLICY, work / "policy")
    _say("  policy     policy/policy.yaml: files lane, PDF/PNG/JPEG/text up to 1 MiB, default deny")
    for d in ("spool/outer", "spool/inner", "audit/outer", "audit/inner", "logs", "staging"):
        (work / d).mkdir(parents=True, exist_ok=True)
    port = _free_udp_port()
    video_src = _make_camera_source(work)
    ports = {name: _free_udp_port() for name, _d, _w in CAMERAS} if video_src else {}
    video = _video_config(ports) if video_src else ("", "")
    platform: DemoPlatform | None = None
    sip_cams: list[SipCamera] = []
    sig: dict = {}
    if video_src:                  # the signaling part needs the camera's picture too
        init_keys(work / "keys", ("inner-reverse", "outer-reverse"))
        _write_signaling_policy(work / "policy")
        _say("  policy     + signaling (keepalives, catalogs) to the police platform, live video on demand "
             "through the reverse lane")
        passwords = {SIP_CAMERA: secrets.token_hex(8), WRONG_PASSWORD_CAMERA: secrets.token_hex(8),
                     LOWER_ID: secrets.token_hex(8)}
        platform = DemoPlatform(PLATFORM_ID, PLATFORM_DOMAIN, LOWER_ID, passwords[LOWER_ID]).start()
        base = 20000 + 2 * (port % 9000)
        sig_ports = {"outer_sip": _free_udp_port(), "inner_sip": _free_udp_port(), "reverse": _free_udp_port(),
                     "platform": platform.address[1], "outer_media": base, "inner_media": base + 100}
        sig_outer, sig_inner = _signaling_config(sig_ports, passwords)
        video = (video[0] + sig_outer, video[1] + sig_inner)
        _say(f"  platform   a stand-in police platform {PLATFORM_ID} on udp 127.0.0.1:{platform.address[1]} "
             f"(ferry/demo_platform.py)")
    outer_cfg, inner_cfg = _write_configs(work, port, video)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for role, cfg in (("inner", inner_cfg), ("outer", outer_cfg)):
            log = open(work / "logs" / f"{role}.log", "wb")
            procs[role] = subprocess.Popen([sys.executable, "-m", "ferry", role, "--config", str(cfg)],
                                           stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
            log.close()
        _wait_started(work, procs)
        _say(f"  agents     inner (pid {procs['inner'].pid}) listening on udp 127.0.0.1:{port}, "
             f"outer (pid {procs['outer'].pid}) sending to it; logs in logs/")
        files = sample_files()
        for name, content, _why in files:
            staged = work / "staging" / name
            staged.write_bytes(content)
            os.rename(staged, work / "spool" / "outer" / name)      # appears whole in the spool
        _say(f"  spool      {len(files)} files dropped into spool/outer:")
        for name, content, why in files:
            _say(f"               {name:<22} {len(content):>9,} bytes   expected {why}")
        cameras = _start_cameras(video_src, ports) if video_src else []
        if video_src and platform is not None:
            sip_cams = _start_sip_cameras(video_src, sig_ports["outer_sip"], passwords)
        _say("")
        _say("progress:")
        start = time.monotonic()
        outcome = _follow(work, procs, {n for n, _c, _w in files}, timeout)
        if platform is not None and outcome["complete"]:
            sig = _signaling(platform, sip_cams, procs, start, deadline=start + timeout)
        for cam in cameras:
            cam.join()
        if cameras:
            time.sleep(1.0)          # the last access units cross and are recorded
    finally:
        for sc in sip_cams:
            sc.stop()
        if platform is not None:
            platform.stop()
        for role in ("outer", "inner"):
            p = procs.get(role)
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    _say("")
    ok = outcome["complete"]
    outer_v = verify_dir(work / "audit" / "outer")
    inner_v = verify_dir(work / "audit" / "inner")
    outer_recs, _ = _read_records(work / "audit" / "outer" / "audit.jsonl", 0)
    inner_recs, _ = _read_records(work / "audit" / "inner" / "audit.jsonl", 0)
    rec = reconcile(outer_recs, inner_recs)
    crossed = [r for r in inner_recs if r.get("event") == "object_delivered" and r.get("lane", "files") == "files"]
    refused = [r for r in outer_recs + inner_recs
               if r.get("event") == "object_refused" and r.get("lane", "files") == "files"]
    lost = [r for r in inner_recs if r.get("event") == "object_lost"]
    _say("summary:")
    _say(f"  crossed  {len(crossed)}")
    for r in crossed:
        d = r.get("detail", {})
        _say(f"    {d.get('name', '?'):<22} -> spool/inner/{d.get('written_as', '?'):<22} "
             f"{r.get('size', 0):>9,} bytes  sm3 {r.get('sm3', '')[:16]}…")
    _say(f"  refused  {len(refused)}")
    for r in refused:
        d = r.get("detail", {})
        _say(f"    {d.get('name', '?'):<22} [{r.get('agent')}] rule {r.get('rule')}: {r.get('reason')}")
    _say(f"  lost     {len(lost) + len(rec.unaccounted)}")
    streams_crossed, streams_refused = _video_summary(work, video_src, outer_recs, inner_recs)
    sig_crossed, sig_refused, frames, sig_objects = _signaling_summary(work, sig, outer_recs, inner_recs)
    _say("")
    _say("audit trails:")
    for side, v in (("outer", outer_v), ("inner", inner_v)):
        state = (f"intact: {v.records} records, {v.checkpoints} signed checkpoints" if v.ok
                 else f"BROKEN at record {v.first_bad}: {v.reason}")
        _say(f"  {work / 'audit' / side}: {state}")
    _say(f"  reconciliation: {'every object sent is accounted for' if rec.ok else 'UNACCOUNTED objects'}"
         f" ({len(rec.delivered)} delivered, {len(rec.refused_inner)} refused inside, {len(rec.lost)} lost; "
         f"reverse requests {rec.reverse_sent} sent, {len(rec.reverse_received)} received)")
    _say(f"  check them yourself: ferry audit verify {work / 'audit' / 'outer'}")
    _say(f"                       ferry audit reconcile {work / 'audit' / 'outer'} {work / 'audit' / 'inner'}")
    _say(f"  run them:  ferry inner --config {inner_cfg} & ferry outer --config {outer_cfg} &")
    if "[management]" in inner_cfg.read_text():
        _say(f"             ferry policy status --socket {work / 'mgmt' / 'inner.sock'} "
             f"--socket {work / 'mgmt' / 'outer.sock'}")
    if temporary and not keep:
        _say(f"  (the work folder stays for inspection: {work})")
    if not ok:
        _say(f"  not every file was accounted for within {timeout:.0f} s; see {work / 'logs'}")
    tail = f" signaling={sig_objects} frames={frames}" if video_src else ""
    sig_ok = not video_src or (sig_crossed == 1 and sig_refused == 2)
    if not sig_ok:
        _say(f"  the signaling part did not complete (live video, or a refusal missing); see {work / 'logs'}")
    _say(f"crossed={len(crossed) + streams_crossed + sig_crossed} "
         f"refused={len(refused) + streams_refused + sig_refused} lost={len(lost) + len(rec.unaccounted)}{tail}")
    return 0 if (ok and sig_ok and outer_v.ok and inner_v.ok and rec.ok) else 1


def _wait_started(work: Path, procs: dict, timeout: float = 30.0) -> None:
    """Until both agents have written agent_started (their sockets are open then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(any(r.get("event") == "agent_started"
                   for r in _read_records(work / "audit" / role / "audit.jsonl", 0)[0]) for role in procs):
            return
        if any(p.poll() is not None for p in procs.values()):
            return                      # _follow reports the exit
        time.sleep(0.05)


def _make_camera_source(work: Path) -> Path | None:
    """A 4-second 640x360 H.264 test picture made with ffmpeg, or None without ffmpeg."""
    if shutil.which("ffmpeg") is None:
        _say("  video      skipped: ffmpeg is not installed (./run installs it)")
        return None
    src = make_source(work / "camera", "h264", size="640x360", seconds=4, rate=25)
    _say(f"  camera     synthetic camera: {src.relative_to(work)} (ffmpeg testsrc2, H.264 640x360 25 fps, 4 s)")
    return src


def _start_cameras(src: Path, ports: dict[str, int]) -> list:
    cams = []
    _say(f"  cameras    {len(CAMERAS)} GB/T 28181 cameras stream RTP/PS (UDP) to the outer agent in real time:")
    for i, (name, device, why) in enumerate(CAMERAS):
        packets = ps_packets(src, "h264", ssrc=0x0BEBC201 + i)
        cams.append(Camera(packets, ("127.0.0.1", ports[name]), realtime=True).start())
        _say(f"               {name:<12} device {device}   expected {why}")
    return cams


def _video_summary(work: Path, src: Path | None, outer_recs: list[dict], inner_recs: list[dict]) -> tuple[int, int]:
    """Print what became of each camera stream; (streams crossed, streams refused)."""
    if src is None:
        return 0, 0
    _say("  video")
    crossed = refused = 0
    source_md5 = None
    for name, device, _why in CAMERAS:
        def ours(r: dict, event: str) -> bool:
            return r.get("event") == event and str(r.get("flow", "")).startswith(name + "-")
        refusal = next((r for r in outer_recs + inner_recs if ours(r, "stream_refused")), None)
        ended = next((r for r in inner_recs if ours(r, "stream_ended")), None)
        rec_file = work / "recordings" / f"{ended['flow']}.ps" if ended else None
        if refusal is not None:
            refused += 1
            _say(f"    {name:<12} refused [{refusal.get('agent')}] rule {refusal.get('rule')}: {refusal.get('reason')}")
        elif ended is not None and rec_file is not None and rec_file.exists():
            crossed += 1
            if source_md5 is None:
                source_md5 = framemd5(src)
            got = framemd5(rec_file)
            same = ("identical to the camera's" if got == source_md5
                    else f"DIFFERENT ({len(got)} vs {len(source_md5)} frames)")
            _say(f"    {name:<12} crossed: {ended['detail'].get('access_units')} access units, rebuilt as fresh "
                 f"GB/T 28181 PS -> recordings/{rec_file.name}")
            _say(f"    {'':<12} decoded with ffmpeg, its frames are {same} (framemd5)")
        else:
            _say(f"    {name:<12} no outcome recorded")
    return crossed, refused


def _follow(work: Path, procs: dict, names: set[str], timeout: float) -> dict:
    """Print outcomes from both trails as they appear until every file has one."""
    outer_path = work / "audit" / "outer" / "audit.jsonl"
    inner_path = work / "audit" / "inner" / "audit.jsonl"
    offsets = [0, 0]
    sent: dict[int, str | None] = {}   # object id -> file name (None: a record without one)
    done: set[str | None] = set()
    shown: set[tuple[str, str]] = set()      # (side, signaling object type) already shown
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    while time.monotonic() < deadline:
        for role, p in procs.items():
            if p.poll() is not None:
                _say(f"  ! {role} agent exited with code {p.returncode}; see logs/{role}.log")
                return {"complete": False}
        orecs, offsets[0] = _read_records(outer_path, offsets[0])
        irecs, offsets[1] = _read_records(inner_path, offsets[1])
        t = time.monotonic() - start
        for r in orecs:
            name = (r.get("detail") or {}).get("name")
            if r.get("lane") == "signaling":
                _signaling_progress(t, "outer", r, shown)
            elif r.get("event") == "object_sent":
                sent[r["object_id"]] = name
                _say(f"  {t:5.1f}s outer  sealed   {name} (object {r['object_id'] & 0xffffffff}, "
                     f"{len(r.get('blocks', []))} block(s))")
            elif r.get("event") == "object_refused":
                done.add(name)
                _say(f"  {t:5.1f}s outer  refused  {name}: {r.get('reason')}")
            elif r.get("event") == "stream_started":
                _say(f"  {t:5.1f}s outer  video    {r.get('flow')}: RTP/PS from device {r['source'].get('device_id')}")
            elif r.get("event") == "stream_refused":
                _say(f"  {t:5.1f}s outer  refused  video {r.get('flow')}: {r.get('reason')}")
        for r in irecs:
            ev = r.get("event")
            if r.get("lane") == "signaling":
                _signaling_progress(t, "inner", r, shown)
            elif ev in ("object_delivered", "object_refused", "object_lost"):
                oid = r.get("object_id")
                name = (sent.get(oid) if isinstance(oid, int) else None) or (r.get("detail") or {}).get("name")
                done.add(name)
                word = {"object_delivered": "crossed", "object_refused": "refused", "object_lost": "LOST"}[ev]
                why = f": {r.get('reason')}" if ev != "object_delivered" else ""
                _say(f"  {t:5.1f}s inner  {word:<8} {name}{why}")
            elif ev == "stream_started":
                _say(f"  {t:5.1f}s inner  video    {r.get('flow')}: access units arriving, fresh PS being recorded")
            elif ev == "key_accepted":
                _say(f"  {t:5.1f}s inner  key epoch {r.get('epoch')} accepted (SM2 envelope, signature checked)")
        if names <= done:
            return {"complete": True}
        time.sleep(0.1)
    return {"complete": False}


def _start_sip_cameras(src: Path, outer_sip: int, passwords: dict[str, str]) -> list[SipCamera]:
    """ferry's SIP test camera (it registers with digest, sends keepalives every second, answers
    Query Catalog and INVITE) and one configured camera that knows a wrong password."""
    packets = looped(ps_packets(src, "h264", ssrc=0), 4)       # 16 s: INVITEd on demand, later
    server = ("127.0.0.1", outer_sip)
    good = SipCamera(packets, SIP_CAMERA, password=passwords[SIP_CAMERA], server=server, server_id=SIP_SERVER_ID,
                     domain=SIP_REALM, keepalive=1.0).start()
    bad = SipCamera([], WRONG_PASSWORD_CAMERA, password="not-" + passwords[WRONG_PASSWORD_CAMERA], server=server,
                    server_id=SIP_SERVER_ID, domain=SIP_REALM, keepalive=1.0).start()
    _say(f"  sip        the SIP camera {SIP_CAMERA} (ferry.camera.SipCamera) registers with the outer agent on "
         f"udp 127.0.0.1:{outer_sip}")
    _say(f"             camera {WRONG_PASSWORD_CAMERA} tries a wrong password   expected refused: wrong password")
    return [good, bad]


def _until(cond, deadline: float, procs: dict) -> bool:
    while time.monotonic() < deadline:
        if cond():
            return True
        if any(p.poll() is not None for p in procs.values()):
            return False
        time.sleep(0.1)
    return bool(cond())


def _signaling(platform: DemoPlatform, cams: list[SipCamera], procs: dict, start: float, deadline: float) -> dict:
    """The police platform's side: ferry registered, the camera in its catalog, live video, refusals."""
    good, bad = cams
    out: dict = {}

    def say(text: str) -> None:
        _say(f"  {time.monotonic() - start:5.1f}s {text}")

    if _until(good.registered.is_set, deadline, procs):
        out["camera_registered"] = True
        say(f"outer  sip      camera {SIP_CAMERA} registered (digest), keepalives every second")
    if _until(lambda: any(e.startswith("register refused") for e in bad.events), deadline, procs):
        out["wrong_password"] = next(e for e in bad.events if e.startswith("register refused")).split()[-1]
        say(f"outer  refused  camera {WRONG_PASSWORD_CAMERA}: REGISTER with a wrong password -> "
            f"{out['wrong_password']}")
    if _until(platform.registered.is_set, deadline, procs):
        out["platform_registered"] = True
        say(f"inner  sip      registered with the police platform as {LOWER_ID} (its 401 challenge answered)")
    seen = inner_id(SIP_CAMERA)
    next_query = 0.0

    def in_catalog() -> bool:
        nonlocal next_query
        if seen in platform.catalog:
            return True
        if time.monotonic() >= next_query:
            next_query = time.monotonic() + 1.0
            threading.Thread(target=platform.query_catalog, daemon=True).start()
        return False
    if out.get("platform_registered") and _until(in_catalog, deadline, procs):
        out["catalog"] = sorted(platform.catalog)
        say(f"inner  sip      the platform's Query Catalog: it sees {seen} (outer {SIP_CAMERA})")
        call = platform.play(seen, hold=3.0, timeout=max(1.0, min(30.0, deadline - time.monotonic())))
        out["call"] = call
        say(f"inner  video    platform INVITE {seen} -> {call.status} in {call.ms} ms, "
            f"{len(call.packets)} RTP packets in 3 s, BYE -> {call.bye_status}")
        lobby = inner_id(LOBBY_CAMERA)
        refused = platform.play(lobby, hold=0.0, timeout=15.0)
        out["refused_call"] = refused
        say(f"inner  refused  platform INVITE {lobby} -> {refused.status}")
    out["keepalives"] = platform.keepalives
    return out


def _signaling_summary(work: Path, sig: dict, outer_recs: list[dict],
                       inner_recs: list[dict]) -> tuple[int, int, int, int]:
    """Print what the signaling part showed; (things crossed, things refused, frames decoded,
    signaling objects that crossed)."""
    if not sig:
        return 0, 0, 0, 0
    objects = [r for r in inner_recs if r.get("event") == "object_delivered" and r.get("lane") == "signaling"]
    crossed = refused = frames = 0
    _say("  signaling")
    if sig.get("camera_registered"):
        _say(f"    signaling: camera {SIP_CAMERA} registered outside (digest); "
             f"{len(objects)} signaling objects crossed (keepalives, its catalog)")
    if sig.get("platform_registered"):
        _say(f"    the inner agent registered with the police platform {PLATFORM_ID} as {LOWER_ID}; "
             f"keepalives at the platform: {sig.get('keepalives', 0)}")
    if sig.get("catalog"):
        _say(f"    the platform sees {inner_id(SIP_CAMERA)} in ferry's catalog (outer {SIP_CAMERA}, id_map "
             f"43090000 -> 43010000)")
    call: Call | None = sig.get("call")
    if call is not None:
        if call.status == 200 and call.packets:
            rebuilt = work / "recordings" / "platform-live.ps"
            rebuilt.parent.mkdir(parents=True, exist_ok=True)
            rebuilt.write_bytes(call.ps())
            try:
                frames = len(framemd5(rebuilt))
            except (OSError, RuntimeError, subprocess.SubprocessError):
                frames = 0
            crossed += frames > 0
        asked = [r for r in outer_recs if r.get("event") == "request_received"]
        _say(f"    live video: INVITE {inner_id(SIP_CAMERA)} -> {call.status} in {call.ms} ms, "
             f"{len(call.packets)} RTP packets, {frames} frames decoded by ffmpeg, BYE -> {call.bye_status}")
        _say(f"      on demand: {', '.join(r.get('detail', {}).get('request', '?') for r in asked) or 'no request'}"
             f" crossed the reverse lane; the outer agent INVITEd the camera, its video crossed "
             f"(recordings/platform-live.ps)")
    wrong = next((r for r in outer_recs if r.get("code") == "wrong_password"), None)
    if sig.get("wrong_password") and wrong is not None:
        refused += 1
        _say(f"    refused: camera {WRONG_PASSWORD_CAMERA} registering with a wrong password -> "
             f"{sig['wrong_password']} ({wrong['code']}) [{wrong.get('event')}]")
    refused_call: Call | None = sig.get("refused_call")
    lobby = next((r for r in inner_recs if r.get("event") == "invite_refused"), None)
    if refused_call is not None and lobby is not None:
        refused += 1
        _say(f"    refused: INVITE {inner_id(LOBBY_CAMERA)} -> {refused_call.status} ({lobby.get('code')}) "
             f"rule {lobby.get('rule')}: {lobby.get('reason')}")
    return crossed, refused, frames, len(objects)


def _signaling_progress(t: float, side: str, r: dict, shown: set[tuple[str, str]]) -> None:
    """A signaling object sealed outside or delivered inside, once per kind (keepalives come every second)."""
    ev, d = r.get("event"), r.get("detail") or {}
    kind = f"{d.get('root', '?')} {d.get('cmd_type', '?')}"
    if ev not in ("object_sent", "object_delivered") or (side, kind) in shown:
        return
    shown.add((side, kind))
    more = " (and each one after it)" if d.get("cmd_type") == "Keepalive" else ""
    if side == "outer":
        _say(f"  {t:5.1f}s outer  sealed   signaling {kind} of {r.get('source', {}).get('device_id')}{more}")
    else:
        _say(f"  {t:5.1f}s inner  crossed  signaling {kind} -> the police platform"
             f"{' as ' + d['inner_id'] if d.get('inner_id') else ''}{more}")


# --- the inner "police platform": a demo peer, not part of ferry ---------------------------------
# A small stand-in built on ferry's codecs (sip, sip_digest, sdp, manscdp): it answers the inner
# agent's REGISTER with a 401 digest challenge and checks the answer, answers MESSAGEs (counting
# keepalives, keeping the catalog items it is sent), asks ferry for its catalog, INVITEs a camera
# with a GB/T 28181 SDP offer, receives the RTP on a UDP port of its own and ends with BYE. The
# tests play the real platform with SIPp; the agents never use this.

@dataclass
class Call:
    """One INVITE's outcome: final status, ms to it, and (200) the RTP the platform received."""

    status: int
    ms: int
    packets: list[bytes] = field(default_factory=list)   # RTP datagrams, as received
    bye_status: int | None = None

    def ps(self) -> bytes:
        """The RTP payloads (MPEG-PS) in arrival order, RTP headers (and CSRCs, extension) removed."""
        out = []
        for p in self.packets:
            if len(p) < 12 or p[0] >> 6 != 2:
                continue
            start = 12 + 4 * (p[0] & 0x0F)
            if p[0] & 0x10 and len(p) >= start + 4:
                start += 4 + 4 * int.from_bytes(p[start + 2:start + 4], "big")
            end = len(p) - (p[-1] if p[0] & 0x20 and p[-1] else 0)
            out.append(p[start:end])
        return b"".join(out)


class DemoPlatform:
    """The platform's SIP socket on `host` (a free UDP port), with `lower_id` / `password` as the
    account of its one lower-level platform (ferry's inner agent)."""

    def __init__(self, platform_id: str, domain: str, lower_id: str, password: str, host: str = "127.0.0.1") -> None:
        self.platform_id, self.domain, self.lower_id, self.password = platform_id, domain, lower_id, password
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.challenges: dict[str, Challenge] = {}     # nonce -> challenge it answers
        self.registered = threading.Event()
        self.ferry: tuple[str, int] | None = None      # where ferry's REGISTER came from
        self.register_refused = 0
        self.keepalives = 0                            # Notify Keepalive of ferry or of a device
        self.catalog: set[str] = set()                 # DeviceIDs in the Response Catalog items
        self.catalog_seen = threading.Event()
        self.responses: dict[str, queue.Queue] = {}    # Call-ID -> responses to our requests
        self.sn = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._receive, daemon=True, name="demo-platform")

    def start(self) -> "DemoPlatform":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(2)
        self.sock.close()

    # -- in --------------------------------------------------------------------------------------
    def _receive(self) -> None:
        while not self.stopping.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            try:
                msg = sip.parse_message(data)
                if isinstance(msg, sip.SipResponse):
                    q = self.responses.get(msg.call_id)
                    if q is not None:
                        q.put(msg)
                elif isinstance(msg, sip.SipRequest):
                    self._request(msg, addr)
            except (sip.SipError, manscdp.ManscdpError):
                continue                          # a demo peer: what it cannot read it drops

    def _request(self, msg: sip.SipRequest, addr: tuple[str, int]) -> None:
        if msg.method == "REGISTER":
            self._register(msg, addr)
        elif msg.method == "MESSAGE":
            self.sock.sendto(sip.response_to(msg, 200, "OK"), addr)
            body = manscdp.parse(msg.body)
            if body.cmd_type == "Keepalive":
                self.keepalives += 1
            elif (body.root, body.cmd_type) == ("Response", "Catalog"):
                self.catalog.update(i.device_id for i in body.items if i.device_id)
                self.catalog_seen.set()
        elif msg.method in ("BYE", "CANCEL"):
            self.sock.sendto(sip.response_to(msg, 200, "OK"), addr)
        elif msg.method != "ACK":
            self.sock.sendto(sip.response_to(msg, 405, "Method Not Allowed"), addr)

    def _register(self, msg: sip.SipRequest, addr: tuple[str, int]) -> None:
        auth = msg.header("Authorization")
        if auth is not None:
            try:
                creds = parse_authorization(auth)
            except DigestError:
                creds = None
            ch = self.challenges.pop(creds.nonce, None) if creds is not None else None
            if creds is not None and ch is not None:
                if creds.username == self.lower_id and verify(creds, "REGISTER", self.password, ch):
                    self.ferry = addr
                    self.registered.set()
                    self.sock.sendto(sip.response_to(msg, 200, "OK", (("Expires", str(msg.expires or 3600)),),
                                                     to_tag=sip.new_tag()), addr)
                    return
                self.register_refused += 1
                self.sock.sendto(sip.response_to(msg, 403, "Forbidden", to_tag=sip.new_tag()), addr)
                return
        ch = Challenge(realm=self.domain, nonce=secrets.token_hex(16))
        self.challenges[ch.nonce] = ch
        self.sock.sendto(sip.response_to(msg, 401, "Unauthorized", (("WWW-Authenticate", www_authenticate(ch)),),
                                         to_tag=sip.new_tag()), addr)

    # -- out -------------------------------------------------------------------------------------
    def _headers(self, method: str, cseq: int, call_id: str, to: str, tag: str) -> list[tuple[str, str]]:
        host, port = self.address
        return [("Via", f"SIP/2.0/UDP {host}:{port};rport;branch={sip.new_branch()}"),
                ("From", f"<sip:{self.platform_id}@{self.domain}>;tag={tag}"), ("To", to), ("Call-ID", call_id),
                ("CSeq", f"{cseq} {method}"), ("Max-Forwards", "70")]

    def _transaction(self, data: bytes, call_id: str, timeout: float) -> sip.SipResponse | None:
        """Send (again every 0.5 s until something answers) and wait for the final response."""
        assert self.ferry is not None
        q = self.responses.setdefault(call_id, queue.Queue())
        deadline = time.monotonic() + timeout
        answered = False
        self.sock.sendto(data, self.ferry)
        while time.monotonic() < deadline:
            try:
                r = q.get(timeout=0.5)
            except queue.Empty:
                if not answered:
                    self.sock.sendto(data, self.ferry)
                continue
            answered = True
            if r.status >= 200 and r.cseq[1] == data.split(b" ", 1)[0].decode():
                return r
        return None

    def query_catalog(self, timeout: float = 5.0) -> None:
        """MESSAGE Query Catalog to ferry; the Response Catalog MESSAGEs come back as requests."""
        self.sn += 1
        call_id = sip.new_call_id(self.host)
        body = manscdp.build(manscdp.Manscdp("Query", "Catalog", self.sn, self.lower_id))
        to = f"<sip:{self.lower_id}@{self.domain}>"
        headers = self._headers("MESSAGE", 1, call_id, to, sip.new_tag())
        headers.append(("Content-Type", "Application/MANSCDP+xml"))
        self._transaction(sip.build_request("MESSAGE", f"sip:{self.lower_id}@{self.domain}", headers, body),
                          call_id, timeout)

    def play(self, device: str, hold: float, timeout: float = 30.0) -> Call:
        """INVITE `device` for live video to a UDP port of ours; on 200 ACK, receive for `hold`
        seconds, BYE. On a refusal ACK it (the status tells what happened)."""
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind((self.host, 0))
        rtp.settimeout(0.2)
        ssrc = f"0{self.domain[3:8]}{secrets.randbelow(10000):04d}"
        offer = Sdp(origin=Origin(self.platform_id, "0", "0", self.host), session_name="Play", connection=self.host,
                    media_port=rtp.getsockname()[1], transport="RTP/AVP", payload_types=(96,),
                    rtpmaps=(RtpMap(96, "PS", 90000),), direction="recvonly", uri=f"{device}:0", ssrc=ssrc)
        call_id, tag = sip.new_call_id(self.host), sip.new_tag()
        to = f"<sip:{device}@{self.domain}>"
        uri = f"sip:{device}@{self.domain}"
        headers = self._headers("INVITE", 1, call_id, to, tag)
        headers += [("Contact", f"<sip:{self.platform_id}@{self.address[0]}:{self.address[1]}>"),
                    ("Subject", f"{device}:{ssrc},{self.platform_id}:0"), ("Content-Type", "APPLICATION/SDP")]
        started = time.monotonic()
        try:
            r = self._transaction(sip.build_request("INVITE", uri, headers, build_sdp(offer)), call_id, timeout)
            call = Call(r.status if r is not None else 408, int((time.monotonic() - started) * 1000))
            if r is None:
                return call
            to_tag = r.to.tag
            dialog_to = f"{to};tag={to_tag}" if to_tag else to
            ack = self._headers("ACK", 1, call_id, dialog_to, tag)
            assert self.ferry is not None
            self.sock.sendto(sip.build_request("ACK", uri, ack), self.ferry)
            if r.status != 200:
                return call
            until = time.monotonic() + hold
            while time.monotonic() < until:
                try:
                    call.packets.append(rtp.recv(65535))
                except (TimeoutError, socket.timeout):
                    continue
            bye = self._headers("BYE", 2, call_id, dialog_to, tag)
            answer = self._transaction(sip.build_request("BYE", uri, bye), call_id, 10.0)
            call.bye_status = answer.status if answer is not None else None
            return call
        finally:
            rtp.close()
