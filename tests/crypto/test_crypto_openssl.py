"""Interop with the Debian `openssl` command (OpenSSL 3)."""

import shutil
import subprocess

import pytest

from ferry.crypto import CryptoError, SM2PrivateKey, SM2PublicKey, sm3, sm4_ecb_encrypt_block

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

DISTID = ["-pkeyopt", "distid:1234567812345678"]


def openssl(*args, input=None, check=True):
    return subprocess.run(["openssl", *map(str, args)], input=input, capture_output=True, check=check)


@pytest.fixture(scope="module")
def ossl_key(tmp_path_factory):
    d = tmp_path_factory.mktemp("ossl")
    openssl("genpkey", "-algorithm", "SM2", "-out", d / "key.pem")
    openssl("pkey", "-in", d / "key.pem", "-pubout", "-out", d / "pub.pem")
    return d


@pytest.fixture(scope="module")
def ferry_key(tmp_path_factory):
    d = tmp_path_factory.mktemp("ferry")
    k = SM2PrivateKey.generate()
    (d / "key.pem").write_bytes(k.to_pem())
    (d / "pub.pem").write_bytes(k.public_key().to_pem())
    return d, k


def test_openssl_key_loads_byte_for_byte(ossl_key):
    pem = (ossl_key / "key.pem").read_bytes()
    k = SM2PrivateKey.from_pem(pem)
    assert k.to_pem() == pem
    pub = (ossl_key / "pub.pem").read_bytes()
    assert SM2PublicKey.from_pem(pub) == k.public_key()
    assert k.public_key().to_pem() == pub


def test_ferry_key_loads_in_openssl(ferry_key):
    d, k = ferry_key
    openssl("pkey", "-in", d / "key.pem", "-noout")
    # openssl derives the same public key and rewrites the file identically
    assert openssl("pkey", "-in", d / "key.pem", "-pubout").stdout == k.public_key().to_pem()
    assert openssl("pkey", "-in", d / "key.pem").stdout == k.to_pem()


def test_ferry_signature_verified_by_openssl(ferry_key, tmp_path):
    d, k = ferry_key
    msg = tmp_path / "msg"
    msg.write_bytes(b"policy bundle v1")
    (tmp_path / "sig").write_bytes(k.sign(msg.read_bytes()))
    r = openssl("pkeyutl", "-verify", "-rawin", "-digest", "sm3", *DISTID, "-pubin", "-inkey", d / "pub.pem",
                "-in", msg, "-sigfile", tmp_path / "sig", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"Signature Verified Successfully" in r.stdout
    # and a tampered message is refused by openssl too (the check can fail)
    msg.write_bytes(b"policy bundle v2")
    r = openssl("pkeyutl", "-verify", "-rawin", "-digest", "sm3", *DISTID, "-pubin", "-inkey", d / "pub.pem",
                "-in", msg, "-sigfile", tmp_path / "sig", check=False)
    assert r.returncode != 0


def test_openssl_signature_verified_by_ferry(ossl_key, tmp_path):
    msg = tmp_path / "msg"
    msg.write_bytes(b"audit checkpoint 42")
    sig = openssl("pkeyutl", "-sign", "-rawin", "-digest", "sm3", *DISTID, "-inkey", ossl_key / "key.pem",
                  "-in", msg).stdout
    pub = SM2PublicKey.from_pem((ossl_key / "pub.pem").read_bytes())
    pub.verify(b"audit checkpoint 42", sig)
    with pytest.raises(CryptoError):
        pub.verify(b"audit checkpoint 43", sig)
    # openssl's own signature with the empty default ID does not match ours
    sig_noid = openssl("pkeyutl", "-sign", "-rawin", "-digest", "sm3", "-inkey", ossl_key / "key.pem",
                       "-in", msg).stdout
    with pytest.raises(CryptoError):
        pub.verify(b"audit checkpoint 42", sig_noid)


def test_ferry_envelope_decrypted_by_openssl(ferry_key, tmp_path):
    d, k = ferry_key
    secret = bytes(range(16))
    (tmp_path / "ct").write_bytes(k.public_key().encrypt(secret))
    r = openssl("pkeyutl", "-decrypt", "-inkey", d / "key.pem", "-in", tmp_path / "ct")
    assert r.stdout == secret


def test_openssl_envelope_decrypted_by_ferry(ossl_key, tmp_path):
    secret = b"sixteen byte key"
    (tmp_path / "pt").write_bytes(secret)
    ct = openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", ossl_key / "pub.pem", "-in", tmp_path / "pt").stdout
    k = SM2PrivateKey.from_pem((ossl_key / "key.pem").read_bytes())
    assert k.decrypt(ct) == secret
    with pytest.raises(CryptoError):
        k.decrypt(ct[:-1] + bytes([ct[-1] ^ 1]))


def test_sm4_and_sm3_agree_with_openssl(tmp_path):
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    out = openssl("enc", "-sm4-ecb", "-K", key.hex(), "-nopad", input=key).stdout
    assert out == sm4_ecb_encrypt_block(key, key)
    digest = openssl("dgst", "-sm3", "-binary", input=b"x" * 1000).stdout
    assert digest == sm3(b"x" * 1000)
