"""Strict models of the policy files (pydantic v2).

Unknown keys are errors, nothing is coerced ("123" is not an int), and every
model is frozen. Cross-references (a rule naming a source that does not exist)
are checked in ferry.policy.load, where the line of the offending key is known.
"""

from __future__ import annotations

import re
import warnings
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from ferry import limits
from ferry.lanes import files as files_lane

# Names of policies, sources, destinations and rules: what an audit record quotes.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- sources and destinations --------------------------------------------------

class SpoolSource(Strict):
    """Files dropped into the outer agent's spool directory."""

    kind: Literal["spool"]
    description: str = ""


class SpoolDestination(Strict):
    """The inner agent's spool directory."""

    kind: Literal["spool"]
    description: str = ""


# Later kinds (GB/T 28181 device IDs, addresses) join these as discriminated unions on "kind".
Source = SpoolSource
Destination = SpoolDestination


# --- lane limits -----------------------------------------------------------------

def _known_media_type(value: str) -> str:
    if value not in files_lane.MEDIA_TYPES:
        raise ValueError(
            f"unknown media type {value!r} (known: {', '.join(files_lane.MEDIA_TYPES)})"
        )
    return value


def _distinct(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{v!r} is listed twice")
        seen.add(v)
    return values


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


MediaType = Annotated[str, AfterValidator(_known_media_type)]


class FilesLimits(Strict):
    """What a files-lane rule lets through."""

    max_size: int = Field(ge=0, le=limits.FILE_MAX)
    media_types: Annotated[list[MediaType], Field(min_length=1), AfterValidator(_distinct)]
    # Matched with re.fullmatch against the whole name, after the hard name rules.
    name_pattern: Annotated[str, StringConstraints(min_length=1, max_length=1000), AfterValidator(_regex)]


# --- rules and the policy ----------------------------------------------------------

class Rule(Strict):
    id: Name
    description: str = ""
    lane: Literal["files"]
    from_: Name = Field(alias="from")
    to: Name
    files: FilesLimits


class Policy(Strict):
    """The whole of policy.yaml."""

    policy: Name
    version: Literal[1]          # version of this file format
    description: str = ""
    default: Literal["deny"]
    sources: dict[Name, Source]
    destinations: dict[Name, Destination]
    rules: Annotated[list[Rule], Field(max_length=limits.POLICY_RULES_MAX)]
