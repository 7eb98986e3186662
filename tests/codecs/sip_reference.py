"""The SIP codec as it was before the fast path (ferry/codecs/sip.py at ed97cb8): the strict reference
the property tests in test_sip_fast.py hold the fast codec equal to. Test code only: not imported by ferry.
It raises ferry.codecs.sip.SipError, so "both refuse" means the same exception type."""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Union, overload

from ferry import limits
from ferry.codecs.sip import SipError
# identical in ferry.codecs.sip (and so is everything they call): taken from there, not copied
from ferry.codecs.sip import (  # noqa: E402,F401
    Headers,
    KeepAlive,
    NameAddr,
    SipUri,
    T,
    Via,
    _CANONICAL,
    _COMPACT,
    _CTL,
    _DIGITS,
    _HOSTNAME,
    _KNOWN,
    _LIST,
    _PARAMCHAR,
    _SINGLE,
    _TOKEN,
    _USER,
    _VERSION,
    _check_port,
    _check_token,
    _decode_line,
    _params,
    _quote,
    _split_outside_quotes,
    _split_scan,
    new_branch,
    new_tag,
)

__all__ = [
    "SipUri", "NameAddr", "Via", "SipRequest", "SipResponse", "SipMessage", "KeepAlive",
    "SipStreamParser", "parse_message", "parse_uri", "parse_name_addr", "parse_via", "canonical_name",
    "build_request", "build_response", "response_to", "new_branch", "new_tag", "new_call_id",
]


# --- grammar pieces (RFC 3261 §25.1) ------------------------------------------------------------


# headers whose value is a comma-separated list (RFC 3261 §7.3.1; the authentication headers are not)


def canonical_name(name: str) -> str:
    """The canonical long form of a header name (compact forms expanded); unknown names unchanged."""
    return _CANONICAL.get(name.lower(), name)


def _check_host(host: str, what: str = "host") -> str:
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


# --- URIs, name-addr, Via -------------------------------------------------------------------------


def parse_uri(text: str) -> SipUri:
    """A sip: or sips: URI; SipError names what is wrong."""
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


def parse_name_addr(text: str) -> NameAddr:
    """name-addr or addr-spec with header parameters (RFC 3261 §20.10, §20.20, §20.39)."""
    text = text.strip(" \t")
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
    params = _params(pparts, "address")
    tag = next((v for k, v in params if k.lower() == "tag"), None)
    if any(k.lower() == "tag" for k, _ in params) and not tag:
        raise SipError(f"address {text[:60]!r}: empty tag")
    return NameAddr(display, uri, tag, params)


def parse_via(text: str) -> Via:
    text = text.strip(" \t")
    proto, _, rest = text.partition(" ")
    pieces = [p.strip(" \t") for p in proto.split("/")]
    if len(pieces) != 3 or pieces[0].upper() != "SIP" or pieces[1] != "2.0":
        raise SipError(f"Via {text[:60]!r}: not SIP/2.0/<transport>")
    transport = _check_token(pieces[2], "Via transport").upper()
    sent_by, *pparts = rest.strip(" \t").split(";")
    host, port = _split_hostport(sent_by.strip(" \t"), f"Via {text[:60]!r}")
    params = _params(pparts, "Via")
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
        return list(value) if isinstance(value, list) else value


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
        want = canonical_name(name).lower()
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
        want = canonical_name(name).lower()
        out: list[str] = []
        for v in self._values(want):
            if want in _LIST:
                out += [p.strip(" \t") for p in _split_outside_quotes(v, ",")]
            else:
                out.append(v)
        return out

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
        value = self._required("CSeq")
        parts = value.split()
        if len(parts) != 2 or not _DIGITS.fullmatch(parts[0]) or int(parts[0]) >= 2**31:
            raise SipError(f"CSeq {value[:40]!r}: not '<number below 2**31> <method>'")
        return int(parts[0]), _check_token(parts[1], "CSeq method")

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
        if v is None:
            return None
        mtype = v.split(";")[0].strip(" \t").lower()
        top, slash, sub = mtype.partition("/")
        if not slash or not _TOKEN.fullmatch(top) or not _TOKEN.fullmatch(sub):
            raise SipError(f"Content-Type {v[:60]!r}: not type/subtype")
        return mtype

    def _int_header(self, name: str, top: int) -> int | None:
        v = self.header(name)
        if v is None:
            return None
        if not _DIGITS.fullmatch(v) or int(v) > top:
            raise SipError(f"{name} {v[:20]!r}: not a number from 0 to {top}")
        return int(v)

    @_parsed
    def content_length(self) -> int | None:
        return self._int_header("Content-Length", 2**31 - 1)

    @property
    def expires(self) -> int | None:
        return self._int_header("Expires", 2**32 - 1)

    @property
    def max_forwards(self) -> int | None:
        return self._int_header("Max-Forwards", 255)


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


