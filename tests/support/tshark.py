"""tshark in tests: capture loopback traffic, and read the SIP in a capture as Wireshark sees it.

    with LoopbackCapture(tmp_path / "sip.pcap", ports=[a, b]) as cap:    # root: dumpcap on lo
        ...
    rows = tshark_sip(cap.path, ports=[a, b])
    assert rows and not [r for r in rows if r["malformed"]]

tshark decodes SIP on 5060 by itself (and heuristically on UDP); `ports` adds "decode as SIP"
for the test's own ports, over UDP and TCP. `sip_datagrams_pcap` writes SIP messages (e.g. ones
ferry built) into a pcap, so tshark can judge them without a capture.
"""
from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from waiting import wait_stable, wait_until

FIELDS = ("frame.number", "sip.Method", "sip.Status-Code", "sip.Call-ID", "sip.From", "sip.To",
          "sip.Content-Type", "sip.CSeq", "_ws.malformed", "_ws.expert.severity", "_ws.expert.message")


def _decode_as(ports: Sequence[int]) -> list[str]:
    out: list[str] = []
    for p in ports:
        out += ["-d", f"udp.port=={p},sip", "-d", f"tcp.port=={p},sip"]
    return out


PI_WARN = 0x00600000     # Wireshark's expert severities: chat 0x002..., note 0x004..., warn, error 0x008...


def tshark_sip(capture: Path, ports: Sequence[int] = ()) -> list[dict]:
    """One dict per SIP message in the capture: frame, method (requests), status (responses),
    call_id, from, to, content_type, cseq, malformed, expert (tshark's expert messages).
    malformed: tshark marked the frame malformed, or an expert message of severity warning or
    error (e.g. "Invalid content_length", "Header not terminated by empty line (CRLF)", "Header
    has no colon after the name", "Invalid SDP line"), or a UDP datagram to or from one of `ports`
    that tshark could not dissect as SIP at all."""
    if shutil.which("tshark") is None:
        raise AssertionError("tshark is not installed (./run setup installs it)")
    shown = "sip or _ws.malformed"
    if ports:
        shown += "".join(f" or udp.port == {p}" for p in ports)
    cmd = ["tshark", "-r", str(capture), "-n", *_decode_as(ports), "-Y", shown,
           "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise AssertionError(f"tshark failed ({out.returncode}): {out.stderr[-2000:]}")
    rows = []
    for line in out.stdout.splitlines():
        cols = (line.split("\t") + [""] * len(FIELDS))[:len(FIELDS)]
        frame, method, status, call_id, from_, to, ctype, cseq, malformed, severity, expert = cols
        severities = [_severity(s) for s in severity.split("|") if s]
        error = any(s >= PI_WARN for s in severities) or not (method or status)
        rows.append({"frame": int(frame) if frame.isdigit() else frame, "method": method or None,
                     "status": int(status) if status.isdigit() else None, "call_id": call_id or None,
                     "from": from_ or None, "to": to or None, "content_type": ctype or None, "cseq": cseq or None,
                     "malformed": bool(malformed) or error, "expert": [e for e in expert.split("|") if e]})
    return rows


def _severity(text: str) -> int:
    """tshark prints expert severities as numbers (0x00800000 = 8388608) or, by version, names."""
    names = {"chat": 0x00200000, "note": 0x00400000, "warning": PI_WARN, "warn": PI_WARN, "error": 0x00800000}
    text = text.strip().lower()
    if text in names:
        return names[text]
    try:
        return int(text, 0)
    except ValueError:
        return 0x00800000


def sip_datagrams_pcap(path: Path, messages: Sequence[bytes], port: int = 5060) -> Path:
    """Write each message as one IPv4/UDP datagram 127.0.0.1:5070 -> 127.0.0.1:port into a pcap
    (link type 228, raw IPv4), for tshark_sip(path, ports=[port])."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 228))
        for n, payload in enumerate(messages):
            udp = struct.pack("!HHHH", 5070, port, 8 + len(payload), 0) + payload
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0,
                             bytes((127, 0, 0, 1)), bytes((127, 0, 0, 1)))
            total = sum(struct.unpack("!10H", ip))
            total = (total & 0xFFFF) + (total >> 16)
            total = (total & 0xFFFF) + (total >> 16)
            packet = ip[:10] + struct.pack("!H", ~total & 0xFFFF) + ip[12:] + udp
            f.write(struct.pack("<IIII", n, 0, len(packet), len(packet)) + packet)
    return path


class LoopbackCapture:
    """dumpcap/tshark on lo, filtered to some ports, for the duration of a `with` (needs root)."""

    def __init__(self, path: Path, ports: Sequence[int]) -> None:
        self.path, self.ports = Path(path), list(ports)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.path.with_suffix(".log")

    def __enter__(self) -> "LoopbackCapture":
        bpf = " or ".join(f"port {p}" for p in self.ports)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["tshark", "-i", "lo", "-f", bpf, "-w", str(self.path)],
                                         stdout=log, stderr=subprocess.STDOUT)

        def running() -> None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError("tshark did not start: " + self.log.read_text(errors="replace"))

        wait_until(lambda: b"Capturing on" in self.log.read_bytes(), 30, "tshark capturing", check=running)
        # "Capturing on" comes as dumpcap opens lo, a moment before its filter is live; nothing
        # outside shows that moment, so this short pause stays (as in tests/e2e/test_video.py)
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        wait_stable(lambda: self.path.stat().st_size if self.path.exists() else 0, 0.5, 15, "the capture file")
        p.send_signal(signal.SIGINT)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
