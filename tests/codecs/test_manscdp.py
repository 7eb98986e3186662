"""MANSCDP bodies as cameras and NVRs send them: each schema, values, build, pages, ID mapping.

The bodies below follow what Hikvision, Dahua and Uniview devices put in their MESSAGEs
(GB2312 declared, Chinese names, CRLF or LF, tabs, elements out of order, empty and missing
optional elements, a Password in a Catalog Item).
"""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.codecs.errors import CodecError
from ferry.codecs.manscdp import (
    _SCHEMAS,
    Item,
    Manscdp,
    ManscdpError,
    build,
    catalog_pages,
    keepalive,
    map_ids,
    parse,
    schema_known,
)
from ferry.limits import MANSCDP_DROPPED_MAX, MANSCDP_DROPPED_NAME_MAX, MANSCDP_FREE_TEXT_MAX

CAM = "34020000001320000001"
NVR = "34020000001110000001"
PLATFORM = "34020000002000000001"

HIK_CATALOG = """<?xml version="1.0" encoding="GB2312"?>
<Response>
<CmdType>Catalog</CmdType>
<SN>17430</SN>
<DeviceID>34020000001110000001</DeviceID>
<SumNum>3</SumNum>
<DeviceList Num="3">
<Item>
<DeviceID>34020000001320000001</DeviceID>
<Name>南门入口</Name>
<Manufacturer>Hikvision</Manufacturer>
<Model>IP Camera</Model>
<Owner>Owner</Owner>
<CivilCode>3402000000</CivilCode>
<Address>Address</Address>
<Parental>0</Parental>
<ParentID>34020000001110000001</ParentID>
<SafetyWay>0</SafetyWay>
<RegisterWay>1</RegisterWay>
<Secrecy>0</Secrecy>
<Password>12345</Password>
<Status>ON</Status>
<Longitude>120.1512340</Longitude>
<Latitude>30.2784560</Latitude>
<Info>
<PTZType>1</PTZType>
</Info>
</Item>
<Item>
<DeviceID>34020000001320000002</DeviceID>
<Name>停车场 西侧</Name>
<Manufacturer>Hikvision</Manufacturer>
<Model>IP Camera</Model>
<Owner>Owner</Owner>
<CivilCode>3402000000</CivilCode>
<Address></Address>
<Parental>0</Parental>
<ParentID>34020000001110000001</ParentID>
<SafetyWay>0</SafetyWay>
<RegisterWay>1</RegisterWay>
<Secrecy>0</Secrecy>
<Status>OFF</Status>
</Item>
<Item>
<DeviceID>34020000001340000001</DeviceID>
<Name>报警输入1</Name>
<Status>ON</Status>
</Item>
</DeviceList>
</Response>
"""

DAHUA_KEEPALIVE = (
    '<?xml version="1.0" encoding="GB2312" ?>\r\n<Notify>\r\n\t<CmdType>Keepalive</CmdType>\r\n'
    "\t<SN>43</SN>\r\n\t<DeviceID>34020000001320000001</DeviceID>\r\n\t<Status> OK </Status>\r\n"
    "\t<Info>\r\n\t\t<DeviceID>34020000001340000001</DeviceID>\r\n"
    "\t\t<DeviceID>34020000001340000002</DeviceID>\r\n\t</Info>\r\n</Notify>\r\n")

HIK_KEEPALIVE = """<?xml version="1.0" encoding="GB2312"?>
<Notify>
<CmdType>Keepalive</CmdType>
<SN>2012</SN>
<DeviceID>34020000001320000001</DeviceID>
<Status>OK</Status>
<Info>
</Info>
</Notify>
"""

HIK_DEVICE_INFO = """<?xml version="1.0" encoding="GB2312"?>
<Response>
<CmdType>DeviceInfo</CmdType>
<SN>2</SN>
<DeviceID>34020000001320000001</DeviceID>
<Result>OK</Result>
<DeviceName>IP CAMERA</DeviceName>
<Manufacturer>Hikvision</Manufacturer>
<Model>DS-2CD2T47G1-L</Model>
<Firmware>V5.6.5</Firmware>
<Channel>1</Channel>
</Response>
"""

