"""Server reflection on the management server, read with grpc's Python reflection client (grpcurl
is not installable here: not in Debian 12 nor on PyPI): it lists Management, Health and
reflection itself, and describes Management's methods, so `grpcurl -unix ... list` works."""
from __future__ import annotations

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from google.protobuf.descriptor_pool import DescriptorPool

from .served import Served


@pytest.fixture
def served():
    s = Served()
    yield s
    s.close()


def test_reflection_lists_the_services(served):
    with grpc.insecure_channel(f"unix:{served.socket}") as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert services == {"ferry.mgmt.v1.Management", "grpc.health.v1.Health",
                            "grpc.reflection.v1alpha.ServerReflection"}
        pool = DescriptorPool(db)
        m = pool.FindServiceByName("ferry.mgmt.v1.Management")
        assert {x.name for x in m.methods} == {"ApplyPolicy", "Apply", "GetPolicy", "GetStatus", "Flows", "TailAudit",
                                             "Ask"}
        tail = m.methods_by_name["TailAudit"]
        assert tail.output_type.full_name == "ferry.mgmt.v1.AuditLine"
        status = pool.FindMessageTypeByName("ferry.mgmt.v1.AgentStatus")
        assert {"key_epoch", "health", "link", "lanes"} <= set(status.fields_by_name)
