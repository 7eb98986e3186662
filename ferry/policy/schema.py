"""The JSON Schema of policy.yaml, generated from the models.

    python -m ferry.policy.schema            # (re)write policy/schema.json
    python -m ferry.policy.schema --check    # exit 1 if policy/schema.json is stale

Editors use it for completion and checking; the models stay the authority
(some checks, such as strict networks or known time zones, are validators the
schema cannot express).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ferry.policy.models import Policy

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "policy" / "schema.json"
SCHEMA_ID = "https://ferry.invalid/policy/schema.json"


def policy_schema() -> dict[str, Any]:
    """The schema as a dict (by alias: ``from``, not ``from_``)."""
    schema = Policy.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "ferry policy.yaml (format version 1)", **schema}


def schema_text() -> str:
    """The committed form: sorted keys, two-space indent, final newline."""
    return json.dumps(policy_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ferry.policy.schema", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the file is stale instead of writing it")
    p.add_argument("--path", type=Path, default=SCHEMA_PATH)
    args = p.parse_args(argv)
    text = schema_text()
    if args.check:
        try:
            current = args.path.read_text(encoding="utf-8")
        except OSError as e:
            print(f"{args.path}: {e.strerror}", file=sys.stderr)
            return 1
        if current != text:
            print(f"{args.path} is stale: run python -m ferry.policy.schema", file=sys.stderr)
            return 1
        print(f"{args.path}: up to date")
        return 0
    args.path.write_text(text, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