DAHUA_STATUS = """<?xml version="1.0" encoding="GB2312"?>
<Response>
<CmdType>DeviceStatus</CmdType>
<SN>3</SN>
<DeviceID>34020000001320000001</DeviceID>
<Result>OK</Result>
<Online>ONLINE</Online>
<Status>OK</Status>
<DeviceTime>2023-05-06T10:11:12</DeviceTime>
<Alarmstatus Num="2">
<Item>
<DeviceID>34020000001340000001</DeviceID>
<DutyStatus>OFFDUTY</DutyStatus>
</Item>
<Item>
<DeviceID>34020000001340000002</DeviceID>
<DutyStatus>ALARM</DutyStatus>
</Item>
</Alarmstatus>
<Encode>ON</Encode>
<Record>OFF</Record>
</Response>
"""

UNV_ALARM = """<?xml version="1.0" encoding="UTF-8"?>
<Notify><CmdType>Alarm</CmdType><SN>150</SN><DeviceID>34020000001320000001</DeviceID>
<AlarmPriority>1</AlarmPriority><AlarmMethod>5</AlarmMethod>
<AlarmTime>2023-05-06T10:11:12.000</AlarmTime><AlarmDescription>移动侦测报警</AlarmDescription>
<Longitude>120.123456</Longitude><Latitude>30.123456</Latitude>
<Info><AlarmType>2</AlarmType><AlarmTypeParam><EventType>1</EventType></AlarmTypeParam></Info>
</Notify>"""

PTZ_CONTROL = """<?xml version="1.0"?>
<Control>
<CmdType>DeviceControl</CmdType>
<SN>11</SN>
<DeviceID>34020000001320000001</DeviceID>
<PTZCmd>A50F01021F0000D6</PTZCmd>
<Info>
<ControlPriority>5</ControlPriority>
</Info>
</Control>
"""

QUERY_CATALOG = """<?xml version="1.0" encoding="GB2312"?>
<Query>
<CmdType>Catalog</CmdType>
<SN>17430</SN>
<DeviceID>34020000001110000001</DeviceID>
</Query>
"""


def gb(text: str) -> bytes:
    return text.encode("gbk")


def body(inner: str, root: str = "Notify", cmd: str = "Keepalive", decl: str = "") -> bytes:
    return (f"{decl}<{root}><CmdType>{cmd}</CmdType><SN>1</SN><DeviceID>{CAM}</DeviceID>"
            f"{inner}</{root}>").encode()


# --- each schema, from device bodies -------------------------------------------------------

def test_hikvision_catalog_with_three_items_gb2312_names_and_a_password():
    m = parse(gb(HIK_CATALOG))
    assert (m.root, m.cmd_type, m.sn, m.device_id, m.sum_num) == ("Response", "Catalog", 17430, NVR, 3)
    assert [i.device_id for i in m.items] == [CAM, "34020000001320000002", "34020000001340000001"]
    assert [i.get("Name") for i in m.items] == ["南门入口", "停车场 西侧", "报警输入1"]
    first = m.items[0]
    assert first.get("Longitude") == "120.1512340" and first.get("Info/PTZType") == "1"
    assert first.get("Password") is None
    assert m.dropped == ("DeviceList/Item/Password",)
    assert m.items[1].get("Address") is None  # empty element: absent
    assert m.items[2].fields == (("DeviceID", "34020000001340000001"), ("Name", "报警输入1"),
                                 ("Status", "ON"))  # missing optional elements
    assert b"12345" not in build(m)


def test_catalog_item_fields_are_in_canonical_order_whatever_the_device_sent():
    text = HIK_CATALOG.replace("<Name>报警输入1</Name>\n<Status>ON</Status>",
                               "<Status>ON</Status>\n<Name>报警输入1</Name>")
    assert parse(gb(text)).items[2] == parse(gb(HIK_CATALOG)).items[2]


def test_keepalives_dahua_tabs_crlf_and_padded_values_and_hikvision_empty_info():
    m = parse(gb(DAHUA_KEEPALIVE))
    assert m.fields == (("Status", "OK"), ("Info/DeviceID", "34020000001340000001"),
                        ("Info/DeviceID", "34020000001340000002"))
    assert m.get_all("Info/DeviceID") == ("34020000001340000001", "34020000001340000002")
    h = parse(gb(HIK_KEEPALIVE))
    assert h == keepalive(CAM, 2012)
    assert h.dropped == ()


