"""Pieces shared by both agents: keys, plan, the audit queue, management, signals."""
from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry import limits
from ferry.audit import AuditTrail, AuditUnavailable
from ferry.audit.budget import RefusalBudget
from ferry.config import AgentSection, ConfigError, ManagementSection, check_modes
from ferry.crypto import SM2PrivateKey, SM2PublicKey
from ferry.crypto.keys import load_private_key, load_public_key
from ferry.agents.metrics import MetricsServer
from ferry.mgmt.host import PolicyOrigin
from ferry.mgmt.server import ManagementServer, ManagementService, start_management
from ferry.policy import Plan, PolicyError, compile_policy, load_plan, parse_policy, policy_hash
from ferry.policy.bundle import BundleError, parse_bundle, policy_files, verify_bundle

log = logging.getLogger("ferry")


@dataclass
class Identity:
    key: SM2PrivateKey
    peer: SM2PublicKey
    plan: Plan                    # swapped whole by a reload; deciders read it once per object
    audit: AuditTrail
    origin: PolicyOrigin = field(default_factory=PolicyOrigin)
    signers: dict[bytes, SM2PublicKey] = field(default_factory=dict)   # key id -> trusted policy signer
    store: Path | None = None     # the applied bundle, kept across restarts (<state_dir>/policy.ferrypolicy)


STORED_BUNDLE = "policy.ferrypolicy"


def load_signers(section: ManagementSection | None) -> dict[bytes, SM2PublicKey]:
    """The SM2 public keys whose policy bundles this agent accepts, by key id."""
    keys = [load_public_key(Path(p)) for p in (section.policy_signers if section else ())]
    return {k.key_id(): k for k in keys}


def load_stored_bundle(path: Path, signers: dict[bytes, SM2PublicKey]) -> tuple[Plan, PolicyOrigin] | None:
    """The bundle last applied to this agent, verified again with today's signers and compiled;
    None if there is none. One that no longer verifies (its signer removed from
    ``policy_signers``, a byte changed) or no longer compiles stops the start (ConfigError): fail
    closed, never back to the configured folder's older policy without the administrator."""
    try:
        with open(path, "rb") as f:
            data = f.read(limits.POLICY_BUNDLE_MAX + 1)
            st = os.fstat(f.fileno())
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the applied policy bundle: {e.strerror}") from None
    fix = (f"restore its signer in [management] policy_signers, apply a newer bundle's file in its place, "
           f"or remove {path} to start from the configured [agent] policy folder")
    try:
        bundle = parse_bundle(data)
        files, signer = verify_bundle(bundle, signers)
        top = policy_files(files)
        plan = compile_policy(parse_policy(top, base=str(path)), policy_hash(top))
    except BundleError as e:
        raise ConfigError(f"{path}: the applied policy bundle does not verify ({e.code}: {e}); "
                          f"refusing to start; {fix}") from None
    except PolicyError as e:
        raise ConfigError(f"{path}: the applied policy bundle does not compile ({e}); refusing to start; {fix}"
                          ) from None
    return plan, PolicyOrigin("stored", signer, bundle.signed_at, st.st_mtime, str(path))


def open_identity(section: AgentSection, role: str, management: ManagementSection | None = None) -> Identity:
    """Keys, trusted signers, the policy and the audit trail. The policy is the bundle last applied
    (kept in the state directory) if there is one, else the configured folder. Refuses to start
    (ConfigError) on keys, policy or state that other users may read or change."""
    store = Path(section.state_dir) / STORED_BUNDLE if section.state_dir else None
    check_modes(section, management, store)
    key = load_private_key(Path(section.key))
    peer = load_public_key(Path(section.peer_public))
    signers = load_signers(management)
    stored = load_stored_bundle(store, signers) if store is not None else None
    if stored is not None:
        plan, origin = stored
        log.warning("policy %s (%s): the bundle applied %s, from %s; the configured folder %s is not used",
                    plan.name, plan.hash.hex()[:16],
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(origin.applied_at)), store, section.policy)
    else:
        plan, origin = load_plan(Path(section.policy)), PolicyOrigin(applied_at=time.time())
    audit = AuditTrail(Path(section.audit_dir), role, section.name, key,
                       checkpoint_interval=section.checkpoint_interval)
    return Identity(key, peer, plan, audit, origin, signers, store)


