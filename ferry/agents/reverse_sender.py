"""The inner agent's end of the reverse ferry (issue 13): requests in (``ferry ask``, the management
``Ask`` RPC, later the SIP lane), ``ferry.lanes.reverse.InnerReverseLane`` decides, the request is
audited, then sealed and sent by a ``ferry.wire.LinkSender`` with the reverse keys of ``[reverse]``,
through the outer agent's link pump and writer (``ferry.agents.outer.LinkPump``): the same wire,
paced, sealed, key epochs and heartbeats. Its socket only sends; nothing is ever read from it.

The forward ferry never waits for this one: a dead peer, a wrong key or a full socket costs only
the reverse requests (send errors are counted, the reverse link's view says "down").
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry.agents.link_io import LinkSendSocket
from ferry.agents.outer import LinkPump, SendView
from ferry.agents.reverse_receiver import check_key_mode
from ferry.config import ConfigError, InnerReverse
from ferry.crypto.keys import load_private_key, load_public_key
from ferry.lanes.reverse import InnerReverseLane
from ferry.lanes.work import AuditIntent, ObjectIds, SealObject
from ferry.mgmt.host import LinkView
from ferry.policy import Plan
from ferry.reasons import Reason
from ferry.wire import LinkSender
from ferry.wire.events import KeyAnnounced, KeyRotated

log = logging.getLogger("ferry.inner.reverse")


@dataclass(frozen=True, slots=True)
class AskOutcome:
    accepted: bool
    reason: str
    code: str = ""
    object_id: int = 0
    rule: str = ""


class ReverseSender:
    """``ask`` -> lane -> audit -> seal. ``audit(fields) -> bool`` writes a record (False while the
    trail is down); ``plan()`` is the running plan."""

    def __init__(self, cfg: InnerReverse, name: str, plan: Callable[[], Plan],
                 audit: Callable[[dict[str, Any]], bool], audit_down: Callable[[], bool]) -> None:
        check_key_mode(cfg.key, "[reverse] key")
        key = load_private_key(Path(cfg.key))
        peer = load_public_key(Path(cfg.peer_public))
        self.cfg, self.plan, self._audit, self.audit_down = cfg, plan, audit, audit_down
        # Start on a whole second, as the outer agent does: the first key epoch (int(wall)) and the
        # requests' run id are then above those of any earlier run, however soon it restarted (the
        # outer agent refuses an epoch it knows with another key, and an object ID it took).
        time.sleep(max(0.0, math.floor(time.time()) + 1 - time.time()))
        now, wall = time.monotonic(), time.time()
        self.sender = LinkSender(outer_key=key, inner_public=peer, policy_hash=plan().hash, name=name,
                                 now=now, wall=wall, k=cfg.fec_k, m=cfg.fec_m, key_lifetime=cfg.key_lifetime,
                                 seal=False, track_sent=True)
        try:
            self.sock = LinkSendSocket((cfg.peer_host, cfg.peer_port), bind_host=cfg.bind_host,
                                       interface=cfg.interface, sndbuf=1 << 20)
        except OSError as e:
            raise ConfigError(f"[reverse] bind_host {cfg.bind_host}"
                              f"{' interface ' + cfg.interface if cfg.interface else ''}: cannot bind: "
                              f"{e.strerror or e}") from None
        self.peer = f"{cfg.peer_host}:{cfg.peer_port}"
        self.pump = LinkPump(self.sender, self.sock, cfg.rate_mbps * 1e6 / 8, now, self.sender_events,
                             SendView(self.peer, wall))
        self.lane = InnerReverseLane(ObjectIds(int(wall)), cfg.destination)
        self.task: asyncio.Task[None] | None = None
        self.own_stop = asyncio.Event()

    def sender_events(self) -> None:
        while (e := self.sender.next_event()) is not None:
            if isinstance(e, (KeyAnnounced, KeyRotated)):
                self._audit({"event": "reverse_key_announced", "verdict": "info", "epoch": e.epoch,
                             "reason": f"reverse link: key rotated ({e.reason})" if isinstance(e, KeyRotated)
                             else "reverse link: SM4 session key announced to the outer agent"})

    def ask(self, request: str, device_id: str, params: Mapping[str, str], operator: str, *,
            address: str = "", destination: str = "", platform_id: str = "") -> AskOutcome:
        """One request, decided, audited and (if allowed) sealed for the reverse link."""
        if self.audit_down():
            return AskOutcome(False, "the audit trail cannot be written: nothing is sent (no audit, no transfer)",
                              Reason.AUDIT_UNAVAILABLE)
        now, wall = time.monotonic(), time.time()
        work = self.lane.ask(request, device_id, params, operator, self.plan(), now, wall, address=address,
                             destination=destination, platform_id=platform_id)
        outcome = AskOutcome(False, "no decision", Reason.BAD_REQUEST)
        for w in work:
            if isinstance(w, AuditIntent):
                f = w.fields
                written = self._audit(f)
                self.pump.held = not written
                accepted = f["verdict"] == "sent"
                outcome = AskOutcome(accepted, str(f.get("reason", "")), "" if accepted else str(f.get("code", "")),
                                     int(f.get("object_id") or 0), str(f.get("rule", "")))
            elif isinstance(w, SealObject):
                self.sender.submit(w.obj.object_id, w.obj.SerializeToString(), now, wall)
                self.sender.flush(now, wall)
                self.sender_events()
                self.pump.collect(now)
                self.pump.wake.set()
        return outcome

    def policy_swapped(self, new: Plan) -> None:
        now = time.monotonic()
        self.sender.set_policy_hash(new.hash, now)
        self.pump.collect(now)

    def link_view(self) -> LinkView:
        self.pump.check_link(time.time())
        return self.pump.view.view

    def counters(self) -> dict[str, int]:
        c = self.sender.counters
        return {**self.lane.counts, "blocks": c.blocks, "datagrams": c.datagrams, "epoch": c.epoch,
                "send_errors": self.pump.writer.errors}

    async def run(self, stop: asyncio.Event) -> None:
        """The pump, and the trail's state handed to it (no audit, no transfer), until ``stop``."""
        own = self.own_stop = asyncio.Event()    # a failed reverse writer stops this pump, never the agent
        self.task = asyncio.create_task(self.pump.run(own))
        while not stop.is_set():
            self.pump.held = self.audit_down()
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        self.own_stop.set()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        now, wall = time.monotonic(), time.time()
        self.sender.flush(now, wall)
        self.pump.collect(now)
        await self.pump.drain()
        self.sock.close()
