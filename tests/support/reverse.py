"""The reverse ferry in end-to-end tests: its keys, its config sections, a policy with reverse rules."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from appliance import Appliance, free_udp_port
from ferry.crypto.keys import init_keys

CAMERA = "43090000001320000001"          # named by the policy's reverse-cameras source
OTHER_CAMERA = "44010000001320000099"    # named by no source (region 4401)


def ptz_cmd(instruction: int, h: int = 0, v: int = 0, z: int = 0) -> str:
    b = bytes([0xA5, 0x0F, 0x01, instruction, h, v, z << 4])
    return (b + bytes([sum(b) & 0xFF])).hex().upper()


def reverse_policy(folder: Path, *, rules: bool = True, rate: tuple[float, int] | None = None,
                   requests: str = "[start_stream, stop_stream, catalog_query]") -> Path:
    """policy/demo plus an operators source (loopback), a camera source and (``rules``) a reverse
    rule from the operators to ``outer-platform``."""
    text = (Path(__file__).resolve().parents[2] / "policy" / "demo" / "policy.yaml").read_text()
    text = text.replace("destinations:\n", f"""  operators:
    kind: addresses
    description: inner operators' workstations
    addresses: ["127.0.0.0/8"]
  reverse-cameras:
    kind: devices
    description: the cameras an operator may ask for
    ids: ["{CAMERA}"]

destinations:
  outer-platform:
    kind: platform
    description: the outer video platform that serves reverse requests
""", 1)
    if rules:
        rate_text = f"\n    rate:\n      per_second: {rate[0]}\n      burst: {rate[1]}" if rate else ""
        text += f"""  - id: reverse-operators
    description: operators start and stop streams
    lane: reverse
    from: operators
    to: outer-platform{rate_text}
    reverse:
      requests: {requests}
"""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "policy.yaml").write_text(text)
    return folder


def add_reverse(a: Appliance, *, peer_port: int | None = None, outer_host: str = "127.0.0.1",
                inner_host: str = "127.0.0.1") -> int:
    """Reverse keys and [reverse] sections on both agents; the outer listens on a new port, the
    inner sends to ``peer_port`` (default: that port). Returns the outer's listening port."""
    init_keys(a.work / "keys", ("inner-reverse", "outer-reverse"))
    port = free_udp_port()
    a.reverse_port = port
    a.append_config("outer", f"""
[reverse]
listen_host = "{outer_host}"
listen_port = {port}
key = "keys/outer-reverse.key"
peer_public = "keys/inner-reverse.pub"
""")
    a.append_config("inner", f"""
[reverse]
peer_host = "{outer_host}"
peer_port = {peer_port or port}
bind_host = "{inner_host}"
key = "keys/inner-reverse.key"
peer_public = "keys/outer-reverse.pub"
destination = "outer-platform"
""")
    return port


def ask(a: Appliance, request: str, device: str, operator: str, *params: str,
        source: str = "127.0.0.1") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ferry", "ask", request, device, "--operator", operator,
           "--socket", str(a.inner_socket), "--from", source]
    for p in params:
        cmd += ["--param", p]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