class AuditQueue:
    """Audit records in order. No audit, no transfer: while the trail cannot be written they
    wait here (``down``), and the agent stops its lane until a flush gets them all out.

    With ``refusal_cap`` (the inner agent's ``[audit] refusals_per_reason_per_hour``), link
    refusal records pass through a ``RefusalBudget`` first: at most that many per (event, code)
    per hour are queued, the rest are counted into one ``audit_suppressed`` record, written when
    the hour ends (``tick``, from the agent's timer) or the agent stops (``close_budget``)."""

    def __init__(self, trail: AuditTrail, plan: Callable[[], Plan], lane: str, limit: int | None = None,
                 refusal_cap: int | None = None) -> None:
        self.trail, self.plan, self.lane, self.limit = trail, plan, lane, limit
        self.records: deque[dict[str, Any]] = deque()
        self.down = False
        self._plan: Plan | None = None      # the plan whose hash is in _plan_hash (hex)
        self._plan_hash = ""
        self.budget = RefusalBudget(refusal_cap, time.monotonic()) if refusal_cap is not None else None

    def append(self, fields: dict[str, Any]) -> bool:
        """Queue a record (None values left out) and write all queued; False while the trail is down."""
        if self.budget is None:     # _queue copies the fields: no copy here unless a None is to go
            return self._queue([{k: v for k, v in fields.items() if v is not None}
                                if None in fields.values() else fields])
        fields = {k: v for k, v in fields.items() if v is not None}
        batch = self.budget.offer(fields, time.monotonic(), time.time())
        if self.budget.just_capped is not None:
            log.warning("audit: more than %d %s records with code %s this hour: further ones are counted, "
                        "and written as one audit_suppressed record when the hour ends",
                        self.budget.cap, *self.budget.just_capped)
        return self._queue(batch)

    def tick(self, now: float) -> float | None:
        """The agent's timer: write the summary of an hour that ended; when to call again (monotonic)."""
        if self.budget is None:
            return None
        batch = self.budget.handle_timer(now)
        if batch:
            self._queue(batch)
        return self.budget.next_timer()

    def close_budget(self) -> bool:
        """The agent stops: write the summary of what was withheld so far, if anything."""
        return self._queue(self.budget.close()) if self.budget is not None else self.flush()

    def _queue(self, batch: list[dict[str, Any]]) -> bool:
        for fields in batch:
            if self.limit is not None and len(self.records) >= self.limit:
                log.error("audit backlog full; dropping record %s", fields.get("event"))
                return False
            plan = self.plan()
            if plan is not self._plan:
                self._plan, self._plan_hash = plan, plan.hash.hex()
            self.records.append({"policy_hash": self._plan_hash, **fields})
        return self.flush()

    def flush(self) -> bool:
        while self.records:
            try:
                self.trail.append(time.time(), **self.records[0])
            except AuditUnavailable as e:
                if not self.down:
                    log.error("audit trail unavailable (%s): %s stopped until it can be written", e, self.lane)
                self.down = True
                return False
            self.records.popleft()
        if self.down:
            log.warning("audit trail writable again: %s resumed", self.lane)
        self.down = False
        return True


