"""The inner agent's policy-hash agreement around a reload (no sockets: the methods alone)."""
from types import SimpleNamespace

from ferry import limits
from ferry.agents.inner import InnerAgent

OLD, NEW, OTHER = b"o" * 32, b"n" * 32, b"x" * 32


def _agent():
    a = InnerAgent.__new__(InnerAgent)
    a.id = SimpleNamespace(plan=SimpleNamespace(hash=OLD, name="v1"))
    a.previous_hash, a.previous_until = None, 0.0
    a.mismatch_alarmed = set()
    a.epoch_policy = {}
    a.stats = {"policy_reloads": 0}
    a.receiver = SimpleNamespace(current_epoch=7)
    a.records = []
    a.audit = lambda **f: a.records.append(f)
    return a


def _reload(a, now):
    old, new = a.id.plan, SimpleNamespace(hash=NEW, name="v2")
    a.id.plan = new
    a.policy_swapped(old, new, now)


def test_previous_hash_is_accepted_only_within_the_grace():
    a = _agent()
    assert a.hash_accepted(OLD, a.id.plan, 0.0) and not a.hash_accepted(NEW, a.id.plan, 0.0)
    _reload(a, 100.0)
    plan = a.id.plan
    assert a.hash_accepted(NEW, plan, 100.0)
    assert a.hash_accepted(OLD, plan, 100.0 + limits.POLICY_RELOAD_GRACE - 0.01)
    assert not a.hash_accepted(OLD, plan, 100.0 + limits.POLICY_RELOAD_GRACE)
    assert not a.hash_accepted(OTHER, plan, 100.0)
    assert not a.hash_accepted(None, plan, 100.0)
    assert a.stats["policy_reloads"] == 1


def test_outer_still_on_the_old_policy_after_the_grace_raises_one_alarm():
    a = _agent()
    a.epoch_policy[7] = OLD
    _reload(a, 100.0)
    a.check_grace(110.0)
    assert a.records == []
    a.check_grace(100.0 + limits.POLICY_RELOAD_GRACE + 1)
    a.check_grace(100.0 + limits.POLICY_RELOAD_GRACE + 2)
    [rec] = a.records
    assert rec["event"] == "policy_mismatch" and rec["verdict"] == "alarm" and rec["epoch"] == 7
    assert rec["detail"] == {"outer_policy_hash": OLD.hex(), "inner_policy_hash": NEW.hex()}
    a.alarm_mismatch(7, OLD, a.id.plan)          # the object path does not repeat it
    assert len(a.records) == 1


def test_outer_caught_up_within_the_grace_raises_nothing():
    a = _agent()
    a.epoch_policy[7] = OLD
    _reload(a, 100.0)
    a.epoch_policy[7] = NEW                      # the outer's new announcement arrived
    a.check_grace(100.0 + limits.POLICY_RELOAD_GRACE + 1)
    assert a.records == [] and a.previous_hash is None
