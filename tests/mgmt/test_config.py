"""The [management] section of the agent configs and the signer keys it names."""
import pytest

from ferry.agents.common import load_signers
from ferry.config import ConfigError, InnerConfig, OuterConfig, load_config
from ferry.crypto import CryptoError, SM2PrivateKey

BASE = """
[agent]
name = "i"
key = "keys/inner.key"
peer_public = "keys/outer.pub"
policy = "policy"
audit_dir = "audit"
[link]
listen_host = "10.0.0.2"
listen_port = 47000
"""


def test_management_is_optional(tmp_path):
    f = tmp_path / "inner.toml"
    f.write_text(BASE)
    assert load_config(f, InnerConfig).management is None
    assert load_signers(None) == {}


def test_paths_resolve_and_signers_load(tmp_path):
    keys = [SM2PrivateKey.generate() for _ in range(2)]
    (tmp_path / "keys").mkdir()
    for i, k in enumerate(keys):
        (tmp_path / "keys" / f"admin{i}.pub").write_bytes(k.public_key().to_pem())
    f = tmp_path / "inner.toml"
    f.write_text(BASE + '[management]\nsocket = "run/inner.sock"\n'
                        'policy_signers = ["keys/admin0.pub", "keys/admin1.pub"]\n')
    m = load_config(f, InnerConfig).management
    assert m.socket == str(tmp_path / "run" / "inner.sock")
    assert m.policy_signers == [str(tmp_path / "keys" / f"admin{i}.pub") for i in range(2)]
    signers = load_signers(m)
    assert set(signers) == {k.public_key().key_id() for k in keys}
    (tmp_path / "keys" / "admin1.pub").write_text("not a key")
    with pytest.raises(CryptoError):
        load_signers(m)


@pytest.mark.parametrize("section, where", [
    ('[management]\nsocket = 5\n', "management.socket"),
    ('[management]\npolicy_signers = "keys/admin.pub"\n', "management.policy_signers"),
    ('[management]\nsigners = []\n', "management.signers"),
])
def test_errors_name_file_and_key(tmp_path, section, where):
    for kind, text in ((InnerConfig, BASE), (OuterConfig, BASE.replace(
            'listen_host = "10.0.0.2"\nlisten_port = 47000', 'peer_host = "10.0.0.2"\npeer_port = 47000'))):
        f = tmp_path / "agent.toml"
        f.write_text(text + section)
        with pytest.raises(ConfigError) as e:
            load_config(f, kind)
        assert f"{f}: {where}" in str(e.value)
