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
