"""ferry.codecs.sip's fast paths against the strict reference (tests/codecs/sip_reference.py, the codec as it
was before them): for real GB/T 28181 messages and mutations of them (cut, headers duplicated, bad URIs,
odd white space, compact forms, bytes flipped, IPv6 hosts, quoted display names), both accept with equal
values — the message, every accessor, every header — or both refuse with SipError; the builders give the
same bytes or both refuse."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ferry import limits
from ferry.codecs import sip
from ferry.codecs.sip import SipError
from tests.codecs import sip_messages as M
from tests.codecs import sip_reference as R

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SIPP_KEEPALIVE = (
    b"MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bK-7-1\r\n"
    b"From: <sip:34020000001320000001@3402000000>;tag=1234SIPpTag7\r\n"
    b"To: <sip:34020000002000000001@3402000000>\r\nCall-ID: 7-1234@192.0.2.10\r\nCSeq: 20 MESSAGE\r\n"
    b"Max-Forwards: 70\r\nUser-Agent: SIPp GB28181 device\r\nContent-Type: Application/MANSCDP+xml\r\n"
    b"Content-Length: 5\r\n\r\n<a/>\n")
MESSAGES = {**M.ALL, "SIPP_KEEPALIVE": SIPP_KEEPALIVE}


def plain(x: Any) -> Any:
    """A value with the module's classes taken out (the reference has classes of its own)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return (type(x).__name__,) + tuple(plain(getattr(x, f.name)) for f in dataclasses.fields(x)
                                            if f.name != "_memo")
    if isinstance(x, (list, tuple)):
        return (type(x).__name__,) + tuple(plain(v) for v in x)
    return x


def outcome(f: Callable[[], Any]) -> Any:
    try:
        return ("ok", plain(f()))
    except SipError:
        return ("refused",)


ACCESSORS = ("call_id", "cseq", "from_", "to", "via", "contact", "content_type", "content_length", "expires",
             "max_forwards")
NAMES = ("Via", "v", "From", "To", "t", "Call-ID", "i", "CSeq", "Contact", "Content-Type", "c", "Content-Length",
         "Expires", "Max-Forwards", "User-Agent", "Authorization", "WWW-Authenticate", "Subject", "Route", "X-A")


def view(msg: Any) -> Any:
    """Everything a reader can get out of a parsed message, in a comparable form."""
    names = sorted({n for n, _ in msg.headers} | set(NAMES))
    return (plain(msg),
            tuple(outcome(lambda a=a: getattr(msg, a)) for a in ACCESSORS),
            tuple(outcome(lambda n=n: msg.header(n)) for n in names),
            tuple(outcome(lambda n=n: msg.header_all(n)) for n in names))


def same_parse(data: bytes) -> None:
    try:
        expected = view(R.parse_message(data))
    except SipError:
        try:
            got = sip.parse_message(data)
        except SipError:
            return
        raise AssertionError(f"the reference refuses, the codec accepts {got!r}") from None
    assert view(sip.parse_message(data)) == expected


# --- mutations of real messages ------------------------------------------------------------------

BAD_URIS = ["sip:a:pw@h", "sip:a@h?x=1", "sip:a@h:0", "sip:a@h:65536", "sip:a@999.1.1.1", "sip:a@[::1", "sip:a@[zz::]",
            "sip:a b@h", "sip:a@ho_st", "sip:a@h;=x", 'sip:a@h;p="x', "sip:@h", "tel:1", "sip:a@h;p;P", "sip:a@h;p=x;p",
            "sip:a@-h", "sip:a@h.", "sip:a@1.2.3", "sip:a@[::1]x", "sip:a@[::1]:5060", "SIP:A@H", "sip:a%4@h",
            "sip:" + "1" * 520 + "@h", "sip:a@h;lr;transport=tcp", "sips:a@[2001:db8::1]:5061;maddr=x"]
