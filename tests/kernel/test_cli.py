"""``ferry kernel rules|link-up`` through ferry.kernel.cli: output, exit codes, errors."""
from __future__ import annotations

import argparse

import pytest

from ferry.kernel import KernelError, cli

from .kernel_support import REPO, sh

ARGS = ["--role", "outer", "--link-if", "o-l", "--link-port", "47000", "--peer", "10.232.1.2"]
POLICY = """\
policy: cli-test
version: 1
default: deny
sources:
  platform:
    kind: addresses
    addresses: ["10.232.0.10/32", "10.232.0.64/26"]
    ports: [5060]
    protocol: udp
destinations:
  police-sip: {kind: sip}
rules:
  - id: signaling-basic
    lane: signaling
    from: platform
    to: police-sip
    signaling:
      roots: [Notify]
      cmd_types: [Keepalive]
      max_body_bytes: 4096
"""


@pytest.fixture
def policy(tmp_path):
    d = tmp_path / "pol"
    d.mkdir()
    (d / "policy.yaml").write_text(POLICY)
    return d


def test_rules_prints_the_ruleset(policy, capsys):
    assert cli.main(["rules", "--policy", str(policy), *ARGS]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# ferry outer host: policy cli-test sm3 ")
    assert "ip saddr { 10.232.0.10/32, 10.232.0.64/26 } meta l4proto udp th dport 5060 " in out


def test_an_invalid_policy_exits_1_naming_file_and_line(policy, capsys):
    (policy / "policy.yaml").write_text(POLICY.replace('"10.232.0.64/26"', '"10.232.0.65/26"'))
    assert cli.main(["rules", "--policy", str(policy), *ARGS]) == 1
    err = capsys.readouterr().err
    assert f"{policy / 'policy.yaml'}:7:" in err and "10.232.0.65/26" in err


def test_bad_parameters_exit_2(policy, capsys):
    assert cli.main(["rules", "--policy", str(policy), *ARGS, "--ingest-if", "o-l"]) == 2
    assert "ingest interface" in capsys.readouterr().err
    # missing --peer (and no --config to take it from)
    assert cli.main(["rules", "--policy", str(policy), "--role", "outer", "--link-if", "o-l", "--link-port", "1"]) == 2
    assert "--peer" in capsys.readouterr().err
    assert cli.main(["link-up", "--role", "outer", "--if", "x", "--address", "10.0.0.1/30"]) == 2
    assert "peer" in capsys.readouterr().err


def test_a_refused_ruleset_exits_1_with_nft_error(policy, capsys, monkeypatch):
    def refuse(text):
        raise KernelError("nft refused the ruleset: ruleset:3:1: Error: no")

    monkeypatch.setattr("ferry.kernel.nft.apply_ruleset", refuse)
    assert cli.main(["rules", "--policy", str(policy), *ARGS, "--apply"]) == 1
    assert "ruleset:3:1: Error: no" in capsys.readouterr().err


def test_registers_under_the_ferry_parser():
    p = argparse.ArgumentParser()
    cli.add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["kernel", "link-up", "--role", "inner", "--if", "i-l", "--address", "10.0.0.2/30"])
    assert args.func is cli.cmd_link_up and args.ifname == "i-l"


@pytest.mark.root
@pytest.mark.parametrize("role", ["outer", "inner"])
def test_the_shipped_yiyang_policy_compiles_and_nft_accepts_it(netns, tmp_path, capsys, role):
    ns = netns("yy")
    peer = "10.0.9.2" if role == "outer" else "10.0.9.1"
    assert cli.main(["rules", "--policy", str(REPO / "policy" / "yiyang"), "--role", role, "--link-if", "ferry0",
                     "--link-port", "47000", "--peer", peer]) == 0
    f = tmp_path / "yiyang.nft"
    f.write_text(capsys.readouterr().out)
    r = sh("nft", "-c", "-f", str(f), ns=ns, check=False)
    assert r.returncode == 0, r.stderr


AGENT = """
[agent]
name = "{role}-1"
key = "keys/{role}.key"
peer_public = "keys/peer.pub"
policy = "{policy}"
audit_dir = "audit/{role}"
"""


def test_rules_open_the_reverse_port_from_the_agent_config(policy, tmp_path, capsys):
    """[reverse] in the agent's configuration: ``rules --config`` (and the agent with [kernel] apply,
    which calls the same reverse_of) opens the reverse ferry; the flags give the same rules."""
    (tmp_path / "outer.toml").write_text(AGENT.format(role="outer", policy=policy) + """
[link]
peer_host = "10.232.1.2"
peer_port = 47000
[kernel]
link_if = "o-l"
[reverse]
listen_host = "10.232.1.1"
listen_port = 47100
key = "keys/outer-reverse.key"
peer_public = "keys/inner-reverse.pub"
""")
    (tmp_path / "inner.toml").write_text(AGENT.format(role="inner", policy=policy) + """
[link]
listen_host = "10.232.1.2"
listen_port = 47000
[kernel]
link_if = "i-l"
peer_addr = "10.232.1.1"
[reverse]
peer_host = "10.232.1.1"
peer_port = 47100
key = "keys/inner-reverse.key"
peer_public = "keys/outer-reverse.pub"
interface = "rev0"
""")
    assert cli.main(["rules", "--config", str(tmp_path / "outer.toml")]) == 0
    by_config = capsys.readouterr().out
    assert 'iifname "o-l" ip saddr 10.232.1.2 udp dport 47100 counter name reverse_in accept' in by_config
    assert cli.main(["rules", "--policy", str(policy), *ARGS, "--reverse-port", "47100"]) == 0
    assert capsys.readouterr().out == by_config          # --reverse-peer defaults to --peer on the outer host
    # [kernel] reverse_peer: the inner host sends from another address
    text = (tmp_path / "outer.toml").read_text().replace('link_if = "o-l"\n',
                                                         'link_if = "o-l"\nreverse_peer = "10.232.7.2"\n')
    (tmp_path / "outer.toml").write_text(text)
    assert cli.main(["rules", "--config", str(tmp_path / "outer.toml")]) == 0
    assert "ip saddr 10.232.7.2 udp dport 47100 counter name reverse_in accept" in capsys.readouterr().out
    assert cli.main(["rules", "--config", str(tmp_path / "inner.toml")]) == 0
    inner = capsys.readouterr().out
    assert 'oifname "rev0" ip daddr 10.232.1.1 udp dport 47100 counter name reverse_out accept' in inner
    assert cli.main(["rules", "--policy", str(policy), "--role", "inner", "--link-if", "i-l", "--link-port", "47000",
                     "--peer", "10.232.1.1", "--reverse-port", "47100", "--reverse-peer", "10.232.1.1",
                     "--reverse-if", "rev0"]) == 0
    assert capsys.readouterr().out == inner


def test_bad_reverse_flags_exit_2(policy, capsys):
    assert cli.main(["rules", "--policy", str(policy), *ARGS, "--reverse-peer", "10.232.1.2"]) == 2
    assert "--reverse-port" in capsys.readouterr().err
    assert cli.main(["rules", "--policy", str(policy), "--role", "inner", "--link-if", "i-l", "--link-port", "47000",
                     "--peer", "10.232.1.1", "--reverse-port", "47100"]) == 2
    assert "--reverse-peer" in capsys.readouterr().err
    assert cli.main(["rules", "--policy", str(policy), *ARGS, "--reverse-port", "5060"]) == 2
    assert "also a port a source" in capsys.readouterr().err
