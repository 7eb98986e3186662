"""A policy reload while cameras stream: the stream that stays allowed crosses
whole (every frame, bit-exact), the revoked one stops with one refusal record."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from appliance import ROOT, free_udp_port, read_trail
from waiting import file_size, wait_stable
from ferry.camera import Camera, framemd5, make_source, ps_packets
from ferry.policy import load_plan

pytestmark = pytest.mark.e2e

KEPT, REVOKED = "43090000001320000001", "43090000001310000002"     # type 132 stays, type 131 goes
DEMO_TYPES, BOTH_TYPES = 'type: ["132"]', 'type: ["131", "132"]'


def _ferry(*args):
    return subprocess.run([sys.executable, "-m", "ferry", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def source(tmp_path_factory):
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")

    return make_source(tmp_path_factory.mktemp("cam"), "h264", size="320x240", seconds=6, rate=25)


def test_reload_keeps_allowed_streams_and_ends_revoked_ones(appliance_factory, tmp_path, source):
    v1 = tmp_path / "v1"
    shutil.copytree(ROOT / "policy" / "demo", v1, ignore=shutil.ignore_patterns("tests"))
    text = (v1 / "policy.yaml").read_text()
    assert DEMO_TYPES in text
    (v1 / "policy.yaml").write_text(text.replace(DEMO_TYPES, BOTH_TYPES))      # v1 lets both types in
    v2 = tmp_path / "v2"
    shutil.copytree(ROOT / "policy" / "demo", v2, ignore=shutil.ignore_patterns("tests"))   # v2: type 132 only
    a = appliance_factory(management=True, policy_dir=v1)
    ports = {}
    for name, device in (("kept", KEPT), ("revoked", REVOKED)):
        ports[name] = free_udp_port()
        a.append_config("outer", f'[[video]]\nname = "{name}"\ntransport = "udp"\n'
                                 f'listen = "127.0.0.1:{ports[name]}"\ndevice_id = "{device}"\n'
                                 'payload = "ps"\ndestination = "police-vms"\n')
    a.append_config("inner", '[[video_output]]\ndestination = "police-vms"\nform = "ps"\ntransport = "file"\n'
                             'path = "recordings/{stream}.ps"\n')
    a.start()
    cams = [Camera(ps_packets(source, "h264", ssrc=0x1000 + i), ("127.0.0.1", ports[n]), realtime=True).start()
            for i, n in enumerate(("kept", "revoked"))]
    # both streams cross under v1 before the reload
    a.wait_for(lambda: {n for n in ("kept", "revoked") for r in read_trail(a.inner_audit)
                        if r["event"] == "stream_started" and r.get("flow", "").startswith(n + "-")}
               == {"kept", "revoked"}, 30, "both streams started on the inner agent")
    bundle = tmp_path / "v2.ferrypolicy"
    r = _ferry("policy", "sign", str(v2), "--key", str(a.admin_key), "-o", str(bundle))
    assert r.returncode == 0, r.stdout + r.stderr
    r = _ferry("policy", "apply", str(bundle), "--socket", str(a.inner_socket), "--socket", str(a.outer_socket))
    assert r.returncode == 0, r.stdout + r.stderr
    for c in cams:
        c.join()
    # the last access units cross: the kept stream's recording stops growing (stopping the inner
    # agent then ends its stream)
    recordings = a.work / "recordings"
    wait_stable(lambda: sorted((p.name, file_size(p)) for p in recordings.glob("kept-*.ps")), 1.0, 30,
                "the kept stream's recording")
    a.stop()
    outer, inner = read_trail(a.outer_audit), read_trail(a.inner_audit)
    new_hash = load_plan(v2).hash.hex()
    for trail in (outer, inner):
        applied = [r for r in trail if r["event"] == "policy_applied"]
        assert len(applied) == 1 and applied[0]["detail"]["new_hash"] == new_hash

    def flows(trail, event, name):
        return [r for r in trail if r["event"] == event and r.get("flow", "").startswith(name + "-")]

    # the stream that stays allowed: no refusal, every frame of the camera, bit-exact
    assert not flows(outer + inner, "stream_refused", "kept")
    kept_file = a.work / "recordings" / f"{flows(inner, 'stream_ended', 'kept')[0]['flow']}.ps"
    assert framemd5(kept_file) == framemd5(source)
    # the revoked stream: refused once per side at most (the inner agent re-decides what was in
    # flight under the new plan), after the switch, by the rule the new policy leaves
    refused = flows(outer + inner, "stream_refused", "revoked")
    assert refused and len({r["agent"] for r in refused}) == len(refused), refused
    assert all(r["rule"] == "default-deny" and r["policy_hash"] == new_hash for r in refused), refused
    ended = flows(inner, "stream_ended", "revoked")
    assert ended and 0 < ended[0]["detail"]["access_units"] < len(framemd5(source))
