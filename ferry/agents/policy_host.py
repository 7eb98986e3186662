"""The policy side of both agents (``ferry.mgmt.host.ManagedAgent``): apply a signed bundle
and the policy's start-up (the stored bundle's record, the kernel rules). The agent provides
``id``, ``kernel``, ``role``, ``name``, ``audit(**fields)``, ``policy_swapped(old, new, wall)``
and ``audit_available()``.

An apply has two halves. ``prepare_bundle`` verifies and compiles: seconds for a large policy,
so the management server runs it in a worker thread (it reads only the trusted signers and
changes nothing). ``commit_bundle`` runs on the event loop: the refusal record, no change while
the trail is down, the serial (an older bundle needs ``rollback``), kernel rules first, the
bundle stored durably in the state directory (``Identity.store``), the one-reference swap, the
agent's reaction and the ``policy_applied`` record. A restart starts from the stored bundle
(``open_identity``), so the configured folder counts only until a bundle has been applied.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from ferry.agents.common import Identity
from ferry.durable import replace_durably
from ferry.kernel import KernelError
from ferry.kernel.agent_rules import KernelRules
from ferry.mgmt.host import ApplyRefused, PolicyOrigin, PreparedBundle
from ferry.pb import mgmt_pb2
from ferry.policy import Plan, PolicyError, compile_policy, parse_policy, policy_hash
from ferry.policy.bundle import BundleError, is_older, policy_files, verify_bundle
from ferry.reasons import Reason

log = logging.getLogger("ferry.mgmt")

_OWN_CODES = (Reason.INVALID_POLICY, Reason.KERNEL_RULES, Reason.OLDER_BUNDLE, Reason.POLICY_NOT_STORED)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if t > 0 else "-"


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
                                   applied_at=origin.applied_at, source=origin.source, signed_at=origin.signed_at,
                                   stored=origin.stored)

    def apply_bundle(self, bundle: mgmt_pb2.PolicyBundle, now: float, rollback: bool = False
                     ) -> mgmt_pb2.ApplyResult:
        """Verify, compile and swap in ``bundle``; audit either way. Raises ApplyRefused."""
        return self.commit_bundle(self.prepare_bundle(bundle), now, rollback)

    def prepare_bundle(self, bundle: mgmt_pb2.PolicyBundle) -> PreparedBundle:
        """Verify and compile (any thread; nothing changes, nothing is written)."""
        try:
            files, signer = verify_bundle(bundle, self.id.signers)
            top = policy_files(files)
            plan = compile_policy(parse_policy(top, base="bundle"), policy_hash(top))
        except BundleError as e:
            return PreparedBundle(bundle, code=e.code, reason=str(e))
        except PolicyError as e:
            return PreparedBundle(bundle, code=Reason.INVALID_POLICY, reason=f"invalid policy: {e}")
        return PreparedBundle(bundle, plan=plan, signer=signer)

    def commit_bundle(self, prepared: PreparedBundle, now: float, rollback: bool = False) -> mgmt_pb2.ApplyResult:
        """On the event loop: the checks, the stored bundle, the swap and the records. Raises ApplyRefused."""
        bundle, old, origin = prepared.bundle, self.id.plan, self.id.origin
        if prepared.plan is None:
            raise self._refused(bundle, prepared.code, prepared.reason, old)
        plan, signer = prepared.plan, prepared.signer
        if not self.audit_available():
            # No audit, no change: the record of who changed what must be written first.
            raise ApplyRefused("audit_unavailable", "audit trail unavailable: policy not applied")
        running_signed_at = origin.signed_at if origin.source != "config" else 0.0
        older = is_older(bundle.signed_at, plan.hash, running_signed_at, old.hash)
        if older and not rollback:
            raise self._refused(bundle, Reason.OLDER_BUNDLE,
                                f"bundle of policy {plan.name} signed {iso(bundle.signed_at)} is older than the "
                                f"running policy {old.name}'s, signed {iso(running_signed_at)}: to go back to it, "
                                "apply it with `ferry policy apply --rollback`", old)
        changed = plan.hash != old.hash
        if changed and self.kernel is not None:
            # The kernel's rules come from the same policy and go first: if the kernel
            # refuses them, the agent keeps running the old policy with the old rules.
            try:
                self.apply_kernel_rules(plan)
            except KernelError as e:
                self._refused(bundle, "kernel_rules", f"kernel rules refused: {e}", old)
                raise ApplyRefused("kernel_rules", str(e)) from None
        store = getattr(self.id, "store", None)
        if store is not None:
            try:
                store.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                replace_durably(store, bundle.SerializeToString(deterministic=True), 0o600)
            except OSError as e:
                # Not kept, not applied: a restart would bring back the policy it replaced.
                if changed and self.kernel is not None:
                    self._restore_kernel_rules(old)
                raise self._refused(bundle, Reason.POLICY_NOT_STORED,
                                    f"cannot store the bundle as {store}: {e.strerror or e}; policy not applied",
                                    old) from None
        if changed:
            self.id.plan = plan                    # the swap: one reference assignment
        else:
            plan = old
        self.id.origin = PolicyOrigin("bundle", signer, bundle.signed_at, now, str(store) if store else "")
        if changed:
            self.policy_swapped(old, plan, now)
        if older:
            reason = (f"policy {plan.name} rolled back (rollback requested) to a bundle signed "
                      f"{iso(bundle.signed_at)} by {signer.hex()[:16]}, older than the one it replaced, signed "
                      f"{iso(running_signed_at)}")
        elif changed:
            reason = f"policy {plan.name} applied from a bundle signed by {signer.hex()[:16]}"
        else:
            reason = f"policy {plan.name} re-applied (unchanged), signed by {signer.hex()[:16]}"
        self.audit(event="policy_applied", verdict="info", policy_hash=plan.hash.hex(), reason=reason,
                   detail={"old_hash": old.hash.hex(), "new_hash": plan.hash.hex(), "signer_key_id": signer.hex(),
                           "policy": plan.name, "old_policy": old.name, "signed_at": bundle.signed_at,
                           "previous_signed_at": running_signed_at, "previous_source": origin.source,
                           "changed": changed, "rollback": older, "stored": str(store) if store else None})
        log.warning("policy %s (%s) %s, was %s (%s), signer %s", plan.name, plan.hash.hex()[:16],
                    "ROLLED BACK" if older else "applied", old.name, old.hash.hex()[:16], signer.hex()[:16])
        return mgmt_pb2.ApplyResult(role=self.role, agent=self.name, policy_name=plan.name,
                                    old_hash=old.hash, new_hash=plan.hash, signer_key_id=signer, changed=changed,
                                    rollback=older, signed_at=bundle.signed_at,
                                    previous_signed_at=running_signed_at)

    def _refused(self, bundle: mgmt_pb2.PolicyBundle, code: str, reason: str, running: Plan) -> ApplyRefused:
        code = str(code)
        detail: dict[str, Any] = {"code": code, "running_hash": running.hash.hex()}
        if len(bundle.signer_key_id) == 32:
            detail["claimed_signer_key_id"] = bundle.signer_key_id.hex()
        if len(bundle.policy_hash) == 32:
            detail["claimed_policy_hash"] = bundle.policy_hash.hex()
        if code == Reason.OLDER_BUNDLE:
            detail["signed_at"], detail["running_signed_at"] = bundle.signed_at, self.id.origin.signed_at
        record_code = Reason(code) if code in _OWN_CODES else Reason.BUNDLE_REFUSED
        self.audit(event="policy_refused", verdict="refused", code=record_code, reason=reason, detail=detail)
        log.error("policy bundle refused: %s", reason)
        return ApplyRefused(code, reason)

    def _restore_kernel_rules(self, plan: Plan) -> None:
        try:
            self.apply_kernel_rules(plan)
        except KernelError as e:
            self.audit(event="kernel_rules_refused", verdict="alarm",
                       reason=f"kernel rules of the running policy {plan.name} not restored: {e}")

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
        """Start-up (both agents call it once their trail is open): the record of a policy restored
        from the stored bundle, then the rules of the running policy, or no agent at all."""
        origin = self.id.origin
        if origin.source == "stored":
            plan = self.id.plan
            self.audit(event="policy_restored", verdict="info", policy_hash=plan.hash.hex(),
                       reason=(f"policy {plan.name} restored from the bundle applied {iso(origin.applied_at)} "
                               f"(signed {iso(origin.signed_at)} by {origin.signer_key_id.hex()[:16]}); "
                               "the configured policy folder is not used"),
                       detail={"new_hash": plan.hash.hex(), "policy": plan.name, "stored": origin.stored,
                               "signer_key_id": origin.signer_key_id.hex(), "signed_at": origin.signed_at,
                               "applied_at": origin.applied_at})
        if self.kernel is None:
            return
        try:
            self.apply_kernel_rules(self.id.plan)
        except KernelError as e:
            self.audit(event="kernel_rules_refused", verdict="alarm", reason=f"kernel rules refused: {e}")
            self.id.audit.close(time.time())
            raise

