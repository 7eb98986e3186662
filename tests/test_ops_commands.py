"""Issue 16 item 5: the commands an operator stumbles on (kernel rules from the agent config, one
accept line per opening, missing policy folders, the demo's management sockets, a wrong socket,
the test camera's command line)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferry.cli import main as ferry_main
from ferry.config import InnerConfig, OuterConfig, load_config
from ferry.crypto.keys import init_keys
from ferry.codecs import sip
from ferry.codecs.sip import SipResponse
from ferry.codecs.sip_digest import authorization, parse_challenge
from ferry.demo import DEMO_POLICY, Call, DemoPlatform, _write_configs
from ferry.kernel import cli as kernel_cli
from ferry.kernel import nft
from ferry.policy import load_plan

ROOT = Path(__file__).resolve().parents[1]
POLICY = """\
policy: ops-test
version: 1
default: deny
sources:
  platform:
    kind: addresses
    addresses: ["10.232.0.64/26"]
    ports: [5060]
    protocol: udp
  platform-backup:
    kind: addresses
    addresses: ["10.232.0.64/26"]
    ports: [5060]
    protocol: udp
destinations:
  police-sip: {kind: sip}
rules:
  - id: signaling-basic
    lane: signaling
    from: platform
    to: police-sip
    signaling: {roots: [Notify], cmd_types: [Keepalive], max_body_bytes: 4096}
  - id: signaling-backup
    lane: signaling
    from: platform-backup
    to: police-sip
    signaling: {roots: [Notify], cmd_types: [Keepalive], max_body_bytes: 4096}
"""
AGENT = """
[agent]
name = "{role}-1"
key = "keys/{role}.key"
peer_public = "keys/peer.pub"
policy = "pol"
audit_dir = "audit/{role}"
"""


def ferry(*args, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.fixture
def policy(tmp_path):
    d = tmp_path / "pol"
    d.mkdir()
    (d / "policy.yaml").write_text(POLICY)
    return d


# --- ferry kernel rules --config ---------------------------------------------------------------

def _rules(capsys, *argv) -> tuple[int, str, str]:
    rc = kernel_cli.main(["rules", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_kernel_rules_take_the_link_from_the_agent_config(tmp_path, policy, capsys):
    (tmp_path / "outer.toml").write_text(AGENT.format(role="outer") + """
[link]
peer_host = "10.232.1.2"
peer_port = 47000
[kernel]
link_if = "o-l"
ingest_if = "o-in"
""")
    (tmp_path / "inner.toml").write_text(AGENT.format(role="inner") + """
