"""The generated protobuf code is reproducible from proto/ by the pinned protoc."""
import subprocess
import sys
from pathlib import Path

from ferry.pb import ferry_pb2

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_matches_a_fresh_generation():
    r = subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_canonical_object_round_trip():
    obj = ferry_pb2.CanonicalObject(object_id=7, lane="files", destination="inner-spool")
    obj.file.name = "a.txt"
    obj.file.content = b"x"
    back = ferry_pb2.CanonicalObject.FromString(obj.SerializeToString())
    assert back == obj and back.WhichOneof("body") == "file"
