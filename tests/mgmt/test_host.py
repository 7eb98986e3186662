"""ferry.mgmt.host: the agent interface, refusal codes, and the arrow mgmt -> agents that must not exist."""
from __future__ import annotations

import ast
from pathlib import Path

import grpc
import pytest

from ferry.mgmt.host import DENIED, ApplyRefused, ManagedAgent, PolicyOrigin
from ferry.mgmt.server import refused_status

MGMT = Path(__file__).resolve().parents[2] / "ferry" / "mgmt"


@pytest.mark.parametrize("code, status", [
    ("unsigned", grpc.StatusCode.PERMISSION_DENIED), ("unknown_signer", grpc.StatusCode.PERMISSION_DENIED),
    ("bad_signature", grpc.StatusCode.PERMISSION_DENIED), ("bad_name", grpc.StatusCode.INVALID_ARGUMENT),
    ("invalid_policy", grpc.StatusCode.INVALID_ARGUMENT), ("audit_unavailable", grpc.StatusCode.UNAVAILABLE),
    ("kernel_rules", grpc.StatusCode.FAILED_PRECONDITION)])
def test_refusal_codes_map_to_grpc_statuses(code, status):
    assert refused_status(code) == status
    e = ApplyRefused(code, "why")
    assert e.code == code and str(e) == "why"


def test_denied_codes_and_origin_defaults():
    assert DENIED == {"unsigned", "unknown_signer", "bad_signature"}
    assert PolicyOrigin() == PolicyOrigin("config", b"", 0.0, 0.0)
    assert {"policy_info", "apply_bundle", "status_counters", "audit_available"} <= set(dir(ManagedAgent))


def test_mgmt_never_imports_the_agents():
    for path in MGMT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith("ferry.agents")], path
