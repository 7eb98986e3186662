"""SIP messages (RFC 3261) as GB/T 28181 devices and platforms send them: parse strictly, build safely.

Sans-IO, as h11 is: no sockets, no clock. Bytes go in, frozen values come out; values go in,
bytes come out. The caller owns the socket.

Parsing
    `parse_message(data)` takes one UDP datagram and returns a `SipRequest` or a `SipResponse`.
    `SipStreamParser().feed(data)` takes the bytes of a TCP connection in any cuts and returns
    the messages (and keep-alive pings) it completed. Both raise `SipError` and nothing else on
    malformed or oversized input; any other exception is a bug. Every error names what and where
    ("header line 7: no colon", "Content-Length 900 exceeds limit 65535").

Decisions (strict, because ferry rebuilds every message it forwards and copies none):
    - Lines end in CRLF. A bare LF or CR is refused (RFC 3261 §7: CRLF; GB/T 28181 devices send it).
    - Obsolete line folding (a header line that starts with SP or HTAB, RFC 3261 §7.3.1) is refused.
    - Header names are RFC 3261 tokens; values are UTF-8 with no control characters but HTAB.
      Names are normalized to their canonical long form (compact forms i f t v m l c k s e o u r
      x b y are accepted); a header this module does not know keeps the spelling it came with.
    - Requests and responses need Via, From, To, Call-ID and CSeq (RFC 3261 §8.1.1); Max-Forwards
      is optional (many devices omit it in responses and some in requests). A request's CSeq method
      must be its method. The request line's URI must be a sip: or sips: URI.
    - Single-valued headers (From, To, Call-ID, CSeq, Max-Forwards, Content-Length, Content-Type,
      Expires, ...) may appear once; a second one is refused when parsing.
    - UDP: Content-Length, when present, must equal the body's length exactly (RFC 3261 §18.3
      lets UDP omit it: the body is then the rest of the datagram). TCP: Content-Length is
      mandatory.
    - The body is bytes, never decoded (MANSCDP bodies are GB2312/GBK).
    - URIs: sip:/sips: with user, host, port and ;params. A password in the userinfo and
      ?headers are refused.
    - Sizes are bounded by ferry.limits: SIP_MESSAGE_MAX, SIP_HEADER_SECTION_MAX, SIP_LINE_MAX,
      SIP_HEADER_COUNT_MAX, SIP_BODY_MAX, SIP_URI_MAX, SIP_STREAM_BUFFER_MAX.

Stream (TCP)
    `feed` returns SipRequest, SipResponse and `KeepAlive` values. A CRLFCRLF between messages is
    an RFC 5626 ping and comes out as `KeepAlive()` (the caller may answer CRLF); a lone CRLF
    between messages (a pong) is skipped. The buffer is bounded: a peer that never ends its header
    section is refused once SIP_HEADER_SECTION_MAX is passed. After an error the parser stays
    broken (every later `feed` raises): close the connection.

Building
    `build_request`, `build_response` and `response_to` return bytes. The builder sets
    Content-Length (a caller's Content-Length is refused); every header name must be a token and
    every value free of CR, LF, NUL and other control characters, so a value copied from hostile
    input can never inject a header or a body. `response_to` copies Via, From, To (adding a tag),
    Call-ID and CSeq as RFC 3261 §8.2.6 says. `new_branch`, `new_tag` and `new_call_id` use
    `secrets`.

Speed (issue 13: thousands of keepalives a second through one Python process)
    A message in the shape devices send takes a fast path: the header section is decoded and
    checked for control characters at once, its lines split by one regex; plain `;name=value`
    parameters skip the per-parameter scan; parsed URIs, hosts, Via sent-by and Content-Type values
    are cached (frozen values, shared; at most limits.SIP_PARSE_CACHE_MAX each, keys of at most
    SIP_PARSE_CACHE_KEY_MAX characters); the accessors' values are computed once while checking.
    The builders check the whole header section at once. Whatever the fast path is not sure of goes
    the strict way, which refuses what it always refused and names the fault: the property tests in
    tests/codecs/test_sip_fast.py hold both equal to the former codec (tests/codecs/sip_reference.py).

Accessors
    `header(name)` (case-insensitive, compact forms too; SipError if a header that is not a list
    header is repeated), `header_all(name)` (every value, comma-split for the list headers RFC 3261 §7.3.1
    allows, such as Via), and `call_id`, `cseq`, `from_`, `to`, `via`, `contact`, `content_type`,
    `content_length`, `expires`, `max_forwards`. `Via.rport` is None when absent, 0 when present
    without a value (a client asking for it), the port otherwise.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, TypeVar, Union, overload

from ferry import limits
from ferry.codecs.errors import CodecError

__all__ = [
    "SipError", "SipUri", "NameAddr", "Via", "SipRequest", "SipResponse", "SipMessage", "KeepAlive",
    "SipStreamParser", "parse_message", "parse_uri", "parse_name_addr", "parse_via", "canonical_name",
    "build_request", "build_response", "response_to", "new_branch", "new_tag", "new_call_id",
]


class SipError(CodecError, ValueError):
    """Malformed, oversized or refused SIP (or a value a builder cannot put into SIP)."""


# --- grammar pieces (RFC 3261 §25.1) ------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_VERSION = "SIP/2.0"
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HOSTNAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?")
_USER = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
_PARAMCHAR = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
_DIGITS = re.compile(r"[0-9]{1,10}")

_COMPACT = {"i": "Call-ID", "f": "From", "t": "To", "v": "Via", "m": "Contact", "l": "Content-Length",
            "c": "Content-Type", "k": "Supported", "s": "Subject", "e": "Content-Encoding", "o": "Event",
            "u": "Allow-Events", "r": "Refer-To", "x": "Session-Expires", "b": "Referred-By", "y": "Identity"}
_KNOWN = ["Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
          "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
          "Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info",
          "Event", "Expires", "From", "Identity", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires",
          "Organization", "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Record-Route",
          "Refer-To", "Referred-By", "Reply-To", "Require", "Retry-After", "Route", "Server", "Session-Expires",
          "Subject", "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
          "Warning", "WWW-Authenticate"]
_CANONICAL = {n.lower(): n for n in _KNOWN} | _COMPACT
_SINGLE = frozenset(n.lower() for n in [
    "Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type", "Content-Encoding",
    "Expires", "Min-Expires", "Subject", "Date", "User-Agent", "Server", "MIME-Version", "Session-Expires",
    "Event", "Subscription-State", "Timestamp", "Priority", "Organization", "Retry-After", "Refer-To",
    "Referred-By", "Reply-To", "In-Reply-To"])
# headers whose value is a comma-separated list (RFC 3261 §7.3.1; the authentication headers are not)
_LIST = frozenset(n.lower() for n in [
    "Via", "Route", "Record-Route", "Contact", "Allow", "Supported", "Require", "Proxy-Require", "Unsupported",
    "Accept", "Accept-Encoding", "Accept-Language", "Allow-Events", "Content-Encoding", "Content-Language",
    "Alert-Info", "Call-Info", "Error-Info", "Warning", "In-Reply-To"])


# the spellings devices and ferry's own code use, looked up as they are (any other: lower-cased first)
_SPELLED = {k: _CANONICAL[k.lower()] for k in [*_KNOWN, *_CANONICAL, *(n.upper() for n in _CANONICAL)]}
_SPELLED_LOW = {k: v.lower() for k, v in _SPELLED.items()}


def canonical_name(name: str) -> str:
    """The canonical long form of a header name (compact forms expanded); unknown names unchanged."""
    found = _SPELLED.get(name)
    return found if found is not None else _CANONICAL.get(name.lower(), name)


def _want(name: str) -> str:
    """canonical_name(name).lower(), the key of the header index."""
    found = _SPELLED_LOW.get(name)
    return found if found is not None else _CANONICAL.get(name.lower(), name).lower()


def _check_token(text: str, what: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise SipError(f"{what} {text[:40]!r} is not a token")
    return text


def _check_host(host: str, what: str = "host") -> str:
    if len(host) <= limits.SIP_PARSE_CACHE_KEY_MAX and _host_ok(host):
        return host
    return _check_host_strictly(host, what)


@functools.lru_cache(maxsize=limits.SIP_PARSE_CACHE_MAX)
def _host_ok(host: str) -> bool:
    try:
        _check_host_strictly(host, "host")
    except SipError:
        return False
    return True


def _check_host_strictly(host: str, what: str) -> str:
    if host.startswith("["):
        if not host.endswith("]"):
            raise SipError(f"{what} {host[:60]!r}: unclosed IPv6 reference")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise SipError(f"{what} {host[:60]!r} is not an IPv6 address") from None
        return host
    if not host or len(host) > 255 or not _HOSTNAME.fullmatch(host):
        raise SipError(f"{what} {host[:60]!r} is not a host name or IPv4 address")
    if "." in host and host.replace(".", "").isdigit():   # an all-digit name is a GB/T 28181 domain ID
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise SipError(f"{what} {host!r} is not an IPv4 address") from None
    return host


def _check_port(text: str, what: str = "port") -> int:
    if not _DIGITS.fullmatch(text) or not 0 < int(text) <= 65535:
        raise SipError(f"{what} {text[:20]!r} is not a port (1-65535)")
    return int(text)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on `sep` outside quoted strings and <...> (a comma inside a URI or a display name stays)."""
    if '"' not in text and "<" not in text and ">" not in text:
        return text.split(sep)      # nothing quoted: what the scan below gives, at C speed
    return _split_scan(text, sep)


