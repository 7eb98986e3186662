"""A GB/T 28181 test camera: ffmpeg-made H.264/H.265 sources sent as RTP/PS (or RFC 6184/7798).

    src = make_source(tmp, "h264")                       # Annex B file, cached per arguments
    packets = ps_packets(src, "h264", ssrc=0x0BEBC201)  # [(rtp bytes, send offset s), ...]
    dropped = send_udp(packets, ("127.0.0.1", port), realtime=True, loss=0.02, seed=1)
    cam = Camera(packets, ("127.0.0.1", port), transport="tcp").start(); cam.join()

Sources have no B-frames by default (as most cameras): decoding order is presentation order.
Timestamps come from a sidecar file written next to the source (pts/dts/key per access unit,
read from ffprobe), so a source made with B-frames (`extra="-bf 3"`) is timed correctly too.
The packing uses ferry's own codecs (AccessUnitAssembler, PsMuxer, packetize): tests check the
packets against ffmpeg/ffprobe, not against the same code.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shlex
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.codecs.access_unit import AccessUnit, AccessUnitAssembler
from ferry.codecs.mpeg_ps import PsMuxer
from ferry.codecs.nal import split_annexb
from ferry.codecs.rfc4571 import frame
from ferry.codecs import rtp_h264, rtp_h265
from ferry.codecs.rtp import build_rtp

CLOCK = 90_000
RAW = {"h264": ("h264", "h264_mp4toannexb", "h264"), "h265": ("hevc", "hevc_mp4toannexb", "h265")}
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "ferry-gb28181-sources"

Packet = tuple[bytes, float]  # (RTP packet, send offset in seconds from the first packet)


# --- sources ------------------------------------------------------------------------
def _encoder(codec: str, rate: int, gop: int) -> list[str]:
    if codec == "h264":
        return ["-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-g", str(gop),
                "-keyint_min", str(gop), "-sc_threshold", "0", "-x264-params", "log=-1"]
    if codec == "h265":
        return ["-c:v", "libx265", "-preset", "veryfast", "-x265-params",
                f"log-level=error:keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"]
    raise ValueError(f"codec must be h264 or h265, not {codec!r}")


def make_source(path=None, codec: str = "h264", size: str = "640x360", seconds: float = 10, rate: int = 25,
                extra: str = "", gop: int = 25) -> Path:
    """An Annex B file of testsrc2 encoded with libx264/libx265; `path` is the cache folder.

    The file (and its sidecar `<file>.json` of timestamps) is made once per arguments and kept;
    `extra` is more ffmpeg output options (e.g. "-b:v 4M -maxrate 4M -bufsize 4M").
    """
    if codec not in RAW:
        raise ValueError(f"codec must be h264 or h265, not {codec!r}")
    folder = Path(path) if path is not None else DEFAULT_CACHE
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(repr((codec, size, seconds, rate, extra, gop, 2)).encode()).hexdigest()[:16]
    fmt, bsf, ext = RAW[codec]
    out = folder / f"testsrc2-{codec}-{size}-{rate}-{key}.{ext}"
    side = out.with_suffix(out.suffix + ".json")
    if out.exists() and side.exists():
        return out
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        mkv = Path(tmp) / "src.mkv"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
                        "-t", str(seconds), "-pix_fmt", "yuv420p", *_encoder(codec, rate, gop),
                        *shlex.split(extra), str(mkv)], check=True)
        raw = Path(tmp) / f"src.{ext}"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(mkv), "-c:v", "copy", "-bsf:v", bsf,
                        "-f", fmt, str(raw)], check=True)
        probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                "packet=pts,dts,flags:stream=time_base", "-of", "json", str(mkv)],
                               check=True, capture_output=True, text=True).stdout
        info = json.loads(probe)
        num, den = (int(x) for x in info["streams"][0]["time_base"].split("/"))
        frames = [(p.get("pts"), p.get("dts"), "K" in p.get("flags", "")) for p in info["packets"]]
        ticks = [(_ticks(pts, num, den), _ticks(dts if dts is not None else pts, num, den), k)
                 for pts, dts, k in frames]
        base = 3600 - min(min(p, d) for p, d, _ in ticks)  # 40 ms: no negative timestamp
        side_tmp = Path(tmp) / "side.json"
        side_tmp.write_text(json.dumps({"codec": codec, "rate": rate, "size": size,
                                        "frames": [[p + base, d + base, k] for p, d, k in ticks]}))
        os.replace(raw, out)
        os.replace(side_tmp, side)
    return out


def _ticks(value, num: int, den: int) -> int:
    return round(int(value) * num * CLOCK / den)


def framemd5(path, fmt: str | None = None) -> list[str]:
    """The md5 column of `ffmpeg -f framemd5` (one per decoded frame; timestamps ignored)."""
    cmd = ["ffmpeg", "-v", "error"]
    if fmt:
        cmd += ["-f", fmt]
    cmd += ["-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "framemd5", "-"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]


source_framemd5 = framemd5


# --- access units ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Frame:
    """One access unit of a source with its 90 kHz timestamps."""

    nal_units: tuple[bytes, ...]
    pts: int
    dts: int
    keyframe: bool


def access_units(path, codec: str, loops: int = 1) -> list[Frame]:
    """The source's access units (ferry's assembler) with timestamps from the sidecar;
    `loops` plays the source that many times back to back (timestamps keep rising)."""
    path = Path(path)
    assembler = AccessUnitAssembler(codec)
    aus: list = []
    for nal in split_annexb(path.read_bytes()):
        aus += assembler.push(nal)
    aus += assembler.flush()
    bad = [a for a in aus if not isinstance(a, AccessUnit)]
    if bad:
        raise ValueError(f"{path}: assembler dropped {bad[:3]}")
    side = path.with_suffix(path.suffix + ".json")
    if side.exists():
        times = json.loads(side.read_text())["frames"]
        if len(times) != len(aus):
            raise ValueError(f"{path}: {len(aus)} access units but {len(times)} timestamps")
    else:  # no reordering assumed: constant frame rate from the SPS (25 if absent)
        step = round(CLOCK / (aus[0].frame_rate or 25)) if aus else 3600
        times = [[3600 + i * step, 3600 + i * step, a.keyframe] for i, a in enumerate(aus)]
    once = [Frame(a.nal_units, int(p), int(d), a.keyframe) for a, (p, d, _k) in zip(aus, times)]
    if loops <= 1 or not once:
        return once
    dts = sorted(f.dts for f in once)
    step = min((b - a for a, b in zip(dts, dts[1:]) if b > a), default=3600)
    span = max(f.pts for f in once) - min(f.dts for f in once) + step
    return [Frame(f.nal_units, f.pts + r * span, f.dts + r * span, f.keyframe) for r in range(loops) for f in once]


def _default_seq(ssrc: int) -> int:
    return (ssrc * 2654435761 >> 7) & 0xFFFF


def _rtp(frames_payloads, *, ssrc: int, payload_type: int, seq_start: int | None,
         spread: float, ts_offset: int) -> list[Packet]:
    """RTP packets of (frame, payloads) pairs: marker on each frame's last, offsets from dts."""
    seq = _default_seq(ssrc) if seq_start is None else seq_start & 0xFFFF
    out: list[Packet] = []
    frames_payloads = list(frames_payloads)
    if not frames_payloads:
        return out
    t0 = frames_payloads[0][0].dts
    interval = (frames_payloads[1][0].dts - t0) / CLOCK if len(frames_payloads) > 1 else 0.04
    for fr, payloads in frames_payloads:
        start = (fr.dts - t0) / CLOCK
        n = len(payloads)
        for i, payload in enumerate(payloads):
            out.append((build_rtp(payload_type, seq, (fr.pts + ts_offset) & 0xFFFFFFFF, ssrc, payload,
                                  marker=i == n - 1), start + interval * spread * i / n))
            seq = (seq + 1) & 0xFFFF
    return out


