"""compile_ruleset: the policy's sources become the outer host's ingest rules;
the link is one-way on both hosts; the shipped link files come from the same code."""
from __future__ import annotations

import ipaddress
import random
import re
from pathlib import Path
from types import SimpleNamespace as NS

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .kernel_support import REPO, py, py_json, sh
from ferry.kernel import KernelError
from ferry.kernel.nft import Reverse, compile_ruleset, ingest_of, link_file, link_files

HASH = bytes(range(32))
LINK = dict(link_if="o-l", link_port=47000, peer_addr="10.232.1.2")


def src(kind, nets=(), ports=(), protocol="any"):
    return NS(kind=kind, networks=tuple(ipaddress.ip_network(n) for n in nets), ports=tuple(ports),
              protocol=protocol)


def plan(**sources):
    return NS(name="demo", hash=HASH, sources=sources)


SOURCES = dict(
    school=src("addresses", ["10.30.2.0/24", "10.30.1.5/32", "2001:db8::/32"], [15060, 5060], "udp"),
    cams=src("devices", ["10.20.0.0/16"], [554], "tcp"),
    shops=src("devices", [], [5062]),
    quiet=src("addresses", ["10.40.0.0/16"], []),
    spool=NS(kind="spool"),
)


def outer(p=None, **kw):
    return compile_ruleset(p or plan(**SOURCES), "outer", **{**LINK, **kw})


def test_outer_sources_become_sets_per_family_with_their_ports_and_protocol():
    text = outer()
    assert ('iifname != { "lo", "o-l" } ip saddr { 10.30.1.5/32, 10.30.2.0/24 } meta l4proto udp '
            'th dport { 5060, 15060 } counter name ingest_accepted accept comment "source school"') in text
    assert ('ip6 saddr 2001:db8::/32 meta l4proto udp th dport { 5060, 15060 } counter name ingest_accepted '
            'accept comment "source school"') in text
    assert 'ip saddr 10.20.0.0/16 meta l4proto tcp th dport 554 ' in text
    # every port any source names is refused unless accepted above, for both protocols
    assert ('iifname != "lo" meta l4proto { tcp, udp } th dport { 554, 5060, 5062, 15060 } '
            'counter name ingest_refused drop') in text
    # a source without addresses (devices) or without ports opens nothing, and says so
    assert "# source shops (devices): no addresses, opens nothing in the kernel" in text
    assert "# source quiet (addresses): no ports, opens nothing in the kernel" in text
    assert "10.40.0.0" not in text.replace("# source quiet", "")
    accept = [line for line in text.splitlines() if "ingest_accepted accept" in line]
    assert len(accept) == 3


def test_outer_link_is_send_only_and_the_refusal_comes_after_every_accept():
    lines = [line.strip() for line in outer().splitlines()]
    assert 'iifname "o-l" counter name from_link drop' in lines
    assert 'oifname "o-l" ip daddr 10.232.1.2 udp dport 47000 counter name link_out accept' in lines
    assert lines.index('oifname "o-l" drop') == lines.index(
        'oifname "o-l" ip daddr 10.232.1.2 udp dport 47000 counter name link_out accept') + 1
    refused = next(i for i, x in enumerate(lines) if "ingest_refused drop" in x)
    assert all(i < refused for i, x in enumerate(lines) if "ingest_accepted accept" in x)
    # the link's drop comes before any accept: nothing from the link reaches an agent port
    assert lines.index('iifname "o-l" counter name from_link drop') < min(
        i for i, x in enumerate(lines) if "ingest_accepted accept" in x)
    for counter in ("from_link", "link_out", "ingest_accepted", "ingest_refused"):
        assert f"counter {counter} {{ }}" in lines


def test_one_atomic_table_and_a_header_naming_the_policy():
    text = outer()
    assert text.startswith(f"# ferry outer host: policy demo sm3 {HASH.hex()}\n")
    assert text.count("table inet ferry\ndelete table inet ferry\ntable inet ferry {") == 1
    assert "table arp" not in text


