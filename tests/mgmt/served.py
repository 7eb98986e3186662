"""A management server (start_management: Management, health, reflection; Unix socket and/or TCP
with mutual TLS) in a background event loop, serving a stand-in agent whose link and trail the
test switches."""
from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from pathlib import Path

from ferry.config import ManagementSection
from ferry.mgmt.host import LinkView, PolicyOrigin
from ferry.mgmt.server import ManagementService, start_management
from ferry.pb import mgmt_pb2


class StandIn:
    role = "inner"
    name = "stand-in"
    started_at = 100.0

    def __init__(self, trail: Path) -> None:
        self.link = LinkView("up", 100.0, "heartbeats")
        self.trail_up = True
        self.trail = trail
        self.origin = PolicyOrigin()

    def policy_info(self) -> mgmt_pb2.PolicyInfo:
        return mgmt_pb2.PolicyInfo(name="p", hash=b"\1" * 32, source="config")

    def apply_bundle(self, bundle, now, rollback=False):
        raise NotImplementedError

    def status_counters(self) -> dict[str, int]:
        return {"delivered": 7}

    def audit_available(self) -> bool:
        return self.trail_up

    def link_view(self) -> LinkView:
        return self.link

    def key_epoch(self) -> int:
        return 42

    def audit_path(self) -> str:
        return str(self.trail)

    def flows(self):
        return {"streams": [{"name": "cam", "stream_id": "cam-1", "device_id": "4" * 20, "source": "10.0.0.9:5000",
                             "destination": "vms", "started": 1.5, "access_units": 3, "bytes": 999}],
                "files": [{"name": "a.txt", "object_id": 5, "size": 10, "state": "sending"}]}


class Served:
    def __init__(self, socket: bool = True, **tcp: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ferry-mgmt-", dir="/tmp"))
        self.agent = StandIn(self.dir / "audit.jsonl")
        self.socket = self.dir / "run" / "agent.sock"
        section = ManagementSection(socket=str(self.socket) if socket else "", **tcp)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.call(start_management(section, ManagementService(self.agent)))

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)