# --- parsing --------------------------------------------------------------------------------------


def _parse_head(head: bytes) -> tuple[SipRequest | SipResponse, int | None]:
    """The start line and headers (without the final empty line). Returns the message without body
    and its Content-Length (None if absent)."""
    if len(head) + 4 > limits.SIP_HEADER_SECTION_MAX:
        raise SipError(f"header section of {len(head) + 4} bytes exceeds limit {limits.SIP_HEADER_SECTION_MAX}")
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
    hs = tuple(headers)
    msg: SipRequest | SipResponse
    if start.startswith(_VERSION + " "):
        parts = start.split(" ", 2)
        if len(parts) != 3 or not re.fullmatch(r"[1-6][0-9]{2}", parts[1]):
            raise SipError(f"start line {start[:60]!r}: not 'SIP/2.0 <status> <reason>'")
        msg = SipResponse(int(parts[1]), parts[2], hs)
    else:
        parts = start.split(" ")
        if len(parts) != 3 or parts[2] != _VERSION:
            raise SipError(f"start line {start[:60]!r}: not '<method> <uri> SIP/2.0'")
        method = _check_token(parts[0], "start line: method")
        msg = SipRequest(method, parse_uri(parts[1]), hs)
    return msg, _validate(msg)


def _validate(msg: SipRequest | SipResponse) -> int | None:
    """Mandatory headers present and well formed; single-valued headers once. Returns Content-Length."""
    seen: set[str] = set()
    for n, _ in msg.headers:
        low = n.lower()
        if low in _SINGLE and low in seen:
            raise SipError(f"header {n} appears twice")
        seen.add(low)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if name.lower() not in seen:
            raise SipError(f"no {name} header")
    if not msg.call_id or len(msg.call_id.split()) != 1:
        raise SipError(f"Call-ID {msg.call_id[:40]!r}: not a single word")
    _, cseq_method = msg.cseq
    if isinstance(msg, SipRequest) and cseq_method != msg.method:
        raise SipError(f"CSeq method {cseq_method} is not the request's method {msg.method}")
    for check in (lambda: msg.from_, lambda: msg.to, lambda: msg.via, lambda: msg.contact,
                  lambda: msg.content_type, lambda: msg.expires, lambda: msg.max_forwards):
        check()  # each raises SipError on a malformed value
    return msg.content_length


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
    msg, length = _parse_head(data[:end])
    body = data[end + 4:]
    if len(body) > limits.SIP_BODY_MAX:
        raise SipError(f"body of {len(body)} bytes exceeds limit {limits.SIP_BODY_MAX}")
    if length is not None and length != len(body):
        raise SipError(f"Content-Length {length} but the body has {len(body)} bytes")
    return _with_body(msg, body)


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
        current = parse_name_addr(to).tag
        if current is None:
            to = f"{to};tag={to_tag}"
        elif current != to_tag:
            raise SipError(f"request's To already has tag {current!r}")
    copied: list[tuple[str, str]] = [("Via", v) for v in request.header_all("Via")]
    copied += [("From", request._required("From")), ("To", to), ("Call-ID", request.call_id),
               ("CSeq", request._required("CSeq"))]
    return build_response(status, reason, copied + list(extra_headers), body)


def new_call_id(host: str) -> str:
    _check_host(host, "Call-ID host")
    return f"{secrets.token_hex(16)}@{host}"