def ps_packets(path, codec: str, *, ssrc: int, payload_type: int = 96, mtu: int = 1400,
               seq_start: int | None = None, spread: float = 0.8, ts_offset: int = 0,
               loops: int = 1) -> list[Packet]:
    """A GB/T 28181 camera's RTP/PS: one PS pack per access unit (PSM on key frames), cut
    into payloads of at most `mtu` bytes, marker on the last packet of a frame, RTP timestamp
    the 90 kHz PTS. Send offsets follow the DTS; a frame's packets are spread over `spread` of
    a frame interval (0: sent in one burst)."""
    mux = PsMuxer(codec)
    frames = access_units(path, codec, loops)

    def cut(fr: Frame) -> list[bytes]:
        ps = mux.video(fr.nal_units, fr.pts, fr.dts, fr.keyframe)
        return [ps[i:i + mtu] for i in range(0, len(ps), mtu)]

    return _rtp(((fr, cut(fr)) for fr in frames), ssrc=ssrc, payload_type=payload_type,
                seq_start=seq_start, spread=spread, ts_offset=ts_offset)


def raw_packets(path, codec: str, *, ssrc: int, payload_type: int = 96, mtu: int = 1400,
                seq_start: int | None = None, spread: float = 0.8, ts_offset: int = 0,
                aggregate: bool = False, loops: int = 1) -> list[Packet]:
    """RFC 6184 (H.264) / RFC 7798 (H.265) packets of the source, non-interleaved mode."""
    if codec == "h264":
        packetize = rtp_h264.packetize
    elif codec == "h265":
        packetize = rtp_h265.packetize
    else:
        raise ValueError(f"codec must be h264 or h265, not {codec!r}")
    frames = access_units(path, codec, loops)
    return _rtp(((fr, packetize(fr.nal_units, mtu, aggregate=aggregate)) for fr in frames), ssrc=ssrc,
                payload_type=payload_type, seq_start=seq_start, spread=spread, ts_offset=ts_offset)


