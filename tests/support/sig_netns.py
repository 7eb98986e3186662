"""The whole appliance in six network namespaces, for the signaling tests of issue 13 (part "sig-e2e"):

    outer host ── outer box ══ forward link ══> inner box ── inner host
    (SIPp devices,  (outer     (its own ns)      (inner      (SIPp platform,
     test camera)    agent)  <══ reverse link ══  agent)      RTP receiver)
                               (its own ns, own veth pairs)

    oh h-o 10.241.1.2 ── o-h 10.241.1.1 ob
    ob o-f 10.241.2.1 ── f-o 10.241.2.2 lf f-i 10.241.3.2 ── i-f 10.241.3.1 ib     (forward ferry)
    ib i-r 10.241.4.1 ── r-i 10.241.4.2 lr r-o 10.241.5.2 ── o-r 10.241.5.1 ob     (reverse ferry)
    ib i-h 10.241.6.1 ── h-i 10.241.6.2 ih

No namespace forwards but the two link namespaces, and each of those forwards one ferry's UDP
port in one direction only. nftables counters in the four middle namespaces count what went the
other way or was not the ferry (`Topology.counters()`); neighbours are static (a one-way link
cannot answer ARP) and IPv6 is off on every veth (no autoconfiguration chatter).

Also here: tshark captures on any interface of a namespace (`Capture`, libpcap format), a small
pcap reader (`read_pcap`), the tokens of SIP messages that must not cross (`sip_tokens`), SIPp in
a namespace (`NsSipp`) and an RTP receiver process in a namespace (`RtpReceiver`; this file run as
a script is that receiver).
"""
from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from netns import add_namespaces, delete_namespaces, mac, sh

OUTER_HOST, OUTER_BOX = "10.241.1.2", "10.241.1.1"         # devices and camera; ferry's SIP side outside
FWD_OUT, FWD_LO, FWD_LI, FWD_IN = "10.241.2.1", "10.241.2.2", "10.241.3.2", "10.241.3.1"
REV_IN, REV_LI, REV_LO, REV_OUT = "10.241.4.1", "10.241.4.2", "10.241.5.2", "10.241.5.1"
INNER_BOX, INNER_HOST = "10.241.6.1", "10.241.6.2"         # ferry's SIP side inside; platform and viewer

# (namespace key, device, address) of each veth end, and the pairs
_ENDS = {"h-o": ("oh", OUTER_HOST), "o-h": ("ob", OUTER_BOX), "o-f": ("ob", FWD_OUT), "f-o": ("lf", FWD_LO),
         "f-i": ("lf", FWD_LI), "i-f": ("ib", FWD_IN), "i-r": ("ib", REV_IN), "r-i": ("lr", REV_LI),
         "r-o": ("lr", REV_LO), "o-r": ("ob", REV_OUT), "i-h": ("ib", INNER_BOX), "h-i": ("ih", INNER_HOST)}
_PAIRS = (("h-o", "o-h"), ("o-f", "f-o"), ("f-i", "i-f"), ("i-r", "r-i"), ("r-o", "o-r"), ("i-h", "h-i"))

# the link namespaces: one ferry port, one direction; everything else counted and dropped
LINK_RULES = """
table inet sig {
  counter ferry { }
  counter other { }
  counter back { }
  counter local { }
  chain forward {
    type filter hook forward priority 0; policy drop;
    iifname "%(src_if)s" oifname "%(dst_if)s" ip saddr %(src)s ip daddr %(dst)s udp dport %(port)d \
      counter name ferry accept
    iifname "%(src_if)s" counter name other drop
    iifname "%(dst_if)s" counter name back drop
  }
  chain input {
    type filter hook input priority 0; policy drop;
    iifname "lo" accept
    counter name local drop
  }
}
"""
# the boxes: on each link interface, in only the ferry that comes that way, out only the one that goes
BOX_RULES = """
table inet sig {
  counter in_wrong_way { }
  counter in_other { }
  counter out_wrong_way { }
  counter out_other { }
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "%(send_if)s" counter name in_wrong_way drop
    iifname "%(recv_if)s" ip saddr %(recv_from)s udp dport %(recv_port)d accept
    iifname "%(recv_if)s" counter name in_other drop
  }
  chain output {
    type filter hook output priority 0; policy accept;
    oifname "%(send_if)s" ip daddr %(send_to)s udp dport %(send_port)d accept
    oifname "%(send_if)s" counter name out_other drop
    oifname "%(recv_if)s" counter name out_wrong_way drop
  }
}
"""


