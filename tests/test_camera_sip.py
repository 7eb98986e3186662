"""ferry's test camera in SIP mode (ferry.camera.SipCamera) against SIPp, an independent SIP stack.

- SIPp plays the upper platform (a UAS with `verifyauth`): the camera's REGISTER gets a 401, its
  digest answer is checked by SIPp itself and only then answered 200.
- SIPp plays a platform asking for video (a UAC): it INVITEs the camera with a GB/T 28181 offer
  (UDP, SSRC 0200000123), ACKs the 200 and BYEs; the RTP the camera sends to the offered port is
  captured with tshark, dissected as RTP with the offered SSRC, and the PS it carries decodes in
  ffprobe.
Skipped without sipp, tshark or ffmpeg.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gb28181
from appliance import free_udp_port
from waiting import file_size, wait_stable, wait_until

pytestmark = [pytest.mark.skipif(not all(shutil.which(t) for t in ("sipp", "tshark", "ffmpeg", "ffprobe")),
                                 reason="needs sipp (sip-tester), tshark and ffmpeg"), pytest.mark.timeout(120)]

CAMERA = "34020000001320000001"
SERVER = "34020000002000000001"
HERE = Path(__file__).resolve().parent / "support" / "sipp"


def sipp(scenario: Path, port: int, *args: str, log: Path) -> subprocess.Popen:
    cmd = ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-timeout", "60",
           "-timeout_error", "-trace_err", "-error_file", str(log.with_suffix(".err")), *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 60) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("sipp did not finish: " + log.read_text(errors="replace")) from None


def errors(log: Path) -> str:
    err = log.with_suffix(".err")
    return (err.read_text(errors="replace") if err.exists() else "") + log.read_text(errors="replace")


@pytest.mark.parametrize("password, verdict, transport", [("secret", 0, "udp"), ("wrong", 97, "udp"),
                                                         ("secret", 0, "tcp")])     # 97: stopped after the 403
def test_camera_registers_with_digest_that_sipp_verifies(tmp_path, password, verdict, transport):
    port = free_udp_port()
    log = tmp_path / "sipp.log"
    proc = sipp(HERE / "media_outer_register_uas.xml", port, *(["-t", "t1"] if transport == "tcp" else []), log=log)
    time.sleep(0.5)          # SIPp binds its socket before it reads the scenario's first recv
    events: list[str] = []
    cam = gb28181.SipCamera([], CAMERA, password=password, server=("127.0.0.1", port), server_id=SERVER,
                            keepalive=3600, log=events.append, sip_transport=transport).start()
    try:
        rc = finish(proc, log)
    finally:
        cam.stop()
    assert rc == verdict, errors(log)
    if verdict == 0:
        assert cam.registered.is_set() and "registered" in events
    else:
        assert not cam.registered.is_set() and "register refused 403" in events


class Tshark:
    def __init__(self, port: int, path: Path) -> None:
        self.port, self.path = port, path
        self.log = path.with_suffix(".log")
        self.proc = subprocess.Popen(["tshark", "-i", "lo", "-f", f"udp port {port}", "-w", str(path)],
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        wait_until(lambda: b"Capturing on" in self.log.read_bytes(), 15, "tshark capturing")
        time.sleep(0.3)      # "Capturing on" comes a moment before the filter is live

    def stop(self) -> list[tuple[int, int, bytes]]:
        """(ssrc, seq, payload) of each packet tshark dissects as RTP."""
        wait_stable(lambda: file_size(self.path), 0.5, 15, "the capture file")
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(15)
        out = subprocess.run(["tshark", "-r", str(self.path), "-d", f"udp.port=={self.port},rtp", "-T", "fields",
                              "-e", "rtp.ssrc", "-e", "rtp.seq", "-e", "rtp.payload"],
                             capture_output=True, text=True, check=True).stdout
        rows = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or not parts[0]:
                continue
            rows.append((int(parts[0], 16) if parts[0].startswith("0x") else int(parts[0]), int(parts[1]),
                         bytes.fromhex(parts[2].replace(":", ""))))
        return rows


def test_camera_answers_sipp_invite_and_streams_ps_with_the_offered_ssrc(tmp_path):
    src = gb28181.make_source(None, "h264", seconds=2)
    packets = gb28181.ps_packets(src, "h264", ssrc=0x0BEBC201)
    events: list[str] = []
    cam = gb28181.SipCamera(packets, CAMERA, server_id=SERVER, realtime=4.0, log=events.append).start()
    rtp_port = free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:     # the offered port exists
        sink.bind(("127.0.0.1", rtp_port))
        shark = Tshark(rtp_port, tmp_path / "rtp.pcap")
        log = tmp_path / "sipp.log"
        proc = sipp(HERE / "media_outer_invite_uac.xml", free_udp_port(), f"127.0.0.1:{cam.address[1]}",
                    "-key", "rtp_port", str(rtp_port), "-key", "device", CAMERA, log=log)
        try:
            rc = finish(proc, log)
            wait_until(lambda: "bye" in events, 10, "the camera's BYE handling")
            rows = shark.stop()
        finally:
            cam.stop()
            if shark.proc.poll() is None:
                shark.proc.kill()
    assert rc == 0, errors(log)
    assert any(e.startswith("invite ssrc 0200000123") for e in events), events
    assert rows, "no RTP captured"
    assert {ssrc for ssrc, _, _ in rows} == {200000123}          # the offered SSRC, as tshark reads it
    seqs = [s for _, s, _ in rows]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    ps = tmp_path / "out.ps"
    ps.write_bytes(b"".join(p for _, _, p in rows))
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=codec_name,nb_read_frames", "-of", "csv=p=0", str(ps)],
                           capture_output=True, text=True, check=True).stdout.strip()
    codec, frames = probe.split(",")[:2]
    assert codec == "h264" and int(frames) > 0
    # what was sent before the BYE is the source's start, frame for frame
    got = gb28181.framemd5(ps)
    assert got and got == gb28181.framemd5(src)[:len(got)]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
