"""``ferry demo``: a whole appliance on this machine.

Provisions SM2 keys and the demo policy, starts an inner and an outer agent as
separate processes linked over loopback UDP, drops a handful of files into the
outer spool (some allowed, some refused), follows both audit trails while they
cross, then stops the agents, verifies both trails, reconciles them and prints
a summary. The last line is machine-readable: ``crossed=N refused=M lost=L``.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

from ferry.audit import reconcile, verify_dir
from ferry.camera import Camera, framemd5, make_source, ps_packets
from ferry.crypto.keys import init_keys

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
    outer_cfg, inner_cfg = _write_configs(work, port, _video_config(ports) if video_src else ("", ""))
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
        _say("")
        _say("progress:")
        outcome = _follow(work, procs, {n for n, _c, _w in files}, timeout)
        for cam in cameras:
            cam.join()
        if cameras:
            time.sleep(1.0)          # the last access units cross and are recorded
    finally:
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
    crossed = [r for r in inner_recs if r.get("event") == "object_delivered"]
    refused = [r for r in outer_recs + inner_recs if r.get("event") == "object_refused"]
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
    _say("")
    _say("audit trails:")
    for side, v in (("outer", outer_v), ("inner", inner_v)):
        state = (f"intact: {v.records} records, {v.checkpoints} signed checkpoints" if v.ok
                 else f"BROKEN at record {v.first_bad}: {v.reason}")
        _say(f"  {work / 'audit' / side}: {state}")
    _say(f"  reconciliation: {'every object sent is accounted for' if rec.ok else 'UNACCOUNTED objects'}"
         f" ({len(rec.delivered)} delivered, {len(rec.refused_inner)} refused inside, {len(rec.lost)} lost)")
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
    _say(f"crossed={len(crossed) + streams_crossed} refused={len(refused) + streams_refused} "
         f"lost={len(lost) + len(rec.unaccounted)}")
    return 0 if (ok and outer_v.ok and inner_v.ok and rec.ok) else 1


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
            if r.get("event") == "object_sent":
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
            if ev in ("object_delivered", "object_refused", "object_lost"):
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
