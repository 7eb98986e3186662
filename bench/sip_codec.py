"""Benchmark: the SIP codec on the outer agent's hot path (issue 13) — a GB/T 28181 keepalive MESSAGE
as SIPp sends it, parsed with the accessors the outer lane reads, and the 200 OK `response_to` builds,
each against baselines measured in the same run on the same bytes.

Workload: `--devices` (1,000) devices, one keepalive each (own Call-ID, From tag, Via branch and SN,
the same request URI and To, as from SIPp), parsed `--rounds` times over.
    parse    sip.parse_message + method, uri, call_id, cseq, from_, to, via, contact, content_type,
             content_length, expires, header("Content-Type"), header("Expires"), body
    respond  sip.response_to(req, 200, "OK", (("User-Agent", "ferry"),), to_tag=...) of a parsed request
Baselines: email.parser.BytesHeaderParser on the same bytes (a header parse that checks nothing), a
bare `bytes.split(b"\\r\\n")` of the header section, and for the response the same bytes put together
from the request's header values with an f-string and `join` (a build that checks nothing).

    .venv/bin/python bench/sip_codec.py [--devices 1000] [--rounds 5]

Each figure is the median of the rounds, in microseconds of CPU (process time) per message. Last line:
parse_us=P respond_us=R parse_vs_email=X parse_vs_split=Y respond_vs_join=Z (goal: P <= 35, R <= 15).
"""
from __future__ import annotations

import argparse
import email.parser
import email.policy
import os
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ferry.codecs import sip  # noqa: E402

SERVER, REALM, CAM = "34020000002000000001", "3402000000", "34020000001320000001"


def keepalive(i: int) -> bytes:
    body = (b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
            b'<SN>%d</SN>\r\n<DeviceID>%s</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n') % (i, CAM.encode())
    head = (f"MESSAGE sip:{SERVER}@{REALM} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bK-{i}-1\r\n"
            f"From: <sip:{CAM}@{REALM}>;tag=1234SIPpTag{i}\r\nTo: <sip:{SERVER}@{REALM}>\r\n"
            f"Call-ID: {i}-1234@192.0.2.10\r\nCSeq: 20 MESSAGE\r\nMax-Forwards: 70\r\n"
            f"User-Agent: SIPp GB28181 device\r\nContent-Type: Application/MANSCDP+xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def parse_and_read(data: bytes) -> Any:
    m = sip.parse_message(data)
    assert isinstance(m, sip.SipRequest)
    return (m.method, m.uri, m.call_id, m.cseq, m.from_.uri.user, m.to.tag, m.via[0].branch, m.contact,
            m.content_type, m.content_length, m.expires, m.header("Content-Type"), m.header("Expires"), m.body)


def time_per_item(f: Callable[[Any], Any], items: list[Any]) -> float:
    start = time.process_time()
    for x in items:
        f(x)
    return (time.process_time() - start) / len(items) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    raws = [keepalive(i) for i in range(a.devices)]
    reqs = [sip.parse_message(r) for r in raws]
    for r in reqs:
        r.to  # noqa: B018 - what the lane reads before it answers
    heads = [r[:r.index(b"\r\n\r\n")] for r in raws]
    header_parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)

    def respond(req: Any) -> bytes:
        return sip.response_to(req, 200, "OK", (("User-Agent", "ferry"),), to_tag="5a1f0c2e9b7d3a44")

    def join(req: Any) -> bytes:
        hs = req.headers
        lines = ["SIP/2.0 200 OK\r\n", f"Via: {hs[0][1]}\r\n", f"From: {hs[1][1]}\r\n",
                 f"To: {hs[2][1]};tag=5a1f0c2e9b7d3a44\r\n", f"Call-ID: {hs[3][1]}\r\n", f"CSeq: {hs[4][1]}\r\n",
                 "User-Agent: ferry\r\nContent-Length: 0\r\n\r\n"]
        return "".join(lines).encode()
    assert join(reqs[0]) == respond(reqs[0])

    work: dict[str, tuple[Callable[[Any], Any], list[Any]]] = {
        "parse": (parse_and_read, raws),
        "respond": (respond, reqs),
        "email.parser headers": (lambda d: header_parser.parsebytes(d).items(), raws),
        "bytes.split": (lambda h: h.split(b"\r\n"), heads),
        "f-string join": (join, reqs),
    }
    figures: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(a.rounds):
        for name, (f, items) in work.items():
            figures[name].append(time_per_item(f, items))
    med = {name: statistics.median(v) for name, v in figures.items()}
    for name, v in figures.items():
        print(f"{name:22s} median {med[name]:7.2f} us  (rounds: {' '.join(f'{x:.1f}' for x in v)})", file=sys.stderr)
    print(f"parse_us={med['parse']:.1f} respond_us={med['respond']:.1f} "
          f"parse_vs_email={med['parse'] / med['email.parser headers']:.2f} "
          f"parse_vs_split={med['parse'] / med['bytes.split']:.1f} "
          f"respond_vs_join={med['respond'] / med['f-string join']:.1f}")


if __name__ == "__main__":
    main()