def ps_stream(packets) -> bytes:
    """The program stream carried by RTP/PS packets (payloads concatenated, 12-byte headers)."""
    return b"".join(bytes(p[0] if isinstance(p, tuple) else p)[12:] for p in packets)


def sequence(packet: bytes) -> int:
    return int.from_bytes(packet[2:4], "big")


# --- sending ------------------------------------------------------------------------
def _plan(packets, loss: float, seed: int) -> tuple[list[Packet], list[int]]:
    """The packets that survive `loss` (seeded) and the sequence numbers dropped."""
    if not loss:
        return list(packets), []
    rng = random.Random(seed)
    kept, dropped = [], []
    for p in packets:
        if rng.random() < loss:
            dropped.append(sequence(p[0]))
        else:
            kept.append(p)
    return kept, dropped


class _Pacer:
    """Sleeps until a packet's send offset (realtime: True = 1x, a float = that speed)."""

    def __init__(self, realtime, stop: threading.Event | None = None) -> None:
        self.speed = 1.0 if realtime is True else float(realtime or 0)
        self.start = time.monotonic()
        self.stop = stop

    def wait(self, offset: float) -> bool:
        """False when asked to stop."""
        if self.stop is not None and self.stop.is_set():
            return False
        if self.speed:
            delay = self.start + offset / self.speed - time.monotonic()
            if delay > 0.0005:
                if self.stop is not None:
                    return not self.stop.wait(delay)
                time.sleep(delay)
        return True


def send_udp(packets, addr, *, realtime=False, loss: float = 0.0, seed: int = 0, bind=None,
             stop: threading.Event | None = None) -> list[int]:
    """Send each packet as one datagram to `addr`; return the sequence numbers dropped by `loss`.

    Not realtime: as fast as the socket takes them, pausing briefly every 64 packets so the
    receiver's socket buffer on loopback does not overflow (give `realtime` for real pacing).
    """
    kept, dropped = _plan(packets, loss, seed)
    pacer = _Pacer(realtime, stop)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        if bind is not None:
            s.bind(bind)
        for i, (data, offset) in enumerate(kept):
            if not pacer.wait(offset):
                break
            if not pacer.speed and i % 64 == 63:
                time.sleep(0.001)
            s.sendto(data, addr)
    return dropped


def _stream_tcp(sock: socket.socket, kept: list[Packet], pacer: _Pacer) -> None:
    batch: list[bytes] = []
    for data, offset in kept:
        if pacer.speed:
            if not pacer.wait(offset):
                return
            sock.sendall(frame(data))
            continue
        batch.append(frame(data))
        if len(batch) >= 64:
            sock.sendall(b"".join(batch))
            batch = []
    if batch:
        sock.sendall(b"".join(batch))


def send_tcp(packets, addr, *, realtime=False, loss: float = 0.0, seed: int = 0, connect_timeout: float = 10.0,
             stop: threading.Event | None = None) -> list[int]:
    """Connect to `addr` (ferry listening) and send RFC 4571 frames; return dropped sequence numbers."""
    kept, dropped = _plan(packets, loss, seed)
    deadline = time.monotonic() + connect_timeout
    while True:
        try:
            sock = socket.create_connection(addr, timeout=connect_timeout)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with sock:
        sock.settimeout(None)
        _stream_tcp(sock, kept, _Pacer(realtime, stop))
        sock.shutdown(socket.SHUT_WR)
    return dropped


