"""Issue 11 item 4 end to end: content checks that look past the magic number, through real agents
with the demo policy (PDF, PNG, JPEG and text up to 1 MiB, names ending .pdf .png .jpg .txt)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from appliance import read_trail
from link_sender import send_sealed
from file_samples import GIF, HTML, JPEG, PDF, PNG, ZIP
from ferry.lanes.files import make_file_object

pytestmark = pytest.mark.e2e


def test_shallow_content_is_refused_and_clean_files_cross(appliance_factory):
    a = appliance_factory().start()
    refused = {
        "holiday.png": (PNG + ZIP, "trailing_data"),              # a ZIP appended after IEND
        "blank.png": (b"", "empty_file"),                         # 0 bytes, no rule allows empty files
        "report.pdf": (HTML, "extension_mismatch"),               # HTML with script named .pdf
        "readme.png": (PDF, "extension_mismatch"),                # a PDF named .png
        "cut.jpg": (JPEG[:-200], "malformed_content"),            # a JPEG that stops before its end
    }
    clean = {"map.png": PNG, "gate.jpg": JPEG, "patrol.pdf": PDF,
             # an incremental update after the first %%EOF is legitimate, a CRLF after the last too
             "updated.pdf": PDF + b"2 0 obj << >> endobj\ntrailer << /Prev 9 >>\n%%EOF\r\n"}
    for name, (content, _code) in refused.items():
        a.drop(name, content)
    for name, content in clean.items():
        a.drop(name, content)
    # refusals by the builtin rule (item 8): reconcile counts them, the log escapes the name
    hostile_name = "bad\x1b[31m\nname.txt"
    a.drop(hostile_name, b"text\n")
    os.symlink("/etc/passwd", a.outer_spool / "passwd.txt")
    builtin = {hostile_name: "bad_file_name", "passwd.txt": "not_regular_file"}
    refused.update({n: (b"", code) for n, code in builtin.items()})
    everything = set(refused) | set(clean)
    a.wait_for(lambda: everything <= set(a.outcomes()), 60, "every file accounted for")
    out = a.outcomes()
    assert {n for n, v in out.items() if v == "delivered"} == set(clean)
    for name, content in clean.items():
        assert (a.inner_spool / name).read_bytes() == content
    outer = read_trail(a.outer_audit)
    codes = {r["detail"]["name"]: r for r in outer if r["event"] == "object_refused"}
    assert {n: r["code"] for n, r in codes.items()} == {n: code for n, (_c, code) in refused.items()}
    assert "image/png" in codes["readme.png"]["reason"] and "application/pdf" in codes["readme.png"]["reason"]
    assert f"{len(ZIP)} bytes after" in codes["holiday.png"]["reason"]
    # every refusal has an object ID, so reconcile counts them all (item 8)
    assert all(type(r.get("object_id")) is int for r in codes.values())
    a.stop()
    r = subprocess.run([sys.executable, "-m", "ferry", "audit", "reconcile", str(a.outer_audit), str(a.inner_audit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(refused)} refused by the outer agent" in r.stdout
    log = a.log("outer")
    assert "\x1b" not in log
    [line] = [x for x in log.splitlines() if "refused bad" in x]
    assert "refused bad\\u001b[31m\\nname.txt: ferry-files-lane:" in line


def test_a_gif_and_a_zip_under_a_rule_that_allows_them(appliance_factory, tmp_path):
    """Another policy: GIF, ZIP and empty files allowed (allow_empty), with their own trailing-data checks."""
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "policy.yaml").write_text("""
policy: archives
version: 1
default: deny
sources: {outer-spool: {kind: spool}}
destinations: {inner-spool: {kind: spool}}
rules:
  - id: archives
    lane: files
    from: outer-spool
    to: inner-spool
    files:
      max_size: 1048576
      media_types: [image/gif, application/zip, text/plain]
      name_pattern: '[a-z0-9-]+\\.(gif|zip|txt|dat)'
      allow_empty: true
""")
    a = appliance_factory(policy_dir=policy).start()
    a.drop("anim.gif", GIF)
    a.drop("bundle.zip", ZIP)
    a.drop("marker.dat", b"")                                     # allowed: the rule sets allow_empty
    a.drop("anim2.gif", GIF + b"<script>x</script>")             # after the GIF trailer
    a.drop("bundle2.zip", ZIP + b"\0" * 10)                      # after the end of central directory
    a.drop("archive.txt", ZIP)                                    # a ZIP named .txt
    names = {"anim.gif", "bundle.zip", "marker.dat", "anim2.gif", "bundle2.zip", "archive.txt"}
    a.wait_for(lambda: names <= set(a.outcomes()), 60, "every file accounted for")
    out = a.outcomes()
    assert {n for n, v in out.items() if v == "delivered"} == {"anim.gif", "bundle.zip", "marker.dat"}
    assert (a.inner_spool / "marker.dat").read_bytes() == b""
    codes = {r["detail"]["name"]: r["code"] for r in read_trail(a.outer_audit) if r["event"] == "object_refused"}
    assert codes == {"anim2.gif": "trailing_data", "bundle2.zip": "trailing_data", "archive.txt": "extension_mismatch"}


def test_the_inner_agent_refuses_the_same_from_a_compromised_outer_side(appliance_factory):
    """Objects sealed by a sender holding the outer key and announcing the running policy, as a
    compromised outer agent would send them: the inner agent's own checks refuse them."""
    a = appliance_factory().start()
    a.wait_for(lambda: any(r["event"] == "key_accepted" for r in read_trail(a.inner_audit)), 20, "key")
    now = time.time()
    sent = {901: ("holiday.png", PNG + ZIP, "trailing_data"), 902: ("readme.png", PDF, "extension_mismatch"),
            903: ("report.pdf", HTML, "extension_mismatch"), 904: ("blank.png", b"", "empty_file"),
            905: ("cut.jpg", JPEG[:-200], "malformed_content"), 906: ("map.png", PNG, None)}
    objs = []
    for oid, (name, content, _code) in sent.items():
        obj = make_file_object(object_id=oid, name=name, content=content, source="outer-spool",
                               destination="inner-spool", now=now)
        obj.rule = "files-documents"
        objs.append(obj)
    send_sealed(a, objs, now)

    def outcomes():
        return {r.get("object_id"): r for r in read_trail(a.inner_audit)
                if r["event"] in ("object_refused", "object_delivered")}

    a.wait_for(lambda: set(sent) <= set(outcomes()), 30, "the objects accounted for")
    got = outcomes()
    assert {oid: got[oid].get("code") for oid in sent} == {oid: code for oid, (_n, _c, code) in sent.items()}
    assert got[906]["event"] == "object_delivered"
    assert sorted(os.listdir(a.inner_spool)) == ["map.png"]