def test_device_info_response():
    m = parse(gb(HIK_DEVICE_INFO))
    assert m.fields == (("DeviceName", "IP CAMERA"), ("Result", "OK"), ("Manufacturer", "Hikvision"),
                        ("Model", "DS-2CD2T47G1-L"), ("Firmware", "V5.6.5"), ("Channel", "1"))


def test_device_status_response_with_alarm_status_items():
    m = parse(gb(DAHUA_STATUS))
    assert m.get("Online") == "ONLINE" and m.get("Record") == "OFF"
    assert m.get("DeviceTime") == "2023-05-06T10:11:12"
    assert [i.get("DutyStatus") for i in m.items] == ["OFFDUTY", "ALARM"]
    assert m.sum_num is None and m.dropped == ()


def test_alarm_notify_utf8_with_nested_info():
    m = parse(UNV_ALARM.encode())
    assert m.get("AlarmDescription") == "移动侦测报警"
    assert m.get("AlarmTime") == "2023-05-06T10:11:12.000"
    assert m.get("Info/AlarmTypeParam/EventType") == "1" and m.get("Info/AlarmType") == "2"
    assert parse(build(m)) == m


def test_ptz_control_and_its_response():
    m = parse(PTZ_CONTROL.encode())
    assert m.fields == (("PTZCmd", "A50F01021F0000D6"), ("Info/ControlPriority", "5"))
    r = parse(body("<Result>OK</Result>", "Response", "DeviceControl"))
    assert r.get("Result") == "OK"
    with pytest.raises(ManscdpError, match="Result> is required"):
        parse(body("", "Response", "DeviceControl"))


@pytest.mark.parametrize("ptz, problem", [
    ("A50F01021F0000D7", "checksum"),      # byte 8 off by one
    ("A50E01021F0000D5", "check nibble"),  # byte 2's check nibble wrong (checksum kept right)
    ("B50F01021F0000E6", "A5"),
    ("A50F01021F0000", "8 bytes"),
    ("A50F01021F0000DG", "8 bytes"),
])
def test_a_ptz_command_with_a_bad_checksum_or_shape_is_refused(ptz, problem):
    with pytest.raises(ManscdpError, match=problem) as exc:
        parse(body(f"<PTZCmd>{ptz}</PTZCmd>", "Control", "DeviceControl"))
    assert exc.value.kind == "value" and "line 1" in str(exc.value)


def test_other_device_control_commands():
    m = parse(body("<GuardCmd>SetGuard</GuardCmd><TeleBoot>Boot</TeleBoot>", "Control",
                   "DeviceControl"))
    assert m.fields == (("TeleBoot", "Boot"), ("GuardCmd", "SetGuard"))
    with pytest.raises(ManscdpError, match="RecordCmd"):
        parse(body("<RecordCmd>Erase</RecordCmd>", "Control", "DeviceControl"))


def test_queries():
    q = parse(gb(QUERY_CATALOG))
    assert (q.root, q.cmd_type, q.fields, q.dropped) == ("Query", "Catalog", (), ())
    for cmd in ("DeviceInfo", "DeviceStatus"):
        assert parse(body("", "Query", cmd)).cmd_type == cmd
    assert schema_known("Query", "Catalog") and not schema_known("Query", "RecordInfo")


def test_an_unknown_cmd_type_keeps_only_the_common_fields_and_lists_the_rest():
    m = parse(body("<StartTime>2023-01-01T00:00:00</StartTime><Secrecy>0</Secrecy>", "Query",
                   "RecordInfo"))
    assert (m.root, m.cmd_type, m.sn, m.device_id) == ("Query", "RecordInfo", 1, CAM)
    assert m.fields == () and m.items == () and m.dropped == ("StartTime", "Secrecy")
    assert parse(build(m)) == replace(m, dropped=())


