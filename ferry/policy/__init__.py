"""Policy as code: strict models -> compiled immutable plan -> decide().

    plan = load_plan("policy/demo")
    decision = plan.decide(obj)      # Decision(allowed, rule, reason)

Only ``read_policy_files`` (and so ``load_policy``/``load_plan``) touches the
file system; everything else is pure.
"""

from __future__ import annotations

import os

from ferry.policy.errors import PolicyError
from ferry.policy.load import load_policy, parse_policy, policy_hash, read_policy_files
from ferry.policy.models import Policy
from ferry.policy.plan import DEFAULT_DENY, CompiledRule, Decision, Plan, compile_policy


def load_plan(directory: str | os.PathLike[str]) -> Plan:
    """Read, validate, hash and compile the policy in ``directory``."""
    files = read_policy_files(directory)
    return compile_policy(parse_policy(files, base=str(directory)), policy_hash(files))


__all__ = [
    "DEFAULT_DENY", "CompiledRule", "Decision", "Plan", "Policy", "PolicyError",
    "compile_policy", "load_plan", "load_policy", "parse_policy", "policy_hash",
    "read_policy_files",
]
