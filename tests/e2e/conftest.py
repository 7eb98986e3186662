from __future__ import annotations

import pytest

from appliance import Appliance


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
