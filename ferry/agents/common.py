"""Start-up pieces shared by both agents: keys, plan, audit trail, signals."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from ferry.agents.config import AgentSection
from ferry.audit import AuditTrail
from ferry.crypto import SM2PrivateKey, SM2PublicKey
from ferry.crypto.keys import load_private_key, load_public_key
from ferry.policy import Plan, load_plan

log = logging.getLogger("ferry")


@dataclass
class Identity:
    key: SM2PrivateKey
    peer: SM2PublicKey
    plan: Plan
    audit: AuditTrail


def open_identity(section: AgentSection, role: str) -> Identity:
    key = load_private_key(Path(section.key))
    peer = load_public_key(Path(section.peer_public))
    plan = load_plan(Path(section.policy))
    audit = AuditTrail(Path(section.audit_dir), role, section.name, key)
    return Identity(key, peer, plan, audit)


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
