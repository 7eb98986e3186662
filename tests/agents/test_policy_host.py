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


# --- issue 11 item 1: the stored bundle and the serial -------------------------------------------

V3 = V1.replace(b"description: Demo appliance", b"description: Demo appliance v3")


class Stored(Agent):
    def __init__(self, store, kernel=None) -> None:
        super().__init__(kernel)
        self.id.store = store


def test_an_applied_bundle_is_stored_as_signed_before_the_swap(tmp_path):
    store = tmp_path / "state" / "policy.ferrypolicy"
    a = Stored(store)
    b = _bundle()
    r = a.apply_bundle(b, 77.0)
    assert r.changed and store.read_bytes() == b.SerializeToString(deterministic=True)
    assert store.stat().st_mode & 0o777 == 0o600 and store.parent.stat().st_mode & 0o777 == 0o700
    assert a.policy_info().stored == str(store) and a.records[-1]["detail"]["stored"] == str(store)


def test_a_bundle_that_cannot_be_stored_is_not_applied(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_bytes(b"a file where the state directory should be")
    a = Stored(blocker / "policy.ferrypolicy", Kernel(fail=False))
    old = a.id.plan
    with pytest.raises(ApplyRefused) as ei:
        a.apply_bundle(_bundle(), 77.0)
    assert ei.value.code == "policy_not_stored" and a.id.plan is old and a.swaps == []
    assert a.id.origin.source == "config"
    assert a.kernel.applied[-1] == old.hash                 # the running policy's rules are back
    [rec] = [x for x in a.records if x["event"] == "policy_refused"]
    assert rec["code"] == "policy_not_stored" and str(blocker) in rec["reason"]


def test_an_older_bundle_is_refused_and_a_rollback_is_recorded():
    a = Agent(None)
    newer = make_bundle({"policy.yaml": V2}, ADMIN, 200.0)
    older = make_bundle({"policy.yaml": V3}, ADMIN, 100.0)
    a.apply_bundle(newer, 1000.0)
    running = a.id.plan
    with pytest.raises(ApplyRefused) as ei:
        a.apply_bundle(older, 1001.0)
    assert ei.value.code == "older_bundle" and "--rollback" in str(ei.value) and a.id.plan is running
    rec = a.records[-1]
    assert rec["event"] == "policy_refused" and rec["code"] == "older_bundle"
    assert rec["detail"]["signed_at"] == 100.0 and rec["detail"]["running_signed_at"] == 200.0

    again = a.apply_bundle(newer, 1002.0)                   # the same bundle again: not a rollback
    assert not again.changed and not again.rollback

    r = a.apply_bundle(older, 1003.0, rollback=True)
    assert r.changed and r.rollback and r.signed_at == 100.0 and r.previous_signed_at == 200.0
    rec = a.records[-1]
    assert rec["event"] == "policy_applied" and rec["detail"]["rollback"] is True
    assert rec["detail"]["previous_signed_at"] == 200.0 and "rolled back" in rec["reason"]
    assert a.id.origin.signed_at == 100.0                   # the rollback is the new floor
    assert not a.apply_bundle(newer, 1004.0).rollback       # and the newer one is newer again


def test_rollback_with_a_newer_bundle_is_a_plain_apply():
    a = Agent(None)
    r = a.apply_bundle(_bundle(), 77.0, rollback=True)
    assert r.changed and not r.rollback and a.records[-1]["detail"]["rollback"] is False


def test_any_bundle_replaces_the_configured_folder():
    a = Agent(None)
    a.id.origin = PolicyOrigin("config", b"", 0.0, 1.0)
    r = a.apply_bundle(make_bundle({"policy.yaml": V2}, ADMIN, 1.0), 77.0)   # signed long ago: fine
    assert r.changed and not r.rollback


def test_prepare_changes_nothing_and_commit_audits_its_refusal():
    a = Agent(Kernel(fail=False))
    old, origin = a.id.plan, a.id.origin
    p = a.prepare_bundle(_bundle())
    bad = a.prepare_bundle(make_bundle({"policy.yaml": V2}, SM2PrivateKey.generate(), 50.0))
    assert p.plan is not None and p.plan.hash != old.hash and bad.plan is None and bad.code == "unknown_signer"
    assert a.id.plan is old and a.id.origin is origin and a.records == [] and a.kernel.applied == []
    with pytest.raises(ApplyRefused):
        a.commit_bundle(bad, 77.0)
    assert [x["event"] for x in a.records] == ["policy_refused"]
    a.commit_bundle(p, 78.0)
    assert a.id.plan is p.plan


def test_start_records_a_restored_bundle():
    a = Agent(None)
    a.id.origin = PolicyOrigin("stored", ADMIN.public_key().key_id(), 50.0, 60.0, "/state/policy.ferrypolicy")
    a.start_kernel_rules()
    [rec] = a.records
    assert rec["event"] == "policy_restored" and rec["detail"]["stored"] == "/state/policy.ferrypolicy"
    assert rec["detail"]["new_hash"] == a.id.plan.hash.hex() and rec["detail"]["signed_at"] == 50.0
