"""Audit forwarded to a real rsyslog (the Debian package) as RFC 5424 over TCP: the verifier
accepts what rsyslog wrote; rsyslog stopped and restarted mid-run loses nothing; an agent
killed (-9) and restarted re-sends from its persisted cursor and says so (forward_resumed).

The same over TLS, rsyslog's own TLS (imtcp with the "ossl" stream driver, Debian package
rsyslog-openssl) with certificates the test makes with openssl: anonymous clients, and x509/name
(a client certificate, [audit.forward] tls_cert/tls_key); a server certificate from another CA is
refused by the forwarder (nothing delivered, the log says why, the cursor stays)."""
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
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance import Appliance, read_trail
from ferry.agents.forwarder import load_cursor

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("rsyslogd") is None,
                                 reason="rsyslogd missing: ./run setup installs the rsyslog package")]
needs_ossl = pytest.mark.skipif(not list(Path("/usr/lib").glob("*/rsyslog/lmnsd_ossl.so")),
                                reason="rsyslog's ossl driver missing: ./run setup installs rsyslog-openssl")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RsyslogTls:
    """imtcp over TLS (ossl driver, mode 1): the server's CA, certificate and key; ``auth`` "anon"
    (any client) or "x509/name" (a client certificate from ``ca`` whose name is in ``peers``)."""

    ca: Path
    cert: Path
    key: Path
    auth: str = "anon"
    peers: tuple[str, ...] = ()

    def global_params(self) -> str:
        return (f' defaultNetstreamDriver="ossl" defaultNetstreamDriverCAFile="{self.ca}"'
                f' defaultNetstreamDriverCertFile="{self.cert}" defaultNetstreamDriverKeyFile="{self.key}"')

    def imtcp_params(self) -> str:
        peers = f' permittedPeer=[{", ".join(chr(34) + p + chr(34) for p in self.peers)}]' if self.peers else ""
        return f' streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="{self.auth}"{peers}'