@dataclass
class Topology:
    ns: dict[str, str]          # oh ob lf lr ib ih -> namespace name

    def apply_rules(self, forward_port: int, reverse_port: int) -> None:
        """The nftables tables of the link namespaces and the boxes (ports known once the appliance is made)."""
        n = self.ns
        sh("nft", "-f", "-", ns=n["lf"], stdin=LINK_RULES % {"src_if": "f-o", "dst_if": "f-i", "src": FWD_OUT,
                                                             "dst": FWD_IN, "port": forward_port})
        sh("nft", "-f", "-", ns=n["lr"], stdin=LINK_RULES % {"src_if": "r-i", "dst_if": "r-o", "src": REV_IN,
                                                             "dst": REV_OUT, "port": reverse_port})
        sh("nft", "-f", "-", ns=n["ob"], stdin=BOX_RULES % {
            "send_if": "o-f", "send_to": FWD_IN, "send_port": forward_port,
            "recv_if": "o-r", "recv_from": REV_IN, "recv_port": reverse_port})
        sh("nft", "-f", "-", ns=n["ib"], stdin=BOX_RULES % {
            "send_if": "i-r", "send_to": REV_OUT, "send_port": reverse_port,
            "recv_if": "i-f", "recv_from": FWD_OUT, "recv_port": forward_port})

    def counters(self) -> dict[str, int]:
        """'lf.ferry', 'lf.other', 'lf.back', 'lf.local', the same for lr, and ob./ib. in_wrong_way,
        in_other, out_wrong_way, out_other: packets counted so far."""
        out: dict[str, int] = {}
        for key in ("lf", "lr", "ob", "ib"):
            doc = json.loads(sh("nft", "-j", "list", "counters", "table", "inet", "sig", ns=self.ns[key]))
            for x in doc["nftables"]:
                if "counter" in x:
                    out[f"{key}.{x['counter']['name']}"] = x["counter"]["packets"]
        return out


@contextmanager
def six_namespaces(tag: str | None = None) -> Iterator[Topology]:
    """The six namespaces above, deleted on exit (with every veth in them)."""
    tag = tag or f"{os.getpid() % 100000}"
    names = {k: f"s{k}{tag}" for k in ("oh", "ob", "lf", "lr", "ib", "ih")}
    try:
        add_namespaces(names)
        for a, b in _PAIRS:
            sh("ip", "link", "add", a, "netns", names[_ENDS[a][0]], "type", "veth", "peer", "name", b,
               "netns", names[_ENDS[b][0]])
        for dev, (key, addr) in _ENDS.items():
            ns = names[key]
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", ns=ns)
            sh("ip", "addr", "add", f"{addr}/24", "dev", dev, ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
        for key in ("lf", "lr"):
            sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=names[key])
        # each ferry's one route and the static neighbours on its way
        sh("ip", "route", "add", f"{FWD_IN}/32", "via", FWD_LO, ns=names["ob"])
        sh("ip", "neigh", "replace", FWD_LO, "lladdr", mac(names["lf"], "f-o"), "dev", "o-f", "nud", "permanent",
           ns=names["ob"])
        sh("ip", "neigh", "replace", FWD_IN, "lladdr", mac(names["ib"], "i-f"), "dev", "f-i", "nud", "permanent",
           ns=names["lf"])
        sh("ip", "route", "add", f"{REV_OUT}/32", "via", REV_LI, ns=names["ib"])
        sh("ip", "neigh", "replace", REV_LI, "lladdr", mac(names["lr"], "r-i"), "dev", "i-r", "nud", "permanent",
           ns=names["ib"])
        sh("ip", "neigh", "replace", REV_OUT, "lladdr", mac(names["ob"], "o-r"), "dev", "r-o", "nud", "permanent",
           ns=names["lr"])
        yield Topology(names)
    finally:
        delete_namespaces(names)


# -- captures -----------------------------------------------------------------------------------
class Capture:
    """tshark on one interface of one namespace, written as libpcap (read_pcap reads it)."""

    def __init__(self, ns: str, iface: str, path: Path) -> None:
        self.ns, self.iface, self.path = ns, iface, Path(path)
        self.log = self.path.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Capture":
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "tshark", "-n", "-q", "-i", self.iface,
                                          "-F", "pcap", "-w", str(self.path)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while b"Capturing on" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"tshark on {self.ns}/{self.iface} did not start: "
                                     + self.log.read_text(errors="replace"))
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        time.sleep(0.5)            # dumpcap writes what it has buffered
        p.send_signal(signal.SIGINT)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@dataclass(frozen=True)
class Frame:
    ethertype: int
    proto: int | None            # 17 UDP, 6 TCP, 1 ICMP... (IPv4 only)
    src: str | None
    dst: str | None
    sport: int | None
    dport: int | None
    payload: bytes               # the UDP/TCP payload ('' for other frames)