def _split_scan(text: str, sep: str) -> list[str]:
    parts, cur, quoted, angle, i = [], [], False, False, 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\" and i + 1 < len(text):
                cur.append(text[i:i + 2])
                i += 2
                continue
            if ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == sep and not angle:
            parts.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    if quoted:
        raise SipError(f"unterminated quoted string in {text[:60]!r}")
    if angle:
        raise SipError(f"unclosed '<' in {text[:60]!r}")
    parts.append("".join(cur))
    return parts


_PLAIN_PARAMS = re.compile(r"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+)?)*")


def _plain_params(text: str) -> tuple[tuple[str, str | None], ...] | None:
    """`text` (empty, or parameters each after a ';') as `_params(text.split(";")[1:])` gives it, when
    it is in the plain form: no white space, no quoted value, each name once. None otherwise: then
    `_params` decides (and names the fault)."""
    if not text:
        return ()
    if _PLAIN_PARAMS.fullmatch(text) is None:
        return None
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for p in text[1:].split(";"):
        name, eq, value = p.partition("=")
        low = name.lower()
        if low in seen:
            return None
        seen.add(low)
        out.append((name, value if eq else None))
    return tuple(out)


def _params(parts: list[str], what: str) -> tuple[tuple[str, str | None], ...]:
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for p in parts:
        p = p.strip(" \t")
        name, eq, value = p.partition("=")
        name = name.strip(" \t")
        _check_token(name, f"{what} parameter")
        if name.lower() in seen:
            raise SipError(f"{what} parameter {name!r} appears twice")
        seen.add(name.lower())
        if eq:
            value = value.strip(" \t")
            if value.startswith('"'):
                if len(value) < 2 or not value.endswith('"'):
                    raise SipError(f"{what} parameter {name!r}: bad quoted string")
            elif not _PARAMCHAR.fullmatch(value):
                raise SipError(f"{what} parameter {name!r}: bad value {value[:40]!r}")
            out.append((name, value))
        else:
            out.append((name, None))
    return tuple(out)


