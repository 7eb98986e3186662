"""Agent configuration of on-demand / always-on video of outer cameras: [media] (issue 13 "media-outer")."""
from __future__ import annotations

import pytest

from agent_configs import OUTER_LOOPBACK
from ferry.config import ConfigError, OuterConfig, load_config

BASE = OUTER_LOOPBACK
MEDIA = """
[media]
mode = "always-on"
media_address = "10.0.0.1"
port_range = [30000, 30099]
destination = "police-vms"
sip_listen = "10.0.0.1:5060"
server_id = "34020000002000000001"
domain = "3402000000"
[[media.camera]]
device_id = "34020000001320000001"
contact = "udp:10.0.0.5:5060"
transport = "tcp"
"""


def load(tmp_path, text):
    p = tmp_path / "outer.toml"
    p.write_text(text)
    return load_config(p, OuterConfig)


def test_media_loads(tmp_path):
    cfg = load(tmp_path, BASE + MEDIA)
    m = cfg.media
    assert m is not None and m.mode == "always-on" and m.port_range == [30000, 30099]
    assert m.camera[0].contact == "udp:10.0.0.5:5060" and m.camera[0].transport == "tcp"
    assert m.invite_timeout == 10.0 and m.media_timeout == 10.0 and m.retry_max == 30.0


@pytest.mark.parametrize("change, key, words", [
    (('contact = "udp:10.0.0.5:5060"', 'contact = "sctp:10.0.0.5:5060"'), "media.camera.0.contact",
     "udp:host:port"),
    (("port_range = [30000, 30099]", "port_range = [30099, 30000]"), "media", "port_range"),
    (('device_id = "34020000001320000001"', 'device_id = "3402"'), "media.camera.0.device_id", "pattern"),
    (('media_address = "10.0.0.1"', 'media_address = "cameras.example"'), "media.media_address", ""),
    (('transport = "tcp"', 'transport = "sctp"'), "media.camera.0.transport", ""),
    (('sip_listen = "10.0.0.1:5060"', 'sip_listen = ""'), "outer.toml", "needs sip_listen"),
    (('domain = "3402000000"', 'domain = ""'), "outer.toml", "needs domain"),
    (('mode = "always-on"', 'mode = "always-on"\nmedia_timeout = 0'), "media.media_timeout", ""),
    (('mode = "always-on"', 'mode = "always-on"\nbogus = 1'), "media.bogus", ""),
])
def test_media_errors_name_the_key(tmp_path, change, key, words):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, BASE + MEDIA.replace(*change))
    assert key in str(e.value) and words in str(e.value) and str(tmp_path / "outer.toml") in str(e.value)


def test_always_on_needs_a_camera(tmp_path):
    text = BASE + MEDIA.split("[[media.camera]]")[0]
    with pytest.raises(ConfigError, match="always-on needs at least one"):
        load(tmp_path, text)
    assert load(tmp_path, text.replace('"always-on"', '"on-demand"')).media.camera == []