HOSTS = ["[2001:db8::1]", "[2001:db8::1]:5070", "[::ffff:192.0.2.1]", "[fe80::1%eth0]", "[::1", "::1", "[]",
         "1.2.3.4.5", "300.1.1.1", "host.example.", "a..b", "34020000", "a-b.c", "xn--e1a.cn"]
DISPLAYS = ['"Camera 1" ', '"Cam \\"x\\"" ', '"" ', '"open ', "Camera One ", "a@b ", '"a\\', '"a,b" ', "\t", '"a";']
SPACES = [" ", "\t", "  ", " \t", ""]
COMPACT = {b"Via:": b"v:", b"From:": b"f:", b"To:": b"t:", b"Call-ID:": b"i:", b"Contact:": b"m:",
           b"Content-Type:": b"c:", b"Content-Length:": b"l:"}


def mutate(data: bytes, draw: Any) -> bytes:
    if not data:
        return b"\r\n"
    op = draw(st.integers(0, 13))
    lines = data.split(b"\r\n")
    head_end = lines.index(b"") if b"" in lines else len(lines)
    i = draw(st.integers(0, max(0, head_end - 1)))
    if op == 0:                                                         # cut anywhere
        return data[:draw(st.integers(0, len(data)))]
    if op == 1 and head_end > 1:                                        # a header line twice
        lines.insert(i, lines[max(1, i)])
    elif op == 2:                                                       # a bad or odd URI
        text = data.decode("utf-8", "replace")
        j = text.find("sip:", draw(st.integers(0, len(text))))
        if j >= 0:
            k = min((x for x in (text.find(c, j) for c in ">; \r") if x >= 0), default=len(text))
            text = text[:j] + draw(st.sampled_from(BAD_URIS)) + text[k:]
            return text.encode()
    elif op == 3 and head_end > 1:                                      # white space around the colon
        n, colon, v = lines[max(1, i)].partition(b":")
        s = [draw(st.sampled_from(SPACES)).encode() for _ in range(3)]
        lines[max(1, i)] = n + s[0] + colon + s[1] + v + s[2]
    elif op == 4:                                                       # compact forms, case
        old = draw(st.sampled_from(sorted(COMPACT)))
        new = draw(st.sampled_from([COMPACT[old], old.lower(), old.upper()]))
        return data.replace(old, new, draw(st.integers(1, 3)))
    elif op == 5:                                                       # bytes flipped
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    elif op == 6:                                                       # IPv6 and odd hosts
        host = draw(st.sampled_from(HOSTS)).encode()
        for old in (b"192.168.1.64", b"192.168.1.10", b"3402000000", b"192.0.2.10"):
            if old in data:
                return data.replace(old, host, draw(st.integers(1, 4)))
    elif op == 7:                                                       # display names
        disp = draw(st.sampled_from(DISPLAYS)).encode()
        for old in (b"From: ", b"To: ", b"Contact: "):
            if old in data and draw(st.booleans()):
                data = data.replace(old, old + disp, 1)
        return data
    elif op == 8:                                                       # a header line dropped
        if head_end > 1:
            del lines[max(1, i)]
    elif op == 9:                                                       # punctuation swapped
        out = bytearray(data)
        marks = [j for j, b in enumerate(out) if chr(b) in ':;,<>"@=/ \r\n'] or [0]
        out[draw(st.sampled_from(marks))] = ord(draw(st.sampled_from(':;,<>"@=/ \r\n\t\\[]?')))
        return bytes(out)
    elif op == 10:                                                      # a new header line
        name = draw(st.sampled_from(["Expires", "Max-Forwards", "Contact", "Via", "Route", "X-A", "Subject",
                                     "Content-Type", "e", "k", "Event", "CSeq", "l"]))
        value = draw(st.sampled_from(["0", "70", "4294967295", "4294967296", "256", "*", "<sip:a@h>, <sip:b@h>",
                                      "SIP/2.0/TCP [::1]:5060;branch=z9hG4bKx;received=::1", "text/plain;charset=x",
                                      "a/b/c", "", "1 MESSAGE", " x ", "SIP/2.0/UDP h;rport=0", "\"a, b\" <sip:c@d>"]))
        lines.insert(i + 1, f"{name}: {value}".encode())
    elif op == 12 and head_end > 1:                                     # a parameter twice, or an odd one
        line = lines[max(1, i)]
        params = line.split(b";")[1:] or [b"tag=1"]
        extra = draw(st.sampled_from([*params, b"TAG=2", b"Branch=z9hG4bKx", b"rport", b"RPORT=1", b"tag", b"tag=",
                                      b"received=10.0.0.1", b"received", b"lr", b"p=\"q\"", b" x=1", b"x=1 "]))
        lines[max(1, i)] = line + b";" + extra
    elif op == 13 and head_end > 1:                                     # many header lines
        lines[i + 1:i + 1] = [b"X-A: 1"] * draw(st.integers(50, 70))
    elif op == 11 and head_end > 1:                                     # a control character in a header line
        free = [k for k in range(1, head_end) if lines[k].startswith((b"User-Agent", b"Subject", b"WWW-Auth"))]
        k = draw(st.sampled_from(free)) if free and draw(st.booleans()) else max(1, i)
        j = draw(st.integers(0, len(lines[k])))
        lines[k] = lines[k][:j] + bytes([draw(st.sampled_from([*range(0, 32), 127]))]) + lines[k][j:]
    else:                                                               # a line ending broken
        j = draw(st.integers(0, len(data)))
        return data[:j] + draw(st.sampled_from([b"\n", b"\r", b"\r\n", b"\r\n ", b"\x00", b"\xc3", b"\x7f"])) + data[j:]
    return b"\r\n".join(lines)


