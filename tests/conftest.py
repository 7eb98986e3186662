"""Suite-wide rules.

Tests marked ``root`` need root (network namespaces, nftables, netem, mounts).
They skip with a reason when not root (``rootcheck.need_root``), but with
FERRY_REQUIRE_ROOT_TESTS=1 (as .ci/run sets) any skip of such a test is turned
into a failure. Shared test code lives in tests/support/ (on sys.path).
"""
from __future__ import annotations

import pytest

from rootcheck import REQUIRE_ROOT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    # an expected failure (xfail: a known bug, reported) is reported as skipped, but is not one
    if (REQUIRE_ROOT and rep.skipped and not hasattr(rep, "wasxfail")
            and item.get_closest_marker("root") is not None):
        rep.outcome = "failed"
        rep.longrepr = f"root test skipped under FERRY_REQUIRE_ROOT_TESTS=1: {rep.longrepr}"
