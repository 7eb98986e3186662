"""HTTP digest authentication as SIP and GB/T 28181 use it (RFC 2617, RFC 3261 §22): MD5, qop "auth" or none.

Sans-IO and pure: strings in, strings and values out. The caller keeps the nonces it issued and the
passwords; `verify` only computes and compares.

Server side (ferry as the upper platform of outer devices)
    `www_authenticate(Challenge(realm, nonce, ...))` -> the WWW-Authenticate value of a 401;
    `parse_authorization(value)` -> `Credentials` (strict: RFC 2617 quoted-string grammar, each
    parameter once, sizes bounded by DIGEST_HEADER_MAX and DIGEST_PARAMS_MAX, username, realm,
    nonce, uri and response mandatory, response 32 hex digits, nc 8 hex digits and cnonce when qop
    is given, algorithm MD5 only, qop auth only);
    `verify(creds, method, password, challenge)` -> bool: realm, nonce and opaque must be the
    challenge's, the qop the challenge offered must be used (no qop only when none was offered),
    the uri must be present (and equal `request_uri` when given), and the response is compared in
    constant time. What stays with the caller: choosing `password` by `creds.username` (and
    checking that the username is the device the request speaks for), issuing fresh nonces,
    expiring them and refusing a repeated or decreasing nc for one nonce (replay).

Client side (ferry registering to the inner platform)
    `parse_challenge(value)` -> `Challenge`; `authorization(challenge, method, uri, username,
    password, cnonce, nc=1)` -> the Authorization value.

Errors are `DigestError`, a `SipError`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from ferry import limits
from ferry.codecs.sip import SipError

__all__ = ["DigestError", "Challenge", "Credentials", "www_authenticate", "parse_challenge",
           "parse_authorization", "authorization", "verify", "response_digest"]


class DigestError(SipError):
    """Malformed or refused digest challenge or credentials."""


_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_NC = re.compile(r"[0-9a-fA-F]{8}")
_QDTEXT = re.compile(r"[\t \x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class Challenge:
    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str = "MD5"
    qop: str | None = "auth"


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str            # lower-case hex
    algorithm: str = "MD5"
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None    # 8 hex digits, as sent


def _quote(value: str, what: str) -> str:
    if any(not _QDTEXT.fullmatch(ch) and ch not in '"\\' for ch in value):
        raise DigestError(f"{what}: control character in value")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_params(value: str) -> dict[str, tuple[str, bool]]:
    """'Digest a=b, c="d"' -> {name (lower case): (value, was_quoted)}."""
    if len(value) > limits.DIGEST_HEADER_MAX:
        raise DigestError(f"digest value of {len(value)} characters exceeds limit {limits.DIGEST_HEADER_MAX}")
    scheme, _, rest = value.strip(" \t").partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"scheme {scheme[:20]!r} is not Digest")
    out: dict[str, tuple[str, bool]] = {}
    i, n = 0, len(rest)

    def skip_ws(j: int) -> int:
        while j < n and rest[j] in " \t":
            j += 1
        return j

    i = skip_ws(i)
    while True:
        m = _TOKEN.match(rest, i)
        if not m:
            raise DigestError(f"digest parameter {len(out) + 1}: no name at {rest[i:i + 20]!r}")
        name = m.group().lower()
        i = skip_ws(m.end())
        if i >= n or rest[i] != "=":
            raise DigestError(f"digest parameter {name!r}: no '='")
        i = skip_ws(i + 1)
        if i < n and rest[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise DigestError(f"digest parameter {name!r}: unterminated quoted string")
                ch = rest[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\":
                    if i + 1 >= n or not ("\x20" <= rest[i + 1] <= "\x7e" or rest[i + 1] == "\t"):
                        raise DigestError(f"digest parameter {name!r}: bad escape")
                    buf.append(rest[i + 1])
                    i += 2
                    continue
                if not _QDTEXT.fullmatch(ch):
                    raise DigestError(f"digest parameter {name!r}: control character in quoted string")
                buf.append(ch)
                i += 1
            val, quoted = "".join(buf), True
        else:
            m = _TOKEN.match(rest, i)
            if not m:
                raise DigestError(f"digest parameter {name!r}: value is neither a token nor a quoted string")
            val, quoted = m.group(), False
            i = m.end()
        if name in out:
            raise DigestError(f"digest parameter {name!r} appears twice")
        out[name] = (val, quoted)
        if len(out) > limits.DIGEST_PARAMS_MAX:
            raise DigestError(f"more than {limits.DIGEST_PARAMS_MAX} digest parameters")
        i = skip_ws(i)
        if i >= n:
            return out
        if rest[i] != ",":
            raise DigestError(f"digest parameter {name!r}: junk {rest[i:i + 20]!r} after the value")
        i = skip_ws(i + 1)


def _algorithm(params: dict[str, tuple[str, bool]]) -> str:
    alg = params.get("algorithm", ("MD5", False))[0]
    if alg.upper() != "MD5":
        raise DigestError(f"algorithm {alg[:20]!r} is not MD5")
    return "MD5"


def www_authenticate(ch: Challenge) -> str:
    """The WWW-Authenticate (or Proxy-Authenticate) value for `ch`."""
    if ch.algorithm.upper() != "MD5":
        raise DigestError(f"algorithm {ch.algorithm!r} is not MD5")
    if ch.qop not in (None, "auth"):
        raise DigestError(f"qop {ch.qop!r} is not auth")
    parts = [f"realm={_quote(ch.realm, 'realm')}", f"nonce={_quote(ch.nonce, 'nonce')}"]
    if ch.opaque is not None:
        parts.append(f"opaque={_quote(ch.opaque, 'opaque')}")
    parts.append("algorithm=MD5")
    if ch.qop is not None:
        parts.append('qop="auth"')
    out = "Digest " + ", ".join(parts)
    if len(out) > limits.DIGEST_HEADER_MAX:
        raise DigestError(f"challenge of {len(out)} characters exceeds limit {limits.DIGEST_HEADER_MAX}")
    return out


def parse_challenge(value: str) -> Challenge:
    """A WWW-Authenticate value (client side). A qop list must offer "auth"."""
    p = _parse_params(value)
    for key in ("realm", "nonce"):
        if key not in p:
            raise DigestError(f"challenge has no {key}")
    qop: str | None = None
    if "qop" in p:
        offered = [q.strip(" \t") for q in p["qop"][0].split(",")]
        if "auth" not in offered:
            raise DigestError(f"challenge qop {p['qop'][0][:40]!r} does not offer auth")
        qop = "auth"
    opaque = p["opaque"][0] if "opaque" in p else None
    return Challenge(p["realm"][0], p["nonce"][0], opaque, _algorithm(p), qop)


def parse_authorization(value: str) -> Credentials:
    """An Authorization (or Proxy-Authorization) value (server side), strictly."""
    p = _parse_params(value)
    for key in ("username", "realm", "nonce", "uri", "response"):
        if key not in p:
            raise DigestError(f"credentials have no {key}")
    for key in ("username", "realm", "nonce", "uri", "response", "cnonce", "opaque"):
        if key in p and not p[key][1]:
            raise DigestError(f"credentials: {key} must be a quoted string")
    response = p["response"][0]
    if not _HEX32.fullmatch(response):
        raise DigestError("credentials: response is not 32 hex digits")
    qop = p["qop"][0] if "qop" in p else None
    cnonce = p["cnonce"][0] if "cnonce" in p else None
    nc = p["nc"][0] if "nc" in p else None
    if qop is not None:
        if qop.lower() != "auth":
            raise DigestError(f"credentials: qop {qop[:20]!r} is not auth")
        qop = "auth"
        if cnonce is None or nc is None:
            raise DigestError("credentials: qop=auth without cnonce and nc")
        if not _NC.fullmatch(nc):
            raise DigestError("credentials: nc is not 8 hex digits")
    elif cnonce is not None or nc is not None:
        raise DigestError("credentials: cnonce or nc without qop")
    if not p["uri"][0]:
        raise DigestError("credentials: empty uri")
    return Credentials(p["username"][0], p["realm"][0], p["nonce"][0], p["uri"][0], response.lower(),
                       _algorithm(p), cnonce, p["opaque"][0] if "opaque" in p else None, qop, nc)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def response_digest(username: str, realm: str, password: str, method: str, uri: str, nonce: str,
                    qop: str | None = None, nc: str | None = None, cnonce: str | None = None) -> str:
    """request-digest of RFC 2617 §3.2.2.1 (MD5, qop auth or none)."""
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if qop is None:
        return _md5(f"{ha1}:{nonce}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def verify(creds: Credentials, method: str, password: str, challenge: Challenge,
           request_uri: str | None = None) -> bool:
    """True when `creds` answer `challenge` for `method` with `password` (see the module docstring)."""
    if creds.realm != challenge.realm or creds.nonce != challenge.nonce:
        return False
    if challenge.opaque is not None and creds.opaque != challenge.opaque:
        return False
    if creds.algorithm != "MD5" or not creds.uri:
        return False
    if request_uri is not None and creds.uri != request_uri:
        return False
    if creds.qop != challenge.qop:
        return False
    expected = response_digest(creds.username, creds.realm, password, method, creds.uri, creds.nonce,
                               creds.qop, creds.nc, creds.cnonce)
    return hmac.compare_digest(expected.encode(), creds.response.lower().encode())


def authorization(challenge: Challenge, method: str, uri: str, username: str, password: str, cnonce: str,
                  nc: int = 1) -> str:
    """The Authorization value answering `challenge` (client side)."""
    if not 1 <= nc <= 0xFFFFFFFF:
        raise DigestError(f"nc {nc} is not 1-0xffffffff")
    ncs = f"{nc:08x}"
    response = response_digest(username, challenge.realm, password, method, uri, challenge.nonce,
                               challenge.qop, ncs if challenge.qop else None, cnonce if challenge.qop else None)
    parts = [f"username={_quote(username, 'username')}", f"realm={_quote(challenge.realm, 'realm')}",
             f"nonce={_quote(challenge.nonce, 'nonce')}", f"uri={_quote(uri, 'uri')}",
             f'response="{response}"', "algorithm=MD5"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque, 'opaque')}")
    if challenge.qop is not None:
        parts += [f"cnonce={_quote(cnonce, 'cnonce')}", "qop=auth", f"nc={ncs}"]
    out = "Digest " + ", ".join(parts)
    if len(out) > limits.DIGEST_HEADER_MAX:
        raise DigestError(f"credentials of {len(out)} characters exceed limit {limits.DIGEST_HEADER_MAX}")
    return out
