"""Audit forwarded to a real rsyslog (the Debian package) as RFC 5424 over TCP: the verifier
accepts what rsyslog wrote; rsyslog stopped and restarted mid-run loses nothing; an agent
killed (-9) and restarted re-sends from its persisted cursor and says so (forward_resumed)."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance import Appliance, read_trail

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("rsyslogd") is None,
                                 reason="rsyslogd missing: ./run setup installs the rsyslog package")]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rsyslog:
    """rsyslogd in the foreground with its own config, pid file, work directory and loopback port:
    imtcp in, one file out holding each message's MSG (the record's line) as received."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_tcp_port()
        self.out = work / "received.log"
        (work / "spool").mkdir(parents=True, exist_ok=True)
        self.conf = work / "rsyslog.conf"
        self.conf.write_text(f"""
global(workDirectory="{work / 'spool'}" maxMessageSize="128k")
module(load="imtcp")
template(name="ferry_raw" type="string" string="%msg%\\n")
ruleset(name="ferry") {{
    action(type="omfile" file="{self.out}" template="ferry_raw")
}}
input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="ferry")
""")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.work / "rsyslogd.log", "ab")
        self.proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.work / "rsyslogd.pid")],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 20
        while True:
            assert self.proc.poll() is None, (self.work / "rsyslogd.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "rsyslogd did not listen"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def lines(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(x) for x in self.out.read_bytes().split(b"\n") if x.strip()]


@pytest.fixture
def rsyslog(tmp_path):
    r = Rsyslog(tmp_path / "rsyslog")
    r.start()
    yield r
    r.stop()


def _received(rs: Rsyslog, agent: str) -> list[dict]:
    return [r for r in rs.lines() if r.get("agent") == agent]


def _all_forwarded(a: Appliance, rs: Rsyslog) -> bool:
    """Every record in both trails is at the log server (by seq and hash)."""
    got = {(r["agent"], r["seq"], r["hash"]) for r in rs.lines()}
    want = {(r["agent"], r["seq"], r["hash"]) for r in read_trail(a.outer_audit) + read_trail(a.inner_audit)}
    return want <= got


def _send(a: Appliance, prefix: str, n: int) -> None:
    rng = random.Random(prefix)
    names = [f"{prefix}{i}.pdf" for i in range(n)]
    for name in names:
        a.drop(name, b"%PDF-1.4\n" + rng.randbytes(20_000) + b"\n%%EOF\n")
    a.wait_for(lambda: all((a.inner_spool / x).exists() for x in names), 30, f"{prefix} files delivered")


def _verify(path: Path, agent: str, key: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferry", "audit", "verify", "--syslog", str(path),
                           "--agent", agent, "--key", str(key), *extra],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})


def test_rsyslog_receives_every_record_across_its_restart_and_an_agent_kill(appliance_factory, rsyslog):
    a: Appliance = appliance_factory()
    for role in ("outer", "inner"):
        a.append_config(role, f'[audit.forward]\naddress = "127.0.0.1:{rsyslog.port}"\n')
    a.start()
    _send(a, "first", 4)
    a.wait_for(lambda: _all_forwarded(a, rsyslog), 60, "records at the log server")
    # the log server goes away mid-run: the agents go on, the trail is the buffer
    rsyslog.stop()
    _send(a, "during", 4)
    rsyslog.start()
    _send(a, "after", 2)
    a.wait_for(lambda: _all_forwarded(a, rsyslog), 90, "records written during the outage at the log server")
    # stopped again while a burst is being forwarded: what it had received but not written is
    # re-sent (the cursor moves only over records acknowledged and still connected a second later)
    names = [f"burst{i}.pdf" for i in range(12)]
    for name in names:
        a.drop(name, b"%PDF-1.4\n" + os.urandom(5000) + b"\n%%EOF\n")
    a.wait_for(lambda: any((r.get("detail") or {}).get("name") in names for r in _received(rsyslog, "outer")),
               30, "the burst reaching the log server")
    rsyslog.stop()
    a.wait_for(lambda: all((a.inner_spool / x).exists() for x in names), 30, "burst files delivered")
    rsyslog.start()
    a.wait_for(lambda: _all_forwarded(a, rsyslog), 90, "the burst at the log server")
    resumed = [r for r in read_trail(a.outer_audit) if r["event"] == "forward_resumed"]
    assert resumed and resumed[-1]["detail"]["cause"].startswith("reconnected"), resumed
    # the agent is killed: its restart re-sends from the persisted cursor, and says from where
    a.kill("outer")
    a.start_role("outer")
    a.wait_for(lambda: [r for r in read_trail(a.outer_audit) if r["event"] == "forward_resumed"
                        and r["detail"]["cause"] == "agent started"], 30, "forward_resumed after the restart")
    _send(a, "last", 2)
    a.stop()                            # the final checkpoints are forwarded at the next start
    a.procs.clear()
    a.start()
    a.wait_for(lambda: _all_forwarded(a, rsyslog), 90, "every record at the log server")
    restart = [r for r in read_trail(a.outer_audit) if r["event"] == "forward_resumed"
               and r["detail"]["cause"] == "agent started"][0]
    trail = read_trail(a.outer_audit)
    got = _received(rsyslog, "outer")
    # nothing lost: every record of the trail, once or more; duplicates only what the cursor allows
    assert {r["seq"] for r in trail} <= {r["seq"] for r in got}
    dups = len(got) - len({r["seq"] for r in got})
    assert dups <= sum(r["detail"]["duplicates_at_most"] for r in trail if r["event"] == "forward_resumed")
    assert restart["detail"]["from_seq"] <= restart["seq"]
    # the verifier accepts what rsyslog wrote (duplicates are identical copies), for both agents
    for agent, d in (("outer", a.outer_audit), ("inner", a.inner_audit)):
        a.wait_for(lambda d=d: _all_forwarded(a, rsyslog), 30, "all forwarded")
        done = _verify(rsyslog.out, agent, d / "signer.pub", "--open-tail")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "OK" in done.stdout and "from seq 0" in done.stdout, done.stdout
    # and refuses a copy with a record changed
    bad = rsyslog.work / "tampered.log"
    text = rsyslog.out.read_text()
    bad.write_text(text.replace('"test-outer"', '"test-0uter"', 1))
    done = _verify(bad, "outer", a.outer_audit / "signer.pub", "--open-tail")
    assert done.returncode == 1, done.stdout + done.stderr
