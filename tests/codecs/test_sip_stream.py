"""ferry.codecs.sip.SipStreamParser: SIP over TCP in any cuts, keep-alives, bounds, a broken stream stays broken."""
from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry import limits
from ferry.codecs.sip import KeepAlive, SipError, SipStreamParser, parse_message
from tests.codecs import sip_messages as M

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PING = b"\r\n\r\n"
PONG = b"\r\n"
STREAM = [M.REGISTER, PING, M.KEEPALIVE, M.CATALOG, PONG, M.INVITE, M.INVITE_OK, PING, PING, M.ACK, M.BYE]


def expected(parts: list[bytes]) -> list[object]:
    """What the parts give, for sequences where a pong is never next to a ping (CRLF CRLFCRLF reads as
    ping, pong: the bytes alone decide) and never last (a trailing CRLF waits for what follows)."""
    out: list[object] = [KeepAlive() if p == PING else parse_message(p) for p in parts if p != PONG]
    return out + [("buffered", 0)]


def feed_cuts(data: bytes, cuts: list[int]) -> list[object]:
    p = SipStreamParser()
    out: list[object] = []
    last = 0
    for c in sorted(set(cuts)) + [len(data)]:
        out += p.feed(data[last:c])
        last = c
    return out + [("buffered", p.buffered)]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 1000, 100_000])
def test_messages_and_keepalives_in_any_step(step: int) -> None:
    data = b"".join(STREAM)
    assert feed_cuts(data, list(range(step, len(data), step))) == expected(STREAM)


@FUZZ
@given(st.lists(st.sampled_from([p for p in STREAM if p != PONG]), min_size=1, max_size=8),
       st.lists(st.integers(0, 20_000), max_size=30))
def test_same_messages_however_the_bytes_are_split(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    assert feed_cuts(data, [c % (len(data) + 1) for c in cuts]) == expected(parts)


@FUZZ
@given(st.lists(st.sampled_from(STREAM), min_size=1, max_size=8), st.lists(st.integers(0, 20_000), max_size=30))
def test_the_cuts_never_change_what_comes_out(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    assert feed_cuts(data, [c % (len(data) + 1) for c in cuts]) == feed_cuts(data, [])


def test_body_waits_for_content_length_bytes() -> None:
    p = SipStreamParser()
    head, body = M.KEEPALIVE.split(b"\r\n\r\n", 1)
    assert p.feed(head + b"\r\n\r\n" + body[:10]) == []
    assert p.feed(body[10:-1]) == []
    (msg,) = p.feed(body[-1:])
    assert msg.body == M.KEEPALIVE_BODY


def test_content_length_is_mandatory_on_a_stream() -> None:
    p = SipStreamParser()
    with pytest.raises(SipError, match="no Content-Length"):
        p.feed(M.KEEPALIVE.replace(b"Content-Length: 169\r\n", b""))


def test_a_header_that_never_ends_is_refused_once_the_limit_passes() -> None:
    p = SipStreamParser()
    p.feed(b"MESSAGE sip:a@b SIP/2.0\r\nX-Slow: ")
    sent = 0
    with pytest.raises(SipError, match="no end of headers"):
        while True:
            p.feed(b"a" * 1000)
            sent += 1000
            assert p.buffered <= limits.SIP_HEADER_SECTION_MAX + 1000
    assert sent <= limits.SIP_HEADER_SECTION_MAX + 1000


def test_an_oversized_content_length_is_refused_before_the_body_comes() -> None:
    p = SipStreamParser()
    big = M.KEEPALIVE.replace(b"Content-Length: 169", f"Content-Length: {limits.SIP_BODY_MAX + 1}".encode())
    with pytest.raises(SipError, match="exceeds limit"):
        p.feed(big.split(b"\r\n\r\n")[0] + b"\r\n\r\n")


def test_after_an_error_the_stream_stays_refused() -> None:
    p = SipStreamParser()
    with pytest.raises(SipError):
        p.feed(b"GARBAGE\r\n\r\n")
    with pytest.raises(SipError, match="already refused"):
        p.feed(M.REGISTER)
    assert p.buffered == 0


@pytest.mark.parametrize("junk", [b"\n", b"\r\r\n", b"\r\nX", b"\n\r\n\r\n"])
def test_bare_line_ends_between_messages_are_refused(junk: bytes) -> None:
    p = SipStreamParser()
    p.feed(M.BYE)
    with pytest.raises(SipError):
        p.feed(junk + M.BYE) and p.feed(b"\r\n\r\n")


def test_a_lone_pong_is_held_until_it_can_be_told_from_a_ping() -> None:
    p = SipStreamParser()
    assert p.feed(PONG) == [] and p.buffered == 2
    assert p.feed(b"\r") == [] and p.buffered == 3
    assert p.feed(b"\n") == [KeepAlive()] and p.buffered == 0
    assert p.feed(PONG + M.BYE) == [parse_message(M.BYE)]


@FUZZ
@given(st.binary(max_size=3000), st.integers(1, 50))
def test_random_stream_bytes_give_messages_or_sip_error(data: bytes, step: int) -> None:
    p = SipStreamParser()
    try:
        for i in range(0, len(data), step):
            out = p.feed(data[i:i + step])
            assert all(isinstance(x, KeepAlive) or x.call_id for x in out)
    except SipError:
        pass
    assert p.buffered <= limits.SIP_STREAM_BUFFER_MAX


@FUZZ
@given(st.lists(st.sampled_from(STREAM), min_size=1, max_size=5), st.integers(0, 10_000), st.binary(max_size=6))
def test_mutated_streams_give_messages_or_sip_error(parts: list[bytes], pos: int, chunk: bytes) -> None:
    data = bytearray(b"".join(parts))
    pos %= len(data)
    data[pos:pos + len(chunk)] = chunk
    p = SipStreamParser()
    try:
        p.feed(bytes(data))
    except SipError:
        pass


def test_a_byte_at_a_time_header_flood_costs_little() -> None:
    p = SipStreamParser()
    data = b"MESSAGE sip:a@b SIP/2.0\r\nX: " + b"a" * (limits.SIP_HEADER_SECTION_MAX + 10)
    start = time.process_time()
    with pytest.raises(SipError, match="no end of headers"):
        for i in range(len(data)):
            p.feed(data[i:i + 1])
    assert time.process_time() - start < 3.0