def test_unknown_elements_and_attributes_are_dropped_by_path():
    m = parse(body('<Status x="1">OK</Status><Extra>1</Extra><Info><Vendor>a</Vendor></Info>'))
    assert m.fields == (("Status", "OK"),)
    assert m.dropped == ("Status@x", "Extra", "Info/Vendor")


# --- values ----------------------------------------------------------------------------------

@pytest.mark.parametrize("inner, where", [
    ("<Status>MAYBE</Status>", "Status"),
    ("<Info><DeviceID>3402000000132000000</DeviceID></Info>", "DeviceID"),   # 19 digits
    ("<Info><DeviceID>3402000000132000000a1</DeviceID></Info>", "DeviceID"),
])
def test_keepalive_values_are_checked(inner, where):
    with pytest.raises(ManscdpError, match=where) as exc:
        parse(body(inner))
    assert exc.value.kind == "value"


@pytest.mark.parametrize("inner, problem", [
    ("<Longitude>180.5</Longitude>", "Longitude"),
    ("<Latitude>-90.01</Latitude>", "Latitude"),
    ("<Latitude>1e3</Latitude>", "Latitude"),
    ("<AlarmPriority>5</AlarmPriority>", "AlarmPriority"),
    ("<AlarmTime>2023-02-30T10:00:00</AlarmTime>", "calendar"),
    ("<AlarmTime>2023-02-03 10:00:00</AlarmTime>", "YYYY-MM-DDTHH:MM:SS"),
    ("<AlarmDescription>a&#10;b</AlarmDescription>", "control character U\\+000A"),
    ("<AlarmDescription>a\u0085b</AlarmDescription>", "control character U\\+0085"),
    (f"<AlarmDescription>{'报' * (MANSCDP_FREE_TEXT_MAX + 1)}</AlarmDescription>", "longer than"),
    ("<AlarmMethod>-1</AlarmMethod>", "AlarmMethod"),
    ("<AlarmDescription>door \u202egnp.exe</AlarmDescription>", "control character U\\+202E"),
])
def test_alarm_values_are_checked_by_type(inner, problem):
    with pytest.raises(ManscdpError, match=problem):
        parse(body(inner, "Notify", "Alarm"))


@pytest.mark.parametrize("header, problem", [
    ("<CmdType>Keepalive</CmdType><SN>1</SN>", "DeviceID> is missing"),
    (f"<CmdType>Keepalive</CmdType><SN>2147483648</SN><DeviceID>{CAM}</DeviceID>", "SN"),
    (f"<CmdType>Keepalive</CmdType><SN>-1</SN><DeviceID>{CAM}</DeviceID>", "SN"),
    (f"<CmdType>Keep alive</CmdType><SN>1</SN><DeviceID>{CAM}</DeviceID>", "CmdType"),
    (f"<CmdType>Keepalive</CmdType><SN>1</SN><SN>2</SN><DeviceID>{CAM}</DeviceID>", "SN> appears twice"),
    (f"<CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>{CAM}1</DeviceID>", "20-digit"),
])
def test_the_common_fields_are_required_once_and_valid(header, problem):
    with pytest.raises(ManscdpError, match=problem):
        parse(f"<Notify>{header}</Notify>".encode())


def test_look_alike_values_are_refused():
    with pytest.raises(ManscdpError, match="Online"):  # dotless i: "ONLINE" once upper-cased
        parse(body("<Online>Onl\u0131ne</Online>", "Response", "DeviceStatus"))
    with pytest.raises(ManscdpError, match="IP address"):  # a scope would carry any text
        Manscdp("Response", "Catalog", 1, CAM, items=(Item((("DeviceID", CAM), ("IPAddress", "fe80::1%\x01"))),))
    with pytest.raises(ManscdpError, match="Port"):
        parse(body(f'<DeviceList><Item><DeviceID>{CAM}</DeviceID><Port>65536</Port></Item></DeviceList>',
                   "Response", "Catalog"))
    assert parse(body(f'<DeviceList><Item><DeviceID>{CAM}</DeviceID><IPAddress>2001:db8::7</IPAddress>'
                      '</Item></DeviceList>', "Response", "Catalog")).items[0].get("IPAddress") == "2001:db8::7"


