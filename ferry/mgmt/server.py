"""The management service each agent serves on a local Unix socket (grpc.aio).

It runs inside the agent's own asyncio loop, so a reload never races the
deciders. The agent is a ``ferry.mgmt.host.ManagedAgent``: it verifies,
compiles and swaps a bundle itself; this module only carries the calls and
maps a refusal's code to a gRPC status. A large policy takes seconds to
verify and compile, so that part (``prepare_bundle``) runs in a worker thread
while the loop goes on moving data and answering status calls; the checks,
the swap and the records (``commit_bundle``) run on the loop. One apply at a
time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from ferry import limits
from ferry.mgmt.host import DENIED, ApplyRefused, ManagedAgent
from ferry.pb import mgmt_pb2, mgmt_pb2_grpc

log = logging.getLogger("ferry.mgmt")

GRPC_MESSAGE_MAX = limits.POLICY_BUNDLE_MAX + (64 << 10)
UNIX_PATH_MAX = 107            # sun_path holds 108 bytes with the terminating NUL
_STATUS = {"invalid_policy": grpc.StatusCode.INVALID_ARGUMENT, "audit_unavailable": grpc.StatusCode.UNAVAILABLE,
           "kernel_rules": grpc.StatusCode.FAILED_PRECONDITION, "older_bundle": grpc.StatusCode.FAILED_PRECONDITION,
           "policy_not_stored": grpc.StatusCode.FAILED_PRECONDITION}


def refused_status(code: str) -> grpc.StatusCode:
    """The gRPC status of an ApplyRefused code (other bundle errors: INVALID_ARGUMENT)."""
    if code in DENIED:
        return grpc.StatusCode.PERMISSION_DENIED
    return _STATUS.get(code, grpc.StatusCode.INVALID_ARGUMENT)


class ManagementService(mgmt_pb2_grpc.ManagementServicer):
    def __init__(self, agent: ManagedAgent, clock: Callable[[], float] = time.time) -> None:
        self.agent = agent
        self.clock = clock
        self.applying = asyncio.Lock()

    async def ApplyPolicy(self, request, context):
        return await self._apply(request, False, context)

    async def Apply(self, request, context):
        return await self._apply(request.bundle, request.rollback, context)

    async def _apply(self, bundle: mgmt_pb2.PolicyBundle, rollback: bool, context):
        async with self.applying:
            try:
                prepare = getattr(self.agent, "prepare_bundle", None)
                commit = getattr(self.agent, "commit_bundle", None)
                if prepare is None or commit is None:
                    return self.agent.apply_bundle(bundle, self.clock(), rollback)
                prepared = await asyncio.to_thread(prepare, bundle)     # verify + compile, off the loop
                return commit(prepared, self.clock(), rollback)
            except ApplyRefused as e:
                await context.abort(refused_status(e.code), f"{e.code}: {e}")

    async def GetPolicy(self, request, context):
        return self.agent.policy_info()

    async def GetStatus(self, request, context):
        return agent_status(self.agent)


def _counters(values: dict[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in values.items() if isinstance(v, int) and v >= 0}


def agent_status(a: ManagedAgent) -> mgmt_pb2.AgentStatus:
    """What GetStatus answers: policy, counters (flat and per lane), uptime, the link as the agent sees it.
    An agent without `uptime`, `link_view` or `lane_counters` leaves those fields empty."""
    s = mgmt_pb2.AgentStatus(role=a.role, name=a.name, policy=a.policy_info(), counters=_counters(a.status_counters()),
                             started_at=a.started_at, audit_available=a.audit_available())
    if (uptime := getattr(a, "uptime", None)) is not None:
        s.uptime = max(0.0, uptime())
    if (link_view := getattr(a, "link_view", None)) is not None:
        v = link_view()
        s.link.state, s.link.since, s.link.detail = v.state, v.since, v.detail
    if (lanes := getattr(a, "lane_counters", None)) is not None:
        for lane, values in lanes().items():
            s.lanes[lane].counters.update(_counters(values))
    return s


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