async def sign_quiet_tail(trail: AuditTrail, stop: asyncio.Event) -> None:
    """Sign the trail's tail when records have waited checkpoint_interval, even if no record follows:
    ``ferry audit verify`` then passes on an idle running agent (the trail clock is wall time)."""
    while not stop.is_set():
        now = time.time()
        due = trail.next_checkpoint(now)
        if due is not None and due <= now:
            try:
                trail.tick(now)
            except AuditUnavailable as e:   # the lanes hold their records and retry; so does this timer
                log.error("audit checkpoint not written: %s", e)
            due = trail.next_checkpoint(time.time())
        delay = limits.AUDIT_CHECKPOINT_POLL if due is None else min(max(due - time.time(), 0.05),
                                                                     limits.AUDIT_CHECKPOINT_POLL)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except asyncio.TimeoutError:
            pass


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


# What the text log escapes, as the audit trail's JSON does: C0 controls, DEL, C1 controls, and
# the invisible characters that reorder or split a line (bidi marks, embeddings, overrides and
# isolates; line and paragraph separators). A file name cannot forge a log line or recolour one.
_LOG_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_LOG_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_log_text(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every unsafe character as a JSON escape (``\\n``, ``\\u001b``, ``\\u202e``)."""
    def one(m: re.Match[str]) -> str:
        ch = m.group()
        return _LOG_ESCAPES.get(ch) or f"\\u{ord(ch):04x}"
    if keep_newlines:
        return "\n".join(_LOG_UNSAFE.sub(one, line) for line in text.split("\n"))
    return _LOG_UNSAFE.sub(one, text)


class EscapingFormatter(logging.Formatter):
    """One log record, one line: the message's control characters are escaped; a traceback
    keeps its line breaks, with everything else in it escaped."""

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, escaping what it puts together (the record is left as it came:
        # other handlers see the raw message; the traceback text is cached raw as usual)
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        saved, record.message = record.message, escape_log_text(record.message)
        try:
            s = self.formatMessage(record)
        finally:
            record.message = saved
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            s += "\n" + escape_log_text(record.exc_text, keep_newlines=True)
        if record.stack_info:
            s += "\n" + escape_log_text(self.formatStack(record.stack_info), keep_newlines=True)
        return s


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


class Management:
    """The agent's management service (with health and reflection), when a socket or a TCP
    address is configured."""

    def __init__(self, section: ManagementSection | None) -> None:
        self.section = section
        self.path = section.socket if section is not None else ""
        self.server: ManagementServer | None = None
        self.metrics = MetricsServer(section.metrics) if section is not None and section.metrics else None

    async def start(self, agent) -> None:
        if self.metrics is not None:      # first: a busy port stops the agent before anything else listens
            self.metrics.start(agent, asyncio.get_running_loop())
        if self.section is not None and (self.section.socket or self.section.listen):
            self.server = await start_management(self.section, ManagementService(agent))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)


def run_agent(agent_class, cfg) -> int:
    """Run an agent until SIGTERM or SIGINT; its exit code."""
    failed: list[str] = []

    async def main() -> int:
        agent = agent_class(cfg)
        stop = asyncio.Event()
        install_stop_handlers(stop)
        loop = asyncio.get_running_loop()

        def on_error(loop: asyncio.AbstractEventLoop, context: dict) -> None:
            """A bug in a callback (a lane's timer) would leave that lane stopped while the agent
            runs on: record an alarm and stop instead (exit 1; the service manager restarts it)."""
            loop.default_exception_handler(context)
            err = context.get("exception")
            # only a bug in ferry's own callbacks: not a peer's reset connection (a transport's
            # error, no handle) nor an OSError of the system (e.g. grpc's poller, EAGAIN)
            if "handle" not in context or not isinstance(err, Exception) or isinstance(err, OSError):
                return
            what = f"{type(err).__name__}: {err}"
            failed.append(what)
            try:
                agent.audit(event="agent_failed", verdict="alarm",
                            reason=f"unexpected error in the agent, stopping it: {what}")
            except Exception:       # the trail itself failing: the log has it, the exit code says so
                log.exception("cannot record the agent's failure")
            stop.set()

        loop.set_exception_handler(on_error)
        code = await agent.run(stop)
        return 1 if failed else code

    return asyncio.run(main())