def test_ingest_interface_pins_the_accepts():
    text = outer(ingest_if="o-c")
    assert 'iifname "o-c" ip saddr { 10.30.1.5/32, 10.30.2.0/24 }' in text
    assert "!= {" not in text
    # traffic to agent ports from any other interface is still refused
    assert 'iifname != "lo" meta l4proto { tcp, udp } th dport' in text


def test_inner_is_receive_only_and_ignores_the_sources():
    text = compile_ruleset(plan(**SOURCES), "inner", link_if="i-l", link_port=47000, peer_addr="10.232.1.1")
    lines = [line.strip() for line in text.splitlines()]
    assert 'iifname "i-l" ip saddr 10.232.1.1 udp dport 47000 counter name link_in accept' in lines
    assert 'iifname "i-l" drop' in lines
    assert 'oifname "i-l" counter name toward_outer drop' in lines
    assert "table arp ferry\ndelete table arp ferry\ntable arp ferry {" in text
    assert "ingest" not in text and "10.30" not in text
    assert text.startswith(f"# ferry inner host: policy demo sm3 {HASH.hex()}\n")


def test_deterministic_whatever_the_order_of_sources_networks_and_ports():
    rng = random.Random(7)
    base = outer()
    for _ in range(20):
        items = list(SOURCES.items())
        rng.shuffle(items)
        shuffled = {}
        for name, s in items:
            if s.kind == "spool":
                shuffled[name] = s
                continue
            nets, ports = list(s.networks), list(s.ports)
            rng.shuffle(nets)
            rng.shuffle(ports)
            shuffled[name] = NS(kind=s.kind, networks=tuple(nets), ports=tuple(ports), protocol=s.protocol)
        assert outer(plan(**shuffled)) == base


def test_networks_are_collapsed_strings_accepted_and_ipv4_mapped_become_ipv4():
    p = plan(a=NS(kind="addresses", networks=("10.1.0.0/24", "10.1.1.0/24", "10.1.0.7/32", "::ffff:10.9.0.0/112"),
                  ports=(80, 80), protocol="tcp"))
    text = outer(p)
    assert "ip saddr { 10.1.0.0/23, 10.9.0.0/16 } meta l4proto tcp th dport 80 " in text
    assert "ip6" not in text
    # the model's field name works too (a plan built from the validated policy)
    p2 = plan(a=NS(kind="addresses", addresses=["10.1.0.0/24"], ports=[80], protocol="tcp"))
    assert "ip saddr 10.1.0.0/24 meta l4proto tcp th dport 80 " in outer(p2)


def test_a_policy_without_ports_restricts_nothing_and_says_so():
    text = outer(plan(files=NS(kind="spool")))
    assert "# no source names a port: no ingest rules" in text
    assert "ingest_refused drop" not in text


@pytest.mark.parametrize("kw", [
    dict(link_if='o-l" accept'), dict(link_if="o l"), dict(link_if="a" * 16), dict(link_if=""),
    dict(link_if="x/y"), dict(link_port=0), dict(link_port=65536), dict(link_port=True), dict(link_port="47000"),
    dict(peer_addr="10.232.1.256"), dict(peer_addr="fe80::1%eth0"), dict(peer_addr="10.0.0.0/24"),
    dict(ingest_if="o-l"), dict(ingest_if="lo"), dict(ingest_if='x"'),
])
def test_bad_parameters_raise_kernel_error(kw):
    with pytest.raises(KernelError):
        outer(**kw)


@pytest.mark.parametrize("s", [
    NS(kind="addresses", networks=("10.0.0.1/24",), ports=(1,), protocol="udp"),     # host bits
    NS(kind="addresses", networks=("10.0.0.0/24",), ports=(0,), protocol="udp"),
    NS(kind="addresses", networks=("10.0.0.0/24",), ports=(70000,), protocol="udp"),
    NS(kind="addresses", networks=("10.0.0.0/24",), ports=(1,), protocol="icmp"),
])
def test_bad_sources_raise_kernel_error(s):
    with pytest.raises(KernelError):
        outer(plan(s=s))
    with pytest.raises(KernelError):
        compile_ruleset(plan(s=s), "middle", **LINK)


