"""Strict models of the policy files (pydantic v2), format v1.

Unknown keys are errors, nothing is coerced ("123" is not an int), and every
model is frozen. Sources are a union discriminated on ``kind``, rules one on
``lane`` (a rule holds exactly the section of its lane). Cross-references (a
rule naming a source that does not exist) are checked in ferry.policy.load,
where the line of the offending key is known.
"""

from __future__ import annotations

import ipaddress
import re
import warnings
import zoneinfo
from collections.abc import Callable, Hashable
from typing import Annotated, Literal, TypeVar, Union, get_args

from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator,
)

from ferry import limits
from ferry.codecs import media_type as files_lane
from ferry.policy.device_id import is_ascii_digits

# Names of policies, sources, destinations and rules: what an audit record quotes.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

LANES = ("files", "video", "viid", "signaling", "reverse")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = get_args(Day)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- small value types ---------------------------------------------------------

H = TypeVar("H", bound=Hashable)


def _distinct(values: list[H]) -> list[H]:
    seen: set[H] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{v!r} is listed twice")
        seen.add(v)
    return values


def _digits(n: int, what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not is_ascii_digits(value, n):
            raise ValueError(f"{what} must be exactly {n} ASCII digits, got {value!r}")
        return value
    return check


def _region(value: str) -> str:
    if not (len(value) in (2, 4, 6, 8) and is_ascii_digits(value, len(value))):
        raise ValueError(f"region must be 2, 4, 6 or 8 ASCII digits (a prefix of the 8-digit code), got {value!r}")
    return value


def _network(value: str) -> str:
    if value != value.strip() or "%" in value:
        raise ValueError(f"{value!r}: write a plain network, without spaces or scope ids")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise ValueError(f"bad network: {e}") from None
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(ipaddress.IPv6Network("::ffff:0:0/96")):
        raise ValueError(f"{value!r} is IPv4-mapped: write the IPv4 network")
    return value


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as e:
        raise ValueError(
            f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai; "
            f"is the zone data installed? {type(e).__name__})"
        ) from None
    return value


def _known_media_type(value: str) -> str:
    if value not in files_lane.MEDIA_TYPES:
        raise ValueError(
            f"unknown media type {value!r} (known: {', '.join(files_lane.MEDIA_TYPES)})"
        )
    return value


def _regex(value: str) -> str:
    # A pattern Python warns about (e.g. "possible set difference") may change
    # meaning in a later Python: refuse it rather than let verdicts drift.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            re.compile(value)
        except (re.error, RecursionError, OverflowError, Warning) as e:
            raise ValueError(f"bad regular expression: {e}") from None
    return value


def _clock(value: str) -> str:
    if not (len(value) == 5 and value[2] == ":" and is_ascii_digits(value[:2], 2)
            and is_ascii_digits(value[3:], 2)):
        raise ValueError(f"time must be HH:MM, got {value!r}")
    h, m = int(value[:2]), int(value[3:])
    if not (m < 60 and (h < 24 or (h == 24 and m == 0))):
        raise ValueError(f"time {value!r} out of range (00:00 to 24:00)")
    return value


# A list without repeats: Distinct[X] holds at least one X, DistinctOrEmpty[X] may be empty.
Distinct = Annotated[list[H], Field(min_length=1, max_length=limits.POLICY_LIST_MAX), AfterValidator(_distinct)]
DistinctOrEmpty = Annotated[list[H], Field(min_length=0, max_length=limits.POLICY_LIST_MAX),
                            AfterValidator(_distinct)]


DeviceIdStr = Annotated[str, AfterValidator(_digits(20, "device ID")),
                        Field(json_schema_extra={"pattern": "^[0-9]{20}$"})]
Network = Annotated[str, AfterValidator(_network), Field(description="IPv4/IPv6 network, host bits zero")]
Port = Annotated[int, Field(ge=1, le=65535)]
Protocol = Literal["udp", "tcp", "any"]
MediaType = Annotated[str, AfterValidator(_known_media_type)]
Serial = Annotated[str, AfterValidator(_digits(7, "serial")), Field(json_schema_extra={"pattern": "^[0-9]{7}$"})]
Clock = Annotated[str, AfterValidator(_clock),
                  Field(description="HH:MM", json_schema_extra={"pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"})]
RegionCode = Annotated[str, AfterValidator(_region), Field(json_schema_extra={"pattern": "^([0-9]{2}){1,4}$"})]
IndustryCode = Annotated[str, AfterValidator(_digits(2, "industry code")),
                         Field(json_schema_extra={"pattern": "^[0-9]{2}$"})]
TypeCode = Annotated[str, AfterValidator(_digits(3, "type code")), Field(json_schema_extra={"pattern": "^[0-9]{3}$"})]


# --- sources and destinations --------------------------------------------------

class SerialRange(Strict):
    from_: Serial = Field(alias="from")
    to: Serial

    @model_validator(mode="after")
    def _ordered(self) -> SerialRange:
        if self.from_ > self.to:
            raise ValueError(f"serial range is empty: from {self.from_} is after to {self.to}")
        return self


class DeviceMatch(Strict):
    """All given fields must hold; at least one is given."""

    region: RegionCode | None = None
    industry: Distinct[IndustryCode] | None = None
    type: Distinct[TypeCode] | None = None
    serial: SerialRange | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> DeviceMatch:
        if self.region is None and self.industry is None and self.type is None and self.serial is None:
            raise ValueError("a matcher needs at least one of region, industry, type, serial")
        return self


class SpoolSource(Strict):
    """Files dropped into the outer agent's spool directory."""

    kind: Literal["spool"]
    description: str = ""


class DevicesSource(Strict):
    """GB/T 28181 devices: by matcher or exact ID, optionally pinned to networks."""

    kind: Literal["devices"]
    description: str = ""
    match: Annotated[list[DeviceMatch], Field(max_length=limits.POLICY_LIST_MAX)] = []
    ids: DistinctOrEmpty[DeviceIdStr] = []
    addresses: DistinctOrEmpty[Network] = []
    ports: DistinctOrEmpty[Port] = []
    protocol: Protocol = "any"

    @model_validator(mode="after")
    def _some_devices(self) -> DevicesSource:
        if not self.match and not self.ids:
            raise ValueError("a devices source needs match or ids")
        return self


class AddressesSource(Strict):
    """Peers known by network address."""

    kind: Literal["addresses"]
    description: str = ""
    addresses: Distinct[Network]
    ports: DistinctOrEmpty[Port] = []
    protocol: Protocol = "any"


Source = Annotated[Union[SpoolSource, DevicesSource, AddressesSource], Field(discriminator="kind")]
SOURCE_KINDS = ("spool", "devices", "addresses")


class Destination(Strict):
    kind: Literal["spool", "vms", "viid", "sip", "platform"]
    description: str = ""


# Kept for readers of the v0 models.
SpoolDestination = Destination


# --- lane sections -----------------------------------------------------------------

class FilesLimits(Strict):
    """What a files-lane rule lets through."""

    max_size: int = Field(ge=0, le=limits.FILE_MAX)
    media_types: Distinct[MediaType]
    # Matched with re.fullmatch against the whole name, after the hard name rules.
    name_pattern: Annotated[str, StringConstraints(min_length=1, max_length=1000), AfterValidator(_regex)]
    # Pictures (image/png, image/jpeg, image/gif) this rule allows are decoded and re-encoded with
    # nothing but their pixels (ferry.lanes.cdr); the inner agent checks them again.
    reencode_images: bool = False
    # An empty (0-byte) file is refused unless the rule that matches it says so.
    allow_empty: bool = False


class VideoLimits(Strict):
    """Access units (and G.711 audio if ``audio``) of a video stream."""

    codecs: Distinct[Literal["h264", "h265"]]
    max_width: int = Field(ge=1, le=limits.VIDEO_DIMENSION_MAX)
    max_height: int = Field(ge=1, le=limits.VIDEO_DIMENSION_MAX)
    max_frame_rate: float = Field(gt=0, le=1000)
    max_bitrate_kbps: int = Field(ge=1, le=limits.VIDEO_BITRATE_MAX_KBPS)
    audio: bool = False        # G.711 carried through only if true
    keep_sei: bool = False     # SEI, filler and unknown NAL types stripped unless true
    mode: Literal["remux", "transcode"] = "remux"


ViewObjectType = Literal["Face", "Person", "MotorVehicle", "NonMotorVehicle", "Thing", "Scene", "Image"]
VIEW_OBJECT_TYPES: tuple[ViewObjectType, ...] = get_args(ViewObjectType)
PictureType = Literal["image/jpeg", "image/png"]
PICTURE_TYPES: tuple[PictureType, ...] = get_args(PictureType)


class ViidLimits(Strict):
    """GA/T 1400 view-library objects and their pictures."""

    object_types: Distinct[ViewObjectType]
    max_pictures: int = Field(ge=0, le=limits.VIEW_PICTURES_MAX)
    max_picture_bytes: int = Field(ge=0, le=limits.VIEW_PICTURE_BYTES_MAX)
    picture_types: Distinct[PictureType]


CmdType = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9]{0,31}$")]


