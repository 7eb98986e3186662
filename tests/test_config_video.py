"""Agent configuration of the video lane: [[video]] (outer) and [[video_output]] (inner)."""
from __future__ import annotations

import pytest

from agent_configs import INNER_LOOPBACK, OUTER_LOOPBACK
from ferry.config import ConfigError, InnerConfig, OuterConfig, load_config, split_host_port

BASE_OUTER = OUTER_LOOPBACK
BASE_INNER = INNER_LOOPBACK


def load(tmp_path, text, kind):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return load_config(p, kind)


def test_video_entries_load(tmp_path):
    cfg = load(tmp_path, BASE_OUTER + """
[[video]]
name = "gate-1"
listen = "0.0.0.0:30000"
device_id = "43090000001320000001"
destination = "police-vms"
[[video]]
name = "gate-2"
transport = "tcp-connect"
connect = "[fd00::5]:15060"
device_id = "43090000001320000002"
ssrc = 200000001
source_address = "10.20.1.5"
payload = "h265"
destination = "police-vms"
""", OuterConfig)
    a, b = cfg.video
    assert (a.transport, a.payload, a.ssrc, a.source_address) == ("udp", "ps", 0, "")
    assert (b.transport, b.ssrc, b.payload) == ("tcp-connect", 200000001, "h265")
    assert split_host_port(b.connect) == ("fd00::5", 15060)


@pytest.mark.parametrize("entry,words", [
    ('name = "x"\ndevice_id = "4309000000132000000"\ndestination = "d"\nlisten = "127.0.0.1:1"', "device_id"),
    ('name = "x"\ndevice_id = "43090000001320000001"\ndestination = "d"', "needs listen"),
    ('name = "x"\ntransport = "tcp-connect"\ndevice_id = "43090000001320000001"\ndestination = "d"', "needs connect"),
    ('name = "x"\ndevice_id = "43090000001320000001"\ndestination = "d"\nlisten = "host:1"', "listen"),
    ('name = "x"\ndevice_id = "43090000001320000001"\ndestination = "d"\nlisten = "127.0.0.1:1"\npayload = "mp4"',
     "payload"),
    ('name = "x"\ndevice_id = "43090000001320000001"\ndestination = "d"\nlisten = "127.0.0.1:1"\nssrc = "5"', "ssrc"),
    ('name = "x"\ndevice_id = "43090000001320000001"\ndestination = "d"\nlisten = "127.0.0.1:1"\nport = 5', "port"),
])
def test_bad_video_entries_are_refused(tmp_path, entry, words):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, BASE_OUTER + "[[video]]\n" + entry + "\n", OuterConfig)
    assert words in str(exc.value)


def test_duplicate_stream_names_are_refused(tmp_path):
    entry = '[[video]]\nname = "x"\ndevice_id = "43090000001320000001"\ndestination = "d"\nlisten = "127.0.0.1:1"\n'
    with pytest.raises(ConfigError, match="unique"):
        load(tmp_path, BASE_OUTER + entry + entry, OuterConfig)


def test_video_outputs_load_and_resolve_paths(tmp_path):
    cfg = load(tmp_path, BASE_INNER + """
[[video_output]]
destination = "police-vms"
address = "10.1.1.1:6000"
[[video_output]]
destination = "police-vms"
form = "h264"
transport = "file"
path = "rec/{stream}.h264"
payload_type = 98
""", InnerConfig)
    a, b = cfg.video_output
    assert (a.form, a.transport, a.payload_type) == ("ps", "udp", 96)
    assert b.path == str(tmp_path / "rec" / "{stream}.h264") and b.payload_type == 98
    for bad, words in (('transport = "file"', "needs path"),
                       ('address = "1.2.3.4:5"\npayload_type = 200', "payload_type"),
                       ('address = "1.2.3.4:5"\nform = "mjpeg"', "form")):
        with pytest.raises(ConfigError, match=words):
            load(tmp_path, BASE_INNER + '[[video_output]]\ndestination = "d"\n' + bad + "\n", InnerConfig)