def test_ipv6_link_peer():
    text = compile_ruleset(plan(), "outer", link_if="o-l", link_port=47000, peer_addr="fd00::2")
    assert 'oifname "o-l" ip6 daddr fd00::2 udp dport 47000 counter name link_out accept' in text


def test_shipped_link_files_are_generated_from_this_code():
    folder = REPO / "appliance" / "nftables"
    for name, text in link_files().items():
        assert (folder / name).read_text() == text, f"stale {name}: run python -m ferry.kernel.nft appliance/nftables"


@pytest.mark.parametrize("role,peer", [("outer", "10.232.1.2"), ("inner", "10.232.1.1")])
def test_shipped_link_rules_are_the_compiled_link_rules(role, peer):
    """With its variables filled in, every rule of the shipped file is in the compiled ruleset."""
    shipped = link_file(role).replace("$LINK_IF", '"x-l"').replace("$LINK_PORT", "47000")
    shipped = re.sub(r"\$(INNER|OUTER)_ADDR", peer, shipped).replace("ferry_link", "ferry")
    compiled = compile_ruleset(plan(**SOURCES), role, link_if="x-l", link_port=47000, peer_addr=peer)
    rules = [x for x in shipped.splitlines() if x and not x.startswith("#")]
    compiled_lines = compiled.splitlines()
    assert all(r in compiled_lines for r in rules)
    # in the same order
    positions = [compiled_lines.index(r) for r in rules if rules.count(r) == 1 and compiled_lines.count(r) == 1]
    assert positions == sorted(positions)


def test_ingest_of_reports_agent_ports():
    ingest = ingest_of(plan(**SOURCES))
    assert ingest.agent_ports == (554, 5060, 5062, 15060)
    assert [(o.source, o.family) for o in ingest.openings] == [("cams", 4), ("school", 4), ("school", 6)]


v4nets = st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
                   st.integers(0, 2**32 - 1), st.integers(8, 32))


@settings(max_examples=200, deadline=None)
@given(st.lists(v4nets, min_size=1, max_size=30), st.lists(st.integers(1, 65535), min_size=1, max_size=10))
def test_any_networks_render_collapsed_and_sorted(nets, ports):
    text = outer(plan(s=NS(kind="addresses", networks=tuple(nets), ports=tuple(ports), protocol="udp")))
    expected = list(ipaddress.collapse_addresses(nets))
    line = next(x for x in text.splitlines() if "ingest_accepted accept" in x)
    shown = re.search(r"ip saddr (\{ [^}]* \}|\S+)", line).group(1).strip("{} ").split(", ")
    assert shown == [str(n) for n in expected]
    assert f"th dport {', '.join(map(str, sorted(set(ports))))}" in line.replace("{ ", "").replace(" }", "")


# --- the reverse ferry ([reverse]) ------------------------------------------------------------

INNER = dict(link_if="i-l", link_port=47000, peer_addr="10.232.1.1")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_without_a_reverse_ferry_nothing_of_it_is_in_the_rules():
    for text in (outer(), compile_ruleset(plan(**SOURCES), "inner", **INNER)):
        assert "reverse" not in text and "47100" not in text


