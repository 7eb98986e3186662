"""A blocking client of an agent's management service: on its Unix socket, or on TCP with
mutual TLS (``address`` "host:port" and a ``Tls`` of CA, client certificate and key)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ferry import limits
from ferry.pb import mgmt_pb2, mgmt_pb2_grpc

GRPC_MESSAGE_MAX = limits.POLICY_BUNDLE_MAX + (64 << 10)


class ManagementError(Exception):
    """A call that failed: ``refused`` is True when the agent answered no (vs. could not be reached)."""

    def __init__(self, socket: str, code: grpc.StatusCode, message: str, tcp: bool = False) -> None:
        self.socket = socket
        self.code = code
        self.refused = code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                    grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
        if code == grpc.StatusCode.UNAVAILABLE and tcp:
            super().__init__(f"{socket}: cannot reach the agent: {message or 'no answer'}; check that the agent "
                             "runs with this [management] listen address, that its tls_client_ca issued your "
                             "--tls-cert and that --tls-ca issued its certificate")
        elif code == grpc.StatusCode.UNAVAILABLE:     # words for the operator, not gRPC's
            super().__init__(f"{socket}: cannot reach the agent: {unreachable(socket)}; check that the agent "
                             "runs and that this is the [management] socket of its configuration")
        else:
            super().__init__(f"{socket}: {code.name}: {message}")


def unreachable(socket: str) -> str:
    """Why nothing answers on ``socket``, from what is at that path."""
    try:
        st = os.stat(socket)
    except FileNotFoundError:
        return "no such socket"
    except PermissionError:
        return "permission denied on its folder (run as root or the agent's user)"
    except OSError as e:
        return e.strerror or str(e)
    if not stat.S_ISSOCK(st.st_mode):
        return "not a socket"
    if not os.access(socket, os.R_OK | os.W_OK):
        return "permission denied (run as root or the agent's user)"
    return "nobody listens on it (the agent stopped, or another one replaced the socket)"


@dataclass(frozen=True)
class Tls:
    """PEM files of a TCP client: the CA the agent's certificate must chain to, this client's
    certificate and key (the agent's [management] tls_client_ca must have issued them)."""
    ca: str
    cert: str
    key: str

    def credentials(self) -> grpc.ChannelCredentials:
        pems = []
        for path, what in ((self.ca, "--tls-ca"), (self.cert, "--tls-cert"), (self.key, "--tls-key")):
            try:
                with open(path, "rb") as f:
                    pems.append(f.read(1 << 20))
            except OSError as e:
                raise ManagementError(path, grpc.StatusCode.INVALID_ARGUMENT,
                                      f"cannot read {what}: {e.strerror}") from None
        return grpc.ssl_channel_credentials(root_certificates=pems[0], private_key=pems[2], certificate_chain=pems[1])


class ManagementClient:
    def __init__(self, socket: str | os.PathLike[str] = "", timeout: float = limits.MGMT_CALL_TIMEOUT, *,
                 address: str = "", tls: Tls | None = None) -> None:
        self.socket = str(socket) if socket else address
        self.tcp = bool(address) and not socket
        self.timeout = timeout
        options = [("grpc.max_send_message_length", GRPC_MESSAGE_MAX),
                   ("grpc.max_receive_message_length", GRPC_MESSAGE_MAX)]
        if address:
            if tls is None:
                raise ManagementError(address, grpc.StatusCode.INVALID_ARGUMENT,
                                      "a TCP address needs --tls-ca, --tls-cert and --tls-key (mutual TLS)")
            self._channel = grpc.secure_channel(address, tls.credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(f"unix:{os.path.abspath(self.socket)}", options=options)
        self._stub = mgmt_pb2_grpc.ManagementStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ManagementError(self.socket, e.code(), e.details() or "", self.tcp) from None

    def apply_policy(self, bundle: mgmt_pb2.PolicyBundle, rollback: bool = False) -> mgmt_pb2.ApplyResult:
        """Apply ``bundle``; ``rollback`` lets the agent go back to a bundle signed before its own."""
        return self._call(self._stub.Apply, mgmt_pb2.ApplyRequest(bundle=bundle, rollback=rollback))

    def get_policy(self) -> mgmt_pb2.PolicyInfo:
        return self._call(self._stub.GetPolicy, mgmt_pb2.GetPolicyRequest())

    def get_status(self) -> mgmt_pb2.AgentStatus:
        return self._call(self._stub.GetStatus, mgmt_pb2.GetStatusRequest())

    def flows(self) -> mgmt_pb2.FlowList:
        return self._call(self._stub.Flows, mgmt_pb2.FlowsRequest())

    def ask(self, request: str, device_id: str, params: dict[str, str], operator: str, *, address: str = "",
            destination: str = "") -> mgmt_pb2.AskReply:
        """A reverse-lane request through an inner agent (its [reverse] section)."""
        return self._call(self._stub.Ask, mgmt_pb2.AskRequest(request=request, device_id=device_id, params=params,
                                                              operator=operator, address=address,
                                                              destination=destination))

    def health(self, service: str = "") -> str:
        """The health service's answer: "SERVING", "NOT_SERVING", ..."""
        r = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))

    def tail_audit(self, last: int, follow: bool = False) -> Iterator[str]:
        """The trail's last ``last`` records (JSON lines), then with ``follow`` each new one."""
        try:
            for line in self._stub.TailAudit(mgmt_pb2.TailAuditRequest(last=last, follow=follow),
                                             timeout=None if follow else self.timeout):
                yield line.json
        except grpc.RpcError as e:
            raise ManagementError(self.socket, e.code(), e.details() or "", self.tcp) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ManagementClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