@FUZZ
@given(st.sampled_from(sorted(MESSAGES)), st.data())
@example("SIPP_KEEPALIVE", None)
def test_mutated_messages_parse_as_the_reference_parses_them(name: str, data: Any) -> None:
    raw = MESSAGES[name]
    if data is not None:
        for _ in range(data.draw(st.integers(1, 3))):
            raw = mutate(raw, data.draw)
    same_parse(raw)
    same_parse(raw + b"x")       # the body disagrees with Content-Length


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_parse_as_the_reference_parses_them(data: bytes) -> None:
    same_parse(data)
    same_parse(b"MESSAGE sip:a@b SIP/2.0\r\n" + data)
    same_parse(SIPP_KEEPALIVE[:SIPP_KEEPALIVE.index(b"Max-Forwards")] + data)


def test_every_real_message_parses_as_the_reference_parses_it() -> None:
    for raw in MESSAGES.values():
        same_parse(raw)


def test_the_edges_of_the_fast_head_checks_parse_as_the_reference() -> None:
    """Where the whole-section checks stand in for the per-line ones: each control character in a value,
    the header line count and the line length at their limits, a long section of short lines."""
    cut = SIPP_KEEPALIVE.index(b"User-Agent")
    for c in [*range(0, 32), 127]:
        same_parse(SIPP_KEEPALIVE.replace(b"SIPp GB28181", b"SIPp" + bytes([c]) + b"GB28181"))
        same_parse(SIPP_KEEPALIVE.replace(b"MESSAGE sip", b"MESSAGE" + bytes([c]) + b"sip"))
    for extra in range(limits.SIP_HEADER_COUNT_MAX - 12, limits.SIP_HEADER_COUNT_MAX - 8):
        same_parse(SIPP_KEEPALIVE[:cut] + b"X-A: 1\r\n" * extra + SIPP_KEEPALIVE[cut:])
    for size in (limits.SIP_LINE_MAX - 13, limits.SIP_LINE_MAX - 12, limits.SIP_LINE_MAX - 11, 5000):
        same_parse(SIPP_KEEPALIVE[:cut] + b"Subject: " + b"s" * size + b"\r\n" + SIPP_KEEPALIVE[cut:])
        same_parse(SIPP_KEEPALIVE[:cut] + b"Subject: " + "é".encode() * (size // 2) + b"\r\n" + SIPP_KEEPALIVE[cut:])
    same_parse(SIPP_KEEPALIVE[:cut] + b"X-B: 12345678901234567890\r\n" * 60 + SIPP_KEEPALIVE[cut:])
    for odd in (b"Max-Forwards: 70\r\n", b"Max-Forwards :70\r\n", b"Max-Forwards\t: 70 \t\r\n",
                b" Max-Forwards: 70\r\n", b"Max Forwards: 70\r\n", b": 70\r\n", b"Max-Forwards 70\r\n", b"\r\n",
                b"max-forwards: 70\r\n", b"MAX-FORWARDS: 70\r\n", b"I: 1@h\r\n", b"Max-Forwards:\r\n",
                b"Max-Forwards: 7\xc3\r\n"):
        same_parse(SIPP_KEEPALIVE.replace(b"Max-Forwards: 70\r\n", odd))


@FUZZ
@given(st.text(max_size=80), st.sampled_from(["", "sip:", "sips:1@", "<sip:", '"a" <sip:1@h>;', "SIP/2.0/UDP ",
                                              "sip:1@", "sip:1@[", "SIP/2.0/TCP [::1]:5060;", "<sip:a@b>;tag="]))
def test_uri_address_and_via_parse_as_the_reference(text: str, prefix: str) -> None:
    for fast, ref in ((sip.parse_uri, R.parse_uri), (sip.parse_name_addr, R.parse_name_addr),
                      (sip.parse_via, R.parse_via)):
        assert outcome(lambda: fast(prefix + text)) == outcome(lambda: ref(prefix + text))
        assert outcome(lambda: fast(prefix + text)) == outcome(lambda: ref(prefix + text))   # once cached


# --- the stream parser ---------------------------------------------------------------------------

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(sorted(MESSAGES)), min_size=1, max_size=4), st.data())
def test_the_stream_parser_gives_what_the_reference_gives(names: list[str], data: Any) -> None:
    stream = b"".join(mutate(MESSAGES[n], data.draw) if data.draw(st.booleans()) else MESSAGES[n] for n in names)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))

    def run(parser: Any) -> Any:
        out: list[Any] = []
        last = 0
        for c in cuts + [len(stream)]:
            try:
                out += [view(m) if not isinstance(m, (sip.KeepAlive, R.KeepAlive)) else "ping"
                        for m in parser.feed(stream[last:c])]
            except SipError:
                return out, "refused"
            last = c
        return out, parser.buffered
    assert run(sip.SipStreamParser()) == run(R.SipStreamParser())


