"""MANSCDP parse cost per body: ferry's parser against yardsticks measured in the same run.

    .venv/bin/python bench/manscdp_codec.py [--n N] [--runs R]

A fixed workload of bodies as the signaling lanes meet them:

    keepalive_gb     a device's Keepalive (GB2312 declared, CRLF), what the outer agent parses
    keepalive_utf8   the canonical UTF-8 body `manscdp.build` makes of it, what the inner parses
    alarm_gb         a device's Alarm with a Chinese description and nested Info
    catalog20_gb     a Response Catalog of 20 Items with Chinese names, as an NVR sends it

Each body is parsed N times per run (a different SN each time, so nothing is cached by value);
the figure is the median over R runs of CPU microseconds per parse (the process's CPU time, so
the other work of a shared machine counts less), for

    ferry       ferry.codecs.manscdp.parse (the fast path where it applies, expat otherwise)
    reference   the strict parser before the fast path, kept in tests/codecs/manscdp_reference.py
                (expat for every body, values validated twice)
    etree       xml.etree.ElementTree.fromstring of the same body decoded as GB18030 (etree takes
                no multi-byte encoding): a yardstick only (it builds a tree and checks nothing;
                ferry keeps its hardened expat set-up for every body the fast path does not take)

The goals (issue 13): a keepalive in <= 20 us in both forms, a 20-item catalog at least 2x faster
than the reference. Last line: ``keepalive_gb_us=A keepalive_utf8_us=B catalog20_us=C
catalog20_speedup=D``. Not a test: the machine is shared, so compare figures of one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))                          # ferry, when run as bench/manscdp_codec.py
sys.path.insert(0, str(ROOT / "tests" / "codecs"))     # the reference parser

from ferry.codecs import manscdp  # noqa: E402

try:
    import manscdp_reference as reference  # noqa: E402
except ImportError:  # pragma: no cover - an installed tree without the tests
    reference = None

CAM = "34020000001320000001"
NVR = "34020000001110000001"


def keepalive_gb(sn: int) -> bytes:
    return (b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
            b"<SN>%d</SN>\r\n<DeviceID>%s</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n") % (sn, CAM.encode())


def keepalive_utf8(sn: int) -> bytes:
    return manscdp.build(manscdp.keepalive(CAM, sn), encoding="UTF-8")


def alarm_gb(sn: int) -> bytes:
    return ('<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n'
            f"<SN>{sn}</SN>\r\n<DeviceID>{CAM}</DeviceID>\r\n<AlarmPriority>1</AlarmPriority>\r\n"
            "<AlarmMethod>5</AlarmMethod>\r\n<AlarmTime>2026-03-01T08:30:00</AlarmTime>\r\n"
            "<AlarmDescription>南门入口 越界侦测</AlarmDescription>\r\n<Longitude>120.1512340</Longitude>\r\n"
            "<Latitude>30.2784560</Latitude>\r\n<Info>\r\n<AlarmType>2</AlarmType>\r\n<AlarmTypeParam>\r\n"
            "<EventType>1</EventType>\r\n</AlarmTypeParam>\r\n</Info>\r\n</Notify>\r\n").encode("gbk")


def catalog20_gb(sn: int) -> bytes:
    items = []
    for i in range(20):
        items.append(
            f"<Item>\r\n<DeviceID>3402000000132{i:07d}</DeviceID>\r\n<Name>南门入口 {i}号</Name>\r\n"
            "<Manufacturer>Hikvision</Manufacturer>\r\n<Model>IP Camera</Model>\r\n<Owner>Owner</Owner>\r\n"
            "<CivilCode>3402000000</CivilCode>\r\n<Address>合肥市 长江西路</Address>\r\n<Parental>0</Parental>\r\n"
            f"<ParentID>{NVR}</ParentID>\r\n<SafetyWay>0</SafetyWay>\r\n<RegisterWay>1</RegisterWay>\r\n"
            "<Secrecy>0</Secrecy>\r\n<Password>12345</Password>\r\n<Status>ON</Status>\r\n"
            "<Longitude>120.1512340</Longitude>\r\n<Latitude>30.2784560</Latitude>\r\n"
            "<Info>\r\n<PTZType>1</PTZType>\r\n</Info>\r\n</Item>\r\n")
    return ('<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n'
            f"<SN>{sn}</SN>\r\n<DeviceID>{NVR}</DeviceID>\r\n<SumNum>20</SumNum>\r\n"
            f'<DeviceList Num="20">\r\n{"".join(items)}</DeviceList>\r\n</Response>\r\n').encode("gbk")


WORKLOADS: dict[str, Callable[[int], bytes]] = {
    "keepalive_gb": keepalive_gb,
    "keepalive_utf8": keepalive_utf8,
    "alarm_gb": alarm_gb,
    "catalog20_gb": catalog20_gb,
}


def etree(body: bytes) -> object:
    return ET.fromstring(body.decode("gb18030"))


def per_parse_us(fn: Callable[[bytes], object], bodies: list[bytes]) -> float:
    t0 = time.process_time()  # CPU time: the shared machine's other work is not counted
    for b in bodies:
        fn(b)
    return (time.process_time() - t0) / len(bodies) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="parses per body per run (default 2000)")
    ap.add_argument("--runs", type=int, default=5, help="runs; the median is printed (default 5)")
    args = ap.parse_args()
    parsers: dict[str, Callable[[bytes], object]] = {"ferry": manscdp.parse}
    if reference is not None:
        parsers["reference"] = reference.parse
    parsers["etree"] = etree
    medians: dict[tuple[str, str], float] = {}
    for name, make in WORKLOADS.items():
        n = max(1, args.n // 10) if name.startswith("catalog") else args.n
        bodies = [make(1000 + i) for i in range(n)]
        if reference is not None:  # the same values, or the figure means nothing
            m = manscdp.parse(bodies[0])
            r = reference.parse(bodies[0])
            assert (m.root, m.cmd_type, m.sn, m.fields, m.dropped, [i.fields for i in m.items]) == (
                r.root, r.cmd_type, r.sn, r.fields, r.dropped, [i.fields for i in r.items]), name
        times: dict[str, list[float]] = {p: [] for p in parsers}
        for _ in range(args.runs):
            for p, fn in parsers.items():  # interleaved, so the machine's load falls on all alike
                times[p].append(per_parse_us(fn, bodies))
        line = [f"{name:16s} {len(bodies[0]):5d} B"]
        for p in parsers:
            medians[(name, p)] = statistics.median(times[p])
            line.append(f"{p} {medians[(name, p)]:8.1f} us")
        if reference is not None:
            line.append(f"x{medians[(name, 'reference')] / medians[(name, 'ferry')]:.2f} vs reference")
        print("  ".join(line))
    speedup = (medians[("catalog20_gb", "reference")] / medians[("catalog20_gb", "ferry")]
               if reference is not None else 0.0)
    print(f"keepalive_gb_us={medians[('keepalive_gb', 'ferry')]:.1f} "
          f"keepalive_utf8_us={medians[('keepalive_utf8', 'ferry')]:.1f} "
          f"catalog20_us={medians[('catalog20_gb', 'ferry')]:.1f} catalog20_speedup={speedup:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
