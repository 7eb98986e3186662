"""ferry.audit: SM3 hash-chained, SM2-checkpointed audit trails (DESIGN.md 2.6-2.8, 8).

``records`` (pure) defines fields, canonical form and the chain hash; ``trail`` writes
one agent's trail (the only module here that touches files, fail closed); ``verify``
proves a trail complete and untampered; ``reconcile`` accounts for every object
across the two sides; ``export`` and ``cli`` serve auditors; ``budget`` (pure) caps the
link's refusal records per reason and hour, summing up the rest.
"""

from ferry.audit.errors import AuditError, AuditUnavailable, RecordError
from ferry.audit.reconcile import ReconcileReport, reconcile
from ferry.audit.trail import AuditTrail
from ferry.audit.verify import VerifyResult, verify_dir, verify_lines

__all__ = [
    "AuditError",
    "AuditTrail",
    "AuditUnavailable",
    "ReconcileReport",
    "RecordError",
    "VerifyResult",
    "reconcile",
    "verify_dir",
    "verify_lines",
]
