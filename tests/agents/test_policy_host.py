"""ferry.agents.policy_host: the kernel rules go before the swap, and a refusal keeps the old plan."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ferry.agents.policy_host import PolicyHost
from ferry.crypto import SM2PrivateKey
from ferry.kernel import KernelError
from ferry.mgmt.host import ApplyRefused, PolicyOrigin
from ferry.policy import compile_policy, parse_policy, policy_hash
from ferry.policy.bundle import make_bundle

ROOT = Path(__file__).resolve().parents[2]
V1 = (ROOT / "policy" / "demo" / "policy.yaml").read_bytes()
V2 = V1.replace(b"description: Demo appliance", b"description: Demo appliance v2")
ADMIN = SM2PrivateKey.generate()


class Kernel:
    def __init__(self, fail: bool) -> None:
        self.fail, self.applied = fail, []
        self.section = SimpleNamespace(link_if="ferry0", ingest_if="")

    def apply(self, plan) -> None:
        if self.fail:
            raise KernelError("nft: syntax error")
        self.applied.append(plan.hash)


class Agent(PolicyHost):
    role, name = "outer", "o"

    def __init__(self, kernel) -> None:
        files = {"policy.yaml": V1}
        self.id = SimpleNamespace(plan=compile_policy(parse_policy(files), policy_hash(files)),
                                  origin=PolicyOrigin(), signers={ADMIN.public_key().key_id(): ADMIN.public_key()},
                                  audit=SimpleNamespace(close=lambda t: None))
        self.kernel = kernel
        self.records, self.swaps = [], []

    def audit(self, **fields) -> None:
        self.records.append(fields)

    def policy_swapped(self, old, new, wall) -> None:
        self.swaps.append(wall)

    def audit_available(self) -> bool:
        return True


def _bundle():
    return make_bundle({"policy.yaml": V2}, ADMIN, 50.0)


def test_kernel_rules_first_then_the_swap():
    a = Agent(Kernel(fail=False))
    r = a.apply_bundle(_bundle(), 77.0)
    assert r.changed and a.kernel.applied == [r.new_hash] and a.id.plan.hash == r.new_hash
    assert [x["event"] for x in a.records] == ["kernel_rules_applied", "policy_applied"]
    assert a.swaps == [77.0] and a.id.origin == PolicyOrigin("bundle", ADMIN.public_key().key_id(), 50.0, 77.0)
    assert a.policy_info().source == "bundle"


def test_kernel_refusal_keeps_the_old_plan():
    a = Agent(Kernel(fail=True))
    old = a.id.plan
    with pytest.raises(ApplyRefused) as ei:
        a.apply_bundle(_bundle(), 77.0)
    assert ei.value.code == "kernel_rules" and a.id.plan is old and a.swaps == []
    [rec] = a.records
    assert rec["event"] == "policy_refused" and rec["detail"]["code"] == "kernel_rules"


def test_start_kernel_rules_refused_stops_the_start():
    a = Agent(Kernel(fail=True))
    with pytest.raises(KernelError):
        a.start_kernel_rules()
    assert [x["event"] for x in a.records] == ["kernel_rules_refused"]
    Agent(None).start_kernel_rules()                  # no kernel rules configured: nothing to do


@pytest.mark.parametrize("value", ["!!bool maybe", '!!bool ""', '!!int ""', '!!int "+"', '!!float "-"',
                                   "!!timestamp nope", "!!python/object:os.system x", "!foo x", "!!int 2"])
def test_a_bundle_with_explicit_yaml_tags_is_refused_and_recorded(value):
    # issue 15: PyYAML's constructors raised KeyError/IndexError/AttributeError out of
    # apply_bundle, and no policy_refused record was written.
    a = Agent(Kernel(fail=False))
    old = a.id.plan
    bundle = make_bundle({"policy.yaml": V2.replace(b"version: 1", b"version: " + value.encode(), 1)}, ADMIN, 50.0)
    with pytest.raises(ApplyRefused) as ei:
        a.apply_bundle(bundle, 77.0)
    assert ei.value.code == "invalid_policy" and a.id.plan is old and a.swaps == [] and a.kernel.applied == []
    [rec] = a.records
    assert rec["event"] == "policy_refused" and rec["code"] == "invalid_policy"
    assert rec["detail"]["code"] == "invalid_policy"
    assert "bundle/policy.yaml:5: version: explicit YAML tags are not allowed: !" in rec["reason"]
