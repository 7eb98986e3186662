from .audit_support import key, other_key, trail_lines  # noqa: F401  (fixtures)
