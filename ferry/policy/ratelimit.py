"""Per-source rate limits of rules: a token bucket per (rule id, source key).

Kept apart from the pure ``Plan.decide``: an agent passes each allowing
decision through ``RateLimiter.check(decision, obj, now)``. The source key is
the object's device ID, else its address, else its source name. State is an
LRU of at most ``limits.RATE_STATE_MAX`` buckets (a forgotten source starts
again with a full bucket). Deterministic given ``now``; never reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict

from ferry import limits
from ferry.reasons import Reason
from ferry.pb import ferry_pb2
from ferry.policy.plan import Decision, Plan, describe_source


def source_key(obj: ferry_pb2.CanonicalObject) -> str:
    src = obj.source
    return src.device_id or src.address or src.name


class RateLimiter:
    """Token buckets for the rules of one plan that carry ``rate``."""

    __slots__ = ("plan", "_buckets", "_max")

    def __init__(self, plan: Plan, max_entries: int = limits.RATE_STATE_MAX) -> None:
        self.plan = plan
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()  # [tokens, last]
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, decision: Decision, obj: ferry_pb2.CanonicalObject, now: float) -> Decision:
        """``decision`` unchanged, or a refusal when its rule's bucket is empty."""
        if not decision.allowed:
            return decision
        rule = self.plan.rule(decision.rule)
        if rule is None or rule.rate is None:
            return decision
        rate = rule.rate
        key = (rule.id, source_key(obj))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = [float(rate.burst), now]
            self._buckets[key] = bucket
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = now - bucket[1]
            if elapsed > 0:   # a clock stepping back refills nothing
                bucket[0] = min(float(rate.burst), bucket[0] + elapsed * rate.per_second)
                bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return decision
        return Decision(False, rule.id,
                        f"rate limit {rate.describe()} exceeded for {describe_source(obj.source)}",
                        Reason.RATE_LIMITED)
