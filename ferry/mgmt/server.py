"""The management service each agent serves on a local Unix socket and, when
``[management] listen`` is set, on TCP with mutual TLS (grpc.aio). The same
server carries the standard health service (``grpc.health.v1.Health``: the
overall service "" and "ferry.mgmt.v1.Management" are NOT_SERVING while the
link is down or the audit trail cannot be written) and server reflection.

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
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ferry import limits
from ferry.config import ManagementSection, split_host_port
from ferry.mgmt.host import DENIED, ApplyRefused, ManagedAgent
from ferry.pb import mgmt_pb2, mgmt_pb2_grpc

SERVICE_NAME = mgmt_pb2.DESCRIPTOR.services_by_name["Management"].full_name   # "ferry.mgmt.v1.Management"
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING

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
        self.following = 0              # TailAudit calls following the trail now

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

    async def Flows(self, request, context):
        return agent_flows(self.agent)

    async def Ask(self, request, context):
        """A reverse-lane request (inner agent with [reverse]): decided, audited, sealed."""
        ask = getattr(self.agent, "ask", None)
        reply = ask(request) if ask is not None else None
        if reply is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "this agent sends no reverse requests (an inner agent with a [reverse] section does)")
        return reply

    async def TailAudit(self, request, context):
        path_of = getattr(self.agent, "audit_path", None)
        if path_of is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this agent has no audit trail to tail")
        path = Path(path_of())
        last = min(request.last, limits.AUDIT_TAIL_MAX)
        if request.follow and self.following >= limits.AUDIT_TAIL_FOLLOWERS_MAX:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{self.following} clients already follow the audit trail "
                                f"(at most {limits.AUDIT_TAIL_FOLLOWERS_MAX}); try again later")
        try:
            lines, offset = await asyncio.to_thread(read_tail, path, last)     # off the loop: up to 8 MiB
        except OSError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"cannot read the audit trail {path}: {e.strerror}")
        for line in lines:
            yield mgmt_pb2.AuditLine(json=line)
        if not request.follow:
            return
        loop = asyncio.get_running_loop()
        until = loop.time() + limits.AUDIT_TAIL_FOLLOW_MAX
        self.following += 1
        try:
            while loop.time() < until:
                await asyncio.sleep(limits.AUDIT_TAIL_POLL)
                try:
                    lines, offset = read_new(path, offset)
                except OSError:
                    continue            # the trail is down for now: the records come when it is back
                for line in lines:
                    yield mgmt_pb2.AuditLine(json=line)
        finally:
            self.following -= 1


def read_tail(path: Path, last: int) -> tuple[list[str], int]:
    """The last ``last`` whole lines of ``path`` (from at most AUDIT_TAIL_READ_MAX bytes back)
    and the offset after them, where following goes on."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        start = max(0, end - limits.AUDIT_TAIL_READ_MAX)
        f.seek(start)
        data = f.read(end - start)
    cut = data.rfind(b"\n") + 1            # a record being written: not yet
    whole = data[:cut].split(b"\n")[:-1]
    if start > 0 and whole:
        whole = whole[1:]                   # the first line read may be cut
    picked = whole[max(0, len(whole) - last):] if last else []
    return [x.decode("utf-8", "replace") for x in picked], start + cut


def read_new(path: Path, offset: int) -> tuple[list[str], int]:
    """Whole lines written after ``offset`` (at most AUDIT_TAIL_READ_MAX bytes at a time)."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        if end < offset:                    # replaced by a shorter file: start over at its end
            return [], end
        f.seek(offset)
        data = f.read(min(end - offset, limits.AUDIT_TAIL_READ_MAX))
    cut = data.rfind(b"\n") + 1
    return [x.decode("utf-8", "replace") for x in data[:cut].split(b"\n")[:-1]], offset + cut


def agent_flows(a: ManagedAgent) -> mgmt_pb2.FlowList:
    """What Flows answers: the agent's ``flows()`` (video streams and files in flight), if it has one."""
    out = mgmt_pb2.FlowList(role=a.role, name=a.name)
    if (flows := getattr(a, "flows", None)) is not None:
        f = flows()
        out.streams.extend(mgmt_pb2.VideoFlow(**s) for s in f.get("streams", ()))
        out.files.extend(mgmt_pb2.FileFlow(**x) for x in f.get("files", ()))
    return out


def health_of(a: ManagedAgent) -> tuple[bool, str]:
    """SERVING (True) while the link is up and the audit trail can be written; else why not."""
    if not a.audit_available():
        return False, "audit trail unavailable"
    if (link_view := getattr(a, "link_view", None)) is not None:
        v = link_view()
        if v.state != "up":
            return False, f"link {v.state}: {v.detail}"
    return True, "link up, audit trail writable"


