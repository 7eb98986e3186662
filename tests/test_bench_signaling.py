"""bench/signaling.py with tiny numbers: it runs end to end (real agents, the SIP camera, SIPp) and
its last line has the shape the issue asks for. The figures themselves are the bench's business."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("ferry.agents.media_outer", "ferry.agents.reverse_receiver", "ferry.lanes.signaling.inner_media",
         "ferry.agents.sip_outer")


def _missing() -> list[str]:
    out = [t for t in ("ffmpeg", "sipp") if shutil.which(t) is None]
    out += [m for m in PARTS if importlib.util.find_spec(m) is None]
    return out


@pytest.mark.timeout(180)
@pytest.mark.skipif(bool(_missing()), reason=f"needs {', '.join(_missing())}")
def test_bench_signaling_runs_and_prints_its_last_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "signaling.py"), "--requests", "2", "--devices", "50",
                        "--keep", str(tmp_path / "work")], capture_output=True, text=True, timeout=170, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    last = r.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"invite_to_first_frame_p99_ms=(\d+) messages_per_s=(\d+)", last)
    assert m, last
    assert int(m.group(1)) > 0 and int(m.group(2)) > 0, last      # both halves measured something
    assert "invite 2/2" in r.stderr and "keepalives at up to" in r.stderr      # progress on stderr
    assert "50 sealed, 50 accounted for inside (50 delivered)" in r.stdout, r.stdout   # delivered, not refused


def test_bench_signaling_help():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "signaling.py"), "--help"], capture_output=True,
                       text=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "--requests" in r.stdout and "--devices" in r.stdout
    assert "invite_to_first_frame_p99_ms" in r.stdout
