"""The forwarder ([audit.forward]) against an in-process TCP/TLS server: every record arrives as an
octet-counted RFC 5424 frame, the cursor follows only what was delivered, a server that drops the
connection gets the rest (re-sent from the cursor, said in forward_resumed), a cursor of another
trail starts again from seq 0, and the configuration names the key of a mistake."""
import asyncio
import json
import ssl
import subprocess

import pytest

from .audit_support import write_trail
from ferry.agents.forwarder import CURSOR_FILE, Forwarder, load_cursor
from ferry.audit.syslog import SyslogError, iter_frames, message_body
from ferry.config import AuditForwardSection, ConfigError, InnerConfig, OuterConfig, load_config


class Server:
    """Reads frames; with ``close_after`` bytes it drops the first connection there."""

    def __init__(self, ctx=None, close_after=None):
        self.ctx, self.close_after, self.connections = ctx, close_after, 0
        self.data = bytearray()                 # all bytes received
        self.per_connection: list[bytearray] = []

    async def start(self):
        self.srv = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.ctx)
        return self.srv.sockets[0].getsockname()[1]

    async def handle(self, r, w):
        self.connections += 1
        first = self.connections == 1
        got = 0
        mine = bytearray()
        self.per_connection.append(mine)
        while True:
            d = await r.read(4096)
            if not d:
                break
            if first and self.close_after is not None and got + len(d) > self.close_after:
                d = d[:self.close_after - got]
                self.data.extend(d)
                mine.extend(d)
                w.transport.abort()      # what it had not read is lost with the connection
                return
            got += len(d)
            self.data.extend(d)
            mine.extend(d)
        w.close()


def forward(tmp_path, trail, server, until, rounds=400, **section):
    records = []

    async def main():
        port = await server.start()
        stop = asyncio.Event()
        f = Forwarder(AuditForwardSection(address=f"127.0.0.1:{port}", **section), trail, tmp_path / "state",
                      lambda **k: records.append(k))
        task = asyncio.create_task(f.run(stop))
        for _ in range(rounds):
            await asyncio.sleep(0.05)
            if until(server, f):
                break
        stop.set()
        await task
        server.srv.close()
        return f

    return asyncio.run(main()), records


def _received(server):
    """The records of whole frames, connection by connection (a torn last frame is dropped, as a
    log server does when a connection ends mid-frame)."""
    out = []
    for data in server.per_connection:
        try:
            for m in iter_frames(bytes(data)):
                out.append(json.loads(message_body(m)))
        except SyslogError:
            pass
    return out


def _all(n):
    return lambda server, f: f.confirmed.seq >= n and len({r["seq"] for r in _received(server)}) >= n


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")

    def ossl(*a):
        subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)

    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test-ca", "-days", "2")
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=logs")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:logs\n")
    ossl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "srv.pem", "-days", "2", "-extfile", "ext")
    return d


def test_every_record_arrives_over_tls_and_the_cursor_follows(tmp_path, key, certs):
    trail = write_trail(tmp_path / "t", key, n=30, every=7)
    n = len(trail.read_bytes().splitlines())
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs / "srv.pem", certs / "srv.key")
    server = Server(ctx)
    f, records = forward(tmp_path, trail, server, _all(n), tls_ca=str(certs / "ca.pem"))
    got = _received(server)
    assert [r["seq"] for r in got] == list(range(n))
    assert [json.dumps(r, sort_keys=True, separators=(",", ":")).encode() + b"\n" for r in got] \
        == trail.read_bytes().splitlines(keepends=True)
    cursor, note = load_cursor(tmp_path / "state" / CURSOR_FILE)
    assert cursor.seq == n and cursor.offset == trail.stat().st_size and note is None
    assert [r["detail"]["cause"] for r in records] == ["agent started"]


def test_a_server_with_another_ca_gets_nothing(tmp_path, key, certs):
    trail = write_trail(tmp_path / "t", key, n=3)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs / "srv.pem", certs / "srv.key")
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(tmp_path / "o.key"), "-out", str(other), "-subj", "/CN=o", "-days", "1"],
                   check=True, capture_output=True)
    server = Server(ctx)
    f, records = forward(tmp_path, trail, server, lambda s, f: False, rounds=40, tls_ca=str(other))
    assert not server.data and f.confirmed.seq == 0 and not records


def test_a_dropped_connection_loses_nothing_and_says_from_where_it_resends(tmp_path, key):
    trail = write_trail(tmp_path / "t", key, n=40, every=9)
    n = len(trail.read_bytes().splitlines())
    server = Server(close_after=3000)
    f, records = forward(tmp_path, trail, server, _all(n))
    got = _received(server)
    assert {r["seq"] for r in got} == set(range(n))
    causes = [r["detail"]["cause"] for r in records]
    assert causes[0] == "agent started" and causes[1].startswith("reconnected")
    again = records[1]["detail"]
    assert len(got) - n <= again["duplicates_at_most"]
    assert again["from_seq"] == 0           # the server dropped it within the settle time: nothing confirmed


def test_a_cursor_of_another_trail_starts_again_from_seq_0(tmp_path, key, other_key):
    trail = write_trail(tmp_path / "t", key, n=12, every=5)
    n = len(trail.read_bytes().splitlines())
    forward(tmp_path, trail, Server(), _all(n))
    trail2 = write_trail(tmp_path / "t2", other_key, n=20, every=5)     # a new trail, the old cursor
    n2 = len(trail2.read_bytes().splitlines())
    server = Server()
    f, records = forward(tmp_path, trail2, server, _all(n2))
    assert {r["seq"] for r in _received(server)} == set(range(n2))
    assert any("does not match the trail" in r["detail"].get("note", "") for r in records), records


def test_config_errors_name_the_key(tmp_path):
    base = tmp_path / "outer.toml"
    head = ('[agent]\nname="o"\nkey="k"\npeer_public="p"\npolicy="pol"\naudit_dir="a"\n'
            '[link]\npeer_host="127.0.0.1"\npeer_port=1\n')
    base.write_text(head + '[audit.forward]\naddress = "logs"\n')
    with pytest.raises(ConfigError, match=r"outer.toml: audit.forward.address: .*host:port"):
        load_config(base, OuterConfig)
    base.write_text(head + '[audit.forward]\naddress = "logs:6514"\ntls_cert = "c.pem"\n')
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load_config(base, OuterConfig)
    base.write_text(head + '[audit.forward]\naddress = "logs:6514"\ntls_ca = "ca.pem"\n')
    cfg = load_config(base, OuterConfig)
    assert cfg.audit.forward.tls_ca == str(tmp_path / "ca.pem")
    inner = tmp_path / "inner.toml"
    inner.write_text('[agent]\nname="i"\nkey="k"\npeer_public="p"\npolicy="pol"\naudit_dir="a"\n'
                     '[link]\nlisten_host="127.0.0.1"\nlisten_port=1\n[audit]\nrefusals_per_reason_per_hour=5\n'
                     '[audit.forward]\naddress = "[::1]:514"\n')
    assert load_config(inner, InnerConfig).audit.forward.address == "[::1]:514"
