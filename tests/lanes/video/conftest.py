"""Fixtures of the video lane tests: the test policy's plans, and a camera's 2 s of RTP/PS."""
from __future__ import annotations

import pytest

import gb28181

from .test_stream import SSRC, plan_maker


@pytest.fixture
def plan_of(tmp_path):
    """plan_of(**policy_text arguments) -> a loaded plan of the video lane's test policy."""
    return plan_maker(tmp_path)


@pytest.fixture(scope="module")
def packets() -> list[bytes]:
    """2 s of 640x360 H.264 (50 pictures, keyframe first) as a GB/T 28181 camera's RTP/PS."""
    src = gb28181.make_source(None, "h264", seconds=2)
    return [d for d, _ in gb28181.ps_packets(src, "h264", ssrc=SSRC)]