def test_the_list_of_dropped_names_is_bounded():
    m = parse(body("".join(f"<X{i}>1</X{i}>" for i in range(100)) + f"<{'Y' * 500}/>"))
    assert len(m.dropped) == MANSCDP_DROPPED_MAX + 1 and m.dropped[-1] == "..."
    assert m.dropped[:2] == ("X0", "X1")
    long = parse(body(f"<{'Y' * 500}/>"))
    assert long.dropped == ("Y" * MANSCDP_DROPPED_NAME_MAX,)


def test_a_repeated_single_element_is_refused_rather_than_choosing_one():
    with pytest.raises(ManscdpError, match="Status> appears more than 1 time") as exc:
        parse(body("<Status>OK</Status><Status>ERROR</Status>"))
    assert exc.value.kind == "malformed"


def test_list_counts_must_agree():
    item = f"<Item><DeviceID>{CAM}</DeviceID></Item>"
    with pytest.raises(ManscdpError, match="Num='2'"):
        parse(body(f'<SumNum>2</SumNum><DeviceList Num="2">{item}</DeviceList>', "Response", "Catalog"))
    with pytest.raises(ManscdpError, match="SumNum 0"):
        parse(body(f'<SumNum>0</SumNum><DeviceList Num="1">{item}</DeviceList>', "Response", "Catalog"))
    with pytest.raises(ManscdpError, match="without <DeviceID>"):
        parse(body('<SumNum>1</SumNum><DeviceList Num="1"><Item><Name>x</Name></Item></DeviceList>',
                   "Response", "Catalog"))


def test_an_element_where_text_is_expected_is_refused_with_its_place():
    with pytest.raises(ManscdpError, match=r"line 2 column 1: <Status> holds elements"):
        parse(body("\n<Status><b>OK</b></Status>"))


def test_cdata_and_character_references_are_values():
    m = parse(body("<AlarmDescription><![CDATA[a<b]]> &amp; &#x62A5;</AlarmDescription>", "Notify",
                   "Alarm"))
    assert m.get("AlarmDescription") == "a<b & 报"
    assert b"a&lt;b &amp; " in build(m, encoding="UTF-8")


# --- encodings -------------------------------------------------------------------------------

def test_gbk_characters_in_a_gb2312_body_are_accepted():
    name = "张镕堃"  # 镕 and 堃 are in GBK, not in GB2312
    with pytest.raises(UnicodeEncodeError):
        name.encode("gb2312")
    m = parse(gb(HIK_CATALOG.replace("南门入口", name)))
    assert m.items[0].get("Name") == name


def test_the_sip_charset_applies_when_there_is_no_declaration_and_must_agree_with_one():
    raw = gb("<Notify><CmdType>Alarm</CmdType><SN>1</SN><DeviceID>" + CAM
             + "</DeviceID><AlarmDescription>门</AlarmDescription></Notify>")
    with pytest.raises(ManscdpError) as exc:
        parse(raw)  # no declaration, no charset: UTF-8, and these are not UTF-8 bytes
    assert exc.value.kind == "encoding"
    assert parse(raw, content_charset="GB2312").get("AlarmDescription") == "门"
    assert parse(raw, content_charset='"gbk"').get("AlarmDescription") == "门"
    with pytest.raises(ManscdpError, match="disagree"):
        parse(gb(HIK_KEEPALIVE), content_charset="UTF-8")
    assert parse(gb(HIK_KEEPALIVE), content_charset="GB18030").sn == 2012
    with pytest.raises(ManscdpError, match="Content-Type charset 'ISO-8859-1'"):
        parse(gb(HIK_KEEPALIVE), content_charset="ISO-8859-1")


def test_a_utf8_bom_and_leading_newlines_are_tolerated_and_lines_still_count():
    assert parse(b"\xef\xbb\xbf" + UNV_ALARM.encode()).sn == 150
    with pytest.raises(ManscdpError, match="line 4 "):
        parse(b"\r\n\r\n" + body("\n<Status>MAYBE</Status>"))


# --- build -----------------------------------------------------------------------------------

def test_build_writes_gb2312_declared_gbk_bytes_in_canonical_order():
    m = parse(gb(HIK_CATALOG))
    out = build(m)
    assert out.startswith(b'<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n')
    assert "南门入口".encode("gbk") in out
    assert out.index(b"<SumNum>") < out.index(b'<DeviceList Num="3">')
    assert parse(out) == replace(m, dropped=())
    assert build(parse(out)) == out