def test_outer_on_the_link_accepts_only_the_inner_host_on_the_reverse_port_and_never_sends_from_it():
    lines = _lines(outer(reverse=Reverse(47100, "10.232.1.2")))
    accept = 'iifname "o-l" ip saddr 10.232.1.2 udp dport 47100 counter name reverse_in accept'
    refused = "udp dport 47100 counter name reverse_refused drop"
    # the one opening comes before the link's drop, and anything else to the port is dropped next
    assert lines.index(accept) + 1 == lines.index(refused) < lines.index('iifname "o-l" counter name from_link drop')
    assert [x for x in lines if "47100" in x and "accept" in x] == [accept]
    # the reverse socket only receives: nothing leaves from its port, not even on the link's accept
    out = "udp sport 47100 counter name reverse_out drop"
    assert lines.index(out) < lines.index('oifname "o-l" ip daddr 10.232.1.2 udp dport 47000 counter name link_out '
                                          'accept')
    assert lines[-3:] == ['oifname "o-l" drop', "}", "}"]        # the link's last drop stays last
    for counter in ("reverse_in", "reverse_refused", "reverse_out", "from_link", "link_out"):
        assert f"counter {counter} {{ }}" in lines
    # the ingest rules are untouched
    assert 'counter name ingest_refused drop' in "\n".join(lines)


def test_outer_on_an_interface_of_its_own_and_another_peer():
    lines = _lines(outer(reverse=Reverse(47100, "10.232.7.2", "rev0")))
    assert 'iifname "rev0" ip saddr 10.232.7.2 udp dport 47100 counter name reverse_in accept' in lines
    assert "udp dport 47100 counter name reverse_refused drop" in lines
    assert 'oifname "rev0" ip daddr 10.232.7.2 counter name reverse_out drop' in lines
    assert 'iifname "o-l" counter name from_link drop' in lines       # the link stays send-only
    v6 = _lines(outer(reverse=Reverse(47100, "fd00::7:2", "rev0")))
    assert 'iifname "rev0" ip6 saddr fd00::7:2 udp dport 47100 counter name reverse_in accept' in v6


def test_inner_sends_only_to_the_outer_reverse_port_and_takes_nothing_from_it():
    lines = _lines(compile_ruleset(plan(**SOURCES), "inner", **INNER, reverse=Reverse(47100, "10.232.1.1")))
    accept = 'oifname "i-l" ip daddr 10.232.1.1 udp dport 47100 counter name reverse_out accept'
    assert lines.index(accept) < lines.index('oifname "i-l" counter name toward_outer drop')
    assert [x for x in lines if "accept" in x and "policy" not in x] == [
        'iifname "i-l" ip saddr 10.232.1.1 udp dport 47000 counter name link_in accept', accept]
    # nothing in from the reverse peer but the forward link's datagrams (accepted first)
    peer = 'iifname "i-l" ip saddr 10.232.1.1 counter name from_reverse_peer drop'
    assert lines.index('iifname "i-l" ip saddr 10.232.1.1 udp dport 47000 counter name link_in accept') \
        < lines.index(peer) < lines.index('iifname "i-l" drop')
    own = _lines(compile_ruleset(plan(**SOURCES), "inner", **INNER, reverse=Reverse(47100, "10.232.7.1", "rev0")))
    assert 'oifname "rev0" ip daddr 10.232.7.1 udp dport 47100 counter name reverse_out accept' in own
    assert own.index('oifname "rev0" ip daddr 10.232.7.1 udp dport 47100 counter name reverse_out accept') + 1 \
        == own.index('oifname "rev0" ip daddr 10.232.7.1 counter name reverse_refused drop')
    assert 'iifname "rev0" ip saddr 10.232.7.1 counter name from_reverse_peer drop' in own
    assert 'oifname "i-l" counter name toward_outer drop' in own and 'oifname "i-l" drop' in own


@pytest.mark.parametrize("role, rev, why", [
    ("outer", Reverse(0, "10.232.1.2"), "reverse port"),
    ("outer", Reverse(70000, "10.232.1.2"), "reverse port"),
    ("outer", Reverse(47100, "nope"), "peer address"),
    ("outer", Reverse(47100, "10.232.1.2", 'x" y'), "reverse interface"),
    ("outer", Reverse(5060, "10.232.1.2"), "also a port a source"),
    ("inner", Reverse(47100, "fe80::1%eth0"), "scope"),
])
def test_bad_reverse_parameters_raise_kernel_error(role, rev, why):
    with pytest.raises(KernelError, match=why):
        compile_ruleset(plan(**SOURCES), role, **(LINK if role == "outer" else INNER), reverse=rev)


