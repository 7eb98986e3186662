"""End to end on loopback with real agent processes."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from appliance import ROOT, check_trails, read_trail

pytestmark = pytest.mark.e2e

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"


def _run_ferry(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "ferry", *args], capture_output=True, text=True, timeout=timeout)


def test_files_cross_and_refusals_are_audited(appliance_factory):
    a = appliance_factory().start()
    allowed = {
        "report.pdf": PDF[:-6] + os.urandom(300_000) + b"\n%%EOF\n",   # a PDF ends at its last %%EOF
        "notes.txt": b"camera 43090000001320000001 online\n" * 100,
    }
    refused = {
        "setup.pdf": b"MZ\x90\x00" + os.urandom(5000),           # executable behind a .pdf name
        "huge.pdf": PDF + b"x" * (2 << 20),                      # over the policy's 1 MiB
        "bad name!.txt": b"text\n",                              # outside the name pattern
    }
    for name, content in {**allowed, **refused}.items():
        a.drop(name, content)
    os.symlink("/etc/passwd", a.outer_spool / "passwd.txt")     # not a regular file
    everything = set(allowed) | set(refused) | {"passwd.txt"}
    a.wait_for(lambda: everything <= set(a.outcomes()), 30, "all files accounted for")
    out = a.outcomes()
    assert {n for n, v in out.items() if v == "delivered"} == set(allowed)
    assert {n for n, v in out.items() if v == "refused"} == set(refused) | {"passwd.txt"}
    for name, content in allowed.items():
        assert (a.inner_spool / name).read_bytes() == content
    assert sorted(os.listdir(a.inner_spool)) == sorted(allowed)   # no temporary files left behind
    outer = read_trail(a.outer_audit)
    inner = read_trail(a.inner_audit)
    reasons = {r["detail"]["name"]: (r["rule"], r["reason"]) for r in outer if r["event"] == "object_refused"}
    assert "x-dosexec" in reasons["setup.pdf"][1]
    assert "max_size" in reasons["huge.pdf"][1]
    assert reasons["passwd.txt"][0] == "ferry-files-lane" and "symlink" in reasons["passwd.txt"][1]
    assert all(rule and reason for rule, reason in reasons.values())
    # content hash recorded on both sides, and equal
    sent = {r["object_id"]: r["sm3"] for r in outer if r["event"] == "object_sent"}
    got = {r["object_id"]: r["sm3"] for r in inner if r["event"] == "object_delivered"}
    assert sent == got and len(sent) == 2
    # refused files leave the spool; sent files too
    assert os.listdir(a.outer_spool) == []
    a.stop()
    check_trails(a.outer_audit, a.inner_audit, timeout=60)


def test_only_whole_files_are_taken(appliance_factory):
    a = appliance_factory().start()
    path = a.outer_spool / "growing.txt"
    with open(path, "wb") as f:
        for _ in range(5):                      # written over ~1 s, longer than the settle time
            f.write(b"line of text\n" * 1000)
            f.flush()
            time.sleep(0.2)                     # the writer's pace (scenario): a file still growing
    a.wait_for(lambda: "growing.txt" in a.outcomes(), 20, "growing.txt")
    assert (a.inner_spool / "growing.txt").read_bytes() == b"line of text\n" * 5000


def test_name_collision_never_overwrites(appliance_factory):
    a = appliance_factory().start()
    (a.inner_spool / "dup.txt").write_bytes(b"already here\n")
    a.drop("dup.txt", b"new content\n")
    a.wait_for(lambda: "dup.txt" in a.outcomes(), 20, "dup.txt")
    assert (a.inner_spool / "dup.txt").read_bytes() == b"already here\n"
    assert (a.inner_spool / "dup (1).txt").read_bytes() == b"new content\n"


def test_inner_refuses_a_different_policy(appliance_factory):
    a = appliance_factory()
    pol = a.work / "policy" / "policy.yaml"
    inner_policy = a.work / "policy-inner"
    inner_policy.mkdir()
    (inner_policy / "policy.yaml").write_text(pol.read_text() + "\n# changed on the inner side only\n")
    cfg = a.work / "inner.toml"
    cfg.write_text(cfg.read_text().replace('policy = "policy"', 'policy = "policy-inner"'))
    a.start()
    a.drop("a.txt", b"hello\n")
    a.wait_for(lambda: "a.txt" in a.outcomes(), 20, "a.txt")
    assert a.outcomes()["a.txt"] == "refused"
    inner = read_trail(a.inner_audit)
    assert any(r["event"] == "policy_mismatch" and r["verdict"] == "alarm" for r in inner)
    assert not (a.inner_spool / "a.txt").exists()


def test_demo_command(tmp_path):
    work = tmp_path / "demo"
    r = _run_ferry("demo", "--workdir", str(work), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"crossed=5 refused=9 lost=0 signaling=(\d+) frames=(\d+)", last)
    assert m, r.stdout
    assert int(m[1]) >= 3 and int(m[2]) >= 25, r.stdout     # keepalives, a catalog; a second of live video
    # the headline use (issue 13): ferry's SIP camera outside, the police platform inside
    assert "signaling: camera 43090000001320000001 registered outside (digest)" in r.stdout
    assert "the platform sees 43010000001320000001 in ferry's catalog" in r.stdout
    assert re.search(r"live video: INVITE 43010000001320000001 -> 200 in \d+ ms, \d+ RTP packets, "
                     r"\d+ frames decoded by ffmpeg, BYE -> 200", r.stdout), r.stdout
    assert "refused: camera 43090000001320000003 registering with a wrong password -> 403 (wrong_password)" \
        in r.stdout
    assert "refused: INVITE 43010000001310000005 -> 403 (default_deny)" in r.stdout
    # the content checks (issue 11 item 4): what the demo's policy allows by type, but not by content
    summary = {line.split()[0]: line for line in r.stdout.splitlines() if "[outer] rule" in line}
    assert "after the end of the image/png" in summary["site-photo.png"]
    assert "claims image/png, but the content is application/pdf" in summary["readme.png"]
    assert "its frames are identical to the camera's" in r.stdout
    assert "other-city   refused [outer] rule default-deny" in r.stdout
    for side in ("outer", "inner"):
        v = _run_ferry("audit", "verify", str(work / "audit" / side))
        assert v.returncode == 0, v.stdout + v.stderr


def test_agent_reports_config_errors_with_file_and_key(tmp_path):
    cfg = tmp_path / "outer.toml"
    cfg.write_text('[agent]\nname = "x"\nkey = "k"\npeer_public = "p"\npolicy = "."\naudit_dir = "a"\n'
                   '[link]\npeer_host = "127.0.0.1"\npeer_port = "9"\nbogus = 1\n')
    r = _run_ferry("outer", "--config", str(cfg))
    assert r.returncode == 2
    assert f"{cfg}: link.peer_port" in r.stderr and f"{cfg}: link.bogus" in r.stderr


def test_per_source_rate_limit_refuses_the_excess(appliance_factory, tmp_path):
    pol = tmp_path / "rate-policy"

    shutil.copytree(ROOT / "policy" / "demo", pol)
    text = (pol / "policy.yaml").read_text()
    text = text.replace("    lane: files\n", "    lane: files\n    rate: {per_second: 0.2, burst: 2}\n", 1)
    (pol / "policy.yaml").write_text(text)
    a = appliance_factory(policy_dir=pol).start()
    names = [f"n{i}.txt" for i in range(6)]
    for n in names:
        a.drop(n, b"text\n")
    a.wait_for(lambda: set(names) <= set(a.outcomes()), 20, "all six files")
    out = a.outcomes()
    assert sum(v == "delivered" for v in out.values()) == 2, out
    outer = read_trail(a.outer_audit)
    limited = [r for r in outer if r["event"] == "object_refused" and "rate limit" in r["reason"]]
    assert len(limited) == 4 and all(r["rule"] == "files-documents" for r in limited)
