"""What the management service needs of an agent: the ``ManagedAgent`` interface.

The agents implement it (``ferry.agents.policy_host``); ``ferry.mgmt`` never imports
``ferry.agents``. No grpc here: a refusal names its code, the server maps it to a status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ferry.pb import mgmt_pb2
from ferry.policy import Plan

# ApplyRefused codes that mean "not from someone we trust" rather than "malformed".
DENIED = frozenset({"unsigned", "unknown_signer", "bad_signature"})


@dataclass
class PolicyOrigin:
    """Where the running plan came from (what GetPolicy reports)."""
    source: str = "config"        # "config" (the configured folder), "bundle" (applied while running)
    #                               or "stored" (the last applied bundle, restored at start)
    signer_key_id: bytes = b""
    signed_at: float = 0.0        # the running bundle's serial (0: the configured folder)
    applied_at: float = 0.0
    stored: str = ""              # where the applied bundle is kept across restarts ("" if nowhere)


@dataclass
class PreparedBundle:
    """A bundle verified and compiled off the event loop (``prepare_bundle``, a worker thread),
    waiting for ``commit_bundle`` on the loop: either ``plan`` and ``signer``, or a refusal
    (``code``, ``reason``) that the commit audits."""
    bundle: mgmt_pb2.PolicyBundle
    plan: Plan | None = None
    signer: bytes = b""
    code: str = ""
    reason: str = ""


@dataclass
class LinkView:
    """The link as one agent sees it (GetStatus): "up" or "down", since when (wall clock), why."""
    state: str
    since: float
    detail: str = ""


class ApplyRefused(Exception):
    """A bundle the agent did not apply. ``code``: a BundleError code (unsigned, unknown_signer,
    bad_signature, bad_name, ...), invalid_policy, older_bundle, audit_unavailable, kernel_rules or
    policy_not_stored."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        super().__init__(reason)


class ManagedAgent(Protocol):
    """An agent as the management service sees it."""

    role: str                     # "outer" or "inner"
    name: str
    started_at: float             # wall clock

    def policy_info(self) -> mgmt_pb2.PolicyInfo:
        """The running plan and where it came from."""

    def apply_bundle(self, bundle: mgmt_pb2.PolicyBundle, now: float, rollback: bool = False
                     ) -> mgmt_pb2.ApplyResult:
        """Verify, compile and swap in ``bundle`` at wall time ``now``; audit either way.
        Raises ApplyRefused. (``commit_bundle(prepare_bundle(bundle), now, rollback)``.)"""

    # Optional, for the server to compile off the loop (both agents have them):
    #   prepare_bundle(bundle) -> PreparedBundle      thread-safe: verify and compile, no state changed
    #   commit_bundle(prepared, now, rollback) -> ApplyResult   on the loop: checks, store, swap, records

    def status_counters(self) -> dict[str, int]: ...

    # Optional (GetStatus fills their fields when the agent has them; both agents do):
    #   uptime() -> float                          seconds since the agent started (monotonic)
    #   link_view() -> LinkView                    the link as this agent sees it
    #   lane_counters() -> dict[str, dict[str, int]]   counters per lane ("files", "video")
    #   key_epoch() -> int                         the key epoch in use (0: none yet)
    #   audit_path() -> str                        the trail file TailAudit reads (audit.jsonl)
    #   flows() -> {"streams": [VideoFlow fields], "files": [FileFlow fields]}   Flows (proto/mgmt.proto)

    def audit_available(self) -> bool: ...
