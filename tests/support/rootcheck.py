"""Root-only tests: skip with a reason, or fail under FERRY_REQUIRE_ROOT_TESTS=1."""
from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_ROOT = os.environ.get("FERRY_REQUIRE_ROOT_TESTS") == "1"


def need_root(*tools: str) -> None:
    """Skip (or, under FERRY_REQUIRE_ROOT_TESTS=1, fail) unless root with the tools."""
    missing = [t for t in tools if shutil.which(t) is None]
    why = None
    if os.geteuid() != 0:
        why = "needs root"
    elif missing:
        why = f"needs {', '.join(missing)}"
    if why:
        if REQUIRE_ROOT:
            pytest.fail(f"{why}, and FERRY_REQUIRE_ROOT_TESTS=1 forbids skipping it")
        pytest.skip(why)
