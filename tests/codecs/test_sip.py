"""ferry.codecs.sip: GB/T 28181 messages as devices send them, strict refusals, builders, fuzzing."""
from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry import limits
from ferry.codecs.errors import CodecError
from ferry.codecs.sdp import parse_sdp
from ferry.codecs.sip import _split_outside_quotes, _split_scan  # private: the fast path against the scan
from ferry.codecs.sip import (KeepAlive, NameAddr, SipError, SipRequest, SipResponse, SipUri, build_request,
                              build_response, new_branch, new_call_id, new_tag, parse_message, parse_name_addr,
                              parse_uri, parse_via, response_to)
from tests.codecs import sip_messages as M

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_sip_error_is_a_codec_error_and_a_value_error() -> None:
    assert issubclass(SipError, CodecError) and issubclass(SipError, ValueError)


@pytest.mark.parametrize("name", sorted(M.ALL))
def test_device_messages_parse(name: str) -> None:
    msg = parse_message(M.ALL[name])
    assert isinstance(msg, (SipRequest, SipResponse))
    assert msg.call_id and msg.cseq[0] >= 1 and msg.via and msg.from_.uri.host


def test_register_accessors() -> None:
    r = parse_message(M.REGISTER)
    assert isinstance(r, SipRequest)
    assert r.method == "REGISTER"
    assert r.uri == SipUri("sip", "34020000002000000001", "3402000000")
    assert r.cseq == (1, "REGISTER") and r.call_id == "1011047669"
    assert r.expires == 3600 and r.max_forwards == 70 and r.content_length == 0
    (via,) = r.via
    assert (via.transport, via.host, via.port, via.branch, via.rport, via.received) == \
        ("UDP", "192.168.1.64", 5060, "z9hG4bK1371463273", 0, None)
    assert r.from_ == NameAddr(None, SipUri("sip", "34020000001320000001", "3402000000"), "2043466181",
                               (("tag", "2043466181"),))
    assert r.to.tag is None
    assert r.contact[0].uri == SipUri("sip", "34020000001320000001", "192.168.1.64", 5060)
    assert r.header("user-agent") == "IP Camera" and r.header("Subject") is None
    assert r.body == b""


def test_response_accessors() -> None:
    r = parse_message(M.UNAUTHORIZED)
    assert isinstance(r, SipResponse)
    assert (r.status, r.reason) == (401, "Unauthorized")
    assert r.via[0].rport == 5060 and r.via[0].received == "192.168.1.64"
    assert r.to.tag == "1790583453"
    assert r.header("WWW-Authenticate", ).startswith("Digest ")  # type: ignore[union-attr]


def test_message_body_stays_gb2312_bytes() -> None:
    m = parse_message(M.CATALOG)
    assert m.content_type == "application/manscdp+xml"
    assert m.body == M.CATALOG_BODY
    assert M.CATALOG_NAME in m.body.decode("gb2312")
    with pytest.raises(UnicodeDecodeError):
        m.body.decode("utf-8")


def test_invite_carries_gb28181_sdp() -> None:
    m = parse_message(M.INVITE)
    assert isinstance(m, SipRequest) and m.content_type == "application/sdp"
    assert m.header("subject") == "34020000001320000001:0200000001,34020000002000000001:0"
    sdp = parse_sdp(m.body)
    assert sdp.session_name == "Play" and sdp.ssrc == "0200000001" and sdp.media_port == 30000


def test_compact_forms_become_long_names() -> None:
    m = parse_message(M.COMPACT)
    names = [n for n, _ in m.headers]
    assert names == ["Via", "From", "To", "Call-ID", "CSeq", "Content-Type", "Content-Length"]
    assert m.header("i") == m.call_id == "a84b4c76e66710@192.168.1.66"
    assert m.via[0].transport == "TCP"


def test_header_all_splits_list_headers_and_header_refuses_a_repeated_single() -> None:
    extra = b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa, SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKb\r\n"
    data = M.BYE.replace(b"From:", extra + b"From:")
    m = parse_message(data)
    assert [v.host for v in m.via] == ["192.168.1.10", "10.0.0.1", "[2001:db8::1]"]
    assert len(m.header_all("v")) == 3
    assert m.header("Via") is not None
    dup = SipRequest("BYE", parse_uri("sip:a@b"), (("Call-ID", "1"), ("Call-ID", "2")))
    with pytest.raises(SipError, match="Call-ID appears 2 times"):
        dup.header("call-id")