# --- URIs, name-addr, Via -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SipUri:
    """sip:user@host:port;params (RFC 3261 §19.1). GB/T 28181: sip:34020000001320000001@3402000000."""
    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user is not None else ""
        port = f":{self.port}" if self.port is not None else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params)
        return f"{self.scheme}:{user}{self.host}{port}{params}"

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k.lower() == name.lower():
                return v if v is not None else ""
        return None


def parse_uri(text: str) -> SipUri:
    """A sip: or sips: URI; SipError names what is wrong."""
    if len(text) <= limits.SIP_PARSE_CACHE_KEY_MAX:
        found = _cached_uri(text)
        if found is not None:
            return found
    return _parse_uri(text)


@functools.lru_cache(maxsize=limits.SIP_PARSE_CACHE_MAX)
def _cached_uri(text: str) -> SipUri | None:
    """parse_uri's value, None where it raises (SipUri is frozen: one value may serve every caller)."""
    try:
        return _parse_uri(text)
    except SipError:
        return None


def _parse_uri(text: str) -> SipUri:
    if len(text) > limits.SIP_URI_MAX:
        raise SipError(f"URI of {len(text)} characters exceeds limit {limits.SIP_URI_MAX}")
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        raise SipError(f"URI {text[:60]!r}: not a sip: or sips: URI")
    if "?" in rest.rpartition("@")[2]:
        raise SipError(f"URI {text[:60]!r}: headers in a URI are refused")
    user: str | None = None
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if ":" in user:
            raise SipError(f"URI {text[:60]!r}: a password in the URI is refused")
        if not user or not _USER.fullmatch(user):
            raise SipError(f"URI {text[:60]!r}: bad user part")
    hostport, *pparts = rest.split(";")
    host, port = _split_hostport(hostport, f"URI {text[:60]!r}")
    params = _params(pparts, "URI")
    return SipUri(scheme.lower(), user, host, port, params)


@functools.lru_cache(maxsize=limits.SIP_PARSE_CACHE_MAX)
def _cached_hostport(hostport: str) -> tuple[str, int | None] | None:
    try:
        return _split_hostport(hostport, "")
    except SipError:
        return None