class SignalingLimits(Strict):
    """GB/T 28181 MANSCDP messages, matched exactly (case-sensitive)."""

    roots: Distinct[Literal["Query", "Notify", "Response", "Control"]]
    cmd_types: Distinct[CmdType]
    max_body_bytes: int = Field(ge=1, le=limits.SIGNALING_BODY_MAX)


class ReverseLimits(Strict):
    """Requests of the closed reverse-lane schema."""

    requests: Distinct[Literal["start_stream", "stop_stream", "ptz", "catalog_query"]]


class TimeWindow(Strict):
    """Days and a [from, to) time of day; to < from wraps past midnight
    (the window belongs to the day it starts on); from == to is empty."""

    days: Distinct[Day]
    from_: Clock = Field(alias="from")
    to: Clock

    @model_validator(mode="after")
    def _from_not_24(self) -> TimeWindow:
        if self.from_ == "24:00":
            raise ValueError("from may not be 24:00 (use 00:00)")
        return self


class Rate(Strict):
    """Token bucket per source device ID / address / name."""

    per_second: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=1_000_000)


# --- rules and the policy ----------------------------------------------------------

class _RuleBase(Strict):
    id: Name
    description: str = ""
    from_: Name = Field(alias="from")
    to: Name
    when: Annotated[list[TimeWindow], Field(min_length=1, max_length=64)] | None = None
    rate: Rate | None = None


class FilesRule(_RuleBase):
    lane: Literal["files"]
    files: FilesLimits


class VideoRule(_RuleBase):
    lane: Literal["video"]
    video: VideoLimits


class ViidRule(_RuleBase):
    lane: Literal["viid"]
    viid: ViidLimits


class SignalingRule(_RuleBase):
    lane: Literal["signaling"]
    signaling: SignalingLimits


class ReverseRule(_RuleBase):
    lane: Literal["reverse"]
    reverse: ReverseLimits


Rule = Annotated[
    Union[FilesRule, VideoRule, ViidRule, SignalingRule, ReverseRule], Field(discriminator="lane")
]


class Policy(Strict):
    """The whole of policy.yaml."""

    policy: Name
    version: Literal[1]          # version of this file format
    description: str = ""
    default: Literal["deny"]
    timezone: Annotated[str, AfterValidator(_timezone)] = "UTC"
    sources: Annotated[dict[Name, Source], Field(max_length=limits.POLICY_SOURCES_MAX)]
    destinations: Annotated[dict[Name, Destination], Field(max_length=limits.POLICY_SOURCES_MAX)]
    rules: Annotated[list[Rule], Field(max_length=limits.POLICY_RULES_MAX_V1)]
