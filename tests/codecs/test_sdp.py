"""ferry.codecs.sdp: GB/T 28181 SDP from INVITEs and answers, canonical build, strict refusals, fuzzing."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry import limits
from ferry.codecs.errors import CodecError
from ferry.codecs.sdp import Origin, RtpMap, Sdp, SdpError, build_sdp, parse_sdp
from ferry.codecs.sip import SipError
from tests.codecs import sip_messages as M

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALL = {"invite": M.INVITE_SDP, "answer": M.OK_SDP, "tcp": M.TCP_SDP, "playback": M.PLAYBACK_SDP}


def test_sdp_error_is_its_own_family() -> None:
    assert issubclass(SdpError, ValueError) and issubclass(SdpError, CodecError)
    assert not issubclass(SdpError, SipError)


def test_platform_invite_offer() -> None:
    s = parse_sdp(M.INVITE_SDP)
    assert s.origin == Origin("34020000002000000001", "0", "0", "192.168.1.10")
    assert (s.session_name, s.uri, s.connection, s.time) == ("Play", "34020000001320000001:0", "192.168.1.10", (0, 0))
    assert (s.media, s.media_port, s.transport, s.payload_types) == ("video", 30000, "RTP/AVP", (96, 98, 97))
    assert s.rtpmaps == (RtpMap(96, "PS", 90000), RtpMap(98, "H264", 90000), RtpMap(97, "MPEG4", 90000))
    assert s.direction == "recvonly" and s.setup is None
    assert s.ssrc == "0200000001" and s.ssrc_value == 200000001 and s.is_live
    assert s.media_description == ""


def test_camera_answer_keeps_other_attributes_and_f() -> None:
    s = parse_sdp(M.OK_SDP)
    assert s.direction == "sendonly" and s.attributes == (("filesize", "0"),)
    assert s.media_description == "v/2/4///a///"


def test_tcp_media_and_playback() -> None:
    t = parse_sdp(M.TCP_SDP)
    assert (t.transport, t.setup, t.connection_mode, t.ssrc) == ("TCP/RTP/AVP", "passive", "new", "0200000002")
    p = parse_sdp(M.PLAYBACK_SDP)
    assert p.session_name == "Playback" and p.time == (1765008000, 1765011600) and p.is_live is False


@pytest.mark.parametrize("name", sorted(ALL))
def test_build_parse_round_trip(name: str) -> None:
    s = parse_sdp(ALL[name])
    assert parse_sdp(build_sdp(s)) == s
    if name != "answer":
        assert build_sdp(s) == ALL[name]     # the platform's order is the builder's


def test_bare_lf_is_tolerated_and_media_connection_wins() -> None:
    s = parse_sdp(M.INVITE_SDP.replace(b"\r\n", b"\n").replace(b"t=0 0\n", b"t=0 0\nm=video 1 RTP/AVP 96\n", 0)
                  .replace(b"a=recvonly\n", b"c=IN IP4 10.0.0.9\na=recvonly\n"))
    assert s.connection == "10.0.0.9"


def edit(old: bytes, new: bytes, data: bytes = M.INVITE_SDP) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


@pytest.mark.parametrize("data, error", [
    (edit(b"s=Play", b"s=Live"), r"line 3 \(s=\): 'Live' is not one of"),
    (edit(b"v=0", b"v=1"), "version"),
    (edit(b"y=0200000001", b"y=020000001"), "10 digits"),
    (edit(b"y=0200000001", b"y=2200000001"), "10 digits"),
    (edit(b"c=IN IP4 192.168.1.10", b"c=IN IP6 ::1"), "IN IP4"),
    (edit(b"c=IN IP4 192.168.1.10", b"c=IN IP4 192.168.1.300"), "IPv4"),
    (edit(b"c=IN IP4 192.168.1.10\r\n", b""), "no c= line"),
    (edit(b"RTP/AVP", b"RTP/SAVP"), "transport"),
    (edit(b"m=video 30000", b"m=video 70000"), "65535"),
    (edit(b"96 98 97", b"96 96"), "twice"),
    (edit(b"a=rtpmap:97", b"a=rtpmap:99"), "does not list"),
    (edit(b"a=rtpmap:98 H264/90000", b"a=rtpmap:96 H264/90000"), "twice"),
    (edit(b"a=recvonly", b"a=recvonly\r\na=sendonly"), "second direction"),
    (edit(b"a=recvonly", b"a=setup:later"), "setup must be"),
    (edit(b"t=0 0", b"t=0 0\r\nm=audio 2 RTP/AVP 8"), "appears twice"),
    (edit(b"t=0 0\r\n", b""), "m= before t="),
    (edit(b"o=", b"x="), "line 2 must be o="),
    (edit(b"u=", b"i="), "not taken"),
    (edit(b"f=", b"f=v/2<4"), "letters, digits"),
    (edit(b"Play", b"Pl\xe4y"), "not ASCII"),
    (edit(b"Play\r\n", b"Play\r"), "control character|not '<letter>"),
    (edit(b"u=34020000001320000001:0", b"u=3402 0000:0"), "device ID"),
    (edit(b"a=recvonly", b"a=bad name"), "not a token"),
    (M.INVITE_SDP + b"a=" + b"x" * limits.SDP_LINE_MAX + b"\r\n", "exceed limit"),
    (M.INVITE_SDP + b"a=x\r\n" * limits.SDP_LINES_MAX, "lines exceed limit"),
    (M.INVITE_SDP + b"\r\n", "line 14: not '<letter>=<value>'"),
    (M.INVITE_SDP + bytes(limits.SDP_MAX), "exceeds limit"),
    (b"", "no v= line"),
])
def test_refusals_name_the_line(data: bytes, error: str) -> None:
    with pytest.raises(SdpError, match=error):
        parse_sdp(data)


def test_builder_refuses_what_would_inject_a_line() -> None:
    s = parse_sdp(M.INVITE_SDP)
    for bad in (Sdp(**{**_fields(s), "session_name": "Play\r\nc=IN IP4 6.6.6.6"}),
                Sdp(**{**_fields(s), "attributes": (("x", "1\r\nc=IN IP4 6.6.6.6"),)}),
                Sdp(**{**_fields(s), "origin": Origin("dev id", "0", "0", "1.2.3.4")}),
                Sdp(**{**_fields(s), "ssrc": "12"}),
                Sdp(**{**_fields(s), "connection": "evil.example"}),
                Sdp(**{**_fields(s), "media_description": "v/摄像"})):
        with pytest.raises(SdpError):
            build_sdp(bad)


def _fields(s: Sdp) -> dict[str, object]:
    return {f: getattr(s, f) for f in Sdp.__dataclass_fields__}


_ip = st.ip_addresses(v=4).map(str)
_word = st.text("0123456789", min_size=1, max_size=20)


@FUZZ
@given(_word, _ip, st.sampled_from(["Play", "Playback", "Download", "Talk"]), st.integers(0, 65535),
       st.sampled_from(["RTP/AVP", "TCP/RTP/AVP"]), st.sets(st.integers(0, 127), min_size=1, max_size=4),
       st.sampled_from([None, "recvonly", "sendonly"]), st.sampled_from([None, "active", "passive"]),
       st.from_regex(r"[01][0-9]{9}", fullmatch=True) | st.none(), st.from_regex(r"[a-z0-9/]{0,20}", fullmatch=True),
       st.lists(st.tuples(st.from_regex(r"[a-z]{1,8}", fullmatch=True),
                          st.from_regex(r"[ -~]{0,20}", fullmatch=True) | st.none()), max_size=3))
def test_generated_sdp_builds_and_parses_back(user, ip, s, port, transport, pts, direction, setup, ssrc, f, attrs):
    attrs = [(k, v) for k, v in attrs if k not in ("rtpmap", "setup", "connection", "recvonly", "sendonly",
                                                   "sendrecv", "inactive")]
    sdp = Sdp(origin=Origin(user, "0", "1", ip), session_name=s, connection=ip, media_port=port, transport=transport,
              payload_types=tuple(sorted(pts)), rtpmaps=(RtpMap(min(pts), "PS", 90000),), direction=direction,
              setup=setup, attributes=tuple(attrs), ssrc=ssrc, media_description=f)
    try:
        data = build_sdp(sdp)
    except SdpError:
        assert any(v is not None and v != v.strip() for _, v in attrs)
        return
    assert parse_sdp(data) == sdp


@FUZZ
@given(st.binary(max_size=1500))
def test_random_bytes_give_sdp_or_sdp_error(data: bytes) -> None:
    for d in (data, M.INVITE_SDP[:len(data) % 200] + data):
        try:
            parse_sdp(d)
        except SdpError:
            pass


@FUZZ
@given(st.sampled_from(sorted(ALL)), st.lists(st.tuples(st.integers(0, 400), st.binary(max_size=4)), max_size=4))
def test_mutated_sdp_gives_sdp_or_sdp_error(name: str, edits) -> None:
    data = bytearray(ALL[name])
    for pos, chunk in edits:
        pos %= len(data) + 1
        data[pos:pos + len(chunk)] = chunk
    try:
        s = parse_sdp(bytes(data))
    except SdpError:
        return
    assert parse_sdp(build_sdp(s)) == s
