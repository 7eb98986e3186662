"""GB/T 28181 device IDs: exactly 20 ASCII digits; look-alikes never match."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.policy.device_id import DeviceId, DeviceIndex, DeviceMatcher, parse_device_id

GOOD = "43090000001320000001"


def test_fields():
    assert parse_device_id(GOOD) == DeviceId("43090000", "00", "132", "0000001")


LOOK_ALIKES = [
    GOOD[:19],                                   # 19 digits
    GOOD + "1",                                  # 21 digits
    "４３０９" + GOOD[4:],                        # full-width digits
    GOOD.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),   # Arabic-Indic
    GOOD[:19] + "²",                             # superscript two (str.isdigit() says True)
    GOOD[:19] + "\u0663",                        # one Arabic-Indic digit
    " " + GOOD, GOOD + " ", GOOD + "\n", "\t" + GOOD,
    GOOD[:19] + "\0", GOOD + "\0",
    "+" + GOOD[1:], "-" + GOOD[1:], "+" + GOOD,
    GOOD[:10] + "a" + GOOD[11:], GOOD[:10] + "_" + GOOD[11:],
    GOOD[:5] + " " + GOOD[6:],
    "", "0" * 19, "0" * 21,
    "4309000000132000000１",                      # last digit full-width
    "𝟒𝟑𝟎𝟗" + GOOD[4:],                            # mathematical bold digits
]


@pytest.mark.parametrize("s", LOOK_ALIKES)
def test_look_alikes_do_not_parse(s):
    assert parse_device_id(s) is None


@pytest.mark.parametrize("s", [None, 43090000001320000001, GOOD.encode(), [GOOD], 4.3e19])
def test_non_strings_do_not_parse(s):
    assert parse_device_id(s) is None


def test_str_subclass_does_not_parse():
    class Sneaky(str):
        pass
    assert parse_device_id(Sneaky(GOOD)) is None


def index() -> DeviceIndex:
    return DeviceIndex([
        ("by-region", (), [DeviceMatcher("4309", frozenset(), frozenset({"131", "132"}), None)]),
        ("by-id", [GOOD], []),
        ("by-serial", (), [DeviceMatcher("", frozenset({"00"}), frozenset(), ("0000000", "0000009"))]),
    ], memo_max=4)


def test_index_matches_fields_and_ids():
    i = index()
    assert i.sources_for(GOOD) == {"by-region", "by-id", "by-serial"}
    assert i.sources_for("43090000001320000010") == {"by-region"}
    assert i.sources_for("43090000002000000001") == {"by-serial"}          # type 200
    assert i.sources_for("43019000001320000010") == frozenset()             # 4301 is not 4309
    assert i.sources_for("43090000011320000010") == {"by-region"}           # industry 01


@pytest.mark.parametrize("s", LOOK_ALIKES)
def test_index_look_alikes_match_nothing(s):
    assert index().sources_for(s) == frozenset()


def test_index_memo_is_bounded_and_consistent():
    i = index()
    ids = [f"4309000000132{n:07d}" for n in range(20)]
    first = [i.sources_for(x) for x in ids]
    assert len(i._memo) <= 4
    assert [i.sources_for(x) for x in ids] == first
    fresh = index()
    assert fresh.sources_for(ids[2]) is fresh.sources_for(ids[3])          # interned


def test_index_unhashable_or_odd_input():
    i = index()
    assert i.sources_for(None) == frozenset()
    assert i.sources_for(["x"]) == frozenset()


ALL = DeviceIndex([("any", (), [DeviceMatcher("", frozenset(), frozenset(), None)])])


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=24) | st.text(alphabet="0123456789０１２３٠١²³ \n+", min_size=18, max_size=22))
def test_random_strings_match_only_if_exactly_20_ascii_digits(s):
    well_formed = len(s) == 20 and all(c in "0123456789" for c in s)
    assert (parse_device_id(s) is not None) == well_formed
    assert (ALL.sources_for(s) == {"any"}) == well_formed
