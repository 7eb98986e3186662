"""`[signaling]` of the outer agent: validated strictly, errors name the file and the key; device
passwords from the config or from a private file, never shown."""
from __future__ import annotations

import pytest

from agent_configs import OUTER
from ferry.agents.sip_outer import read_passwords, settings_from
from ferry.config import ConfigError, OuterConfig, load_config

BASE = OUTER
SIGNALING = """
[signaling]
listen_udp = "0.0.0.0:5060"
listen_tcp = "0.0.0.0:5060"
server_id = "43090000002000000001"
realm = "4309000000"
destination = "police-platform"
[[signaling.device]]
id = "43090000001320000001"
password = "cam-secret"
[[signaling.device]]
id = "43090000001320000002"
password_file = "secrets/cam2"
"""


def load(tmp_path, text: str) -> OuterConfig:
    f = tmp_path / "outer.toml"
    f.write_text(BASE + text)
    cfg = load_config(f, OuterConfig)
    assert isinstance(cfg, OuterConfig)
    return cfg


def test_signaling_section_loads_and_password_files_resolve(tmp_path):
    cfg = load(tmp_path, SIGNALING)
    s = cfg.signaling
    assert s is not None and s.listen_udp == "0.0.0.0:5060" and s.keepalive_timeout == 0.0
    assert s.device[1].password_file == str(tmp_path / "secrets" / "cam2")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "cam2").write_text("file-secret\n")
    (tmp_path / "secrets" / "cam2").chmod(0o600)
    passwords = read_passwords(s)
    assert passwords == {"43090000001320000001": "cam-secret", "43090000001320000002": "file-secret"}
    settings = settings_from(s, passwords)
    assert settings.keepalive_timeout == 180.0          # 3 missed keepalives of 60 s
    assert "secret" not in repr(settings)
    assert load(tmp_path, "").signaling is None


@pytest.mark.parametrize("change, where", [
    (('listen_udp = "0.0.0.0:5060"\nlisten_tcp = "0.0.0.0:5060"\n', ""), "signaling"),
    (('listen_udp = "0.0.0.0:5060"', 'listen_udp = "0.0.0.0"'), "signaling.listen_udp"),
    (('server_id = "43090000002000000001"', 'server_id = "4309"'), "signaling.server_id"),
    (('realm = "4309000000"', 'realm = "43090000"'), "signaling.realm"),
    (('id = "43090000001320000002"', 'id = "43090000001320000001"'), "signaling"),
    (('password = "cam-secret"', 'password = "cam-secret"\npassword_file = "x"'), "signaling.device.0"),
    (('password = "cam-secret"', ''), "signaling.device.0"),
    (('destination = "police-platform"', 'destination = "police-platform"\nport = 5060'), "signaling.port"),
])
def test_errors_name_file_and_key(tmp_path, change, where):
    f = tmp_path / "outer.toml"
    f.write_text(BASE + SIGNALING.replace(*change))
    with pytest.raises(ConfigError) as e:
        load_config(f, OuterConfig)
    assert f"{f}: {where}" in str(e.value)
    assert "cam-secret" not in str(e.value)


def test_a_password_file_others_may_read_is_refused(tmp_path):
    s = load(tmp_path, SIGNALING).signaling
    assert s is not None
    (tmp_path / "secrets").mkdir()
    secret = tmp_path / "secrets" / "cam2"
    with pytest.raises(ConfigError, match=r"cam2 \(\[\[signaling.device\]\] 2 password_file.*cannot read"):
        read_passwords(s)
    secret.write_text("file-secret\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"mode 0644 .*chmod 600") as e:
        read_passwords(s)
    assert "file-secret" not in str(e.value)
    secret.write_text("\n")
    secret.chmod(0o600)
    with pytest.raises(ConfigError, match="first line"):
        read_passwords(s)
