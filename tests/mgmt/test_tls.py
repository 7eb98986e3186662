"""The management service on TCP takes mutual TLS only: a client with a certificate from the
configured client CA is served; one with another CA's certificate, one without a certificate and
a plaintext one are refused; a configuration with listen but no TLS does not load."""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import pytest

from ferry.config import ConfigError, InnerConfig, ManagementSection, load_config
from ferry.mgmt.client import ManagementClient, ManagementError, Tls
from ferry.mgmt.server import start_management
from ferry.pb import mgmt_pb2, mgmt_pb2_grpc

from .certs import make_certs
from .served import Served


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tcp(certs):
    port = free_tcp_port()
    s = Served(socket=False, listen=f"127.0.0.1:{port}", tls_cert=str(certs.server_cert),
               tls_key=str(certs.server_key), tls_client_ca=str(certs.ca))
    s.address = f"127.0.0.1:{port}"
    yield s
    s.close()


def test_right_certificate_is_served(tcp, certs):
    with ManagementClient(address=tcp.address, tls=Tls(str(certs.ca), str(certs.client_cert), str(certs.client_key)),
                          timeout=10) as c:
        s = c.get_status()
        assert s.name == "stand-in" and s.key_epoch == 42
        assert c.health() == "SERVING"


def test_a_certificate_from_another_ca_is_refused(tcp, certs):
    with ManagementClient(address=tcp.address, tls=Tls(str(certs.ca), str(certs.wrong_cert), str(certs.wrong_key)),
                          timeout=5) as c, pytest.raises(ManagementError) as e:
        c.get_status()
    assert e.value.code == grpc.StatusCode.UNAVAILABLE and not e.value.refused
    assert tcp.address in str(e.value) and "tls_client_ca issued your --tls-cert" in str(e.value)


def test_no_client_certificate_is_refused(tcp, certs):
    creds = grpc.ssl_channel_credentials(root_certificates=Path(certs.ca).read_bytes())
    with grpc.secure_channel(tcp.address, creds) as ch, pytest.raises(grpc.RpcError) as e:
        mgmt_pb2_grpc.ManagementStub(ch).GetStatus(mgmt_pb2.GetStatusRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_is_refused(tcp):
    with grpc.insecure_channel(tcp.address) as ch, pytest.raises(grpc.RpcError) as e:
        mgmt_pb2_grpc.ManagementStub(ch).GetStatus(mgmt_pb2.GetStatusRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_without_tls_files_is_told(tcp):
    with pytest.raises(ManagementError) as e:
        ManagementClient(address=tcp.address)
    assert "mutual TLS" in str(e.value)


def _inner_config(tmp_path: Path, management: str) -> Path:
    p = tmp_path / "inner.toml"
    p.write_text(f"""
[agent]
name = "i"
key = "inner.key"
peer_public = "outer.pub"
policy = "policy"
audit_dir = "audit"
[link]
listen_host = "127.0.0.1"
listen_port = 9000
[management]
{management}
""")
    return p


def test_listen_without_tls_does_not_load(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_inner_config(tmp_path, 'listen = "127.0.0.1:7443"\ntls_cert = "c.pem"'), InnerConfig)
    msg = str(e.value)
    assert str(tmp_path / "inner.toml") in msg and "management" in msg
    assert "tls_key, tls_client_ca" in msg and "TCP without TLS is refused" in msg


def test_tls_without_listen_does_not_load(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_inner_config(tmp_path, 'socket = "s.sock"\ntls_cert = "c.pem"'), InnerConfig)
    assert "only with listen" in str(e.value)


def test_bad_listen_address_does_not_load(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_inner_config(tmp_path, 'listen = "example.org:7443"\ntls_cert = "c"\ntls_key = "k"\n'
                                            'tls_client_ca = "a"'), InnerConfig)
    assert "management.listen" in str(e.value)


def test_tls_paths_resolve_against_the_config_folder(tmp_path):
    cfg = load_config(_inner_config(tmp_path, 'listen = "127.0.0.1:7443"\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'
                                              'tls_client_ca = "ca.pem"'), InnerConfig)
    m = cfg.management
    assert m.tls_cert == str(tmp_path / "c.pem") and m.tls_client_ca == str(tmp_path / "ca.pem")


def test_unreadable_tls_file_names_file_and_key(tmp_path, certs):
    section = ManagementSection(listen=f"127.0.0.1:{free_tcp_port()}", tls_cert=str(tmp_path / "missing.pem"),
                                tls_key=str(certs.server_key), tls_client_ca=str(certs.ca))
    with pytest.raises(OSError) as e:
        asyncio.run(start_management(section, None))   # type: ignore[arg-type]
    assert "missing.pem ([management] tls_cert): cannot read" in str(e.value)