def test_a_character_gbk_lacks_falls_back_to_a_utf8_body():
    m = Manscdp("Notify", "Alarm", 1, CAM, (("AlarmDescription", "门 \U0001F525"),))
    out = build(m)
    assert out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert parse(out) == m
    g = build(m, encoding="GB18030")  # GB18030 has every character
    assert g.startswith(b'<?xml version="1.0" encoding="GB18030"?>') and parse(g) == m
    with pytest.raises(ManscdpError, match="encoding 'latin-1'"):
        build(m, encoding="latin-1")


def test_values_are_validated_when_a_message_is_built_by_hand():
    with pytest.raises(ManscdpError, match="20 digits"):
        Manscdp("Notify", "Keepalive", 1, "123")
    with pytest.raises(ManscdpError, match="not in the schema"):
        Manscdp("Notify", "Keepalive", 1, CAM, (("Password", "x"),))
    with pytest.raises(ManscdpError, match="canonical order"):
        Manscdp("Response", "DeviceInfo", 1, CAM, (("Result", "OK"), ("DeviceName", "x")))
    with pytest.raises(ManscdpError, match="root"):
        Manscdp("Register", "Keepalive", 1, CAM)
    with pytest.raises(ManscdpError, match="SN"):
        Manscdp("Notify", "Keepalive", True, CAM)  # type: ignore[arg-type]
    assert isinstance(ManscdpError("x"), CodecError) and isinstance(ManscdpError("x"), ValueError)


# --- helpers for the lanes -------------------------------------------------------------------

def _items(n: int) -> list[Item]:
    return [Item((("DeviceID", f"340200000013200{i:05d}"), ("Name", f"通道{i}"))) for i in range(n)]


def test_catalog_pages_carry_the_total_and_their_own_count():
    pages = catalog_pages(PLATFORM, 17430, _items(5), None, 2)
    assert [len(p.items) for p in pages] == [2, 2, 1]
    assert {(p.sum_num, p.sn, p.device_id) for p in pages} == {(5, 17430, PLATFORM)}
    raw = [build(p) for p in pages]
    assert [b'<DeviceList Num="2">' in r for r in raw] == [True, True, False]
    assert b"<SumNum>5</SumNum>" in raw[2] and b'<DeviceList Num="1">' in raw[2]
    assert [parse(r) for r in raw] == pages
    assert [i for p in pages for i in p.items] == _items(5)
    empty = catalog_pages(PLATFORM, 1, [], None, 10)
    assert len(empty) == 1 and parse(build(empty[0])) == empty[0]
    assert b'<SumNum>0</SumNum>' in build(empty[0])
    with pytest.raises(ManscdpError):
        catalog_pages(PLATFORM, 1, _items(3), 2, 10)
    with pytest.raises(ManscdpError):
        catalog_pages(PLATFORM, 1, _items(3), None, 0)


def test_map_ids_replaces_every_device_id_and_checks_the_result():
    table = {NVR: "11010000001110000009", CAM: "11010000001320000009",
             "34020000001340000001": "11010000001340000009"}

    def fn(d: str) -> str:
        return table.get(d, "11010000009999999999")

    m = map_ids(parse(gb(HIK_CATALOG)), fn)
    assert m.device_id == "11010000001110000009"
    assert m.items[0].device_id == "11010000001320000009"
    assert m.items[0].get("ParentID") == "11010000001110000009"
    assert m.items[1].device_id == "11010000009999999999"
    assert m.items[0].get("Name") == "南门入口"
    for old in table:
        assert old.encode() not in build(m)
    k = map_ids(parse(gb(DAHUA_KEEPALIVE)), fn)
    assert k.get_all("Info/DeviceID") == ("11010000001340000009", "11010000009999999999")
    path = Manscdp("Response", "Catalog", 1, CAM, items=(Item((("DeviceID", CAM), ("ParentID", f"{NVR}/{CAM}"))),))
    assert map_ids(path, fn).items[0].get("ParentID") == "11010000001110000009/11010000001320000009"
    with pytest.raises(ManscdpError, match="20"):
        map_ids(m, lambda d: "short")


