"""ferry.codecs.sip_digest: RFC 2617's worked example, real GB/T 28181 REGISTERs, an independent
computation of the digest, strict refusals and fuzzing."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry import limits
from ferry.codecs.sip import SipError, parse_message
from ferry.codecs.sip_digest import (Challenge, Credentials, DigestError, authorization, parse_authorization,
                                     parse_challenge, verify, www_authenticate)
from tests.codecs import sip_messages as M

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# RFC 2617 §3.5
RFC_CHALLENGE = Challenge("testrealm@host.com", "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                          "5ccc069c403ebaf9f0171e9517f40e41")
RFC_AUTHORIZATION = ('Digest username="Mufasa", realm="testrealm@host.com", '
                     'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, '
                     'cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
                     'opaque="5ccc069c403ebaf9f0171e9517f40e41"')


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def by_the_rfc(user: str, realm: str, password: str, method: str, uri: str, nonce: str,
               nc: str | None = None, cnonce: str | None = None) -> str:
    """RFC 2617 §3.2.2.1, written out again here: the second implementation the codec is checked against."""
    a1, a2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    if nc is None:
        return md5(f"{a1}:{nonce}:{a2}")
    return md5(f"{a1}:{nonce}:{nc}:{cnonce}:auth:{a2}")


def test_digest_error_is_a_sip_error() -> None:
    assert issubclass(DigestError, SipError)


def test_rfc2617_worked_example() -> None:
    c = parse_authorization(RFC_AUTHORIZATION)
    assert c == Credentials("Mufasa", "testrealm@host.com", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "/dir/index.html",
                            "6629fae49393a05397450978507c4ef1", "MD5", "0a4f113b",
                            "5ccc069c403ebaf9f0171e9517f40e41", "auth", "00000001")
    assert verify(c, "GET", "Circle Of Life", RFC_CHALLENGE)
    assert not verify(c, "GET", "Circle of Life", RFC_CHALLENGE)
    assert not verify(c, "POST", "Circle Of Life", RFC_CHALLENGE)
    again = parse_authorization(authorization(RFC_CHALLENGE, "GET", "/dir/index.html", "Mufasa", "Circle Of Life",
                                              "0a4f113b"))
    assert again == c
    assert by_the_rfc("Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
                      "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001", "0a4f113b") == c.response


def camera_credentials(data: bytes) -> tuple[str, Credentials]:
    msg = parse_message(data)
    value = msg.header("Authorization")
    assert value is not None
    return msg.method, parse_authorization(value)  # type: ignore[union-attr]


def test_a_camera_register_without_qop_verifies() -> None:
    challenge = parse_challenge(parse_message(M.UNAUTHORIZED).header("WWW-Authenticate") or "")
    assert challenge == Challenge("3402000000", "9bd055e3b4e6c1b6a4c3f2e1d0c9b8a7", None, "MD5", None)
    method, creds = camera_credentials(M.REGISTER_AUTH)
    assert creds.username == "34020000001320000001" and creds.qop is None
    assert verify(creds, method, M.PASSWORD, challenge, request_uri="sip:34020000002000000001@3402000000")
    assert not verify(creds, method, "87654321", challenge)
    assert not verify(creds, method, M.PASSWORD, Challenge("3402000000", "another-nonce", qop=None))
    assert not verify(creds, method, M.PASSWORD, Challenge("3402000001", creds.nonce, qop=None))
    assert not verify(creds, method, M.PASSWORD, challenge, request_uri="sip:34020000002000000002@3402000000")
    # a challenge that offered qop=auth is not answered by credentials without it (no downgrade)
    assert not verify(creds, method, M.PASSWORD, Challenge("3402000000", creds.nonce, qop="auth"))


def test_a_camera_register_with_qop_verifies() -> None:
    challenge = Challenge("3402000000", "6fe9ba44a76be22a", qop="auth")
    method, creds = camera_credentials(M.REGISTER_AUTH_QOP)
    assert (creds.qop, creds.nc, creds.cnonce) == ("auth", "00000001", "61d6d2b1")
    assert verify(creds, method, M.PASSWORD, challenge)
    assert not verify(creds, method, M.PASSWORD, Challenge("3402000000", "6fe9ba44a76be22a", qop=None))
    assert not verify(creds, method, M.PASSWORD, Challenge("3402000000", "6fe9ba44a76be22a", "op", qop="auth"))


def test_ferry_registering_upstream_answers_both_kinds_of_challenge() -> None:
    for ch in (Challenge("3402000000", "n1", qop=None), Challenge("3402000000", "n2", "opq", qop="auth")):
        value = authorization(ch, "REGISTER", "sip:34020000002000000001@3402000000", "34020000002000000009", "pw",
                              "c0ffee", nc=3)
        creds = parse_authorization(value)
        assert verify(creds, "REGISTER", "pw", ch)
        assert creds.nc == ("00000003" if ch.qop else None)


def test_challenge_round_trip_and_escaping() -> None:
    for ch in (RFC_CHALLENGE, Challenge("3402000000", "abc", qop=None), Challenge('a "quoted" \\ realm', "n")):
        assert parse_challenge(www_authenticate(ch)) == ch
    assert parse_challenge('Digest realm="r", nonce="n", qop="auth,auth-int"').qop == "auth"
    with pytest.raises(DigestError, match="does not offer auth"):
        parse_challenge('Digest realm="r", nonce="n", qop="auth-int"')
    for bad in (Challenge("r\r\nVia: x", "n"), Challenge("r", "n\x00"), Challenge("r", "n", algorithm="SHA-256")):
        with pytest.raises(DigestError):
            www_authenticate(bad)


GOOD = 'Digest username="u", realm="r", nonce="n", uri="sip:a@b", response="' + "a" * 32 + '"'


@pytest.mark.parametrize("value, error", [
    ("Basic dTpw", "not Digest"),
    (GOOD + ', username="v"', "appears twice"),
    (GOOD.replace('username="u", ', ""), "no username"),
    (GOOD.replace(', uri="sip:a@b"', ""), "no uri"),
    (GOOD.replace('"u"', "u"), "username must be a quoted string"),
    (GOOD.replace('"u"', '"u'), "junk|unterminated"),
    (GOOD + ", qop=auth", "without cnonce and nc"),
    (GOOD + ', qop=auth-int, nc=00000001, cnonce="c"', "not auth"),
    (GOOD + ', qop=auth, nc=1, cnonce="c"', "nc is not 8 hex digits"),
    (GOOD + ', cnonce="c"', "without qop"),
    (GOOD + ", algorithm=SHA-256", "not MD5"),
    (GOOD.replace("a" * 32, "a" * 31), "32 hex digits"),
    (GOOD.replace("a" * 32, "g" * 32), "32 hex digits"),
    (GOOD.replace('"u"', '"u\x01"'), "control character"),
    (GOOD.replace('"u"', '"u\r\nVia: x"'), "control character"),
    (GOOD + " junk", "junk"),
    (GOOD + ",", "no name"),
    (GOOD + ", =x", "no name"),
    (GOOD + ", x", "no '='"),
    (GOOD + ', x="' + "a" * limits.DIGEST_HEADER_MAX + '"', "exceeds limit"),
    (GOOD + "".join(f", p{i}=1" for i in range(limits.DIGEST_PARAMS_MAX)), f"more than {limits.DIGEST_PARAMS_MAX}"),
])
def test_credentials_are_parsed_strictly(value: str, error: str) -> None:
    parse_authorization(GOOD)
    with pytest.raises(DigestError, match=error):
        parse_authorization(value)


def test_quoted_pairs_and_uppercase_response() -> None:
    c = parse_authorization(GOOD.replace('"u"', '"a\\"b\\\\c"').replace("a" * 32, "A" * 32))
    assert c.username == 'a"b\\c' and c.response == "a" * 32


_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_characters="\x7f"),
                min_size=1, max_size=30)


@FUZZ
@given(_text, _text, _text, _text, _text, st.sampled_from(["REGISTER", "INVITE", "MESSAGE"]),
       st.booleans(), st.integers(1, 2**32 - 1), st.text("0123456789abcdef", min_size=1, max_size=16))
def test_against_an_independent_computation(user, realm, password, nonce, uri, method, qop, nc, cnonce) -> None:
    ch = Challenge(realm, nonce, qop="auth" if qop else None)
    creds = parse_authorization(authorization(ch, method, uri, user, password, cnonce, nc))
    assert (creds.username, creds.realm, creds.nonce, creds.uri) == (user, realm, nonce, uri)
    ncs = f"{nc:08x}" if qop else None
    assert creds.response == by_the_rfc(user, realm, password, method, uri, nonce, ncs, cnonce if qop else None)
    assert verify(creds, method, password, ch)
    assert not verify(creds, method, password + "x", ch)


@FUZZ
@given(st.text(max_size=400))
def test_random_text_gives_credentials_or_digest_error(value: str) -> None:
    for v in (value, "Digest " + value, GOOD[:len(value) % len(GOOD)] + value):
        try:
            parse_authorization(v)
        except DigestError:
            pass
        try:
            parse_challenge(v)
        except DigestError:
            pass


@FUZZ
@given(st.integers(0, len(RFC_AUTHORIZATION)), st.text(max_size=5))
def test_mutated_credentials_give_credentials_or_digest_error(pos: int, chunk: str) -> None:
    try:
        c = parse_authorization(RFC_AUTHORIZATION[:pos] + chunk + RFC_AUTHORIZATION[pos + len(chunk):])
    except DigestError:
        return
    verify(c, "GET", "Circle Of Life", RFC_CHALLENGE)
