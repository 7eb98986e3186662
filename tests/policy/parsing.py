"""A policy parsed from text as `load_plan` parses policy.yaml of folder "pol", and the error it raises."""
from __future__ import annotations

import pytest

from ferry.policy import PolicyError, parse_policy


def parse(text: str):
    return parse_policy({"policy.yaml": text.encode()}, base="pol")


def error(text: str) -> PolicyError:
    """The PolicyError parsing `text` raises (the test fails if it parses)."""
    with pytest.raises(PolicyError) as info:
        parse(text)
    return info.value