def tcp_listener(listen_addr=("127.0.0.1", 0)) -> socket.socket:
    """A listening socket for `serve_tcp` (bind port 0 and read `.getsockname()` first)."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(listen_addr)
    srv.listen(1)
    return srv


def serve_tcp(packets, listen_addr, *, realtime=False, loss: float = 0.0, seed: int = 0,
              accept_timeout: float = 20.0, stop: threading.Event | None = None) -> list[int]:
    """Listen (an address or a `tcp_listener` socket), accept one connection (ferry connecting),
    send RFC 4571 frames, close; return dropped sequence numbers."""
    kept, dropped = _plan(packets, loss, seed)
    srv = listen_addr if isinstance(listen_addr, socket.socket) else tcp_listener(listen_addr)
    with srv:
        srv.settimeout(accept_timeout)
        conn, _ = srv.accept()
    with conn:
        conn.settimeout(None)
        _stream_tcp(conn, kept, _Pacer(realtime, stop))
        conn.shutdown(socket.SHUT_WR)
    return dropped


class Camera:
    """Sends packets in a background thread: transport "udp", "tcp" (connect to `addr`) or
    "tcp-serve" (listen on `addr`, default port 0: read `.address`). `join()` returns the
    sequence numbers dropped by `loss` and re-raises the thread's error."""

    def __init__(self, packets, addr=("127.0.0.1", 0), *, transport: str = "udp", realtime=True,
                 loss: float = 0.0, seed: int = 0, listener: socket.socket | None = None) -> None:
        if transport not in ("udp", "tcp", "tcp-serve"):
            raise ValueError(f"unknown transport {transport!r}")
        self.packets = list(packets)
        self.transport = transport
        self.realtime, self.loss, self.seed = realtime, loss, seed
        self._listener = (listener or tcp_listener(tuple(addr))) if transport == "tcp-serve" else None
        self.address = self._listener.getsockname() if self._listener else tuple(addr)
        self.dropped: list[int] = []
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera-{transport}", daemon=True)

    def _run(self) -> None:
        kw = dict(realtime=self.realtime, loss=self.loss, seed=self.seed, stop=self.stopping)
        try:
            if self.transport == "udp":
                self.dropped = send_udp(self.packets, self.address, **kw)
            elif self.transport == "tcp":
                self.dropped = send_tcp(self.packets, self.address, **kw)
            else:
                self.dropped = serve_tcp(self.packets, self._listener, **kw)
        except BaseException as exc:  # handed to join()
            self.error = exc

    def start(self) -> "Camera":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()

    def join(self, timeout: float | None = None) -> list[int]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("camera still sending")
        if self.error is not None:
            raise self.error
        return self.dropped

    def __enter__(self) -> "Camera":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._thread.join(5)



# --- SIP mode: a GB/T 28181 device (REGISTER with digest, keepalives, catalog, INVITE, BYE) -----
def looped(packets: list[Packet], loops: int) -> list[Packet]:
    """`packets` played `loops` times: sequence numbers and RTP timestamps keep rising."""
    if loops <= 1 or not packets:
        return list(packets)
    ts = [int.from_bytes(p[4:8], "big") for p, _ in packets]
    step = (ts[-1] - ts[0]) + (ts[-1] - ts[-2] if len(ts) > 1 else 3600) or 3600
    span = packets[-1][1] + (packets[-1][1] - packets[-2][1] if len(packets) > 1 else 0.04)
    n, out = len(packets), []
    for r in range(loops):
        for i, (p, off) in enumerate(packets):
            b = bytearray(p)
            b[2:4] = ((sequence(p) + r * n) & 0xFFFF).to_bytes(2, "big")
            b[4:8] = ((ts[i] + r * step) & 0xFFFFFFFF).to_bytes(4, "big")
            out.append((bytes(b), off + r * span))
    return out