[link]
listen_host = "10.232.1.2"
listen_port = 47000
[kernel]
link_if = "i-l"
peer_addr = "10.232.1.1"
""")
    want = _rules(capsys, "--policy", policy, "--role", "outer", "--link-if", "o-l", "--link-port", 47000,
                  "--peer", "10.232.1.2", "--ingest-if", "o-in")
    assert want[0] == 0
    assert _rules(capsys, "--policy", policy, "--role", "outer", "--config", tmp_path / "outer.toml") == want
    assert _rules(capsys, "--config", tmp_path / "outer.toml") == want          # policy and role from it too
    inner = _rules(capsys, "--policy", policy, "--role", "inner", "--link-if", "i-l", "--link-port", 47000,
                   "--peer", "10.232.1.1")
    assert _rules(capsys, "--config", tmp_path / "inner.toml") == inner
    # a flag given beside --config wins
    rc, out, _ = _rules(capsys, "--config", tmp_path / "outer.toml", "--link-port", 47001)
    assert rc == 0 and "udp dport 47001" in out


def test_kernel_rules_without_the_link_name_what_is_missing(tmp_path, policy, capsys):
    (tmp_path / "outer.toml").write_text(AGENT.format(role="outer") + '[link]\npeer_host = "10.232.1.2"\n'
                                         'peer_port = 47000\n')
    rc, out, err = _rules(capsys, "--config", tmp_path / "outer.toml")
    assert rc == 2 and out == ""
    assert "--link-if" in err and "[kernel] link_if" in err
    rc, out, err = _rules(capsys, "--policy", policy, "--role", "outer")
    assert rc == 2 and "--config" in err and "--link-if" in err


def test_one_accept_line_per_opening_and_the_accept_policy_explained(policy):
    text = nft.compile_ruleset(load_plan(policy), "outer", link_if="o-l", link_port=47000, peer_addr="10.232.1.2")
    accept = [line for line in text.splitlines() if "ingest_accepted accept" in line]
    assert len(accept) == 1, accept                             # was two identical lines
    assert accept[0].endswith('comment "sources platform, platform-backup"')
    assert "policy accept" in text
    why = [line for line in text.splitlines() if line.startswith("#") and "policy accept" in line]
    assert why, "the chains' accept policy is explained in the ruleset"


# --- a missing policy folder is a usage error (exit 2) ------------------------------------------

def test_a_missing_policy_folder_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope"
    for args in (["policy", "check", missing], ["policy", "test", missing], ["policy", "diff", missing, missing],
                 ["kernel", "rules", "--policy", missing, "--role", "outer", "--link-if", "o-l", "--link-port",
                  "47000", "--peer", "10.0.0.2"]):
        assert ferry_main([str(a) for a in args]) == 2, args
        assert str(missing) in capsys.readouterr().err


# --- the demo's agents answer ferry policy status --------------------------------------------

def test_demo_configs_have_management_sockets_that_answer(tmp_path):
    work = tmp_path / "d"
    work.mkdir()
    init_keys(work / "keys")
    shutil.copytree(DEMO_POLICY, work / "policy")
    for d in ("spool/outer", "spool/inner", "audit/outer", "audit/inner"):
        (work / d).mkdir(parents=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outer_cfg, inner_cfg = _write_configs(work, port)
    sockets = [load_config(inner_cfg, InnerConfig).management, load_config(outer_cfg, OuterConfig).management]
    assert all(m is not None and m.socket for m in sockets)
    procs = [subprocess.Popen([sys.executable, "-m", "ferry", role, "--config", str(cfg)], cwd=work,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for role, cfg in (("inner", inner_cfg), ("outer", outer_cfg))]
    try:
        deadline = time.monotonic() + 60
        while not all(Path(m.socket).exists() for m in sockets):
            assert time.monotonic() < deadline, "management sockets never appeared"
            assert all(p.poll() is None for p in procs), "an agent exited"
            time.sleep(0.2)
        r = ferry("policy", "status", *(x for m in sockets for x in ("--socket", m.socket)))
        assert r.returncode == 0, r.stderr
        assert "inner agent demo-inner" in r.stdout and "outer agent demo-outer" in r.stdout
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


# --- a wrong socket path ----------------------------------------------------------------------

def test_a_wrong_socket_says_which_and_what_to_check(tmp_path):
    not_a_socket = tmp_path / "outer.sock"
    not_a_socket.write_text("")
    for sock, says in ((tmp_path / "missing.sock", "no such socket"), (not_a_socket, "not a socket")):
        r = ferry("policy", "status", "--socket", sock, "--timeout", "5")
        assert r.returncode == 2
        assert str(sock) in r.stderr and says in r.stderr
        assert "[management] socket" in r.stderr                 # what to check
        assert "UNAVAILABLE" not in r.stderr and "failed to connect" not in r.stderr   # no raw gRPC
        r = ferry("policy", "apply", tmp_path / "x.ferrypolicy", "--socket", sock)
        assert r.returncode == 2


# --- python -m ferry.camera ------------------------------------------------------------------

def test_the_test_camera_has_a_command_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ferry.camera", "--help"], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0 and "usage:" in r.stdout and "--to" in r.stdout


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_the_test_camera_sends_rtp_ps_to_a_udp_port(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(30)
        port = rx.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "ferry.camera", "--to", f"127.0.0.1:{port}", "--seconds", "1",
                            "--size", "320x180", "--fast", "--cache", str(tmp_path)],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        first = rx.recv(2048)
    assert first[0] >> 6 == 2                                  # RTP version 2
    assert first[12:16] == b"\x00\x00\x01\xba"                 # an MPEG-PS pack header
    assert "packets" in r.stdout and f"127.0.0.1:{port}" in r.stdout


# --- the demo's stand-in police platform ------------------------------------------------------

def _register(sock: socket.socket, to: tuple[str, int], authorization: str | None = None) -> SipResponse:
    headers = [("Via", f"SIP/2.0/UDP 127.0.0.1:{sock.getsockname()[1]};rport;branch={sip.new_branch()}"),
               ("From", f"<sip:{LOWER}@4301000000>;tag={sip.new_tag()}"), ("To", f"<sip:{LOWER}@4301000000>"),
               ("Call-ID", sip.new_call_id("127.0.0.1")), ("CSeq", "1 REGISTER"), ("Max-Forwards", "70"),
               ("Contact", f"<sip:{LOWER}@127.0.0.1:{sock.getsockname()[1]}>"), ("Expires", "3600")]
    if authorization:
        headers.append(("Authorization", authorization))
    sock.sendto(sip.build_request("REGISTER", "sip:43010000002000000001@4301000000", headers), to)
    answer = sip.parse_message(sock.recv(65535))
    assert isinstance(answer, SipResponse)
    return answer


LOWER = "43010000002000000099"


def test_the_demo_platform_challenges_ferrys_register_and_checks_the_digest():
    """A wrong password gets 403 and leaves it unregistered; the right one 200 (and it knows
    where ferry is)."""
    platform = DemoPlatform("43010000002000000001", "4301000000", LOWER, "right").start()
    uri = "sip:43010000002000000001@4301000000"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(10)
            first = _register(s, platform.address)
            assert first.status == 401
            ch = parse_challenge(first.header("WWW-Authenticate") or "")
            assert _register(s, platform.address, authorization(ch, "REGISTER", uri, LOWER, "wrong", "c1")).status \
                == 403
            assert not platform.registered.is_set()
            again = parse_challenge(_register(s, platform.address).header("WWW-Authenticate") or "")
            ok = _register(s, platform.address, authorization(again, "REGISTER", uri, LOWER, "right", "c2"))
            assert ok.status == 200 and platform.registered.is_set()
            assert platform.ferry == s.getsockname()
            # a nonce serves once: the same answer again is challenged anew, not taken
            assert _register(s, platform.address, authorization(again, "REGISTER", uri, LOWER, "right", "c2")).status \
                == 401
    finally:
        platform.stop()


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_the_demo_platforms_rtp_reading_takes_any_datagrams(datagrams):
    Call(200, 0, datagrams).ps()                 # never raises on what arrives at its port


@given(st.lists(st.tuples(st.integers(0, 15), st.booleans(), st.integers(0, 3), st.integers(0, 8),
                          st.binary(min_size=1, max_size=40)), max_size=10))
def test_the_demo_platform_takes_the_ps_out_of_rtp(packets):
    """CSRCs, a header extension and padding are removed; the payloads are kept in order."""
    datagrams, payloads = [], []
    for cc, ext, ext_words, pad, payload in packets:
        head = bytes([0x80 | (0x20 if pad else 0) | (0x10 if ext else 0) | cc, 96]) + bytes(10) + bytes(4 * cc)
        if ext:
            head += b"\xbe\xde" + ext_words.to_bytes(2, "big") + bytes(4 * ext_words)
        tail = bytes(pad - 1) + bytes([pad]) if pad else b""
        datagrams.append(head + payload + tail)
        payloads.append(payload)
    assert Call(200, 0, datagrams).ps() == b"".join(payloads)