# --- builders: the same bytes ----------------------------------------------------------------------

def built(f: Callable[[], bytes]) -> Any:
    try:
        return f()
    except SipError:
        return "refused"


VALUES = st.one_of(st.sampled_from(["SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bK1", "<sip:a@b>;tag=1", "1@h",
                                    "20 MESSAGE", "", " x", "x ", "a\tb", "ferry", "Application/MANSCDP+xml",
                                    "x\r\nVia: evil", "\x00", "\x7f", "大门", "é" * 3000]),
                   st.text(max_size=20))
HEADER_NAMES = st.one_of(st.sampled_from(["Via", "From", "To", "Call-ID", "CSeq", "Content-Length", "l", "v", "X-A",
                                          "User-Agent", "Content-Type", "c", "X A", "", "Subject:", "expires"]),
                         st.text(max_size=8))
HEADERS = st.lists(st.tuples(HEADER_NAMES, VALUES), max_size=6)
BODIES = st.sampled_from([b"", b"<a/>", bytes(sip.limits.SIP_BODY_MAX + 1), b"\r\n\r\n"])


@FUZZ
@given(st.sampled_from(["MESSAGE", "INVITE", "", "A B", "BYE\r\n"]),
       st.sampled_from(["sip:a@b", "sip:34020000001320000001@3402000000;transport=udp", "sip:[::1]:5060", "http://x",
                        "sip:a@b x"]),
       HEADERS, BODIES)