class SipCamera:
    """A GB/T 28181 camera as a SIP user agent (built on ferry.codecs.sip / sdp / sip_digest /
    manscdp): REGISTERs to `server` with digest (answering the 401), sends Keepalive MESSAGEs,
    answers Query Catalog with one channel, answers INVITE with 200 and an SDP answer, and on the
    ACK streams `packets` (RTP/PS, re-stamped with the offered SSRC) to the offered address, over
    UDP or TCP (the offer's a=setup: passive -> the camera connects, active -> it listens);
    stops on BYE. `listen` is its own SIP address (UDP; port 0 picks one: read `.address`).
    `events` records what it did ("registered", "invite", "streaming", "bye", "ptz ...")."""

    def __init__(self, packets: list[Packet], device_id: str, *, password: str = "",
                 server: tuple[str, int] | None = None, server_id: str = "", domain: str = "",
                 listen: tuple[str, int] = ("127.0.0.1", 0), expires: int = 3600, keepalive: float = 10.0,
                 realtime=True, log=None, sip_transport: str = "udp") -> None:
        from ferry.codecs import sip  # noqa: PLC0415 - only the SIP mode needs them

        self.sip = sip
        self.packets = packets
        self.device_id, self.password, self.server = device_id, password, server
        self.server_id = server_id or (device_id[:10] + "2000000001")
        self.domain = domain or device_id[:10]
        self.expires, self.keepalive, self.realtime = expires, keepalive, realtime
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(listen)
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        if sip_transport not in ("udp", "tcp") or (sip_transport == "tcp" and server is None):
            raise ValueError("SIP over tcp needs a server to connect to; transport is udp or tcp")
        self.tcp = sip_transport == "tcp"
        self.conn: socket.socket | None = None          # SIP over TCP: the connection to the server
        self.conn_lock = threading.Lock()
        self.stopping = threading.Event()
        self.registered = threading.Event()
        self.events: list[str] = []
        self.log = log or (lambda text: None)
        self.streams: dict[str, tuple[Camera, Any]] = {}     # Call-ID -> (sender, invite)
        self.answered: dict[str, bytes] = {}                 # Call-ID -> our 200 (retransmits)
        self.offers: dict[str, Any] = {}
        self.cseq = 0
        self.call_id = sip.new_call_id(self.address[0])
        self.tag = sip.new_tag()
        self.sn = 0
        self._threads: list[threading.Thread] = []

    # -- life ----------------------------------------------------------------------------------------
    def start(self) -> "SipCamera":
        targets = [self._receive, self._register_loop] + ([self._receive_tcp] if self.tcp else [])
        for target in targets:
            t = threading.Thread(target=target, daemon=True, name=f"sipcam-{target.__name__}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self.stopping.set()
        for cam, _ in list(self.streams.values()):
            cam.stop()
        for t in self._threads:
            t.join(2)
        self.sock.close()
        if self.conn is not None:
            self.conn.close()

    def __enter__(self) -> "SipCamera":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _note(self, text: str) -> None:
        self.events.append(text)
        self.log(text)

    # -- out ---------------------------------------------------------------------------------------------
    def _via(self) -> tuple[str, str]:
        kind = "TCP" if self.tcp else "UDP"
        return ("Via", f"SIP/2.0/{kind} {self.address[0]}:{self.address[1]};rport;branch={self.sip.new_branch()}")

    def _request(self, method: str, body: bytes = b"", extra=(), to_server=True) -> bytes:
        self.cseq += 1
        me = f"<sip:{self.device_id}@{self.domain}>"
        to = f"<sip:{self.server_id}@{self.domain}>" if to_server and method != "REGISTER" else me
        headers = [self._via(), ("From", f"{me};tag={self.tag}"), ("To", to),
                   ("Call-ID", self.call_id if method == "REGISTER" else self.sip.new_call_id(self.address[0])),
                   ("CSeq", f"{self.cseq} {method}"), ("Max-Forwards", "70"), *extra]
        return self.sip.build_request(method, f"sip:{self.server_id}@{self.domain}", headers, body)

    def _send(self, data: bytes, addr) -> None:
        try:
            if addr == "tcp" or (self.tcp and addr == self.server):
                conn = self._connection()
                if conn is not None:
                    conn.sendall(data)
                return
            self.sock.sendto(data, addr)
        except OSError as e:
            self.log(f"send to {addr}: {e}")

    def _connection(self) -> socket.socket | None:
        """SIP over TCP: the connection to the server, (re)opened when needed."""
        with self.conn_lock:
            if self.conn is None and self.server is not None:
                try:
                    self.conn = socket.create_connection(self.server, timeout=5)
                    self.conn.settimeout(0.2)
                except OSError as e:
                    self.log(f"connect {self.server}: {e}")
            return self.conn

    def _receive_tcp(self) -> None:
        parser = self.sip.SipStreamParser()
        while not self.stopping.is_set():
            conn = self.conn
            if conn is None:
                self.stopping.wait(0.2)
                continue
            try:
                data = conn.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                data = b""
            if not data:                    # closed: reconnect on the next send, parse anew
                with self.conn_lock:
                    self.conn = None
                conn.close()
                parser = self.sip.SipStreamParser()
                continue
            try:
                messages = parser.feed(data)
            except self.sip.SipError as e:
                self.log(f"refused the server's stream: {e}")
                with self.conn_lock:
                    self.conn = None
                conn.close()
                parser = self.sip.SipStreamParser()
                continue
            for msg in messages:
                self._handle(msg, "tcp")

    def _message(self, body) -> None:
        from ferry.codecs import manscdp  # noqa: PLC0415
        if self.server is None:
            return
        self._send(self._request("MESSAGE", manscdp.build(body), (("Content-Type", "Application/MANSCDP+xml"),)),
                   self.server)

    def _register_loop(self) -> None:
        from ferry.codecs import manscdp  # noqa: PLC0415
        next_register = 0.0
        next_keepalive = None
        while not self.stopping.is_set():
            now = time.monotonic()
            if self.server is not None and now >= next_register:
                self._register(None)
                next_register = now + (max(self.expires / 2, 5) if self.registered.is_set() else 2.0)
            if self.registered.is_set() and (next_keepalive is None or now >= next_keepalive):
                self.sn += 1
                self._message(manscdp.keepalive(self.device_id, self.sn))
                next_keepalive = now + self.keepalive
            self.stopping.wait(0.2)

    def _register(self, challenge, nc: int = 1) -> None:
        where = f"{self.address[0]}:{self.address[1]}" + (";transport=tcp" if self.tcp else "")
        contact = ("Contact", f"<sip:{self.device_id}@{where}>")
        extra = [contact, ("Expires", str(self.expires)), ("User-Agent", "ferry-camera")]
        if challenge is not None:
            from ferry.codecs.sip_digest import authorization  # noqa: PLC0415
            uri = f"sip:{self.server_id}@{self.domain}"
            extra.append(("Authorization", authorization(challenge, "REGISTER", uri, self.device_id, self.password,
                                                         self.sip.new_tag(), nc)))
        assert self.server is not None
        self._send(self._request("REGISTER", extra=extra), self.server)

    # -- in ----------------------------------------------------------------------------------------------
    def _receive(self) -> None:
        while not self.stopping.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            try:
                msg = self.sip.parse_message(data)
            except self.sip.SipError as e:
                self.log(f"refused {len(data)} bytes from {addr}: {e}")
                continue
            self._handle(msg, addr)

    def _handle(self, msg, addr) -> None:
        if not isinstance(msg, (self.sip.SipRequest, self.sip.SipResponse)):
            return                              # a keep-alive on TCP
        try:
            if isinstance(msg, self.sip.SipResponse):
                self._response(msg)
            else:
                self._request_in(msg, addr)
        except Exception as e:  # a test tool: say it, keep running
            self.log(f"error on {getattr(msg, 'method', getattr(msg, 'status', '?'))}: {type(e).__name__}: {e}")

    def _response(self, msg) -> None:
        _n, method = msg.cseq
        if method != "REGISTER":
            return
        if msg.status == 401:
            from ferry.codecs.sip_digest import parse_challenge  # noqa: PLC0415
            self._register(parse_challenge(msg.header("WWW-Authenticate") or ""))
        elif 200 <= msg.status < 300:
            if not self.registered.is_set():
                self._note("registered")
            self.registered.set()
        else:
            self._note(f"register refused {msg.status}")

    def _request_in(self, msg, addr) -> None:
        from ferry.codecs import manscdp  # noqa: PLC0415
        sip = self.sip
        if msg.method == "MESSAGE":
            self._send(sip.response_to(msg, 200, "OK"), addr)
            body = manscdp.parse(msg.body)
            if (body.root, body.cmd_type) == ("Query", "Catalog"):
                self._note("catalog query")
                item = manscdp.Item((("DeviceID", self.device_id), ("Name", "ferry test camera"),
                                     ("Manufacturer", "ferry"), ("Model", "testsrc2"), ("Status", "ON")))
                self._message(manscdp.Manscdp("Response", "Catalog", body.sn, self.device_id, sum_num=1,
                                              items=(item,)))
            elif (body.root, body.cmd_type) == ("Control", "DeviceControl"):
                self._note(f"ptz {body.get('PTZCmd')}")
            return
        if msg.method == "INVITE":
            self._invite(msg, addr)
        elif msg.method == "ACK":
            self._ack(msg)
        elif msg.method == "BYE":
            self._send(sip.response_to(msg, 200, "OK"), addr)
            held = self.streams.pop(msg.call_id, None)
            self.answered.pop(msg.call_id, None)
            if held is not None:
                held[0].stop()
            self._note("bye")
        elif msg.method == "CANCEL":
            self._send(sip.response_to(msg, 200, "OK"), addr)
        else:
            self._send(sip.response_to(msg, 405, "Method Not Allowed"), addr)

    def _invite(self, msg, addr) -> None:
        from ferry.codecs.sdp import Origin, RtpMap, Sdp, parse_sdp, build_sdp  # noqa: PLC0415
        sip = self.sip
        if msg.call_id in self.answered:          # a retransmitted INVITE
            self._send(self.answered[msg.call_id], addr)
            return
        offer = parse_sdp(msg.body)
        tcp = offer.transport == "TCP/RTP/AVP"
        self._send(sip.response_to(msg, 100, "Trying"), addr)
        host = self.address[0]
        listener = None
        port = 0
        if tcp and offer.setup == "active":       # ferry connects: the camera listens
            listener = tcp_listener((host, 0))
            port = listener.getsockname()[1]
        answer = Sdp(origin=Origin(self.device_id, "0", "0", host), session_name="Play", connection=host,
                     media_port=port or 9, transport=offer.transport, payload_types=(96,),
                     rtpmaps=(RtpMap(96, "PS", 90000),), direction="sendonly",
                     setup=("passive" if offer.setup == "active" else "active") if tcp else None,
                     connection_mode="new" if tcp else None, ssrc=offer.ssrc)
        ok = sip.response_to(msg, 200, "OK", (("Contact", f"<sip:{self.device_id}@{host}:{self.address[1]}>"),
                                              ("Content-Type", "APPLICATION/SDP")), build_sdp(answer),
                             to_tag=sip.new_tag())
        self.answered[msg.call_id] = ok
        self.offers[msg.call_id] = (offer, listener)
        self._note(f"invite ssrc {offer.ssrc} {offer.transport} {offer.connection}:{offer.media_port}")
        self._send(ok, addr)

    def _ack(self, msg) -> None:
        got = self.offers.pop(msg.call_id, None)
        if got is None or msg.call_id in self.streams:
            return
        offer, listener = got
        ssrc = int(offer.ssrc or "0")
        packets = [(p[:8] + ssrc.to_bytes(4, "big") + p[12:], off) for p, off in self.packets]
        if offer.transport != "TCP/RTP/AVP":
            cam = Camera(packets, (offer.connection, offer.media_port), transport="udp", realtime=self.realtime)
        elif listener is not None:
            cam = Camera(packets, transport="tcp-serve", realtime=self.realtime, listener=listener)
        else:
            cam = Camera(packets, (offer.connection, offer.media_port), transport="tcp", realtime=self.realtime)
        self.streams[msg.call_id] = (cam, offer)
        cam.start()
        self._note(f"streaming ssrc {ssrc} to {offer.connection}:{offer.media_port}")


# --- command line -----------------------------------------------------------------------------
_EPILOG = """examples:
  python -m ferry.camera --to 10.30.1.20:15060                         # RTP/PS over UDP, H.264 640x360, 10 s
  python -m ferry.camera --to 10.30.1.20:15060 --codec h265 --size 1920x1080 --seconds 60 --loss 0.01
  python -m ferry.camera --to 127.0.0.1:15062 --transport tcp --payload raw   # RFC 4571, RFC 6184 packets
  python -m ferry.camera --listen 0.0.0.0:15064 --transport tcp-serve          # the agent connects to it
  python -m ferry.camera --sip-server 10.30.1.20:5060 --device-id 34020000001320000001 --password secret \
      --sip-listen 10.30.1.31:5060 --loops 100   # SIP mode: registers, answers INVITE, streams to the offer

A site check: point it at an outer agent's [[video]] listen address (the stream's device_id
and the policy decide whether it crosses), then look for stream_started / stream_ended or
stream_refused in the audit trails. Needs ffmpeg (libx264 / libx265).
Exit status: 0 sent, 1 the sending failed, 2 usage or ffmpeg errors."""


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def main(argv: list[str] | None = None) -> int:
    """``python -m ferry.camera``: an ffmpeg-made test picture sent as a GB/T 28181 camera would."""
    import argparse  # noqa: PLC0415 - the library part does not need it
    import sys  # noqa: PLC0415

    p = argparse.ArgumentParser(
        prog="python -m ferry.camera", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG,
        description="A GB/T 28181 test camera: an ffmpeg test picture (testsrc2) encoded as H.264 or H.265 "
                    "and sent as RTP/PS (or RFC 6184 / RFC 7798 RTP) over UDP or TCP (RFC 4571).")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--to", metavar="HOST:PORT", help="send to this address (udp, tcp)")
    where.add_argument("--listen", metavar="HOST:PORT", help="tcp-serve: wait for the agent to connect here")
    p.add_argument("--transport", choices=("udp", "tcp", "tcp-serve"), default=None,
                   help="udp (default with --to) or tcp: RFC 4571 framing; tcp-serve with --listen")
    p.add_argument("--payload", choices=("ps", "raw"), default="ps",
                   help="ps: MPEG program stream in RTP, as GB/T 28181 (default); raw: RFC 6184/7798")
    p.add_argument("--codec", choices=("h264", "h265"), default="h264", help="default h264")
    p.add_argument("--size", default="640x360", help="WIDTHxHEIGHT (default 640x360)")
    p.add_argument("--rate", type=int, default=25, help="pictures per second (default 25)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the picture (default 10)")
    p.add_argument("--loops", type=int, default=1, help="send the picture this many times (default 1)")
    p.add_argument("--ssrc", type=lambda v: int(v, 0), default=0x0BEBC201,
                   help="RTP SSRC (default 0x0BEBC201, decimal 0200000001: a GB/T 28181 real-time stream)")
    p.add_argument("--loss", type=float, default=0.0, help="drop this share of packets, 0..1 (default 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed of --loss")
    p.add_argument("--fast", action="store_true", help="send as fast as the socket takes it, not in real time")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help=f"folder for the encoded pictures, kept per settings (default {DEFAULT_CACHE})")
    sip = p.add_argument_group("SIP mode (a GB/T 28181 device: registers, answers INVITE, streams to the offer)")
    sip.add_argument("--sip-server", metavar="HOST:PORT", help="register (UDP) with this SIP server")
    sip.add_argument("--sip-listen", metavar="HOST:PORT", default="",
                     help="the camera's own SIP address (UDP; default 127.0.0.1 and a free port)")
    sip.add_argument("--device-id", metavar="ID", help="the camera's 20-digit device ID (SIP mode)")
    sip.add_argument("--password", default="", help="its SIP digest password")
    sip.add_argument("--server-id", default="", help="the server's 20-digit ID (default: <domain>2000000001)")
    sip.add_argument("--domain", default="", help="the 10-digit SIP domain (default: the device ID's first 10)")
    sip.add_argument("--keepalive", type=float, default=10.0, help="seconds between Keepalive MESSAGEs")
    args = p.parse_args(argv)
    if args.sip_server or args.device_id or args.sip_listen:
        return _sip_main(p, args)
    if not (args.to or args.listen):
        p.error("one of --to, --listen (or SIP mode: --device-id with --sip-server or --sip-listen) is required")
    transport = args.transport or ("tcp-serve" if args.listen else "udp")
    if (transport == "tcp-serve") != bool(args.listen):
        p.error("--listen goes with --transport tcp-serve, --to with udp or tcp")
    if not 0.0 <= args.loss < 1.0 or args.loops < 1 or args.rate < 1 or not args.seconds > 0:
        p.error("--loss must be in 0..1, --loops, --rate and --seconds positive")
    try:
        addr = _address(args.listen or args.to)
    except ValueError as e:
        p.error(str(e))
    try:
        src = make_source(args.cache, args.codec, size=args.size, seconds=args.seconds, rate=args.rate)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"python -m ferry.camera: cannot make the picture with ffmpeg: {e}", file=sys.stderr)
        return 2
    make = ps_packets if args.payload == "ps" else raw_packets
    packets = make(src, args.codec, ssrc=args.ssrc, loops=args.loops)
    cam = Camera(packets, addr, transport=transport, realtime=not args.fast, loss=args.loss, seed=args.seed)
    print(f"camera: {args.codec} {args.size} {args.rate} fps, {len(packets)} RTP/{args.payload.upper()} packets "
          f"({packets[-1][1] if packets else 0:.1f} s), {transport} "
          f"{'listening on' if transport == 'tcp-serve' else 'to'} {cam.address[0]}:{cam.address[1]}", flush=True)
    cam.start()
    try:
        dropped = cam.join()
    except KeyboardInterrupt:
        cam.stop()
        return 130
    except OSError as e:
        print(f"python -m ferry.camera: sending failed: {e}", file=sys.stderr)
        return 1
    print(f"camera: sent {len(packets) - len(dropped)} packets, dropped {len(dropped)} on purpose (--loss)")
    return 0


