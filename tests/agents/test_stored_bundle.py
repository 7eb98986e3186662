"""ferry.agents.common.load_stored_bundle: the bundle an agent starts from is verified again;
whatever bytes lie in its place, the start either runs that signed policy or stops with a
ConfigError naming the file (issue 11 item 1)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.agents.common import load_stored_bundle
from ferry.config import ConfigError
from ferry.crypto import SM2PrivateKey
from ferry.policy.bundle import make_bundle

ROOT = Path(__file__).resolve().parents[2]
V1 = (ROOT / "policy" / "demo" / "policy.yaml").read_bytes()
ADMIN = SM2PrivateKey.generate()
SIGNERS = {ADMIN.public_key().key_id(): ADMIN.public_key()}
BUNDLE = make_bundle({"policy.yaml": V1, "tests/t.yaml": b"tests: []\n"}, ADMIN, 1234.5)
RAW = BUNDLE.SerializeToString(deterministic=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stored")


def test_none_stored_is_none(tmp_path):
    assert load_stored_bundle(tmp_path / "policy.ferrypolicy", SIGNERS) is None


def test_a_stored_bundle_runs_with_its_serial_and_signer(tmp_path):
    path = tmp_path / "policy.ferrypolicy"
    path.write_bytes(RAW)
    os.utime(path, (1000.0, 1000.0))
    plan, origin = load_stored_bundle(path, SIGNERS)
    assert plan.hash == BUNDLE.policy_hash
    assert (origin.source, origin.signer_key_id, origin.signed_at, origin.applied_at, origin.stored) == (
        "stored", ADMIN.public_key().key_id(), 1234.5, 1000.0, str(path))


def test_a_removed_signer_stops_the_start(tmp_path):
    path = tmp_path / "policy.ferrypolicy"
    path.write_bytes(RAW)
    with pytest.raises(ConfigError) as ei:
        load_stored_bundle(path, {})
    msg = str(ei.value)
    assert str(path) in msg and "unknown_signer" in msg and "policy_signers" in msg and f"remove {path}" in msg


def test_an_unreadable_store_stops_the_start(tmp_path):
    path = tmp_path / "policy.ferrypolicy"
    path.mkdir()
    with pytest.raises(ConfigError) as ei:
        load_stored_bundle(path, SIGNERS)
    assert str(path) in str(ei.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=2000),
    st.tuples(st.integers(0, len(RAW) - 1), st.integers(1, 255)).map(
        lambda p: RAW[:p[0]] + bytes([RAW[p[0]] ^ p[1]]) + RAW[p[0] + 1:]),
    st.integers(0, len(RAW) - 1).map(lambda n: RAW[:n]),
))
def test_any_bytes_run_the_signed_policy_or_stop_the_start(folder, data):
    path = folder / "policy.ferrypolicy"
    path.write_bytes(data)
    try:
        got = load_stored_bundle(path, SIGNERS)
    except ConfigError as e:
        assert str(path) in str(e)
        return
    assert got is not None
    plan, origin = got
    assert plan.hash == BUNDLE.policy_hash and origin.signed_at == BUNDLE.signed_at   # nothing else verifies
