from __future__ import annotations

import pytest

from appliance import Appliance, uncoded
from disk_full import tmpfs


@pytest.fixture
def appliance_factory(tmp_path):
    made: list[Appliance] = []

    def make(**kw) -> Appliance:
        a = Appliance(tmp_path / f"a{len(made)}", **kw)
        made.append(a)
        return a

    yield make
    for a in made:
        a.stop()
    for a in made:   # every refusal and loss in the trails carries a reason code
        missing = uncoded(a.trails())
        assert not missing, f"refused/lost records without a reason code: {missing[:3]}"


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root) for an audit trail to fill."""
    mnt = tmp_path / "audit-disk"
    mnt.mkdir()
    with tmpfs(mnt):
        yield mnt
