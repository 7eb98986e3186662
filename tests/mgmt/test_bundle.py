"""Signed policy bundles: every part is covered by the signature or rechecked."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry import limits
from ferry.crypto import SM2PrivateKey, sm3
from ferry.pb import mgmt_pb2
from ferry.policy import policy_hash
from ferry.policy.bundle import (
    SIGN_DOMAIN, BundleError, check_file_name, make_bundle, parse_bundle, policy_files, signing_message,
    suite_files, verify_bundle,
)

ROOT = Path(__file__).resolve().parents[2]
POLICY = (ROOT / "policy" / "demo" / "policy.yaml").read_bytes()
TESTS = b"tests: []\n"
NOW = 1_790_000_000.5

ADMIN = SM2PrivateKey.generate()
OTHER = SM2PrivateKey.generate()
FILES = {"policy.yaml": POLICY, "tests/basic.yaml": TESTS}


def _bundle(files=FILES, key=ADMIN, now=NOW) -> mgmt_pb2.PolicyBundle:
    return make_bundle(files, key, now)


def _copy(b: mgmt_pb2.PolicyBundle) -> mgmt_pb2.PolicyBundle:
    return mgmt_pb2.PolicyBundle.FromString(b.SerializeToString())


def _code(bundle, keys=None) -> str:
    with pytest.raises(BundleError) as ei:
        verify_bundle(bundle, [ADMIN.public_key()] if keys is None else keys)
    return ei.value.code


def test_round_trip_through_bytes():
    b = _bundle()
    files, signer = verify_bundle(parse_bundle(b.SerializeToString()), [ADMIN.public_key()])
    assert files == FILES
    assert signer == ADMIN.public_key().key_id()
    assert b.policy_hash == policy_hash({"policy.yaml": POLICY})   # tests are not part of the policy hash
    assert b.signed_at == NOW


def test_trusted_keys_as_mapping_and_among_others():
    b = _bundle()
    keys = {k.key_id(): k for k in (OTHER.public_key(), ADMIN.public_key())}
    assert verify_bundle(b, keys)[1] == ADMIN.public_key().key_id()


def test_tests_change_the_signature_but_not_the_policy_hash():
    a = _bundle()
    b = _bundle({**FILES, "tests/basic.yaml": TESTS + b"# more\n"})
    assert a.policy_hash == b.policy_hash
    assert policy_files(FILES) == {"policy.yaml": POLICY}
    assert suite_files(FILES) == {"tests/basic.yaml": TESTS}


def test_file_order_in_the_message_does_not_matter():
    b = _bundle()
    c = _copy(b)
    files = list(c.files)
    del c.files[:]
    c.files.extend(reversed(files))
    assert verify_bundle(c, [ADMIN.public_key()])[0] == FILES


def test_signing_message_layout():
    m = signing_message(1, b"h" * 32, b"k" * 32, 2.5, {"b.yaml": b"B", "a.yaml": b"A"})
    assert m == (SIGN_DOMAIN + struct.pack(">I", 1) + b"h" * 32 + b"k" * 32 + struct.pack(">d", 2.5)
                 + struct.pack(">I", 2) + b"\x00\x06a.yaml" + sm3(b"A") + b"\x00\x06b.yaml" + sm3(b"B"))


def test_unsigned_bundle_is_refused():
    b = _copy(_bundle())
    b.signature = b""
    assert _code(b) == "unsigned"
    b = _copy(_bundle())
    b.signer_key_id = b""
    assert _code(b) == "unsigned"


def test_wrong_key_is_refused():
    assert _code(_bundle(key=OTHER)) == "unknown_signer"
    assert _code(_bundle(), keys=[]) == "unknown_signer"


def test_claiming_a_trusted_key_id_with_another_key_is_refused():
    b = _copy(_bundle(key=OTHER))
    b.signer_key_id = ADMIN.public_key().key_id()
    assert _code(b) == "bad_signature"


@pytest.mark.parametrize("part", ["content", "test content", "name", "added file", "removed test",
                                  "policy_hash", "signed_at", "signature"])
def test_tampering_with_any_part_is_refused(part):
    b = _copy(_bundle())
    if part == "content":
        b.files[0].content += b"\n# widened\n"
    elif part == "test content":
        b.files[1].content = b"tests: [1]\n"
    elif part == "name":
        b.files[0].name = "other.yaml"
    elif part == "added file":
        b.files.add(name="extra.yaml", content=b"x: 1\n")
    elif part == "removed test":
        del b.files[1]
    elif part == "policy_hash":
        b.policy_hash = bytes(32)
    elif part == "signed_at":
        b.signed_at = NOW + 1
    elif part == "signature":
        sig = bytearray(b.signature)
        sig[-1] ^= 1
        b.signature = bytes(sig)
    assert _code(b) == "bad_signature"


def test_policy_hash_that_does_not_match_the_files_is_refused_even_if_signed():
    files = {"policy.yaml": POLICY}
    wrong = bytes(32)
    msg = signing_message(1, wrong, ADMIN.public_key().key_id(), NOW, files)
    b = mgmt_pb2.PolicyBundle(format=1, files=[mgmt_pb2.PolicyFile(name="policy.yaml", content=POLICY)],
                              policy_hash=wrong, signer_key_id=ADMIN.public_key().key_id(), signed_at=NOW,
                              signature=ADMIN.sign(msg))
    assert _code(b) == "hash_mismatch"


def _signed(names_contents, key=ADMIN):
    """A bundle signed over arbitrary names, as a hostile signer-tool would make it."""
    files = dict(names_contents)
    b = mgmt_pb2.PolicyBundle(format=1, policy_hash=policy_hash({"policy.yaml": POLICY}),
                              signer_key_id=key.public_key().key_id(), signed_at=NOW)
    for n, c in names_contents:
        b.files.add(name=n, content=c)
    b.signature = key.sign(signing_message(1, b.policy_hash, b.signer_key_id, NOW,
                                           {n: c for n, c in files.items() if n.isascii()}))
    return b


@pytest.mark.parametrize("name", ["../policy.yaml", "a/b.yaml", "tests/../x.yaml", "/etc/x.yaml", "tests/a/b.yaml",
                                  "x.txt", ".hidden.yaml", "", "policy.yaml\x00", "pölicy.yaml", "tests\\x.yaml",
                                  "a..yaml", "policy.yaml/", "tests/", "ｐolicy.yaml"])
def test_path_like_or_odd_names_are_refused(name):
    with pytest.raises(BundleError) as ei:
        check_file_name(name)
    assert ei.value.code == "bad_name"
    assert _code(_signed([("policy.yaml", POLICY), (name, b"x: 1\n")])) == "bad_name"
    with pytest.raises(BundleError):
        make_bundle({"policy.yaml": POLICY, name: b"x"}, ADMIN, NOW)


@pytest.mark.parametrize("name", ["policy.yaml", "extra.yml", "tests/basic.yaml", "tests/bypass-01.yml"])
def test_good_names(name):
    check_file_name(name)


def test_duplicate_names_are_refused():
    assert _code(_signed([("policy.yaml", POLICY), ("policy.yaml", POLICY)])) == "bad_name"


def test_oversize_file_and_too_many_files_are_refused():
    big = b"#" * (limits.POLICY_FILE_MAX + 1)
    with pytest.raises(BundleError) as ei:
        make_bundle({"policy.yaml": big}, ADMIN, NOW)
    assert ei.value.code == "too_large"
    many = [("policy.yaml", POLICY)] + [(f"tests/t{i}.yaml", b"") for i in range(limits.POLICY_BUNDLE_FILES_MAX)]
    assert _code(_signed(many)) == "too_large"
    with pytest.raises(BundleError) as ei:
        parse_bundle(b"\x00" * (limits.POLICY_BUNDLE_MAX + 1))
    assert ei.value.code == "too_large"


def test_bundle_without_policy_or_files_is_refused():
    with pytest.raises(BundleError):
        make_bundle({}, ADMIN, NOW)
    with pytest.raises(BundleError):
        make_bundle({"tests/a.yaml": TESTS}, ADMIN, NOW)


def test_unknown_format_and_bad_fields():
    for change in ({"format": 2}, {"signer_key_id": b"short"}, {"policy_hash": b"short"},
                   {"signed_at": float("nan")}, {"signed_at": -1.0}):
        b = _copy(_bundle())
        for k, v in change.items():
            setattr(b, k, v)
        assert _code(b) == "malformed", change


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_parse_and_verify_arbitrary_bytes_raise_only_bundle_error(data):
    try:
        b = parse_bundle(data)
        verify_bundle(b, [ADMIN.public_key()])
    except BundleError:
        return
    raise AssertionError("arbitrary bytes verified")


SIGNED = _bundle().SerializeToString()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SIGNED) - 1), st.integers(1, 255))
def test_any_flipped_byte_of_a_signed_bundle_is_refused_or_harmless(pos, xor):
    data = bytearray(SIGNED)
    data[pos] ^= xor
    try:
        files, signer = verify_bundle(parse_bundle(bytes(data)), [ADMIN.public_key()])
    except BundleError:
        return
    # protobuf may read a flipped tag byte as an unknown field: then nothing signed changed
    assert files == FILES and signer == ADMIN.public_key().key_id()
