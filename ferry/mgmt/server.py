"""The management service each agent serves on a local Unix socket (grpc.aio).

It runs inside the agent's own asyncio loop, so a reload never races the
deciders: ``apply_bundle`` verifies the bundle, compiles it, swaps the plan
with one reference assignment, lets the agent react (the outer re-announces
the new hash, the inner opens its grace period) and writes the audit record.

The agent passed in provides (see OuterAgent / InnerAgent):
    role: str, cfg.agent.name, id: Identity (plan, origin, signers),
    audit(**fields), policy_swapped(old_plan, new_plan, now),
    status_counters() -> dict[str, int], audit_available() -> bool
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from pathlib import Path

import grpc

from ferry.kernel import KernelError

from ferry import limits
from ferry.agents.common import PolicyOrigin
from ferry.pb import mgmt_pb2, mgmt_pb2_grpc
from ferry.policy import PolicyError, compile_policy, parse_policy, policy_hash
from ferry.policy.bundle import BundleError, policy_files, verify_bundle

log = logging.getLogger("ferry.mgmt")

# BundleError codes that mean "not from someone we trust" rather than "malformed".
_DENIED = frozenset({"unsigned", "unknown_signer", "bad_signature"})
GRPC_MESSAGE_MAX = limits.POLICY_BUNDLE_MAX + (64 << 10)
UNIX_PATH_MAX = 107            # sun_path holds 108 bytes with the terminating NUL


class ApplyRefused(Exception):
    """A bundle the agent did not apply; ``status`` is the gRPC status code to return."""

    def __init__(self, status: grpc.StatusCode, code: str, reason: str) -> None:
        self.status = status
        self.code = code
        super().__init__(reason)


def policy_info(agent) -> mgmt_pb2.PolicyInfo:
    plan, origin = agent.id.plan, agent.id.origin
    return mgmt_pb2.PolicyInfo(name=plan.name, hash=plan.hash, signer_key_id=origin.signer_key_id,
                               applied_at=origin.applied_at, source=origin.source, signed_at=origin.signed_at)


def apply_bundle(agent, bundle: mgmt_pb2.PolicyBundle, now: float) -> mgmt_pb2.ApplyResult:
    """Verify, compile and swap in ``bundle``; audit either way. Raises ApplyRefused."""
    old = agent.id.plan
    try:
        files, signer = verify_bundle(bundle, agent.id.signers)
        top = policy_files(files)
        plan = compile_policy(parse_policy(top, base="bundle"), policy_hash(top))
    except BundleError as e:
        status = grpc.StatusCode.PERMISSION_DENIED if e.code in _DENIED else grpc.StatusCode.INVALID_ARGUMENT
        _refused(agent, bundle, e.code, str(e), old)
        raise ApplyRefused(status, e.code, str(e)) from None
    except PolicyError as e:
        _refused(agent, bundle, "invalid_policy", f"invalid policy: {e}", old)
        raise ApplyRefused(grpc.StatusCode.INVALID_ARGUMENT, "invalid_policy", f"invalid policy: {e}") from None
    if not agent.audit_available():
        # No audit, no change: the record of who changed what must be written first.
        raise ApplyRefused(grpc.StatusCode.UNAVAILABLE, "audit_unavailable",
                           "audit trail unavailable: policy not applied")
    changed = plan.hash != old.hash
    kernel = getattr(agent, "kernel", None)
    if changed and kernel is not None:
        # The kernel's rules come from the same policy and go first: if the kernel
        # refuses them, the agent keeps running the old policy with the old rules.
        try:
            kernel.apply(plan)
        except KernelError as e:
            _refused(agent, bundle, "kernel_rules", f"kernel rules refused: {e}", old)
            raise ApplyRefused(grpc.StatusCode.FAILED_PRECONDITION, "kernel_rules", str(e)) from None
        agent.audit(event="kernel_rules_applied", verdict="info", policy_hash=plan.hash.hex(),
                    reason=f"nftables rules of policy {plan.name} applied ({agent.role} host)",
                    detail={"link_if": kernel.section.link_if, "ingest_if": kernel.section.ingest_if})
    if changed:
        agent.id.plan = plan                    # the swap: one reference assignment
    else:
        plan = old
    agent.id.origin = PolicyOrigin("bundle", signer, bundle.signed_at, now)
    if changed:
        agent.policy_swapped(old, plan, now)
    agent.audit(event="policy_applied", verdict="info", policy_hash=plan.hash.hex(),
                reason=(f"policy {plan.name} applied from a bundle signed by {signer.hex()[:16]}" if changed
                        else f"policy {plan.name} re-applied (unchanged), signed by {signer.hex()[:16]}"),
                detail={"old_hash": old.hash.hex(), "new_hash": plan.hash.hex(), "signer_key_id": signer.hex(),
                        "policy": plan.name, "old_policy": old.name, "signed_at": bundle.signed_at,
                        "changed": changed})
    log.warning("policy %s (%s) applied, was %s (%s), signer %s", plan.name, plan.hash.hex()[:16],
                old.name, old.hash.hex()[:16], signer.hex()[:16])
    return mgmt_pb2.ApplyResult(role=agent.role, agent=agent.cfg.agent.name, policy_name=plan.name,
                                old_hash=old.hash, new_hash=plan.hash, signer_key_id=signer, changed=changed)


def _refused(agent, bundle, code: str, reason: str, running) -> None:
    detail = {"code": code, "running_hash": running.hash.hex()}
    if len(bundle.signer_key_id) == 32:
        detail["claimed_signer_key_id"] = bundle.signer_key_id.hex()
    if len(bundle.policy_hash) == 32:
        detail["claimed_policy_hash"] = bundle.policy_hash.hex()
    agent.audit(event="policy_refused", verdict="refused", reason=reason, detail=detail)
    log.error("policy bundle refused: %s", reason)


class ManagementService(mgmt_pb2_grpc.ManagementServicer):
    def __init__(self, agent, clock=time.time) -> None:
        self.agent = agent
        self.clock = clock

    async def ApplyPolicy(self, request, context):
        try:
            return apply_bundle(self.agent, request, self.clock())
        except ApplyRefused as e:
            await context.abort(e.status, f"{e.code}: {e}")

    async def GetPolicy(self, request, context):
        return policy_info(self.agent)

    async def GetStatus(self, request, context):
        a = self.agent
        counters = {k: int(v) for k, v in a.status_counters().items() if isinstance(v, int) and v >= 0}
        return mgmt_pb2.AgentStatus(role=a.role, name=a.cfg.agent.name, policy=policy_info(a), counters=counters,
                                    started_at=a.started_at, audit_available=a.audit_available())


def _clear_stale_socket(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"management socket path {path} exists and is not a socket")
    os.unlink(path)


async def start_server(path: str | os.PathLike[str], service: ManagementService) -> grpc.aio.Server:
    """Serve ``service`` on the Unix socket ``path`` (mode 0600, parent created 0700)."""
    path = Path(path)
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise OSError(f"management socket path {path} is longer than {UNIX_PATH_MAX} bytes")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _clear_stale_socket(path)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", GRPC_MESSAGE_MAX),
                                      ("grpc.max_send_message_length", GRPC_MESSAGE_MAX)])
    mgmt_pb2_grpc.add_ManagementServicer_to_server(service, server)
    old = os.umask(0o177)          # the socket is born 0600: no window where others may connect
    try:
        try:
            port = server.add_insecure_port(f"unix:{path}")
        except RuntimeError as e:
            raise OSError(f"cannot listen on management socket {path}: {e}") from None
        if port == 0:
            raise OSError(f"cannot listen on management socket {path}")
        await server.start()
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    log.info("management service on unix:%s", path)
    return server


async def stop_server(server: grpc.aio.Server, path: str | os.PathLike[str]) -> None:
    await server.stop(grace=1.0)
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