def _counters(values: dict[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in values.items() if isinstance(v, int) and v >= 0}


def agent_status(a: ManagedAgent) -> mgmt_pb2.AgentStatus:
    """What GetStatus answers: policy, counters (flat and per lane), uptime, the link as the agent sees it.
    An agent without `uptime`, `link_view` or `lane_counters` leaves those fields empty."""
    s = mgmt_pb2.AgentStatus(role=a.role, name=a.name, policy=a.policy_info(), counters=_counters(a.status_counters()),
                             started_at=a.started_at, audit_available=a.audit_available())
    s.health = "SERVING" if health_of(a)[0] else "NOT_SERVING"
    if (epoch := getattr(a, "key_epoch", None)) is not None:
        s.key_epoch = max(0, int(epoch()))
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


class HealthWatch:
    """Keeps the health service's answers in step with the agent (every MGMT_HEALTH_INTERVAL)."""

    def __init__(self, agent: ManagedAgent, servicer: health.aio.HealthServicer) -> None:
        self.agent, self.servicer = agent, servicer
        self.serving: bool | None = None
        self.task: asyncio.Task[None] | None = None

    async def update(self) -> None:
        serving, why = health_of(self.agent)
        if serving != self.serving:
            self.serving = serving
            status = SERVING if serving else NOT_SERVING
            log.info("health %s: %s", "SERVING" if serving else "NOT_SERVING", why)
            for name in ("", SERVICE_NAME):
                await self.servicer.set(name, status)

    async def run(self) -> None:
        while True:
            try:
                await self.update()
            except Exception:           # a bug here must not stop the agent: the log has it
                log.exception("health check failed")
            await asyncio.sleep(limits.MGMT_HEALTH_INTERVAL)


def _read_pem(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise OSError(f"{path} ([management] {key}): cannot read: {e.strerror}") from None
    if b"-----BEGIN " not in data:
        raise OSError(f"{path} ([management] {key}): not a PEM file")
    return data


def tls_credentials(section: ManagementSection) -> grpc.ServerCredentials:
    """Mutual TLS: the agent's certificate and key, and the CA its clients' certificates must chain to."""
    cert, key = _read_pem(section.tls_cert, "tls_cert"), _read_pem(section.tls_key, "tls_key")
    ca = _read_pem(section.tls_client_ca, "tls_client_ca")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


class ManagementServer:
    """One grpc.aio server: Management, Health and reflection on the Unix socket and/or TCP."""

    def __init__(self, server: grpc.aio.Server, socket: str, tcp_port: int, watch: HealthWatch) -> None:
        self.server, self.socket, self.tcp_port, self.watch = server, socket, tcp_port, watch

    async def stop(self) -> None:
        if self.watch.task is not None:
            self.watch.task.cancel()
        await self.watch.servicer.enter_graceful_shutdown()
        await stop_server(self.server, self.socket)


async def start_management(section: ManagementSection, service: ManagementService) -> ManagementServer:
    """Serve ``service`` with health and reflection on ``section.socket`` (Unix, 0600) and on
    ``section.listen`` (TCP, mutual TLS), whichever are set. OSError names what failed."""
    creds = tls_credentials(section) if section.listen else None     # unreadable files: before anything
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", GRPC_MESSAGE_MAX),
                                      ("grpc.max_send_message_length", GRPC_MESSAGE_MAX),
                                      ("grpc.so_reuseport", 0)])
    mgmt_pb2_grpc.add_ManagementServicer_to_server(service, server)
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, HEALTH_NAME, reflection.SERVICE_NAME), server)
    watch = HealthWatch(service.agent, servicer)
    await watch.update()
    tcp_port = 0
    if creds is not None:
        host, port = split_host_port(section.listen)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            tcp_port = server.add_secure_port(address, creds)
        except RuntimeError as e:
            raise OSError(f"cannot listen on [management] listen = {section.listen!r}: {e}") from None
        if tcp_port == 0:
            raise OSError(f"cannot listen on [management] listen = {section.listen!r} (address in use?)")
    if section.socket:
        await _listen_unix(server, Path(section.socket))
    else:
        await server.start()
    watch.task = asyncio.get_running_loop().create_task(watch.run())
    if section.listen:
        log.info("management service on tcp:%s (mutual TLS)", section.listen)
    return ManagementServer(server, section.socket, tcp_port, watch)


async def _listen_unix(server: grpc.aio.Server, path: Path) -> None:
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise OSError(f"management socket path {path} is longer than {UNIX_PATH_MAX} bytes")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _clear_stale_socket(path)
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


async def start_server(path: str | os.PathLike[str], service: ManagementService) -> grpc.aio.Server:
    """Serve ``service`` alone on the Unix socket ``path`` (mode 0600, parent created 0700)."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", GRPC_MESSAGE_MAX),
                                      ("grpc.max_send_message_length", GRPC_MESSAGE_MAX)])
    mgmt_pb2_grpc.add_ManagementServicer_to_server(service, server)
    await _listen_unix(server, Path(path))
    return server


async def stop_server(server: grpc.aio.Server, path: str | os.PathLike[str]) -> None:
    await server.stop(grace=1.0)
    if not path:
        return
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
