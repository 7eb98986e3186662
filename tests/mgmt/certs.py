"""Test certificates for the management port's mutual TLS, made with `cryptography`: a CA, a
server certificate for 127.0.0.1 / localhost, a client certificate from the same CA, and a
client certificate from another CA (the wrong one)."""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_cert: Path          # a client certificate from another CA
    wrong_key: Path
    wrong_ca: Path


def make_certs(d: Path) -> Certs:
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def ca(name: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"{name} CA", key, f"{name} CA", key, ca=True)
        out[name] = d / f"{name}-ca.pem"
        out[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key

    def leaf(name: str, issuer: str, issuer_key, server: bool = False) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        (d / f"{name}.pem").write_bytes(_cert(name, key, f"{issuer} CA", issuer_key, server=server)
                                        .public_bytes(serialization.Encoding.PEM))
        _write_key(key, d / f"{name}.key")

    good, other = ca("ferry"), ca("other")
    leaf("server", "ferry", good, server=True)
    leaf("client", "ferry", good)
    leaf("wrong", "other", other)
    return Certs(out["ferry"], d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
                 d / "wrong.pem", d / "wrong.key", out["other"])