def _split_hostport(hostport: str, what: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise SipError(f"{what}: unclosed IPv6 reference")
        host, rest = hostport[:end + 1], hostport[end + 1:]
        if rest and not rest.startswith(":"):
            raise SipError(f"{what}: junk after the IPv6 reference")
        port_text = rest[1:] if rest else None
    else:
        host, colon, p = hostport.partition(":")
        port_text = p if colon else None
    _check_host(host, f"{what}: host")
    return host, (_check_port(port_text, f"{what}: port") if port_text is not None else None)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact value: optional display name, URI, header parameters (tag among them)."""
    display: str | None
    uri: SipUri
    tag: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    def __str__(self) -> str:
        disp = f'"{_quote(self.display)}" ' if self.display is not None else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params)
        return f"{disp}<{self.uri}>{params}"


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def parse_name_addr(text: str) -> NameAddr:
    """name-addr or addr-spec with header parameters (RFC 3261 §20.10, §20.20, §20.39)."""
    text = text.strip(" \t")
    if text[:1] == "<":         # <uri>;params, as devices send it: the plain form without the scan
        uri_text, close, rest = text[1:].partition(">")
        if close:
            plain = _plain_params(rest)
            if plain is not None:
                return _name_addr(None, parse_uri(uri_text), plain, text)
    display: str | None = None
    if text.startswith('"'):
        i, buf = 1, []
        while True:
            if i >= len(text):
                raise SipError(f"address {text[:60]!r}: unterminated display name")
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                buf.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                break
            buf.append(ch)
            i += 1
        display = "".join(buf)
        text = text[i + 1:].lstrip(" \t")
        if not text.startswith("<"):
            raise SipError(f"address after display name {display[:40]!r}: no '<'")
    if "<" in text:
        before, _, after = text.partition("<")
        before = before.strip(" \t")
        if before:
            if display is not None or not all(_TOKEN.fullmatch(w) for w in before.split()):
                raise SipError(f"address {text[:60]!r}: bad display name")
            display = " ".join(before.split())
        uri_text, close, rest = after.partition(">")
        if not close:
            raise SipError(f"address {text[:60]!r}: no '>'")
        uri = parse_uri(uri_text)
        rest = rest.strip(" \t")
        if rest and not rest.startswith(";"):
            raise SipError(f"address {text[:60]!r}: junk after '>'")
        pparts = rest.split(";")[1:] if rest else []
    else:
        # addr-spec: the parameters after the URI belong to the header (RFC 3261 §20.10)
        if "," in text or "?" in text:
            raise SipError(f"address {text[:60]!r}: an addr-spec with ',' or '?' must be in <>")
        uri_text, *pparts = text.split(";")
        uri = parse_uri(uri_text)
    return _name_addr(display, uri, _params(pparts, "address"), text)


def _name_addr(display: str | None, uri: SipUri, params: tuple[tuple[str, str | None], ...], text: str) -> NameAddr:
    tag: str | None = None
    for k, v in params:
        if k.lower() == "tag":
            if not v:
                raise SipError(f"address {text[:60]!r}: empty tag")
            tag = v
            break
    return NameAddr(display, uri, tag, params)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 §20.42): SIP/2.0/<transport> host[:port];params."""
    transport: str
    host: str
    port: int | None
    branch: str | None
    received: str | None
    rport: int | None       # None: absent; 0: present without value; else the port
    params: tuple[tuple[str, str | None], ...] = ()


_PLAIN_VIA = re.compile(r"SIP/2\.0/([A-Za-z0-9\-.!%*_+`'~]+) ([^;\s]+)(.*)", re.S)


def parse_via(text: str) -> Via:
    text = text.strip(" \t")
    m = _PLAIN_VIA.fullmatch(text)
    if m is not None:           # SIP/2.0/UDP host:port;params, as devices send it
        sent_by, rest = m.group(2, 3)
        hostport = _cached_hostport(sent_by) if len(sent_by) <= limits.SIP_PARSE_CACHE_KEY_MAX else None
        plain = _plain_params(rest)
        if hostport is not None and plain is not None:
            return _via(m.group(1).upper(), hostport[0], hostport[1], plain)
    proto, _, rest = text.partition(" ")
    pieces = [p.strip(" \t") for p in proto.split("/")]
    if len(pieces) != 3 or pieces[0].upper() != "SIP" or pieces[1] != "2.0":
        raise SipError(f"Via {text[:60]!r}: not SIP/2.0/<transport>")
    transport = _check_token(pieces[2], "Via transport").upper()
    sent_by, *pparts = rest.strip(" \t").split(";")
    host, port = _split_hostport(sent_by.strip(" \t"), f"Via {text[:60]!r}")
    return _via(transport, host, port, _params(pparts, "Via"))


def _via(transport: str, host: str, port: int | None, params: tuple[tuple[str, str | None], ...]) -> Via:
    found = {k.lower(): v for k, v in params}
    if "received" in found:
        received = found["received"]
        if received is None:
            raise SipError("Via received= without value")
        try:
            ipaddress.ip_address(received)
        except ValueError:
            raise SipError(f"Via received={received[:40]!r} is not an address") from None
    rport: int | None = None
    if "rport" in found:
        v = found["rport"]
        rport = 0 if v is None else _check_port(v, "Via rport")
    branch = found.get("branch")
    if "branch" in found and not branch:
        raise SipError("Via branch without value")
    return Via(transport, host, port, branch, found.get("received"), rport, params)


# --- messages -------------------------------------------------------------------------------------

Headers = tuple[tuple[str, str], ...]
T = TypeVar("T")


class _parsed(Generic[T]):
    """A parsed accessor computed once per message (messages are frozen; a list comes back as a
    fresh copy, so a caller's change never reaches the next caller); errors are raised each time."""

    def __init__(self, fn: Callable[[Any], T]) -> None:
        self.fn, self.name, self.__doc__ = fn, fn.__name__, fn.__doc__

    @overload
    def __get__(self, obj: None, owner: type) -> _parsed[T]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> T: ...

    def __get__(self, obj: object, owner: type) -> Any:
        if obj is None:
            return self
        memo = obj._memo  # type: ignore[attr-defined]
        try:
            value = memo[self.name]
        except KeyError:
            value = memo[self.name] = self.fn(obj)
        return list(value) if type(value) is list else value


@dataclass(frozen=True, slots=True)
class _Base:
    # parsed accessors and the header index, filled on first use (not part of the value)
    _memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False, kw_only=True)

    def _headers(self) -> Headers:
        raise NotImplementedError

    def _values(self, want: str) -> list[str]:
        """The raw values of the header whose lower-case canonical name is `want`, in order."""
        index = self._memo.get("")
        if index is None:
            index = {}
            for n, v in self._headers():
                index.setdefault(n.lower(), []).append(v)
            self._memo[""] = index
        found: list[str] = index.get(want, [])
        return found

    def header(self, name: str) -> str | None:
        """The value of header `name` (case-insensitive; compact forms accepted), or None.

        A list header (Via, Route, Contact...) repeated on several lines comes back as its values
        joined with ", "; any other header that appears more than once is a SipError (for headers
        that may repeat without being lists, such as WWW-Authenticate, use `header_all`)."""
        want = _want(name)
        values = self._values(want)
        if not values:
            return None
        if len(values) > 1:
            if want in _SINGLE or want not in _LIST:
                raise SipError(f"header {canonical_name(name)} appears {len(values)} times")
            return ", ".join(values)
        return values[0]

    def header_all(self, name: str) -> list[str]:
        """Every value of header `name`, in order; list headers (Via, Route, Contact...) comma-split."""
        want = _want(name)
        values = self._values(want)
        return _list_values(values) if want in _LIST else list(values)

    def _required(self, name: str) -> str:
        v = self.header(name)
        if v is None:
            raise SipError(f"no {name} header")
        return v

    @_parsed
    def call_id(self) -> str:
        return self._required("Call-ID")

    @_parsed
    def cseq(self) -> tuple[int, str]:
        return _cseq_value(self._required("CSeq"))

    @_parsed
    def from_(self) -> NameAddr:
        return parse_name_addr(self._required("From"))

    @_parsed
    def to(self) -> NameAddr:
        return parse_name_addr(self._required("To"))

    @_parsed
    def via(self) -> list[Via]:
        return [parse_via(v) for v in self.header_all("Via")]

    @_parsed
    def contact(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.header_all("Contact") if v != "*"]

    @_parsed
    def content_type(self) -> str | None:
        """The media type, lower case, without parameters (Application/MANSCDP+xml -> application/manscdp+xml)."""
        v = self.header("Content-Type")
        return None if v is None else _content_type_value(v)

    def _int_header(self, name: str, top: int) -> int | None:
        return _int_value(name, self.header(name), top)

    @_parsed
    def content_length(self) -> int | None:
        return self._int_header("Content-Length", 2**31 - 1)

    @_parsed
    def expires(self) -> int | None:
        return self._int_header("Expires", 2**32 - 1)

    @_parsed
    def max_forwards(self) -> int | None:
        return self._int_header("Max-Forwards", 255)


