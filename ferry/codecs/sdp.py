"""SDP as GB/T 28181 uses it (RFC 4566 with GB/T 28181-2016 annex F): parse strictly, build canonically.

Sans-IO and pure. `parse_sdp(data) -> Sdp`, `build_sdp(sdp) -> bytes`; `parse_sdp(build_sdp(s)) == s`.
Errors are `SdpError` (a `CodecError` and a `ValueError`, not a `SipError`: its own family), each
naming the line ("line 4 (c=): not 'IN IP4 <address>'").

What is taken (anything else is refused):
    v=0; o=<username> <sess-id> <sess-version> IN IP4 <address> (the username is the device ID);
    s=Play | Playback | Download | Talk; u=<device ID>:<n> (optional); c=IN IP4 <address> (at the
    session level or in the media section, at least one; the media section's wins); t=<start> <stop>;
    exactly one m= line, m=video (or m=audio for Talk) <port> RTP/AVP | TCP/RTP/AVP <payload types>;
    a= attributes: rtpmap (payload type listed on the m= line, once each: 96 PS/90000, 98 H264/90000,
    97 MPEG4/90000...), one of recvonly/sendonly/sendrecv/inactive, setup:active|passive|actpass,
    connection:new|existing, and any other attribute kept in order as (name, value) text (e.g.
    a=username:, a=password:, a=downloadspeed:); y=<10 digits> (the SSRC: first digit 0 live or 1
    playback/download, then 5 digits of the domain code, then 4 of serial); f=<media description>
    (kept as text: letters, digits and '/').
    Session-level and media-level attributes are kept together. i=, b=, e=, p=, k=, r=, z= lines are
    refused. Lines end in CRLF (a bare LF is tolerated, as many devices send it; a bare CR is not);
    only printable ASCII; sizes bounded by SDP_MAX, SDP_LINES_MAX, SDP_LINE_MAX.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ferry import limits
from ferry.codecs.errors import CodecError

__all__ = ["SdpError", "Sdp", "Origin", "RtpMap", "parse_sdp", "build_sdp", "SESSION_NAMES", "TRANSPORTS"]


class SdpError(CodecError, ValueError):
    """Malformed, oversized or refused SDP."""


SESSION_NAMES = ("Play", "Playback", "Download", "Talk")
TRANSPORTS = ("RTP/AVP", "TCP/RTP/AVP")
DIRECTIONS = ("recvonly", "sendonly", "sendrecv", "inactive")
_WORD = re.compile(r"[\x21-\x7e]+")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_DIGITS = re.compile(r"[0-9]{1,20}")
_SSRC = re.compile(r"[01][0-9]{9}")
_F = re.compile(r"[A-Za-z0-9/]*")
_U = re.compile(r"[A-Za-z0-9]{1,64}:[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class Origin:
    username: str
    session_id: str
    session_version: str
    address: str


@dataclass(frozen=True, slots=True)
class RtpMap:
    payload_type: int
    encoding: str
    clock_rate: int
    parameters: str | None = None

    def __str__(self) -> str:
        tail = f"/{self.parameters}" if self.parameters is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


@dataclass(frozen=True, slots=True)
class Sdp:
    origin: Origin
    session_name: str                 # Play | Playback | Download | Talk
    connection: str                   # IPv4 address media goes to (or comes from)
    media_port: int
    transport: str                    # RTP/AVP (UDP) | TCP/RTP/AVP
    payload_types: tuple[int, ...]
    media: str = "video"
    rtpmaps: tuple[RtpMap, ...] = ()
    direction: str | None = None      # recvonly | sendonly | sendrecv | inactive
    setup: str | None = None          # active | passive | actpass (TCP media)
    connection_mode: str | None = None  # a=connection: new | existing
    attributes: tuple[tuple[str, str | None], ...] = ()  # other a= lines, in order
    uri: str | None = None            # u=<device ID>:<n>
    time: tuple[int, int] = (0, 0)
    ssrc: str | None = None           # y=, 10 digits
    media_description: str | None = None  # f=

    @property
    def ssrc_value(self) -> int | None:
        """The y= value as the RTP SSRC (GB/T 28181 uses the decimal number)."""
        return int(self.ssrc) if self.ssrc is not None else None

    @property
    def is_live(self) -> bool | None:
        return None if self.ssrc is None else self.ssrc[0] == "0"


def _ipv4(text: str, where: str) -> str:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        raise SdpError(f"{where}: {text[:40]!r} is not an IPv4 address") from None
    return text


def _int(text: str, where: str, top: int) -> int:
    if not _DIGITS.fullmatch(text) or int(text) > top:
        raise SdpError(f"{where}: {text[:20]!r} is not a number from 0 to {top}")
    return int(text)


def parse_sdp(data: bytes) -> Sdp:
    if len(data) > limits.SDP_MAX:
        raise SdpError(f"SDP of {len(data)} bytes exceeds limit {limits.SDP_MAX}")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise SdpError("SDP is not ASCII") from None
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) > limits.SDP_LINES_MAX:
        raise SdpError(f"{len(lines)} SDP lines exceed limit {limits.SDP_LINES_MAX}")
    seen: set[str] = set()
    got: dict[str, str] = {}
    attrs: list[tuple[str, str | None]] = []
    rtpmaps: dict[int, RtpMap] = {}
    in_media = False
    conn_session: str | None = None
    conn_media: str | None = None
    origin: Origin | None = None
    m_line: tuple[str, int, str, tuple[int, ...]] | None = None
    time = (0, 0)
    order = "vos"
    for number, line in enumerate(lines, start=1):
        if len(line) > limits.SDP_LINE_MAX:
            raise SdpError(f"line {number}: {len(line)} bytes exceed limit {limits.SDP_LINE_MAX}")
        if len(line) < 2 or line[1] != "=" or not line[0].islower():
            raise SdpError(f"line {number}: not '<letter>=<value>'")
        if any(not (" " <= ch <= "~") for ch in line):
            raise SdpError(f"line {number}: control character")
        kind, value = line[0], line[2:]
        where = f"line {number} ({kind}=)"
        if number <= 3 and kind != order[number - 1]:
            raise SdpError(f"{where}: line {number} must be {order[number - 1]}=")
        if kind in "vosutmyf" and kind in seen:
            raise SdpError(f"{where}: appears twice")
        if kind != "a" and kind != "c":
            seen.add(kind)
        if kind == "v":
            if value != "0":
                raise SdpError(f"{where}: version is not 0")
        elif kind == "o":
            parts = value.split(" ")
            if len(parts) != 6 or parts[3:5] != ["IN", "IP4"]:
                raise SdpError(f"{where}: not '<username> <id> <version> IN IP4 <address>'")
            if not _WORD.fullmatch(parts[0]) or not _DIGITS.fullmatch(parts[1]) or not _DIGITS.fullmatch(parts[2]):
                raise SdpError(f"{where}: bad username, session id or version")
            origin = Origin(parts[0], parts[1], parts[2], _ipv4(parts[5], where))
        elif kind == "s":
            if value not in SESSION_NAMES:
                raise SdpError(f"{where}: {value[:20]!r} is not one of {', '.join(SESSION_NAMES)}")
            got["s"] = value
        elif kind == "u":
            if in_media or not _U.fullmatch(value):
                raise SdpError(f"{where}: not '<device ID>:<n>' at the session level")
            got["u"] = value
        elif kind == "c":
            parts = value.split(" ")
            if len(parts) != 3 or parts[:2] != ["IN", "IP4"]:
                raise SdpError(f"{where}: not 'IN IP4 <address>'")
            addr = _ipv4(parts[2], where)
            if in_media:
                if conn_media is not None:
                    raise SdpError(f"{where}: appears twice in the media section")
                conn_media = addr
            else:
                if conn_session is not None:
                    raise SdpError(f"{where}: appears twice at the session level")
                conn_session = addr
        elif kind == "t":
            parts = value.split(" ")
            if len(parts) != 2 or in_media:
                raise SdpError(f"{where}: not '<start> <stop>' at the session level")
            time = (_int(parts[0], where, 2**64 - 1), _int(parts[1], where, 2**64 - 1))
        elif kind == "m":
            if "t" not in seen:
                raise SdpError(f"{where}: m= before t=")
            parts = value.split(" ")
            if len(parts) < 4 or parts[0] not in ("video", "audio"):
                raise SdpError(f"{where}: not 'video|audio <port> <transport> <payload types>'")
            if parts[2] not in TRANSPORTS:
                raise SdpError(f"{where}: transport {parts[2][:20]!r} is not one of {', '.join(TRANSPORTS)}")
            pts = tuple(_int(p, where, 127) for p in parts[3:])
            if len(set(pts)) != len(pts):
                raise SdpError(f"{where}: a payload type is listed twice")
            m_line = (parts[0], _int(parts[1], where, 65535), parts[2], pts)
            in_media = True
        elif kind == "a":
            name, colon, aval = value.partition(":")
            if not _TOKEN.fullmatch(name):
                raise SdpError(f"{where}: attribute name {name[:20]!r} is not a token")
            low = name.lower()
            if low == "rtpmap":
                m = re.fullmatch(r"([0-9]{1,3}) ([A-Za-z0-9\-_.]+)/([0-9]{1,6})(?:/([0-9]{1,2}))?", aval)
                if not m:
                    raise SdpError(f"{where}: not 'rtpmap:<pt> <encoding>/<clock>'")
                pt = _int(m.group(1), where, 127)
                if pt in rtpmaps:
                    raise SdpError(f"{where}: rtpmap for payload type {pt} twice")
                rtpmaps[pt] = RtpMap(pt, m.group(2), int(m.group(3)), m.group(4))
            elif low in DIRECTIONS and not colon:
                if "direction" in got:
                    raise SdpError(f"{where}: a second direction attribute")
                got["direction"] = low
            elif low in ("setup", "connection"):
                allowed = ("active", "passive", "actpass") if low == "setup" else ("new", "existing")
                if aval not in allowed or low in got:
                    raise SdpError(f"{where}: {low} must be one of {', '.join(allowed)}, once")
                got[low] = aval
            else:
                attrs.append((name, aval if colon else None))
        elif kind == "y":
            if not _SSRC.fullmatch(value):
                raise SdpError(f"{where}: SSRC is not 10 digits starting with 0 (live) or 1 (playback)")
            got["y"] = value
        elif kind == "f":
            if not _F.fullmatch(value):
                raise SdpError(f"{where}: media description holds characters other than letters, digits and '/'")
            got["f"] = value
        else:
            raise SdpError(f"{where}: line type {kind}= is not taken")
    for kind in "vostm":
        if kind not in seen:
            raise SdpError(f"no {kind}= line")
    connection = conn_media or conn_session
    if connection is None:
        raise SdpError("no c= line")
    assert origin is not None and m_line is not None   # o= and m= were seen
    media, port, transport, pts = m_line
    for pt in rtpmaps:
        if pt not in pts:
            raise SdpError(f"rtpmap for payload type {pt}, which the m= line does not list")
    return Sdp(origin=origin, session_name=str(got["s"]), connection=connection, media_port=port,
               transport=transport, payload_types=pts, media=media, rtpmaps=tuple(rtpmaps.values()),
               direction=_opt(got, "direction"), setup=_opt(got, "setup"),
               connection_mode=_opt(got, "connection"), attributes=tuple(attrs), uri=_opt(got, "u"),
               time=time, ssrc=_opt(got, "y"), media_description=_opt(got, "f"))


def _opt(got: dict[str, str], key: str) -> str | None:
    return got.get(key)


def build_sdp(sdp: Sdp) -> bytes:
    """The SDP in GB/T 28181's usual order; every field is checked by parsing the result."""
    o = sdp.origin
    lines = ["v=0", f"o={o.username} {o.session_id} {o.session_version} IN IP4 {o.address}",
             f"s={sdp.session_name}"]
    if sdp.uri is not None:
        lines.append(f"u={sdp.uri}")
    lines += [f"c=IN IP4 {sdp.connection}", f"t={sdp.time[0]} {sdp.time[1]}",
              f"m={sdp.media} {sdp.media_port} {sdp.transport} {' '.join(str(p) for p in sdp.payload_types)}"]
    if sdp.direction is not None:
        lines.append(f"a={sdp.direction}")
    lines += [f"a=rtpmap:{r}" for r in sdp.rtpmaps]
    if sdp.setup is not None:
        lines.append(f"a=setup:{sdp.setup}")
    if sdp.connection_mode is not None:
        lines.append(f"a=connection:{sdp.connection_mode}")
    lines += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in sdp.attributes]
    if sdp.ssrc is not None:
        lines.append(f"y={sdp.ssrc}")
    if sdp.media_description is not None:
        lines.append(f"f={sdp.media_description}")
    try:
        out = ("\r\n".join(lines) + "\r\n").encode("ascii")
    except UnicodeEncodeError:
        raise SdpError("a field is not ASCII") from None
    if any(("\r" in line or "\n" in line) for line in lines):
        raise SdpError("a field holds CR or LF")
    if parse_sdp(out) != sdp:
        raise SdpError("the SDP does not survive a parse of its own bytes (a field holds a separator)")
    return out
