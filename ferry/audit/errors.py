"""The error family of ferry.audit."""


class AuditError(Exception):
    """Any audit failure: bad record, broken chain, unusable trail directory."""


class AuditUnavailable(AuditError):
    """A record could not be written; the caller's lane must stay stopped (fail closed)."""


class RecordError(AuditError, ValueError):
    """A record is malformed: unknown key, wrong type, not canonical, too large."""
