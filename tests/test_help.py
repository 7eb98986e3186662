"""Issue 16 item 6: help for every argument, no raw markup in help, export defaults to JSON Lines,
policy diff in plain numbers with a summary, progress of long verify/export runs on a terminal."""
from __future__ import annotations

import argparse
import os
import pty
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

from ferry.audit import AuditTrail
from ferry.cli import build_parser
from ferry.cli import main as ferry_main
from ferry.crypto import SM2PrivateKey

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0


def _parsers(p: argparse.ArgumentParser, path: str = "ferry"):
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_argument_has_help_and_help_has_no_markup():
    problems = []
    for path, p in _parsers(build_parser()):
        for a in p._actions:
            if not a.option_strings and not isinstance(a, argparse._SubParsersAction) and not a.help:
                problems.append(f"{path}: {a.dest} has no help")
        text = p.format_help()
        if "`" in text:
            problems.append(f"{path}: backticks in its help")
        if m := re.search(r"\bferry\.[a-z_]+(\.[a-z_]+)*\b", text):
            problems.append(f"{path}: module name {m.group(0)} in its help")
    assert not problems, "\n".join(problems)


def _trail(directory: Path, n: int) -> Path:
    t = AuditTrail(directory, "outer", "o", SM2PrivateKey.generate(), checkpoint_interval=1e9)
    for i in range(n):
        t.append(T0 + i, event="object_sent", verdict="sent", lane="files", object_id=i, epoch=1, blocks=[i])
    t.close(T0 + n)
    return directory


def test_export_defaults_to_json_lines(tmp_path):
    d = _trail(tmp_path / "t", 3)
    assert ferry_main(["audit", "export", str(d), "-o", str(tmp_path / "out.jsonl")]) == 0
    assert (tmp_path / "out.jsonl").read_bytes() == (d / "audit.jsonl").read_bytes()


def test_policy_diff_prints_whole_numbers_and_a_summary(tmp_path, capsys):
    new = tmp_path / "new"
    shutil.copytree(ROOT / "policy" / "demo", new)
    p = new / "policy.yaml"
    p.write_text(p.read_text().replace("max_size: 1048576", "max_size: 2097152"))
    assert ferry_main(["policy", "diff", str(ROOT / "policy" / "demo"), str(new)]) == 0
    out = capsys.readouterr().out
    assert "e+0" not in out
    assert "max_size 1048576 -> 2097152: looser" in out
    changed = [line for line in out.splitlines() if "before, now" in line]
    assert changed
    last = out.splitlines()[-1]
    assert last.startswith("summary: ") and f"{len(changed)} verdicts changed" in last, last


def _on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run ferry with stderr on a pseudo-terminal (stdout a pipe); returns (exit status, what the terminal got)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ferry", *args], stdout=subprocess.DEVNULL, stderr=follower,
                            env=env)
    os.close(follower)
    got = b""
    while True:
        r, _, _ = select.select([leader], [], [], 120)
        if not r:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:          # EIO: the child closed the terminal
            break
        if not chunk:
            break
        got += chunk
    os.close(leader)
    return proc.wait(60), got.decode(errors="replace")


def test_long_verify_and_export_show_progress_on_a_terminal_only(tmp_path):
    d = _trail(tmp_path / "t", 3000)
    rc, tty = _on_a_terminal(["audit", "verify", str(d)])
    assert rc == 0
    assert re.search(r"verifying .*\d+ records", tty), tty
    rc, tty = _on_a_terminal(["audit", "export", str(d), "--format", "csv", "-o", str(tmp_path / "a.csv")])
    assert rc == 0
    assert re.search(r"exporting .*\d+ records", tty), tty
    # not a terminal: no progress lines in a log
    r = subprocess.run([sys.executable, "-m", "ferry", "audit", "verify", str(d)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "verifying" not in r.stderr
