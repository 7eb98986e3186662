"""A blocking client of an agent's management service on its Unix socket."""

from __future__ import annotations

import os
import stat

import grpc

from ferry import limits
from ferry.pb import mgmt_pb2, mgmt_pb2_grpc

GRPC_MESSAGE_MAX = limits.POLICY_BUNDLE_MAX + (64 << 10)


class ManagementError(Exception):
    """A call that failed: ``refused`` is True when the agent answered no (vs. could not be reached)."""

    def __init__(self, socket: str, code: grpc.StatusCode, message: str) -> None:
        self.socket = socket
        self.code = code
        self.refused = code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                    grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
        if code == grpc.StatusCode.UNAVAILABLE:     # words for the operator, not gRPC's
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


class ManagementClient:
    def __init__(self, socket: str | os.PathLike[str], timeout: float = limits.MGMT_CALL_TIMEOUT) -> None:
        self.socket = str(socket)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix:{os.path.abspath(self.socket)}", options=[
            ("grpc.max_send_message_length", GRPC_MESSAGE_MAX),
            ("grpc.max_receive_message_length", GRPC_MESSAGE_MAX)])
        self._stub = mgmt_pb2_grpc.ManagementStub(self._channel)

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ManagementError(self.socket, e.code(), e.details() or "") from None

    def apply_policy(self, bundle: mgmt_pb2.PolicyBundle, rollback: bool = False) -> mgmt_pb2.ApplyResult:
        """Apply ``bundle``; ``rollback`` lets the agent go back to a bundle signed before its own."""
        return self._call(self._stub.Apply, mgmt_pb2.ApplyRequest(bundle=bundle, rollback=rollback))

    def get_policy(self) -> mgmt_pb2.PolicyInfo:
        return self._call(self._stub.GetPolicy, mgmt_pb2.GetPolicyRequest())

    def get_status(self) -> mgmt_pb2.AgentStatus:
        return self._call(self._stub.GetStatus, mgmt_pb2.GetStatusRequest())

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ManagementClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
