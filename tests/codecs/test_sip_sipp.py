"""The SIP and digest codecs against SIPp (Debian `sip-tester`), an independent SIP stack.

SIPp plays a GB/T 28181 camera on loopback: it REGISTERs, computes its own digest answer to our
challenge (with and without qop; `-auth_uri` makes SIPp put the Request-URI in the digest's uri,
as RFC 3261 §22.4 says and GB/T 28181 platforms check, where it would put remote_ip:port) and
checks that our responses (built by `response_to`) match its transaction; it sends a MANSCDP
MESSAGE. Skipped when sipp is not installed."""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from ferry.codecs.sip import KeepAlive, SipRequest, SipStreamParser, new_tag, parse_message, response_to
from ferry.codecs.sip_digest import Challenge, parse_authorization, verify, www_authenticate
from tests.codecs import sip_messages as M

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed")

HEAD = """      Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
      From: <sip:34020000001320000001@3402000000>;tag=[pid]SIPpTag00[call_number]
      To: <sip:34020000001320000001@3402000000>
      Call-ID: [call_id]
"""
REGISTER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="GB/T 28181 camera registering with digest">
  <send retrans="500"><![CDATA[
      REGISTER sip:34020000002000000001@3402000000 SIP/2.0
""" + HEAD + """      CSeq: 1 REGISTER
      Contact: <sip:34020000001320000001@[local_ip]:[local_port]>
      Max-Forwards: 70
      User-Agent: IP Camera
      Expires: 3600
      Content-Length: [len]

  ]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
      REGISTER sip:34020000002000000001@3402000000 SIP/2.0
""" + HEAD + """      CSeq: 2 REGISTER
      Contact: <sip:34020000001320000001@[local_ip]:[local_port]>
      [authentication username=34020000001320000001 password=PASSWORD]
      Max-Forwards: 70
      User-Agent: IP Camera
      Expires: 3600
      Content-Length: [len]

  ]]></send>
  <recv response="200"/>
</scenario>
"""
MESSAGE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="GB/T 28181 keepalive">
  <send retrans="500"><![CDATA[
      MESSAGE sip:34020000002000000001@3402000000 SIP/2.0
""" + HEAD.replace("To: <sip:34020000001320000001", "To: <sip:34020000002000000001") + """      CSeq: 20 MESSAGE
      Content-Type: Application/MANSCDP+xml
      Max-Forwards: 70
      Content-Length: [len]

      <?xml version="1.0" encoding="GB2312"?>
      <Notify>
      <CmdType>Keepalive</CmdType>
      <SN>43</SN>
      <DeviceID>34020000001320000001</DeviceID>
      <Status>OK</Status>
      </Notify>
  ]]></send>
  <recv response="200"/>
</scenario>
"""


class Platform:
    """A minimal upper platform on a loopback UDP socket, made of the codecs only."""

    def __init__(self, qop: str | None, password: str = M.PASSWORD) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.challenge = Challenge("3402000000", new_tag() + new_tag(), qop=qop)
        self.password = password
        self.received: list[SipRequest] = []
        self.verdicts: list[bool] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        tag = new_tag()
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            try:
                req = parse_message(data)
                assert isinstance(req, SipRequest)
                self.received.append(req)
                if req.method == "REGISTER" and req.header("Authorization") is None:
                    challenge = [("WWW-Authenticate", www_authenticate(self.challenge))]
                    out = response_to(req, 401, "Unauthorized", challenge, to_tag=tag)
                elif req.method == "REGISTER":
                    creds = parse_authorization(req.header("Authorization") or "")
                    ok = verify(creds, req.method, self.password, self.challenge, request_uri=str(req.uri))
                    self.verdicts.append(ok)
                    out = response_to(req, 200 if ok else 403, "OK" if ok else "Forbidden",
                                      [("Expires", "3600")], to_tag=tag)
                else:
                    out = response_to(req, 200, "OK", to_tag=tag)
                self.sock.sendto(out, peer)
            except BaseException as e:   # reported by the test
                self.errors.append(e)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


class TcpPlatform:
    """The same over TCP: one connection read with SipStreamParser in whatever segments arrive."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.5)
        self.port = self.listener.getsockname()[1]
        self.received: list[SipRequest] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        tag = new_tag()
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            parser = SipStreamParser()
            conn.settimeout(0.5)
            with conn:
                while not self.stop.is_set():
                    try:
                        data = conn.recv(65536)
                    except socket.timeout:
                        continue
                    if not data:
                        break
                    try:
                        for msg in parser.feed(data):
                            if isinstance(msg, KeepAlive):
                                conn.sendall(b"\r\n")
                                continue
                            assert isinstance(msg, SipRequest)
                            self.received.append(msg)
                            conn.sendall(response_to(msg, 200, "OK", to_tag=tag))
                    except BaseException as e:   # reported by the test
                        self.errors.append(e)
                        return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_sipp(tmp_path: Path, scenario: str, platform: Platform | TcpPlatform,
             *extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "scenario.xml"
    path.write_text(scenario)
    cmd = ["sipp", *extra, f"127.0.0.1:{platform.port}", "-sf", str(path), "-m", "1", "-i", "127.0.0.1",
           "-p", str(free_udp_port()), "-auth_uri", "34020000002000000001@3402000000", "-nostdin",
           "-timeout", "30", "-timeout_error", "-max_recv_loops", "1000"]
    return subprocess.run(cmd, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("qop", [None, "auth"])
def test_sipp_camera_registers_with_digest(tmp_path: Path, qop: str | None) -> None:
    platform = Platform(qop)
    try:
        done = run_sipp(tmp_path, REGISTER.replace("PASSWORD", M.PASSWORD), platform)
    finally:
        platform.close()
    assert not platform.errors, platform.errors
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert platform.verdicts == [True]
    creds = parse_authorization(platform.received[1].header("Authorization") or "")
    assert creds.qop == qop and creds.username == "34020000001320000001"


def test_sipp_camera_with_a_wrong_password_is_refused(tmp_path: Path) -> None:
    platform = Platform("auth")
    try:
        done = run_sipp(tmp_path, REGISTER.replace("PASSWORD", "wrong-password"), platform)
    finally:
        platform.close()
    assert not platform.errors, platform.errors
    assert platform.verdicts == [False]
    assert done.returncode != 0


def test_sipp_keepalive_message_parses_and_our_200_matches_its_transaction(tmp_path: Path) -> None:
    platform = Platform(None)
    try:
        done = run_sipp(tmp_path, MESSAGE, platform)
    finally:
        platform.close()
    assert not platform.errors, platform.errors
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (msg,) = platform.received
    assert msg.content_type == "application/manscdp+xml" and b"<CmdType>Keepalive</CmdType>" in msg.body


def test_sipp_over_tcp_through_the_stream_parser(tmp_path: Path) -> None:
    platform = TcpPlatform()
    scenario = MESSAGE.replace("</scenario>", MESSAGE.split("<scenario name=\"GB/T 28181 keepalive\">")[1]
                               .replace("CSeq: 20 MESSAGE", "CSeq: 21 MESSAGE"))
    try:
        done = run_sipp(tmp_path, scenario, platform, "-t", "t1")
    finally:
        platform.close()
    assert not platform.errors, platform.errors
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert [m.cseq for m in platform.received] == [(20, "MESSAGE"), (21, "MESSAGE")]
    assert all(m.via[0].transport == "TCP" for m in platform.received)
