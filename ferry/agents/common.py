"""Start-up pieces shared by both agents: keys, plan, audit trail, signals."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ferry.agents.config import AgentSection, ManagementSection
from ferry.audit import AuditTrail
from ferry.crypto import SM2PrivateKey, SM2PublicKey
from ferry.crypto.keys import load_private_key, load_public_key
from ferry.kernel import KernelError
from ferry.policy import Plan, load_plan

log = logging.getLogger("ferry")


@dataclass
class PolicyOrigin:
    """Where the running plan came from (what GetPolicy reports)."""
    source: str = "config"        # "config" (the configured folder) or "bundle" (applied, signed)
    signer_key_id: bytes = b""
    signed_at: float = 0.0
    applied_at: float = 0.0


@dataclass
class Identity:
    key: SM2PrivateKey
    peer: SM2PublicKey
    plan: Plan                    # swapped whole by a reload; deciders read it once per object
    audit: AuditTrail
    origin: PolicyOrigin = field(default_factory=PolicyOrigin)
    signers: dict[bytes, SM2PublicKey] = field(default_factory=dict)   # key id -> trusted policy signer


def load_signers(section: ManagementSection | None) -> dict[bytes, SM2PublicKey]:
    """The SM2 public keys whose policy bundles this agent accepts, by key id."""
    keys = [load_public_key(Path(p)) for p in (section.policy_signers if section else ())]
    return {k.key_id(): k for k in keys}


def open_identity(section: AgentSection, role: str, management: ManagementSection | None = None) -> Identity:
    key = load_private_key(Path(section.key))
    peer = load_public_key(Path(section.peer_public))
    signers = load_signers(management)
    plan = load_plan(Path(section.policy))
    audit = AuditTrail(Path(section.audit_dir), role, section.name, key)
    return Identity(key, peer, plan, audit, PolicyOrigin(applied_at=time.time()), signers)


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def apply_kernel_rules(agent) -> None:
    """Start-up: the nftables rules of the agent's policy, or no agent at all."""
    try:
        agent.kernel.apply(agent.id.plan)
    except KernelError as e:
        agent.audit(event="kernel_rules_refused", verdict="alarm", reason=f"kernel rules refused: {e}")
        agent.id.audit.close(time.time())
        raise
    agent.audit(event="kernel_rules_applied", verdict="info",
                reason=f"nftables rules of policy {agent.id.plan.name} applied ({agent.role} host)",
                detail={"link_if": agent.kernel.section.link_if, "ingest_if": agent.kernel.section.ingest_if})


def run_agent(agent_class, cfg) -> int:
    """Run an agent until SIGTERM or SIGINT; its exit code."""
    async def main() -> int:
        agent = agent_class(cfg)
        stop = asyncio.Event()
        install_stop_handlers(stop)
        return await agent.run(stop)

    return asyncio.run(main())