# --- round trip over generated messages --------------------------------------------------------

def _ptz() -> st.SearchStrategy[str]:
    def make(b: list[int]) -> str:
        b1 = ((b[0] & 0xF) << 4) | ((0xA + 0x5 + (b[0] & 0xF)) % 16)
        raw = bytes([0xA5, b1, *b[1:]])
        return (raw + bytes([sum(raw) % 256])).hex().upper()
    return st.lists(st.integers(0, 255), min_size=6, max_size=6).map(make)


_ID = st.from_regex(r"\A[0-9]{20}\Z")
_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs"),
                              blacklist_characters="\ufffe\uffff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"),
                min_size=1, max_size=MANSCDP_FREE_TEXT_MAX).map(lambda s: s.strip(" \t\r\n")).filter(bool)
_TIME = st.datetimes(min_value=__import__("datetime").datetime(1000, 1, 1)).map(
    lambda d: d.isoformat(timespec="seconds"))


def _kind(kind: str) -> st.SearchStrategy[str]:
    enums = {"okerror": ["OK", "ERROR", "ok"], "onoff": ["ON", "OFF"],
             "status": ["ON", "OFF", "OK", "ONLINE", "Offline"], "online": ["ONLINE", "OFFLINE"],
             "duty": ["ONDUTY", "OFFDUTY", "ALARM"], "event": ["ON", "ADD", "DEL", "UPDATE", "VLOST"],
             "teleboot": ["Boot"], "recordcmd": ["Record", "StopRecord"],
             "guardcmd": ["SetGuard", "ResetGuard"], "alarmcmd": ["ResetAlarm"]}
    if kind in enums:
        return st.sampled_from(enums[kind])
    return {
        "id": _ID,
        "idpath": st.lists(_ID, min_size=1, max_size=3).map("/".join),
        "int": st.integers(-(2**31), 2**31 - 1).map(str),
        "uint": st.integers(0, 2**31 - 1).map(str),
        "bool01": st.sampled_from(["0", "1"]),
        "port": st.integers(0, 65535).map(str),
        "priority": st.integers(1, 4).map(str),
        "lon": st.floats(-180, 180).map(lambda x: f"{x:.6f}"),
        "lat": st.floats(-90, 90).map(lambda x: f"{x:.7f}"),
        "time": _TIME,
        "text": _TEXT,
        "token": st.from_regex(r"\A[0-9A-Za-z._-]{1,64}\Z"),
        "ip": st.one_of(st.ip_addresses().map(str)),
        "ptz": _ptz(),
    }[kind]


@st.composite
def _fields(draw, leaves, required=()):
    out = []
    for path, kind, most in leaves:
        n = draw(st.integers(1 if path in required else 0, min(most, 3)))
        out.extend((path, draw(_kind(kind))) for _ in range(n))
    return tuple(out)


@st.composite
def messages(draw):
    key = draw(st.sampled_from([*sorted(_SCHEMAS), ("Query", "RecordInfo"), ("Notify", "MediaStatus")]))
    root, cmd = key
    common = dict(root=root, cmd_type=cmd, sn=draw(st.integers(0, 2**31 - 1)), device_id=draw(_ID))
    schema = _SCHEMAS.get(key)
    if schema is None:
        return Manscdp(**common)
    fields = draw(_fields(schema.leaves, schema.required))
    items: tuple[Item, ...] = ()
    if schema.list_path:
        items = tuple(Item(f) for f in draw(st.lists(_fields(schema.item, schema.item_required), max_size=3)))
    sum_num = None
    if schema.sum_num and draw(st.booleans()):
        sum_num = len(items) + draw(st.integers(0, 1000))
    return Manscdp(**common, fields=fields, items=items, sum_num=sum_num)


@settings(max_examples=300, deadline=None)
@given(messages(), st.sampled_from(["GB2312", "GBK", "GB18030", "UTF-8"]))
def test_parse_of_build_is_the_message(m, encoding):
    out = build(m, encoding=encoding)
    assert parse(out) == m
    assert build(parse(out), encoding=encoding) == out
