"""The JSON Schema for editors (policy/schema.json): generated from the models, and the shipped policies fit it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ferry.policy import schema as schema_mod

try:  # a full validation where jsonschema happens to be installed (it is no dependency)
    import jsonschema
except ImportError:  # pragma: no cover
    jsonschema = None

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_is_up_to_date():
    assert (ROOT / "policy" / "schema.json").read_text(encoding="utf-8") == schema_mod.schema_text()
    assert schema_mod.main(["--check"]) == 0


def test_schema_check_fails_when_stale(tmp_path):
    stale = tmp_path / "schema.json"
    stale.write_text("{}\n")
    assert schema_mod.main(["--check", "--path", str(stale)]) == 1
    assert schema_mod.main(["--path", str(stale)]) == 0
    assert schema_mod.main(["--check", "--path", str(stale)]) == 0


@pytest.mark.parametrize("folder", ["demo", "yiyang"])
def test_shipped_policies_fit_the_schema(folder):
    schema = json.loads((ROOT / "policy" / "schema.json").read_text())
    doc = yaml.safe_load((ROOT / "policy" / folder / "policy.yaml").read_text())
    assert set(doc) <= set(schema["properties"]) and set(schema["required"]) <= set(doc)
    if jsonschema is not None:  # pragma: no cover - only where jsonschema is installed
        jsonschema.validate(doc, schema)