def read_pcap(path: Path) -> list[Frame]:
    """The frames of a libpcap file of Ethernet (link type 1), IPv4 decoded."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        return []
    magic = struct.unpack_from("<I", data)[0]
    end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack_from(end + "I", data, 20)[0]
    assert linktype == 1, f"{path}: link type {linktype}, expected Ethernet"
    out, i = [], 24
    while i + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(end + "IIII", data, i)
        pkt = data[i + 16:i + 16 + incl]
        i += 16 + incl
        if len(pkt) < 14:
            continue
        ethertype = struct.unpack_from("!H", pkt, 12)[0]
        if ethertype != 0x0800 or len(pkt) < 34:
            out.append(Frame(ethertype, None, None, None, None, None, b""))
            continue
        ip = pkt[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        proto = ip[9]
        src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
        body = ip[ihl:total]
        sport = dport = None
        payload = b""
        if proto == 17 and len(body) >= 8:
            sport, dport = struct.unpack_from("!HH", body)
            payload = body[8:]
        elif proto == 6 and len(body) >= 20:
            sport, dport = struct.unpack_from("!HH", body)
            payload = body[(body[12] >> 4) * 4:]
        out.append(Frame(ethertype, proto, src, dst, sport, dport, payload))
    return out


_SIP_START = re.compile(rb"^(?:[A-Z]+ sip:[^ ]+ SIP/2\.0|SIP/2\.0 [0-9]{3} )")


def sip_messages(frames: list[Frame]) -> list[bytes]:
    """The UDP payloads that are SIP messages (request or status line first)."""
    return [f.payload for f in frames if f.proto == 17 and _SIP_START.match(f.payload)]


def sip_tokens(messages: list[bytes]) -> set[str]:
    """The Call-IDs, Via branches and From/To tags of the messages: what identifies a dialog or a
    transaction, and what a relay that copied messages would carry across."""
    out: set[str] = set()
    for m in messages:
        head = m.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name in ("call-id", "i"):
                out.add("call-id:" + value.strip())
            elif name in ("via", "v"):
                out.update("branch:" + b for b in re.findall(r";\s*branch=([^;,\s]+)", value))
            elif name in ("from", "f", "to", "t"):
                out.update("tag:" + t for t in re.findall(r";\s*tag=([^;,\s>]+)", value))
    return out


def sdp_ssrcs(messages: list[bytes]) -> set[int]:
    """The y= SSRCs of the SDP bodies in the messages."""
    return {int(y) for m in messages for y in re.findall(rb"\r\ny=([0-9]{1,10})", m)}


def rtp_with_ssrc(payload: bytes, ssrcs: set[int]) -> bool:
    """Is this datagram an RTP packet (version 2) of one of these SSRCs?"""
    return len(payload) >= 12 and payload[0] >> 6 == 2 and struct.unpack_from("!I", payload, 8)[0] in ssrcs


# -- SIPp and an RTP receiver in a namespace ----------------------------------------------------
def ns_sipp(ns: str):
    """tests/support/sipp.py's Sipp, run in namespace `ns` (its UAS bind check reads that
    namespace's /proc/<pid>/net)."""
    from sipp import Sipp  # noqa: PLC0415 - tests/support on sys.path

    class NsSipp(Sipp):
        def start(self) -> "NsSipp":
            if self.args[:3] != ["ip", "netns", "exec"]:
                self.args = ["ip", "netns", "exec", ns, *self.args]
            return super().start()        # type: ignore[return-value]

        def _wait_bound(self) -> None:
            proto = "udp" if self.transport.startswith("u") else "tcp"
            want = f":{self.port:04X}"
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(f"sipp exited at start:\n{self.result().report()}")
                try:
                    lines = Path(f"/proc/{self.proc.pid}/net/{proto}").read_text().splitlines()[1:]   # type: ignore[union-attr]
                except OSError:
                    lines = []
                if any(len(c) > 3 and c[1].endswith(want) for c in (x.split() for x in lines)):
                    return
                time.sleep(0.05)
            raise AssertionError(f"sipp did not bind {proto} port {self.port} in {ns}")

    return NsSipp


class RtpReceiver:
    """A UDP port in namespace `ns` (this file run as a script) keeping every datagram it gets, with
    its arrival time, in `path` (records of: float64 monotonic time, uint32 length, bytes)."""

    def __init__(self, ns: str, host: str, port: int, path: Path) -> None:
        self.path, self.port = Path(path), port
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, __file__, "receive", host, str(port),
                                      str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith(b"listening"), line + self.proc.stdout.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def datagrams(self) -> list[tuple[float, bytes]]:
        data = self.path.read_bytes() if self.path.exists() else b""
        out, i = [], 0
        while i + 12 <= len(data):
            t, n = struct.unpack_from("<dI", data, i)
            if i + 12 + n > len(data):
                break
            out.append((t, data[i + 12:i + 12 + n]))
            i += 12 + n
        return out


def _receive(host: str, port: int, path: str) -> None:
    import socket  # noqa: PLC0415

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((host, port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("listening", flush=True)
    with open(path, "wb") as f:
        while True:
            d = s.recv(65536)
            f.write(struct.pack("<dI", time.monotonic(), len(d)) + d)
            f.flush()


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "receive":
    _receive(sys.argv[2], int(sys.argv[3]), sys.argv[4])
