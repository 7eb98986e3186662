"""[signaling] on the inner agent (ferry.config.InnerSignaling): errors name the file and the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from ferry.config import ConfigError, InnerConfig, load_config

BASE = """
[agent]
name = "inner"
key = "k"
peer_public = "p"
policy = "pol"
audit_dir = "audit"
[link]
listen_host = "127.0.0.1"
listen_port = 4000
[signaling]
local = "127.0.0.1:5070"
platform = "127.0.0.1:5060"
platform_id = "43010000002000000001"
local_id = "43010000002000000099"
"""


def load(tmp_path: Path, extra: str) -> InnerConfig:
    path = tmp_path / "inner.toml"
    path.write_text(BASE + extra)
    cfg = load_config(path, InnerConfig)
    assert isinstance(cfg, InnerConfig)
    return cfg


def test_a_good_section_and_its_password_file_resolved(tmp_path):
    cfg = load(tmp_path, 'password_file = "sip.pw"\n[signaling.id_map]\nprefix = {"43090000" = "43010000"}\n')
    assert cfg.signaling is not None and cfg.signaling.password_file == str(tmp_path / "sip.pw")
    assert cfg.signaling.id_map.prefix == {"43090000": "43010000"}
    assert cfg.signaling.transport == "udp" and cfg.signaling.catalog_page_size == 20


@pytest.mark.parametrize("extra, message", [
    ('password = "a"\n[signaling.id_map]\ntable = {"43090000001320000001" = "43010000001320000009", '
     '"43090000001320000002" = "43010000001320000009"}\n', "signaling.id_map: .*both map to"),
    ('password = "a"\n[signaling.id_map]\nprefix = {"4309" = "430100"}\n', "signaling.id_map: .*differ in length"),
    ('password = "a"\npassword_file = "b"\n', "signaling: .*exactly one of password and password_file"),
    ("", "signaling: .*exactly one of password and password_file"),
    ('password = "a"\ncatalog_page_size = 0\n', "signaling.catalog_page_size"),
    ('password = "a"\ntransport = "sctp"\n', "signaling.transport"),
    ('password = "a"\nplatform_idd = "1"\n', "signaling.platform_idd"),
    ('password = "a"\nkeepalive_interval = 0.1\n', "signaling.keepalive_interval"),
])
def test_errors_name_the_file_and_key(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=rf"inner.toml: {message}"):
        load(tmp_path, extra)