def rebuild(msg: SipRequest | SipResponse) -> bytes:
    headers = [(n, v) for n, v in msg.headers if n != "Content-Length"]
    if isinstance(msg, SipRequest):
        return build_request(msg.method, msg.uri, headers, msg.body)
    return build_response(msg.status, msg.reason, headers, msg.body)


@pytest.mark.parametrize("name", sorted(M.ALL))
def test_build_parse_round_trip(name: str) -> None:
    msg = parse_message(M.ALL[name])
    again = parse_message(rebuild(msg))
    assert again == msg
    if name != "COMPACT":
        assert rebuild(msg) == M.ALL[name]      # the fixtures are in the builder's own form


def test_response_to_copies_what_rfc3261_8_2_6_says() -> None:
    invite = parse_message(M.INVITE)
    assert isinstance(invite, SipRequest)
    tag = new_tag()
    out = parse_message(response_to(invite, 200, "OK", [("Content-Type", "application/sdp")], M.OK_SDP,
                                    to_tag=tag))
    assert isinstance(out, SipResponse) and out.status == 200
    for name in ("Via", "From", "Call-ID", "CSeq"):
        assert out.header_all(name) == invite.header_all(name)
    assert out.to.tag == tag and out.to.uri == invite.to.uri
    assert out.body == M.OK_SDP and out.content_length == len(M.OK_SDP)
    trying = parse_message(response_to(invite, 100, "Trying"))
    assert trying.to.tag is None
    ack = parse_message(M.ACK)
    assert isinstance(ack, SipRequest)
    assert parse_message(response_to(ack, 200, "OK", to_tag="1402547358")).to.tag == "1402547358"
    with pytest.raises(SipError, match="already has tag"):
        response_to(ack, 200, "OK", to_tag="other")


def test_response_to_copies_every_via_in_order() -> None:
    two = M.BYE.replace(b"From:", b"Via: SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bKproxy\r\nFrom:")
    req = parse_message(two)
    assert isinstance(req, SipRequest)
    out = parse_message(response_to(req, 481, "Call/Transaction Does Not Exist"))
    assert [v.host for v in out.via] == ["192.168.1.10", "10.0.0.7"]


def test_new_identifiers_are_fresh_and_well_formed() -> None:
    branches = {new_branch() for _ in range(200)}
    assert len(branches) == 200 and all(b.startswith("z9hG4bK") and len(b) > 16 for b in branches)
    assert len({new_tag() for _ in range(200)}) == 200
    cid = new_call_id("192.168.1.10")
    assert cid.endswith("@192.168.1.10") and new_call_id("192.168.1.10") != cid
    with pytest.raises(SipError):
        new_call_id("bad host\r\nVia: x")


@pytest.mark.parametrize("text", [
    "sip:34020000001320000001@3402000000", "sip:34020000001320000001@192.168.1.10:5060",
    "sips:alice@example.com;transport=tcp;lr", "sip:[2001:db8::5]:5070", "sip:3402000000"])
def test_uri_round_trip(text: str) -> None:
    assert str(parse_uri(text)) == text


@pytest.mark.parametrize("text, error", [
    ("tel:+123", "not a sip"), ("sip:alice:secret@example.com", "password"),
    ("sip:a@example.com?subject=x", "headers"), ("sip:a@host:0", "port"), ("sip:a@host:70000", "port"),
    ("sip:a@999.1.1.1", "IPv4"), ("sip:a@[::1", "IPv6"), ("sip:a b@host", "user"), ("sip:a@ho_st", "host"),
    ("sip:" + "1" * 600 + "@h", "exceeds limit"), ("sip:a@h;=x", "token"), ("sip:a@h;p=\"x", "quoted")])
def test_uri_refusals(text: str, error: str) -> None:
    with pytest.raises(SipError, match=error):
        parse_uri(text)


