"""The policy side of both agents (``ferry.mgmt.host.ManagedAgent``): apply a signed bundle
(verify, compile, kernel rules first, one-reference swap, the agent's reaction, the record)
and the kernel rules at start-up. The agent provides ``id``, ``kernel``, ``role``, ``name``,
``audit(**fields)``, ``policy_swapped(old, new, wall)`` and ``audit_available()``.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from ferry.agents.common import Identity
from ferry.kernel import KernelError
from ferry.kernel.agent_rules import KernelRules
from ferry.mgmt.host import ApplyRefused, PolicyOrigin
from ferry.pb import mgmt_pb2
from ferry.policy import Plan, PolicyError, compile_policy, parse_policy, policy_hash
from ferry.policy.bundle import BundleError, policy_files, verify_bundle
from ferry.reasons import Reason

log = logging.getLogger("ferry.mgmt")


class PolicyHost:
    role: str
    name: str
    id: Identity
    kernel: KernelRules | None = None

    def audit(self, **fields: Any) -> Any:
        raise NotImplementedError

    def audit_available(self) -> bool:
        raise NotImplementedError

    def policy_swapped(self, old: Plan, new: Plan, wall: float) -> None:
        raise NotImplementedError

    def policy_info(self) -> mgmt_pb2.PolicyInfo:
        plan, origin = self.id.plan, self.id.origin
        return mgmt_pb2.PolicyInfo(name=plan.name, hash=plan.hash, signer_key_id=origin.signer_key_id,
                                   applied_at=origin.applied_at, source=origin.source, signed_at=origin.signed_at)

    def apply_bundle(self, bundle: mgmt_pb2.PolicyBundle, now: float) -> mgmt_pb2.ApplyResult:
        """Verify, compile and swap in ``bundle``; audit either way. Raises ApplyRefused."""
        old = self.id.plan
        try:
            files, signer = verify_bundle(bundle, self.id.signers)
            top = policy_files(files)
            plan = compile_policy(parse_policy(top, base="bundle"), policy_hash(top))
        except BundleError as e:
            raise self._refused(bundle, e.code, str(e), old) from None
        except PolicyError as e:
            raise self._refused(bundle, "invalid_policy", f"invalid policy: {e}", old) from None
        if not self.audit_available():
            # No audit, no change: the record of who changed what must be written first.
            raise ApplyRefused("audit_unavailable", "audit trail unavailable: policy not applied")
        changed = plan.hash != old.hash
        if changed and self.kernel is not None:
            # The kernel's rules come from the same policy and go first: if the kernel
            # refuses them, the agent keeps running the old policy with the old rules.
            try:
                self.apply_kernel_rules(plan)
            except KernelError as e:
                self._refused(bundle, "kernel_rules", f"kernel rules refused: {e}", old)
                raise ApplyRefused("kernel_rules", str(e)) from None
        if changed:
            self.id.plan = plan                    # the swap: one reference assignment
        else:
            plan = old
        self.id.origin = PolicyOrigin("bundle", signer, bundle.signed_at, now)
        if changed:
            self.policy_swapped(old, plan, now)
        self.audit(event="policy_applied", verdict="info", policy_hash=plan.hash.hex(),
                   reason=(f"policy {plan.name} applied from a bundle signed by {signer.hex()[:16]}" if changed
                           else f"policy {plan.name} re-applied (unchanged), signed by {signer.hex()[:16]}"),
                   detail={"old_hash": old.hash.hex(), "new_hash": plan.hash.hex(), "signer_key_id": signer.hex(),
                           "policy": plan.name, "old_policy": old.name, "signed_at": bundle.signed_at,
                           "changed": changed})
        log.warning("policy %s (%s) applied, was %s (%s), signer %s", plan.name, plan.hash.hex()[:16],
                    old.name, old.hash.hex()[:16], signer.hex()[:16])
        return mgmt_pb2.ApplyResult(role=self.role, agent=self.name, policy_name=plan.name,
                                    old_hash=old.hash, new_hash=plan.hash, signer_key_id=signer, changed=changed)

    def _refused(self, bundle: mgmt_pb2.PolicyBundle, code: str, reason: str, running: Plan) -> ApplyRefused:
        detail = {"code": code, "running_hash": running.hash.hex()}
        if len(bundle.signer_key_id) == 32:
            detail["claimed_signer_key_id"] = bundle.signer_key_id.hex()
        if len(bundle.policy_hash) == 32:
            detail["claimed_policy_hash"] = bundle.policy_hash.hex()
        record_code = Reason(code) if code in (Reason.INVALID_POLICY, Reason.KERNEL_RULES) else Reason.BUNDLE_REFUSED
        self.audit(event="policy_refused", verdict="refused", code=record_code, reason=reason, detail=detail)
        log.error("policy bundle refused: %s", reason)
        return ApplyRefused(code, reason)

    def apply_kernel_rules(self, plan: Plan) -> None:
        """The nftables rules of ``plan``, before it runs (raises KernelError), and their record."""
        kernel = self.kernel
        if kernel is None:
            return
        kernel.apply(plan)
        self.audit(event="kernel_rules_applied", verdict="info", policy_hash=plan.hash.hex(),
                   reason=f"nftables rules of policy {plan.name} applied ({self.role} host)",
                   detail={"link_if": kernel.section.link_if, "ingest_if": kernel.section.ingest_if})

    def start_kernel_rules(self) -> None:
        """Start-up: the rules of the configured policy, or no agent at all."""
        if self.kernel is None:
            return
        try:
            self.apply_kernel_rules(self.id.plan)
        except KernelError as e:
            self.audit(event="kernel_rules_refused", verdict="alarm", reason=f"kernel rules refused: {e}")
            self.id.audit.close(time.time())
            raise
