"""What the outer agent's VideoIngest uses of its agent (ferry.agents.video_ingest.IngestHost), kept
in memory: the objects it sealed (as the link would carry them) and the audit records it wrote."""
from __future__ import annotations

from ferry.pb import ferry_pb2


class Host:
    def __init__(self) -> None:
        self.objects: list[ferry_pb2.CanonicalObject] = []
        self.records: list[dict] = []
        self.available = True           # the audit trail: set False to have it down

    def seal(self, obj, wall) -> None:
        self.objects.append(ferry_pb2.CanonicalObject.FromString(obj.SerializeToString()))

    def flush_link(self, wall) -> None:
        pass

    def audit(self, **fields) -> bool:
        self.records.append(fields)
        return True

    def audit_available(self) -> bool:
        return self.available
