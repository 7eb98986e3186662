"""The inner dispatcher's policy-hash agreement around a reload (no sockets, no agent)."""
from types import SimpleNamespace

from ferry import limits
from ferry.lanes.inner import InnerDispatch

OLD, NEW, OTHER = b"o" * 32, b"n" * 32, b"x" * 32
V1, V2 = SimpleNamespace(hash=OLD, name="v1"), SimpleNamespace(hash=NEW, name="v2")


def _dispatch():
    return InnerDispatch(SimpleNamespace(), files_output=False)


def _records(work):
    return [w.fields for w in work]


def test_previous_hash_is_accepted_only_within_the_grace():
    d = _dispatch()
    assert d.hash_accepted(OLD, V1, 0.0) and not d.hash_accepted(NEW, V1, 0.0)
    d.policy_swapped(OLD, 100.0)
    assert d.next_timer() == 100.0 + limits.POLICY_RELOAD_GRACE
    assert d.hash_accepted(NEW, V2, 100.0)
    assert d.hash_accepted(OLD, V2, 100.0 + limits.POLICY_RELOAD_GRACE - 0.01)
    assert not d.hash_accepted(OLD, V2, 100.0 + limits.POLICY_RELOAD_GRACE)
    assert not d.hash_accepted(OTHER, V2, 100.0)
    assert not d.hash_accepted(None, V2, 100.0)


def test_outer_still_on_the_old_policy_after_the_grace_raises_one_alarm():
    d = _dispatch()
    d.epoch_policy[7] = OLD
    d.policy_swapped(OLD, 100.0)
    assert d.check_grace(V2, 7, 110.0) == []
    [rec] = _records(d.check_grace(V2, 7, 100.0 + limits.POLICY_RELOAD_GRACE + 1))
    assert d.check_grace(V2, 7, 100.0 + limits.POLICY_RELOAD_GRACE + 2) == []
    assert rec["event"] == "policy_mismatch" and rec["verdict"] == "alarm" and rec["epoch"] == 7
    assert rec["detail"] == {"outer_policy_hash": OLD.hex(), "inner_policy_hash": NEW.hex()}
    assert d.alarm_mismatch(7, OLD, V2) == []          # the object path does not repeat it
    assert d.next_timer() is None


def test_outer_caught_up_within_the_grace_raises_nothing():
    d = _dispatch()
    d.epoch_policy[7] = OLD
    d.policy_swapped(OLD, 100.0)
    d.epoch_policy[7] = NEW                      # the outer's new announcement arrived
    assert d.check_grace(V2, 7, 100.0 + limits.POLICY_RELOAD_GRACE + 1) == []
    assert d.previous_hash is None
