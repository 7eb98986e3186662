"""Policy as code: strict models -> compiled immutable plan -> decide().

    plan = load_plan("policy/demo")
    decision = plan.decide(obj)      # Decision(allowed, rule, reason)
    decision = RateLimiter(plan).check(decision, obj, now)   # ferry.policy.ratelimit

What a Plan exposes is listed in ferry.policy.plan's docstring; the format
in policy/README.md and the JSON Schema in policy/schema.json.

Only ``read_policy_files`` (and so ``load_policy``/``load_plan``) touches the
file system; everything else is pure.
"""

from __future__ import annotations

import os

from ferry.policy.errors import PolicyError
from ferry.policy.load import load_policy, parse_policy, policy_hash, read_policy_files
from ferry.policy.models import Policy
from ferry.policy.plan import (
    DEFAULT_DENY, CompiledDestination, CompiledRule, CompiledSource, Decision, Plan, compile_policy,
)
from ferry.policy.ratelimit import RateLimiter


def load_plan(directory: str | os.PathLike[str]) -> Plan:
    """Read, validate, hash and compile the policy in ``directory``."""
    files = read_policy_files(directory)
    return compile_policy(parse_policy(files, base=str(directory)), policy_hash(files))


__all__ = [
    "DEFAULT_DENY", "CompiledDestination", "CompiledRule", "CompiledSource", "Decision", "Plan",
    "Policy", "PolicyError", "RateLimiter",
    "compile_policy", "load_plan", "load_policy", "parse_policy", "policy_hash",
    "read_policy_files",
]
