"""`[media]` on the inner agent (media-inner): errors name the file and the key."""
from __future__ import annotations

import pytest

from ferry.config import ConfigError, InnerConfig, load_config

INNER = """
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
MEDIA = """
[media]
listen = "10.1.0.1:5060"
media_address = "10.1.0.1"
"""
SIGNALING = """
[signaling]
local = "10.1.0.1:5060"
platform = "10.1.0.5:5060"
platform_id = "43010000002000000001"
local_id = "43010000002000000099"
password = "x"
"""


def load(tmp_path, text):
    f = tmp_path / "inner.toml"
    f.write_text(INNER + text)
    return f, load_config(f, InnerConfig)


def test_defaults_and_the_signaling_endpoint(tmp_path):
    _, cfg = load(tmp_path, MEDIA)
    m = cfg.media
    assert m is not None and m.mode == "always-on" and (m.port_min, m.port_max) == (30000, 30999)
    assert m.invite_timeout == 8.0 and m.max_viewers == 16 and m.max_viewers_per_device == 4
    _, cfg = load(tmp_path, SIGNALING + MEDIA.replace('listen = "10.1.0.1:5060"\n', ""))
    assert cfg.media is not None and cfg.media.listen == ""


@pytest.mark.parametrize("change, where", [
    (('media_address = "10.1.0.1"', 'media_address = "fe80::1"'), "media.media_address"),
    (('media_address = "10.1.0.1"', 'media_address = "10.1.0.1"\nmode = "sometimes"'), "media.mode"),
    (('media_address = "10.1.0.1"', 'media_address = "10.1.0.1"\ninvite_timeout = 40.0'), "media.invite_timeout"),
    (('media_address = "10.1.0.1"', 'media_address = "10.1.0.1"\nport_min = 30000\nport_max = 30000'), "media"),
    (('media_address = "10.1.0.1"', 'media_address = "10.1.0.1"\nallow_from = ["platform"]'), "media.allow_from"),
    (('media_address = "10.1.0.1"', 'media_address = "10.1.0.1"\nviewers = 3'), "media.viewers"),
])
def test_errors_name_file_and_key(tmp_path, change, where):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, MEDIA.replace(*change))
    assert f"inner.toml: {where}" in str(e.value), str(e.value)


def test_listen_is_needed_without_signaling_and_refused_beside_it(tmp_path):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, MEDIA.replace('listen = "10.1.0.1:5060"\n', ""))
    assert "inner.toml" in str(e.value) and "media.listen: without [signaling]" in str(e.value)
    with pytest.raises(ConfigError, match="remove \\[media\\] listen"):
        load(tmp_path, SIGNALING + MEDIA)