def test_name_addr_forms() -> None:
    assert parse_name_addr('"Camera \\"1\\"" <sip:1@h>;tag=x').display == 'Camera "1"'
    assert parse_name_addr("Camera One <sip:1@h>").display == "Camera One"
    bare = parse_name_addr("sip:1@h;tag=9")
    assert bare.tag == "9" and bare.uri.params == ()
    for bad in ['"open <sip:1@h>', "<sip:1@h", "<sip:1@h> junk", "sip:1@h;tag=", "a@b <sip:1@h>"]:
        with pytest.raises(SipError):
            parse_name_addr(bad)


def replace(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


REFUSALS = [
    ("bare LF", lambda d: replace(d, b"Call-ID: 639118762@192.168.1.10\r\n", b"Call-ID: 639118762@192.168.1.10\n"),
     "bare CR or LF"),
    ("folded", lambda d: replace(d, b"\r\nUser-Agent", b" \r\n continued\r\nUser-Agent"), "folded"),
    ("no colon", lambda d: replace(d, b"Max-Forwards: 70", b"Max-Forwards 70"), "header line 9: no colon"),
    ("bad name", lambda d: replace(d, b"User-Agent:", b"User Agent:"), "not a token"),
    ("no Call-ID", lambda d: replace(d, b"Call-ID: 639118762@192.168.1.10\r\n", b""), "no Call-ID"),
    ("no Via", lambda d: replace(d, b"Via: SIP/2.0/UDP 192.168.1.10:5060;rport;branch=z9hG4bK639118762\r\n", b""),
     "no Via"),
    ("two From", lambda d: replace(d, b"To:", b"From: <sip:x@y>\r\nTo:"), "From appears twice"),
    ("two Content-Length", lambda d: replace(d, b"Max-Forwards", b"l: 250\r\nMax-Forwards"),
     "Content-Length appears twice"),
    ("short body", lambda d: d[:-1], "Content-Length 250 but the body has 249 bytes"),
    ("long body", lambda d: d + b"X", "Content-Length 250 but the body has 251 bytes"),
    ("bad Content-Length", lambda d: replace(d, b"Content-Length: 250", b"Content-Length: -1"), "Content-Length"),
    ("CSeq method", lambda d: replace(d, b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "not the request's method"),
    ("CSeq number", lambda d: replace(d, b"CSeq: 1 INVITE", b"CSeq: 99999999999 INVITE"), "CSeq"),
    ("version", lambda d: replace(d, b"SIP/2.0\r\n", b"SIP/3.0\r\n"), "start line"),
    ("method", lambda d: replace(d, b"INVITE sip", b"INV@TE sip"), "method"),
    ("extra space", lambda d: replace(d, b"INVITE sip", b"INVITE  sip"), "start line"),
    ("URI", lambda d: replace(d, b"INVITE sip:", b"INVITE http:"), "not a sip"),
    ("utf8", lambda d: replace(d, b"LiveGBS", b"Live\xffGBS"), "header line 11: not UTF-8"),
    ("control", lambda d: replace(d, b"LiveGBS", b"Live\x00GBS"), "control character"),
    ("no end", lambda d: d[:d.index(b"\r\n\r\n")], "no empty line"),
    ("bad Via", lambda d: replace(d, b"SIP/2.0/UDP", b"SIP/2.1/UDP"), "Via"),
    ("bad From", lambda d: replace(d, b"From: <sip:", b"From: <sop:"), "not a sip"),
    ("Max-Forwards", lambda d: replace(d, b"Max-Forwards: 70", b"Max-Forwards: 700"), "Max-Forwards"),
    ("Content-Type", lambda d: replace(d, b"APPLICATION/SDP", b"sdp"), "Content-Type"),
    ("long line", lambda d: replace(d, b"LiveGBS", b"L" * (limits.SIP_LINE_MAX + 1)), "exceeds limit"),
    ("many headers", lambda d: replace(d, b"User-Agent", b"X-A: 1\r\n" * limits.SIP_HEADER_COUNT_MAX + b"User-Agent"),
     "header lines exceed limit"),
    ("big headers", lambda d: replace(d, b"User-Agent", (b"X-A: " + b"a" * 4000 + b"\r\n") * 5 + b"User-Agent"),
     "header section of .* exceeds limit"),
    ("big message", lambda d: d + bytes(limits.SIP_MESSAGE_MAX), "message of .* exceeds limit"),
]


@pytest.mark.parametrize("mutate, error", [(m, e) for _, m, e in REFUSALS], ids=[n for n, _, _ in REFUSALS])
def test_malformed_messages_are_refused_with_what_and_where(mutate, error: str) -> None:
    parse_message(M.INVITE)
    with pytest.raises(SipError, match=error):
        parse_message(mutate(M.INVITE))


def test_missing_content_length_on_udp_takes_the_rest_and_bad_status_is_refused() -> None:
    m = parse_message(M.KEEPALIVE.replace(b"Content-Length: 169\r\n", b""))
    assert m.body == M.KEEPALIVE_BODY and m.content_length is None
    with pytest.raises(SipError, match="start line"):
        parse_message(M.REGISTER_OK.replace(b"200 OK", b"800 OK"))
    with pytest.raises(SipError, match="start line"):
        parse_message(M.REGISTER_OK.replace(b"200 OK", b"20 OK"))


# --- builders: nothing can be injected --------------------------------------------------------

BASE = [("Via", "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK1"), ("From", "<sip:a@3402000000>;tag=1"),
        ("To", "<sip:b@3402000000>"), ("Call-ID", "1@h"), ("CSeq", "1 MESSAGE")]


@pytest.mark.parametrize("name, value", [
    ("Subject", "x\r\nVia: SIP/2.0/UDP evil"), ("Subject", "x\nContent-Length: 0"), ("Subject", "x\rY"),
    ("Subject", "x\x00y"), ("Subject", "\x1b[31m"), ("X-A\r\nVia", "1"), ("X A", "1"), ("Subject:", "x"),
    ("Content-Length", "10"), ("l", "10"), ("Subject", " padded")])
def test_builders_refuse_header_injection(name: str, value: str) -> None:
    with pytest.raises(SipError):
        build_request("MESSAGE", "sip:b@3402000000", BASE + [(name, value)])
    with pytest.raises(SipError):
        build_response(200, "OK", BASE + [(name, value)])


def test_builders_refuse_bad_start_lines() -> None:
    for method in ("", "A B", "MESSAGE\r\n"):
        with pytest.raises(SipError):
            build_request(method, "sip:b@h", BASE)
    for uri in ("sip:b@h x", "sip:b@h\r\nVia: x", "http://x"):
        with pytest.raises(SipError):
            build_request("MESSAGE", uri, BASE)
    for status, reason in ((99, "x"), (700, "x"), (200, "OK\r\nVia: x")):
        with pytest.raises(SipError):
            build_response(status, reason, BASE)
    with pytest.raises(SipError, match="body"):
        build_request("MESSAGE", "sip:b@h", BASE, bytes(limits.SIP_BODY_MAX + 1))


@FUZZ
@given(st.text(max_size=80), st.binary(max_size=300))
def test_any_header_value_either_is_refused_or_arrives_as_itself(value: str, body: bytes) -> None:
    try:
        data = build_request("MESSAGE", "sip:b@3402000000", BASE + [("Subject", value)], body)
    except SipError:
        assert any(c in value for c in "\r\n\x00") or value != value.strip(" \t") or any(
            ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value)
        return
    m = parse_message(data)
    assert m.headers[:-1] == tuple(BASE) + (("Subject", value),)
    assert m.body == body


# --- fuzzing: a value or SipError, nothing else, in bounded time --------------------------------

def without_length(msg: SipRequest | SipResponse) -> SipRequest | SipResponse:
    headers = tuple((n, v) for n, v in msg.headers if n != "Content-Length")
    if isinstance(msg, SipRequest):
        return SipRequest(msg.method, msg.uri, headers, msg.body)
    return SipResponse(msg.status, msg.reason, headers, msg.body)


def parse_or_error(data: bytes) -> None:
    """The invariant: a value or SipError; and whatever is accepted has sound accessors and is rebuilt
    by the builders into bytes that parse back to the same message."""
    try:
        msg = parse_message(data)
    except SipError:
        return
    msg.call_id, msg.cseq, msg.from_, msg.to, msg.via, msg.contact, msg.expires, msg.content_type
    for name, _ in msg.headers:
        msg.header_all(name)
    assert without_length(parse_message(rebuild(msg))) == without_length(msg)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_give_a_message_or_sip_error(data: bytes) -> None:
    parse_or_error(data)
    parse_or_error(b"INVITE sip:a@b SIP/2.0\r\n" + data)


@FUZZ
@given(st.sampled_from(sorted(M.ALL)), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 3),
                                                          st.binary(min_size=0, max_size=8)), max_size=6))