def _sip_main(p, args) -> int:
    """SIP mode: register (if --sip-server), answer INVITEs until interrupted."""
    import re  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import sys  # noqa: PLC0415

    if not args.device_id or not re.fullmatch(r"[0-9]{20}", args.device_id):
        p.error("SIP mode needs --device-id with 20 digits")
    if args.transport not in (None, "udp", "tcp") or (args.transport == "tcp" and not args.sip_server):
        p.error("SIP mode: --transport is SIP's own (udp, or tcp to --sip-server); the media transport is "
                "the INVITE's choice")
    try:
        server = _address(args.sip_server) if args.sip_server else None
        listen = _address(args.sip_listen) if args.sip_listen else ("127.0.0.1", 0)
    except ValueError as e:
        p.error(str(e))
    try:
        src = make_source(args.cache, args.codec, size=args.size, seconds=args.seconds, rate=args.rate)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"python -m ferry.camera: cannot make the picture with ffmpeg: {e}", file=sys.stderr)
        return 2
    packets = looped(ps_packets(src, args.codec, ssrc=args.ssrc), args.loops)
    cam = SipCamera(packets, args.device_id, password=args.password, server=server, server_id=args.server_id,
                    domain=args.domain, listen=listen, keepalive=args.keepalive, realtime=not args.fast,
                    log=lambda text: print(f"camera: {text}", flush=True), sip_transport=args.transport or "udp")
    print(f"camera: SIP {args.device_id} on udp {cam.address[0]}:{cam.address[1]}"
          f"{f', registering with {server[0]}:{server[1]}' if server else ''}; {len(packets)} RTP/PS packets "
          "per INVITE", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    cam.start()
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    cam.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