# --- the kernel accepts it (root) ------------------------------------------------------

@pytest.mark.root
def test_nft_check_accepts_every_variant(netns, tmp_path):
    ns = netns("chk")
    variants = {
        "outer": outer(),
        "outer-ingest": outer(ingest_if="o-c"),
        "outer-v6": compile_ruleset(plan(**SOURCES), "outer", link_if="o-l", link_port=1, peer_addr="fd00::2"),
        "outer-empty": outer(plan()),
        "inner": compile_ruleset(plan(**SOURCES), "inner", link_if="i-l", link_port=47000, peer_addr="10.232.1.1"),
        "outer-reverse": outer(reverse=Reverse(47100, "10.232.1.2")),
        "outer-reverse-own-if": outer(reverse=Reverse(47100, "10.232.7.2", "rev0")),
        "outer-reverse-v6": outer(reverse=Reverse(47100, "fd00::7:2", "rev0")),
        "inner-reverse": compile_ruleset(plan(**SOURCES), "inner", **INNER, reverse=Reverse(47100, "10.232.1.1")),
        "inner-reverse-own-if": compile_ruleset(plan(**SOURCES), "inner", **INNER,
                                                reverse=Reverse(47100, "10.232.7.1", "rev0")),
    }
    for name, text in variants.items():
        f = tmp_path / f"{name}.nft"
        f.write_text(text)
        r = sh("nft", "-c", "-f", str(f), ns=ns, check=False)
        assert r.returncode == 0, f"{name}: {r.stderr}"
    # and a broken ruleset is refused, so the check above means something
    f = tmp_path / "broken.nft"
    f.write_text(variants["outer"].replace("counter name ingest_refused drop", "counter name nosuch drop"))
    assert sh("nft", "-c", "-f", str(f), ns=ns, check=False).returncode != 0


@pytest.mark.root
def test_apply_replaces_atomically_and_counters_are_readable(netns, tmp_path):
    ns = netns("app")
    f = tmp_path / "outer.nft"
    f.write_text(outer())
    counters = py_json(ns, f"""
import json, subprocess
from pathlib import Path
from ferry.kernel.nft import apply_ruleset, check_ruleset, read_counters
text = Path({str(f)!r}).read_text()
check_ruleset(text)
tables = subprocess.run(['nft', 'list', 'tables'], capture_output=True, text=True).stdout
assert tables == '', 'check_ruleset committed ' + tables
apply_ruleset(text)
apply_ruleset(text)          # idempotent: the table is replaced, not duplicated
print(json.dumps(read_counters()))
""")
    assert counters == {"from_link": 0, "link_out": 0, "ingest_accepted": 0, "ingest_refused": 0}
    assert sh("nft", "list", "tables", ns=ns).stdout.split("\n").count("table inet ferry") == 1
    # a refused ruleset raises KernelError with nft's message and leaves the old rules in place
    r = py(ns, f"""
from pathlib import Path
from ferry.kernel import KernelError
from ferry.kernel.nft import apply_ruleset
text = Path({str(f)!r}).read_text().replace('counter name ingest_refused drop', 'counter name nosuch drop')
try:
    apply_ruleset(text)
except KernelError as e:
    print('refused:', e)
""")
    assert re.search(r"refused: nft refused the ruleset: ruleset:\d+:\d+", r.stdout) and "nosuch" in r.stdout, r.stdout
    assert "ingest_refused" in sh("nft", "list", "table", "inet", "ferry", ns=ns).stdout


def test_appliance_readme_names_the_generator():
    assert "python -m ferry.kernel.nft" in Path(REPO / "appliance" / "README.md").read_text()