def _list_values(values: list[str]) -> list[str]:
    """The values of a list header, each line comma-split."""
    out: list[str] = []
    for v in values:
        out += [p.strip(" \t") for p in _split_outside_quotes(v, ",")]
    return out


def _cseq_value(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2 or not _DIGITS.fullmatch(parts[0]) or int(parts[0]) >= 2**31:
        raise SipError(f"CSeq {value[:40]!r}: not '<number below 2**31> <method>'")
    return int(parts[0]), _check_token(parts[1], "CSeq method")


def _content_type_value(v: str) -> str:
    if len(v) <= limits.SIP_PARSE_CACHE_KEY_MAX:
        found = _cached_content_type(v)
        if found is not None:
            return found
    mtype = v.split(";")[0].strip(" \t").lower()
    top, slash, sub = mtype.partition("/")
    if not slash or not _TOKEN.fullmatch(top) or not _TOKEN.fullmatch(sub):
        raise SipError(f"Content-Type {v[:60]!r}: not type/subtype")
    return mtype


@functools.lru_cache(maxsize=limits.SIP_PARSE_CACHE_MAX)
def _cached_content_type(v: str) -> str | None:
    mtype = v.split(";")[0].strip(" \t").lower()
    top, slash, sub = mtype.partition("/")
    if not slash or not _TOKEN.fullmatch(top) or not _TOKEN.fullmatch(sub):
        return None
    return mtype


def _int_value(name: str, v: str | None, top: int) -> int | None:
    if v is None:
        return None
    if not _DIGITS.fullmatch(v) or int(v) > top:
        raise SipError(f"{name} {v[:20]!r}: not a number from 0 to {top}")
    return int(v)


@dataclass(frozen=True, slots=True)
class SipRequest(_Base):
    method: str
    uri: SipUri
    headers: Headers
    body: bytes = b""

    def _headers(self) -> Headers:
        return self.headers


@dataclass(frozen=True, slots=True)
class SipResponse(_Base):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""

    def _headers(self) -> Headers:
        return self.headers


SipMessage = Union[SipRequest, SipResponse]


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """An RFC 5626 keep-alive ping (CRLFCRLF) between messages on a stream; answer with CRLF."""


# --- parsing --------------------------------------------------------------------------------------

def _decode_line(raw: bytes, where: str) -> str:
    if len(raw) > limits.SIP_LINE_MAX:
        raise SipError(f"{where}: {len(raw)} bytes exceeds limit {limits.SIP_LINE_MAX}")
    if b"\r" in raw or b"\n" in raw:
        raise SipError(f"{where}: bare CR or LF (lines must end in CRLF)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SipError(f"{where}: not UTF-8") from None
    if _CTL.search(text):
        raise SipError(f"{where}: control character")
    return text


# the bytes _decode_line refuses as control characters (CR and LF among them; in UTF-8 they are
# never part of a multi-byte character)
_CTL_BYTES = bytes([*range(0x00, 0x09), *range(0x0a, 0x20), 0x7f])
# the header lines _split_head_strictly accepts, each from its start: a token, white space, a colon,
# white space, the value
_HEADER_LINES = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*([^\r\n]*)", re.M)
_STATUS = re.compile(r"[1-6][0-9]{2}")


def _split_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The start line and the (canonical name, value) headers, as `_split_head_strictly` gives them:
    the section decoded and checked at once, each line matched by one regex. Anything else (an
    over-long section, a fault) goes the strict way, which names the line and the fault."""
    # no line longer than the limit if the section is not; no control character but in the CRLFs
    count = head.count(b"\r\n")             # header lines
    if len(head) <= limits.SIP_LINE_MAX and count <= limits.SIP_HEADER_COUNT_MAX and \
            len(head) - len(head.translate(None, _CTL_BYTES)) == 2 * count:
        try:
            text: str | None = head.decode("utf-8")   # valid as a whole iff each line is (CRLF is ASCII)
        except UnicodeDecodeError:
            text = None
        if text is not None:
            cut = text.find("\r\n")
            if cut < 0:
                return text, []
            # each line matches once at most (from its start); as often as there are lines: each did.
            # No value ends in white space (else strip it the strict way)
            pairs = _HEADER_LINES.findall(text, cut + 2)
            if len(pairs) == count and " \r\n" not in text and "\t\r\n" not in text and \
                    text[-1] not in " \t":
                return text[:cut], [(_SPELLED.get(n) or _CANONICAL.get(n.lower(), n), v) for n, v in pairs]
    return _split_head_strictly(head)


def _split_head_strictly(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.split(b"\r\n")
    if len(lines) - 1 > limits.SIP_HEADER_COUNT_MAX:
        raise SipError(f"{len(lines) - 1} header lines exceed limit {limits.SIP_HEADER_COUNT_MAX}")
    start = _decode_line(lines[0], "start line")
    headers: list[tuple[str, str]] = []
    for number, raw in enumerate(lines[1:], start=2):
        where = f"header line {number}"
        text = _decode_line(raw, where)
        if not text:
            raise SipError(f"{where}: empty")
        if text[0] in " \t":
            raise SipError(f"{where}: folded (obsolete line folding is refused)")
        name, colon, value = text.partition(":")
        if not colon:
            raise SipError(f"{where}: no colon")
        name = name.rstrip(" \t")
        if not _TOKEN.fullmatch(name):
            raise SipError(f"{where}: header name {name[:40]!r} is not a token")
        headers.append((canonical_name(name), value.strip(" \t")))
    return start, headers


def _parse_head(head: bytes, body: bytes = b"") -> tuple[SipRequest | SipResponse, int | None]:
    """The start line and headers (without the final empty line). Returns the message (with `body`)
    and its Content-Length (None if absent)."""
    if len(head) + 4 > limits.SIP_HEADER_SECTION_MAX:
        raise SipError(f"header section of {len(head) + 4} bytes exceeds limit {limits.SIP_HEADER_SECTION_MAX}")
    start, headers = _split_head(head)
    hs = tuple(headers)
    msg: SipRequest | SipResponse
    index = _index(hs)
    if start.startswith(_VERSION + " "):
        parts = start.split(" ", 2)
        if len(parts) != 3 or not _STATUS.fullmatch(parts[1]):
            raise SipError(f"start line {start[:60]!r}: not 'SIP/2.0 <status> <reason>'")
        msg = SipResponse(int(parts[1]), parts[2], hs, body, _memo={"": index})
    else:
        parts = start.split(" ")
        if len(parts) != 3 or parts[2] != _VERSION:
            raise SipError(f"start line {start[:60]!r}: not '<method> <uri> SIP/2.0'")
        method = _check_token(parts[0], "start line: method")
        msg = SipRequest(method, parse_uri(parts[1]), hs, body, _memo={"": index})
    return msg, _validate(msg, index)


def _index(headers: Headers) -> dict[str, list[str]]:
    """The values of each header by its lower-case canonical name, in order."""
    index: dict[str, list[str]] = {}
    for n, v in headers:
        low = n.lower()
        found = index.get(low)
        if found is None:
            index[low] = [v]
        else:
            found.append(v)
    return index


_MANDATORY = [(name.lower(), name) for name in ("Via", "From", "To", "Call-ID", "CSeq")]


def _validate(msg: SipRequest | SipResponse, index: dict[str, list[str]]) -> int | None:
    """Mandatory headers present and well formed; single-valued headers once. Returns Content-Length."""
    if len(index) < len(msg.headers) and any(len(vs) > 1 and low in _SINGLE for low, vs in index.items()):
        seen: set[str] = set()
        for n, _ in msg.headers:        # the first repeated one, in order
            low = n.lower()
            if low in _SINGLE and low in seen:
                raise SipError(f"header {n} appears twice")
            seen.add(low)
    for low, name in _MANDATORY:
        if low not in index:
            raise SipError(f"no {name} header")
    # what the accessors give, computed as they compute it (single-valued headers are known to be
    # there at most once, so header(name) is the one value) and kept with the message
    memo = msg._memo
    memo["call_id"] = call_id = index["call-id"][0]
    if not call_id or len(call_id.split()) != 1:
        raise SipError(f"Call-ID {call_id[:40]!r}: not a single word")
    memo["cseq"] = cseq = _cseq_value(index["cseq"][0])
    if isinstance(msg, SipRequest) and cseq[1] != msg.method:
        raise SipError(f"CSeq method {cseq[1]} is not the request's method {msg.method}")
    memo["from_"] = parse_name_addr(index["from"][0])
    memo["to"] = parse_name_addr(index["to"][0])
    memo["via"] = [parse_via(v) for v in _list_values(index["via"])]
    contact = index.get("contact")
    memo["contact"] = [parse_name_addr(v) for v in _list_values(contact) if v != "*"] if contact else []
    ctype = index.get("content-type")
    memo["content_type"] = None if ctype is None else _content_type_value(ctype[0])
    for key, low, name, top in _NUMBERS:
        found = index.get(low)
        memo[key] = None if found is None else _int_value(name, found[0], top)
    return memo["content_length"]   # type: ignore[no-any-return]


_NUMBERS = [("expires", "expires", "Expires", 2**32 - 1), ("max_forwards", "max-forwards", "Max-Forwards", 255),
            ("content_length", "content-length", "Content-Length", 2**31 - 1)]


def _with_body(msg: SipRequest | SipResponse, body: bytes) -> SipRequest | SipResponse:
    # the same headers: what was parsed of them holds (no accessor reads the body)
    if isinstance(msg, SipRequest):
        return SipRequest(msg.method, msg.uri, msg.headers, body, _memo=msg._memo)
    return SipResponse(msg.status, msg.reason, msg.headers, body, _memo=msg._memo)


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """One SIP message from one UDP datagram (see the module docstring for what is refused)."""
    if len(data) > limits.SIP_MESSAGE_MAX:
        raise SipError(f"message of {len(data)} bytes exceeds limit {limits.SIP_MESSAGE_MAX}")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise SipError("no empty line after the headers")
    body = data[end + 4:]
    msg, length = _parse_head(data[:end], body)
    if len(body) > limits.SIP_BODY_MAX:
        raise SipError(f"body of {len(body)} bytes exceeds limit {limits.SIP_BODY_MAX}")
    if length is not None and length != len(body):
        raise SipError(f"Content-Length {length} but the body has {len(body)} bytes")
    return msg


class SipStreamParser:
    """SIP over TCP (RFC 3261 §18.3): feed bytes in any cuts, get whole messages out."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: tuple[SipRequest | SipResponse, int] | None = None
        self._broken: str | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[SipRequest | SipResponse | KeepAlive]:
        if self._broken is not None:
            raise SipError(f"stream already refused: {self._broken}")
        try:
            return self._feed(data)
        except SipError as e:
            self._broken = str(e)
            self._buf.clear()
            raise

    def _feed(self, data: bytes) -> list[SipRequest | SipResponse | KeepAlive]:
        self._buf += data
        out: list[SipRequest | SipResponse | KeepAlive] = []
        while True:
            if self._head is None:
                buf = self._buf
                if bytes(buf[:1]) in (b"\r", b"\n"):
                    if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                        break                                 # a ping, a pong or the start of one
                    if buf[:4] == b"\r\n\r\n":
                        del buf[:4]
                        out.append(KeepAlive())
                        continue
                    if buf[:2] == b"\r\n":
                        del buf[:2]                           # a pong
                        continue
                    raise SipError("bare CR or LF between messages")
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > limits.SIP_HEADER_SECTION_MAX:
                        raise SipError(f"no end of headers within {limits.SIP_HEADER_SECTION_MAX} bytes")
                    break
                msg, length = _parse_head(bytes(buf[:end]))
                if length is None:
                    raise SipError("no Content-Length (mandatory on a stream)")
                if length > limits.SIP_BODY_MAX:
                    raise SipError(f"Content-Length {length} exceeds limit {limits.SIP_BODY_MAX}")
                if end + 4 + length > limits.SIP_MESSAGE_MAX:
                    raise SipError(f"message of {end + 4 + length} bytes exceeds limit {limits.SIP_MESSAGE_MAX}")
                del buf[:end + 4]
                self._head = (msg, length)
            msg, length = self._head
            if len(self._buf) < length:
                break
            body = bytes(self._buf[:length])
            del self._buf[:length]
            self._head = None
            out.append(_with_body(msg, body))
        return out


# --- building -------------------------------------------------------------------------------------

def _header_line(name: str, value: str) -> str:
    _check_token(name, "header name")
    if not isinstance(value, str):
        raise SipError(f"header {name}: value is not text")
    if _CTL.search(value) or "\r" in value or "\n" in value:
        raise SipError(f"header {name}: value holds CR, LF, NUL or another control character")
    if value != value.strip(" \t"):
        raise SipError(f"header {name}: value starts or ends with white space")
    return f"{canonical_name(name)}: {value}\r\n"


def _assemble(start: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    headers = list(headers)
    fast = _assemble_plain(start, headers, body)
    return fast if fast is not None else _assemble_strictly(start, headers, body)


def _assemble_plain(start: str, headers: list[tuple[str, str]], body: bytes) -> bytes | None:
    """`_assemble_strictly`'s bytes when every check passes at once on the whole header section:
    header names this module knows, no control character but the CRLFs the builder puts, no white
    space after ": " or before a CRLF, a section shorter than one line's limit. None otherwise
    (then the strict way decides, and names the fault; a false alarm only costs time)."""
    if type(body) is not bytes or len(body) > limits.SIP_BODY_MAX or len(headers) >= limits.SIP_HEADER_COUNT_MAX:
        return None
    parts = [start, "\r\n"]
    for name, value in headers:
        canonical = _SPELLED.get(name)        # a name this module knows is a token
        if canonical is None or canonical == "Content-Length" or type(value) is not str:
            return None
        parts += (canonical, ": ", value, "\r\n")
    parts.append(f"Content-Length: {len(body)}\r\n\r\n")
    head = "".join(parts).encode("utf-8")
    if len(head) > limits.SIP_LINE_MAX:       # then no line can exceed it, nor the section its own limit
        return None
    # the start line, each header and Content-Length end in CRLF, and the empty line: len(headers) + 3
    if len(head) - len(head.translate(None, _CTL_BYTES)) != 2 * (len(headers) + 3):
        return None                           # a CR, LF or other control character in a value
    if b":  " in head or b": \t" in head or b" \r\n" in head or b"\t\r\n" in head:
        return None                           # perhaps a value that starts or ends with white space
    out = head + body
    return out if len(out) <= limits.SIP_MESSAGE_MAX else None


def _assemble_strictly(start: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    if not isinstance(body, (bytes, bytearray)):
        raise SipError("body is not bytes")
    if len(body) > limits.SIP_BODY_MAX:
        raise SipError(f"body of {len(body)} bytes exceeds limit {limits.SIP_BODY_MAX}")
    lines = [start + "\r\n"]
    count = 0
    for name, value in headers:
        if canonical_name(name) == "Content-Length":
            raise SipError("Content-Length is set by the builder")
        lines.append(_header_line(name, value))
        count += 1
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    if count + 1 > limits.SIP_HEADER_COUNT_MAX:
        raise SipError(f"{count + 1} header lines exceed limit {limits.SIP_HEADER_COUNT_MAX}")
    for line in lines:
        if len(line.encode()) - 2 > limits.SIP_LINE_MAX:
            raise SipError(f"line {line[:40]!r}... exceeds limit {limits.SIP_LINE_MAX}")
    head = "".join(lines).encode("utf-8")
    if len(head) > limits.SIP_HEADER_SECTION_MAX:
        raise SipError(f"header section of {len(head)} bytes exceeds limit {limits.SIP_HEADER_SECTION_MAX}")
    out = head + bytes(body)
    if len(out) > limits.SIP_MESSAGE_MAX:
        raise SipError(f"message of {len(out)} bytes exceeds limit {limits.SIP_MESSAGE_MAX}")
    return out


def build_request(method: str, uri: SipUri | str, headers: Iterable[tuple[str, str]], body: bytes = b"") -> bytes:
    """A request's bytes; Content-Length is added. SipError on a bad method, URI, name or value."""
    _check_token(method, "method")
    u = uri if isinstance(uri, SipUri) else parse_uri(uri)
    text = str(u)
    parse_uri(text)
    return _assemble(f"{method} {text} {_VERSION}", headers, body)


def build_response(status: int, reason: str, headers: Iterable[tuple[str, str]], body: bytes = b"") -> bytes:
    """A response's bytes; Content-Length is added."""
    if not isinstance(status, int) or not 100 <= status <= 699:
        raise SipError(f"status {status!r} is not 100-699")
    if _CTL.search(reason) or "\r" in reason or "\n" in reason:
        raise SipError("reason phrase holds a control character")
    return _assemble(f"{_VERSION} {status} {reason}", headers, body)


def response_to(request: SipRequest, status: int, reason: str, extra_headers: Iterable[tuple[str, str]] = (),
                body: bytes = b"", to_tag: str | None = None) -> bytes:
    """The response to `request` (RFC 3261 §8.2.6): Via (all, in order), From, To (with `to_tag` added
    when the request's To has none), Call-ID and CSeq copied, then `extra_headers`."""
    to = request.header("To")
    if to is None:
        raise SipError("request has no To header")
    if to_tag is not None:
        _check_token(to_tag, "To tag")
        parsed = request._memo.get("to")     # what parse_name_addr(to) gave when the message was parsed
        current = (parsed if parsed is not None else parse_name_addr(to)).tag
        if current is None:
            to = f"{to};tag={to_tag}"
        elif current != to_tag:
            raise SipError(f"request's To already has tag {current!r}")
    copied: list[tuple[str, str]] = [("Via", v) for v in request.header_all("Via")]
    copied += [("From", request._required("From")), ("To", to), ("Call-ID", request.call_id),
               ("CSeq", request._required("CSeq"))]
    return build_response(status, reason, copied + list(extra_headers), body)


def new_branch() -> str:
    """A Via branch with RFC 3261's magic cookie (§8.1.1.7)."""
    return "z9hG4bK" + secrets.token_hex(12)


def new_tag() -> str:
    return secrets.token_hex(8)


def new_call_id(host: str) -> str:
    _check_host(host, "Call-ID host")
    return f"{secrets.token_hex(16)}@{host}"