class Rsyslog:
    """rsyslogd in the foreground with its own config, pid file, work directory and loopback port:
    imtcp in (over TLS with ``tls``), one file out holding each message's MSG (the record's line)
    as received."""

    def __init__(self, work: Path, tls: RsyslogTls | None = None, port: int | None = None) -> None:
        self.work = work
        self.port = port or free_tcp_port()
        self.out = work / "received.log"
        (work / "spool").mkdir(parents=True, exist_ok=True)
        self.conf = work / "rsyslog.conf"
        self.conf.write_text(f"""
global(workDirectory="{work / 'spool'}" maxMessageSize="128k"{tls.global_params() if tls else ""})
module(load="imtcp"{tls.imtcp_params() if tls else ""})
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


def _outages(a: Appliance, server, where: str) -> None:
    """The log server goes away twice while the agents go on, and every record reaches it after each.
    First between two sends: the trail is the buffer. Then while a burst is being forwarded: what
    it had received but not written is re-sent (the cursor moves only over records acknowledged and
    still connected a second later), and the outer trail says forwarding resumed on reconnecting."""
    server.stop()
    _send(a, "during", 4)
    server.start()
    _send(a, "after", 2)
    a.wait_for(lambda: _all_forwarded(a, server), 90, f"records written during the outage at {where}")
    names = [f"burst{i}.pdf" for i in range(12)]
    for name in names:
        a.drop(name, b"%PDF-1.4\n" + os.urandom(5000) + b"\n%%EOF\n")
    a.wait_for(lambda: any((r.get("detail") or {}).get("name") in names for r in _received(server, "outer")),
               30, f"the burst reaching {where}")
    server.stop()
    a.wait_for(lambda: all((a.inner_spool / x).exists() for x in names), 30, "burst files delivered")
    server.start()
    a.wait_for(lambda: _all_forwarded(a, server), 90, f"the burst at {where}")
    resumed = [r for r in read_trail(a.outer_audit) if r["event"] == "forward_resumed"]
    assert resumed and resumed[-1]["detail"]["cause"].startswith("reconnected"), resumed


def test_rsyslog_receives_every_record_across_its_restart_and_an_agent_kill(appliance_factory, rsyslog):
    a: Appliance = appliance_factory()
    for role in ("outer", "inner"):
        a.append_config(role, f'[audit.forward]\naddress = "127.0.0.1:{rsyslog.port}"\n')
    a.start()
    _send(a, "first", 4)
    a.wait_for(lambda: _all_forwarded(a, rsyslog), 60, "records at the log server")
    _outages(a, rsyslog, "the log server")
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


# ---- over TLS: rsyslog's own TLS (imtcp, ossl driver) ----

@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A test CA with a server certificate for "logs" (and 127.0.0.1) and a client certificate
    for "ferry-client"; another CA with a server certificate for the same names."""
    d = tmp_path_factory.mktemp("pki")

    def ossl(*a: str) -> None:
        subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (d / "srv.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:logs\nextendedKeyUsage=serverAuth\n")
    (d / "cli.ext").write_text("subjectAltName=DNS:ferry-client\nextendedKeyUsage=clientAuth\n")
    for ca in ("ca", "other-ca"):
        ossl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-subj", f"/CN=test {ca}", "-days", "2")
    for name, ca, cn, ext in (("srv", "ca", "logs", "srv.ext"), ("cli", "ca", "ferry-client", "cli.ext"),
                              ("other-srv", "other-ca", "logs", "srv.ext")):
        ossl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", ext)
    return d


def _tls_rsyslog(tmp_path: Path, pki: Path, name: str = "rsyslog", cert: str = "srv", port: int | None = None,
                 **kw) -> Rsyslog:
    return Rsyslog(tmp_path / name, RsyslogTls(pki / "ca.pem", pki / f"{cert}.pem", pki / f"{cert}.key", **kw),
                   port=port)


def _forward_tls(a: Appliance, role: str, rs: Rsyslog, pki: Path, client_cert: bool = False) -> Path:
    """[audit.forward] to ``rs`` over TLS, checked against the test CA and the name "logs";
    the cursor file it keeps (returned)."""
    cursor = a.work / f"{role}-forward.cursor"
    extra = f'tls_cert = "{pki / "cli.pem"}"\ntls_key = "{pki / "cli.key"}"\n' if client_cert else ""
    a.append_config(role, f'[audit.forward]\naddress = "127.0.0.1:{rs.port}"\ntls_ca = "{pki / "ca.pem"}"\n'
                          f'server_name = "logs"\ncursor = "{cursor}"\n{extra}')
    return cursor


def _verified(a: Appliance, rs: Rsyslog) -> None:
    """``ferry audit verify`` accepts rsyslog's copy of both trails, from seq 0."""
    for agent, d in (("outer", a.outer_audit), ("inner", a.inner_audit)):
        done = _verify(rs.out, agent, d / "signer.pub", "--open-tail")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "OK" in done.stdout and "from seq 0" in done.stdout, done.stdout


@needs_ossl
def test_rsyslog_over_tls_receives_every_record_across_its_restart(appliance_factory, pki, tmp_path):
    rs = _tls_rsyslog(tmp_path, pki)
    rs.start()
    try:
        a: Appliance = appliance_factory()
        for role in ("outer", "inner"):
            _forward_tls(a, role, rs, pki)
        a.start()
        _send(a, "first", 4)
        a.wait_for(lambda: _all_forwarded(a, rs), 60, "records at the TLS log server")
        # rsyslog refuses anything but TLS on this port: what it wrote came over TLS
        msg = b'<14>1 - h app - - - {"agent":"plaintext"}'
        with socket.create_connection(("127.0.0.1", rs.port), timeout=5) as plain:
            plain.sendall(b"%d %s" % (len(msg), msg))
        _outages(a, rs, "the TLS log server")
        a.stop()                        # the final checkpoints are forwarded at the next start
        a.procs.clear()
        a.start()
        a.wait_for(lambda: _all_forwarded(a, rs), 90, "every record at the TLS log server")
        trail = read_trail(a.outer_audit)
        got = _received(rs, "outer")
        assert {r["seq"] for r in trail} <= {r["seq"] for r in got}
        dups = len(got) - len({r["seq"] for r in got})
        assert dups <= sum(r["detail"]["duplicates_at_most"] for r in trail if r["event"] == "forward_resumed")
        assert not [r for r in rs.lines() if r.get("agent") == "plaintext"]
        _verified(a, rs)
    finally:
        rs.stop()


@needs_ossl
def test_rsyslog_x509_name_takes_only_the_agent_with_a_client_certificate(appliance_factory, pki, tmp_path):
    """rsyslog asks for a client certificate from the test CA named ferry-client: the outer agent
    (tls_cert/tls_key) is taken, the inner (no certificate) delivers nothing and its cursor stays."""
    rs = _tls_rsyslog(tmp_path, pki, auth="x509/name", peers=("ferry-client",))
    rs.start()
    try:
        a: Appliance = appliance_factory()
        _forward_tls(a, "outer", rs, pki, client_cert=True)
        inner_cursor = _forward_tls(a, "inner", rs, pki)
        a.start()
        _send(a, "x509", 3)
        a.wait_for(lambda: {r["seq"] for r in read_trail(a.outer_audit)} <= {r["seq"] for r in _received(rs, "outer")},
                   60, "the outer agent's records at the log server")
        # the inner agent got through the handshake (TLS 1.3 ends it before the server checks the
        # client) but the server closed the connection at once: it says what may be missing, in
        # its log and in the trail (the next forward_resumed's cause), and its cursor does not move
        hint = "does it want a client certificate? [audit.forward] tls_cert/tls_key"
        a.wait_for(lambda: hint in a.log("inner"), 60, "the inner agent's forwarding refused, and why")
        a.wait_for(lambda: [r for r in read_trail(a.inner_audit) if r["event"] == "forward_resumed"
                            and hint in r["detail"]["cause"]], 60, "the reason in the inner trail")
        assert hint not in a.log("outer")
        assert not _received(rs, "inner")
        assert load_cursor(inner_cursor)[0].seq == 0
        done = _verify(rs.out, "outer", a.outer_audit / "signer.pub", "--open-tail")
        assert done.returncode == 0 and "from seq 0" in done.stdout, done.stdout + done.stderr
    finally:
        rs.stop()


@needs_ossl
def test_a_server_certificate_from_another_ca_is_refused(appliance_factory, pki, tmp_path):
    """rsyslog presents a certificate for the right name from another CA: the forwarder sends it
    nothing and says why; once the server presents the right one, everything arrives from seq 0."""
    rogue = _tls_rsyslog(tmp_path, pki, "rogue", cert="other-srv")
    rogue.start()
    try:
        a: Appliance = appliance_factory()
        cursors = {role: _forward_tls(a, role, rogue, pki) for role in ("outer", "inner")}
        a.start()
        _send(a, "rogue", 3)
        a.wait_for(lambda: all("CERTIFICATE_VERIFY_FAILED" in a.log(role) for role in ("outer", "inner")),
                   60, "the forwarders refusing the server's certificate")
        assert "cannot reach 127.0.0.1:%d" % rogue.port in a.log("outer"), a.log("outer")
        time.sleep(3)                   # a few more attempts (backoff 0.5 s doubling) fail the same way
        assert not rogue.lines()
        for role in ("outer", "inner"):
            assert load_cursor(cursors[role])[0].seq == 0, role
        assert not [r for r in a.trails() if r["event"] == "forward_resumed"]
    finally:
        rogue.stop()
    # the same address with the right certificate: nothing was lost
    rs = _tls_rsyslog(tmp_path, pki, port=rogue.port)
    rs.start()
    try:
        a.wait_for(lambda: _all_forwarded(a, rs), 90, "every record at the log server with the right certificate")
        _verified(a, rs)
    finally:
        rs.stop()