def test_build_request_gives_the_reference_bytes(method: str, uri: str, headers: Any, body: bytes) -> None:
    assert built(lambda: sip.build_request(method, uri, headers, body)) == \
        built(lambda: R.build_request(method, uri, headers, body))
    if (u := outcome(lambda: sip.parse_uri(uri)))[0] == "ok":
        assert built(lambda: sip.build_request(method, sip.parse_uri(uri), headers, body)) == \
            built(lambda: R.build_request(method, R.parse_uri(uri), headers, body)), u


@FUZZ
@given(st.sampled_from([100, 200, 401, 699, 99, 700]), st.sampled_from(["OK", "", "Trying", "a\r\nb", "é", "\t"]),
       HEADERS, BODIES)
def test_build_response_gives_the_reference_bytes(status: int, reason: str, headers: Any, body: bytes) -> None:
    assert built(lambda: sip.build_response(status, reason, headers, body)) == \
        built(lambda: R.build_response(status, reason, headers, body))


@FUZZ
@given(st.sampled_from(sorted(MESSAGES)), st.data(), st.sampled_from([200, 100, 403, 99]),
       st.sampled_from(["OK", "Trying", "x\r\n"]), HEADERS, BODIES,
       st.sampled_from([None, "5a1f0c2e9b7d3a44", "1790583453", "", "a b"]))
def test_response_to_gives_the_reference_bytes(name: str, data: Any, status: int, reason: str, extra: Any,
                                               body: bytes, to_tag: str | None) -> None:
    raw = MESSAGES[name]
    for _ in range(data.draw(st.integers(0, 2))):
        raw = mutate(raw, data.draw)
    try:
        req, ref = sip.parse_message(raw), R.parse_message(raw)
    except SipError:
        return
    if not isinstance(req, sip.SipRequest):
        return
    req.to if data.draw(st.booleans()) else None  # noqa: B018 - read before or not, as the lane may
    assert built(lambda: sip.response_to(req, status, reason, extra, body, to_tag)) == \
        built(lambda: R.response_to(ref, status, reason, extra, body, to_tag))


# --- the fast path is taken, and its caches stay bounded -----------------------------------------

def test_a_keepalive_and_its_answer_take_the_fast_path(monkeypatch) -> None:
    """The strict ways are for faults, odd shapes and a URI seen for the first time: the next keepalive
    of a device as SIPp sends it (its own tag and branch), and the 200 OK the outer lane sends back,
    never reach them (else the codec is correct but slow again)."""
    sip.parse_message(SIPP_KEEPALIVE)       # the device's URIs and hosts, seen once

    def strict(*_: Any) -> Any:
        raise AssertionError("the strict way was taken")
    for name in ("_split_head_strictly", "_params", "_assemble_strictly"):
        monkeypatch.setattr(sip, name, strict)
    req = sip.parse_message(SIPP_KEEPALIVE.replace(b"SIPpTag7", b"SIPpTag8").replace(b"-7-1", b"-8-1"))
    assert isinstance(req, sip.SipRequest) and req.from_.tag == "1234SIPpTag8" and req.via[0].rport == 0
    out = sip.response_to(req, 200, "OK", (("User-Agent", "ferry"),), to_tag="5a1f0c2e9b7d3a44")
    assert out.startswith(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bK-8-1\r\n")


def test_the_parse_caches_are_bounded_and_skip_long_keys() -> None:
    sip._cached_uri.cache_clear()
    for i in range(limits.SIP_PARSE_CACHE_MAX + 100):
        sip.parse_uri(f"sip:{i}@3402000000")
    assert sip._cached_uri.cache_info().currsize == limits.SIP_PARSE_CACHE_MAX
    long_uri = "sip:" + "1" * limits.SIP_PARSE_CACHE_KEY_MAX + "@h"
    before = sip._cached_uri.cache_info()
    assert sip.parse_uri(long_uri).user == "1" * limits.SIP_PARSE_CACHE_KEY_MAX
    after = sip._cached_uri.cache_info()
    assert (after.hits, after.misses) == (before.hits, before.misses)     # parsed, not looked up