def test_mutated_device_messages_give_a_message_or_sip_error(name: str, edits) -> None:
    data = bytearray(M.ALL[name])
    for pos, op, chunk in edits:
        pos %= len(data) + 1
        if op == 0:
            data[pos:pos] = chunk                      # insert
        elif op == 1:
            del data[pos:pos + len(chunk) + 1]         # delete
        elif op == 2:
            data[pos:pos + len(chunk)] = chunk         # overwrite
        else:
            data = data[:pos]                          # truncate
        if not data:
            data = bytearray(b"\r\n")
    parse_or_error(bytes(data))


@FUZZ
@given(st.sampled_from(sorted(M.ALL)), st.data())
def test_punctuation_swaps_give_a_message_or_sip_error(name: str, data) -> None:
    raw = bytearray(M.ALL[name])
    marks = [i for i, b in enumerate(raw) if chr(b) in ':;,<>"@=/ \r\n']
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.sampled_from(marks))
        raw[i] = ord(data.draw(st.sampled_from(':;,<>"@=/ \r\n\t\\[]?')))
    parse_or_error(bytes(raw))


def test_pathological_inputs_are_refused_fast() -> None:
    rng = random.Random(7)
    worst = [
        b"INVITE sip:a@b SIP/2.0\r\n" + b"Via: " + b",".join([b"SIP/2.0/UDP h;branch=z9hG4bK"] * 140) + b"\r\n"
        + M.INVITE.split(b"\r\n", 2)[2],
        b"INVITE sip:a@b SIP/2.0\r\n" + b"X: " + b'"' * 4000 + b"\r\n" * 2,
        b"A" * limits.SIP_MESSAGE_MAX, b"\r\n" * (limits.SIP_MESSAGE_MAX // 2),
        bytes(rng.randrange(256) for _ in range(limits.SIP_MESSAGE_MAX)),
        M.INVITE.replace(b"From: <", b"From: " + b"<" * 3000),
    ]
    start = time.process_time()
    for data in worst:
        parse_or_error(data)
    assert time.process_time() - start < 2.0


def test_keepalive_value_is_not_a_message() -> None:
    assert KeepAlive() == KeepAlive() and not isinstance(KeepAlive(), (SipRequest, SipResponse))


@FUZZ
@given(st.text(max_size=200), st.sampled_from(["", "sip:", "<sip:", '"a" <sip:1@h>;', "SIP/2.0/UDP ", "sip:1@"]))
def test_uri_address_and_via_parsers_give_a_value_or_sip_error(text: str, prefix: str) -> None:
    for parse in (parse_uri, parse_name_addr, parse_via):
        try:
            value = parse(prefix + text)
        except SipError:
            continue
        if parse is parse_uri:
            assert parse_uri(str(value)) == value
        elif parse is parse_name_addr:
            assert parse_name_addr(str(value)) == value


def test_parsed_accessors_are_computed_once_and_a_caller_cannot_change_them():
    """parse_message already parsed From, To, Via... to check them; the lanes read them again: the
    message keeps what was parsed (it is frozen), and a list it hands out is the caller's own copy."""
    msg = parse_message(M.REGISTER)
    first = msg.via
    first.append(first[0])
    first[0] = None
    assert len(msg.via) == 1 and msg.via[0] is not None
    assert msg.from_ is msg.from_ and msg.cseq == (1, "REGISTER")
    assert msg == parse_message(M.REGISTER) and hash(msg.from_) == hash(parse_message(M.REGISTER).from_)
    assert "_memo" not in repr(msg)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(';,=a b\t"<>\\:@.')), max_size=40), st.sampled_from([",", ";"]))
def test_the_fast_split_gives_what_the_quote_aware_scan_gives(text, sep):
    try:
        expected = _split_scan(text, sep)
    except SipError:
        with pytest.raises(SipError):
            _split_outside_quotes(text, sep)
        return
    assert _split_outside_quotes(text, sep) == expected
