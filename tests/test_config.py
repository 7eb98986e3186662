import pytest

from agent_configs import OUTER
from ferry.config import ConfigError, InnerConfig, OuterConfig, load_config

GOOD = OUTER + """[files]
spool = "spool"
"""


def test_paths_resolve_against_the_config_folder(tmp_path):
    f = tmp_path / "outer.toml"
    f.write_text(GOOD)
    cfg = load_config(f, OuterConfig)
    assert cfg.agent.key == str(tmp_path / "keys" / "outer.key")
    assert cfg.files.refused_dir == str(tmp_path / "spool") + ".refused"
    assert cfg.link.fec_k == 16 and cfg.link.rate_mbps == 200.0


@pytest.mark.parametrize("change, where", [
    (("peer_port = 47000", 'peer_port = "47000"'), "link.peer_port"),
    (("peer_port = 47000", "peer_port = 47000\nmtu = 9000"), "link.mtu"),
    (('peer_host = "10.0.0.2"', 'peer_host = "10.0.0.256"'), "link.peer_host"),
    (('name = "o"\n', ""), "agent.name"),
])
def test_errors_name_file_and_key(tmp_path, change, where):
    f = tmp_path / "outer.toml"
    f.write_text(GOOD.replace(*change))
    with pytest.raises(ConfigError) as e:
        load_config(f, OuterConfig)
    assert f"{f}: {where}" in str(e.value)


def test_toml_syntax_error_names_file(tmp_path):
    f = tmp_path / "inner.toml"
    f.write_text("[agent\n")
    with pytest.raises(ConfigError, match=str(f)):
        load_config(f, InnerConfig)
