"""The [reverse] sections: strict, errors naming the file and key, paths resolved."""
from __future__ import annotations

from pathlib import Path

import pytest

from ferry.config import ConfigError, InnerConfig, OuterConfig, load_config

AGENT = """
[agent]
name = "a"
key = "keys/a.key"
peer_public = "keys/b.pub"
policy = "policy"
audit_dir = "audit"
"""
INNER_LINK = '[link]\nlisten_host = "127.0.0.1"\nlisten_port = 47000\n'
OUTER_LINK = '[link]\npeer_host = "127.0.0.1"\npeer_port = 47000\n'
INNER_REVERSE = """
[reverse]
peer_host = "10.0.8.1"
peer_port = 47100
key = "keys/inner-reverse.key"
peer_public = "keys/outer-reverse.pub"
"""
OUTER_REVERSE = """
[reverse]
listen_host = "10.0.8.1"
listen_port = 47100
key = "keys/outer-reverse.key"
peer_public = "keys/inner-reverse.pub"
"""


def _load(tmp_path: Path, text: str, kind):
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return load_config(p, kind)


def test_both_sections_load_with_defaults_and_resolved_paths(tmp_path):
    inner = _load(tmp_path, AGENT + INNER_LINK + INNER_REVERSE, InnerConfig)
    assert isinstance(inner, InnerConfig) and inner.reverse is not None
    assert inner.reverse.key == str(tmp_path / "keys" / "inner-reverse.key")
    assert inner.reverse.peer_public == str(tmp_path / "keys" / "outer-reverse.pub")
    assert (inner.reverse.rate_mbps, inner.reverse.destination) == (1.0, "outer-platform")
    outer = _load(tmp_path, AGENT + OUTER_LINK + OUTER_REVERSE, OuterConfig)
    assert isinstance(outer, OuterConfig) and outer.reverse is not None
    assert outer.reverse.key == str(tmp_path / "keys" / "outer-reverse.key")
    assert _load(tmp_path, AGENT + INNER_LINK, InnerConfig).reverse is None


@pytest.mark.parametrize("kind, text, key", [
    (InnerConfig, INNER_REVERSE.replace('key = "keys/inner-reverse.key"\n', ""), "reverse.key"),
    (InnerConfig, INNER_REVERSE + "listen_port = 1\n", "reverse.listen_port"),      # the outer's key
    (InnerConfig, INNER_REVERSE.replace("10.0.8.1", "outer.example"), "reverse.peer_host"),
    (InnerConfig, INNER_REVERSE + "rate_mbps = 0\n", "reverse.rate_mbps"),
    (OuterConfig, OUTER_REVERSE.replace("47100", "70000"), "reverse.listen_port"),
    (OuterConfig, OUTER_REVERSE + 'peer_host = "10.0.8.2"\n', "reverse.peer_host"),  # the inner's key
])
def test_errors_name_the_file_and_key(tmp_path, kind, text, key):
    link = INNER_LINK if kind is InnerConfig else OUTER_LINK
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, AGENT + link + text, kind)
    assert f"agent.toml: {key}" in str(e.value)
