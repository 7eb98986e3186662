"""`ferry policy check` warns about a rule that allows every type from every source (issue 11 item 4)."""
from __future__ import annotations

import subprocess
import sys

from ferry.codecs.media_type import MEDIA_TYPES
from ferry.policy import compile_policy, parse_policy, policy_hash
from ferry.policy.lint import WARNING, broad_rule_findings, lint

ALL = "[" + ", ".join(MEDIA_TYPES) + "]"


def _policy(files_types: str, viid_networks: str = '["10.30.0.0/16"]') -> str:
    return f"""\
policy: t
version: 1
default: deny
sources:
  spool-a: {{kind: spool}}
  platform: {{kind: addresses, addresses: {viid_networks}}}
destinations:
  inner: {{kind: spool}}
  library: {{kind: viid}}
rules:
  - id: anything
    lane: files
    from: spool-a
    to: inner
    files: {{max_size: 1000, media_types: {files_types}, name_pattern: '.*'}}
  - id: records
    lane: viid
    from: platform
    to: library
    viid:
      object_types: [Face, Person, MotorVehicle, NonMotorVehicle, Thing, Scene, Image]
      max_pictures: 4
      max_picture_bytes: 100000
      picture_types: [image/jpeg, image/png]
"""


def _plan(text: str):
    files = {"policy.yaml": text.encode()}
    return compile_policy(parse_policy(files), policy_hash(files))


def test_a_files_rule_with_every_media_type_from_a_spool_is_warned_about():
    [f] = [f for f in lint(_plan(_policy(ALL))) if f.rule == "anything"]
    assert f.level == WARNING and "allows every media type" in f.message and "spool-a" in f.message
    # one type fewer: no warning
    fewer = "[" + ", ".join(t for t in MEDIA_TYPES if t != "application/x-dosexec") + "]"
    assert not [f for f in lint(_plan(_policy(fewer))) if f.rule == "anything"]


def test_a_viid_rule_with_every_type_from_every_address_is_warned_about():
    assert not broad_rule_findings(_plan(_policy("[text/plain]")).policy)
    [f] = broad_rule_findings(_plan(_policy("[text/plain]", '["10.0.0.0/8", "0.0.0.0/0"]')).policy)
    assert f.rule == "records" and "every address" in f.message
    assert broad_rule_findings(_plan(_policy("[text/plain]", '["::/0"]')).policy)


def test_policy_check_prints_the_warning_and_strict_fails(tmp_path):
    (tmp_path / "policy.yaml").write_text(_policy(ALL))
    r = subprocess.run([sys.executable, "-m", "ferry", "policy", "check", str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "warning: rule anything: allows every media type" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "ferry", "policy", "check", "--strict", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1


def test_a_later_rule_that_allows_empty_files_is_not_shadowed():
    rule = ("  - id: {id}\n    lane: files\n    from: spool-a\n    to: inner\n"
            "    files: {{max_size: 1000, media_types: [text/plain], name_pattern: '.*'{extra}}}\n")
    text = _policy("[text/plain]") + rule.format(id="markers", extra=", allow_empty: true")
    assert not [f for f in lint(_plan(text)) if f.rule == "markers"]
    text = _policy("[text/plain]") + rule.format(id="again", extra="")
    assert [f.message for f in lint(_plan(text)) if f.rule == "again"][0].startswith("duplicate of rule anything")
