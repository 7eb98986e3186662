"""The fast MANSCDP path is the strict path: equal values, or the same refusal, for any body.

`ferry.codecs.manscdp.parse` scans the flat bodies that make up nearly all traffic without expat
and falls back to the hardened expat path for anything else. `manscdp_reference.parse` is the
parser as it was before (expat for every body, values validated twice), kept here unchanged.
For real device bodies mutated in the ways that matter (cut, elements repeated, unknown elements,
entities, DTDs, processing instructions, comments, CDATA, odd charsets and declarations, deep
nesting, long text, whitespace and attributes in tags, control characters, line ends) and for
random bytes, both must accept with equal values or both refuse with the same kind and message.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ferry.codecs import manscdp
from ferry.codecs.manscdp import Item, Manscdp, build, keepalive, parse
from ferry.limits import MANSCDP_DEPTH_MAX, MANSCDP_FREE_TEXT_MAX, MANSCDP_TEXT_MAX
from tests.codecs import manscdp_reference as reference
from tests.codecs.test_manscdp import (
    DAHUA_KEEPALIVE,
    DAHUA_STATUS,
    HIK_CATALOG,
    HIK_DEVICE_INFO,
    HIK_KEEPALIVE,
    PTZ_CONTROL,
    UNV_ALARM,
    messages,
)

CAM = "34020000001320000001"
NVR = "34020000001110000001"

KEEPALIVE_GB = (b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
                b"<SN>1234</SN>\r\n<DeviceID>" + CAM.encode() + b"</DeviceID>\r\n<Status>OK</Status>\r\n"
                b"</Notify>\r\n")
CATALOG = Manscdp("Response", "Catalog", 9, NVR, sum_num=5, items=(
    Item((("DeviceID", CAM), ("Name", "南门 入口"), ("ParentID", NVR), ("Status", "ON"),
          ("Longitude", "120.15"), ("Info/PTZType", "1"))),
    Item((("DeviceID", "34020000001340000001"), ("Event", "ADD"), ("IPAddress", "192.0.2.7"),
          ("Port", "5060"))),
))

SEEDS: list[bytes] = [
    KEEPALIVE_GB,
    build(keepalive(CAM, 77), encoding="UTF-8"),
    build(keepalive(CAM, 78, "ERROR")),
    DAHUA_KEEPALIVE.encode("gbk"),
    HIK_KEEPALIVE.encode("gbk"),
    HIK_CATALOG.encode("gbk"),
    build(CATALOG),
    build(CATALOG, encoding="UTF-8"),
    HIK_DEVICE_INFO.encode("gbk"),
    DAHUA_STATUS.encode("gbk"),
    UNV_ALARM.encode(),
    PTZ_CONTROL.encode(),
]


def outcome(parse_fn, raw: bytes, charset: str | None) -> tuple:
    """What a parser makes of a body: its values, or the kind and message of its refusal."""
    try:
        m = parse_fn(raw, content_charset=charset)
    except (manscdp.ManscdpError, reference.ManscdpError) as exc:
        return ("refused", exc.kind, str(exc))
    return ("value", m.root, m.cmd_type, m.sn, m.device_id, m.fields,
            tuple(i.fields for i in m.items), m.sum_num, m.dropped)


def same(raw: bytes, charset: str | None = None) -> tuple:
    got = outcome(parse, raw, charset)
    want = outcome(reference.parse, raw, charset)
    assert got == want, raw
    if got[0] == "value":  # and the fast value is a whole, valid Manscdp
        m = parse(raw, content_charset=charset)
        assert Manscdp(m.root, m.cmd_type, m.sn, m.device_id, m.fields, m.items, m.sum_num,
                       m.dropped) == m
    return got


# --- the device bodies take the fast path --------------------------------------------------------

@pytest.mark.parametrize("i", range(len(SEEDS)))
def test_device_bodies_are_parsed_without_expat_to_the_strict_value(i, monkeypatch):
    want = outcome(reference.parse, SEEDS[i], None)
    assert want[0] == "value"

    def no_expat(*_a: object) -> object:
        raise AssertionError("the expat path was taken")
    monkeypatch.setattr(manscdp, "_tree", no_expat)
    assert outcome(parse, SEEDS[i], None) == want


@pytest.mark.parametrize("raw", [
    KEEPALIVE_GB.replace(b"<Status>OK", b"<Status>MAYBE"),             # a value the schema refuses
    KEEPALIVE_GB.replace(b"<SN>1234</SN>", b"<SN>1</SN><SN>2</SN>"),   # a repeated element
    KEEPALIVE_GB.replace(b"</Notify>", b"</Notfy>"),                   # not well-formed
])
def test_a_refused_body_is_refused_by_the_strict_path_with_its_line_and_column(raw):
    got = same(raw)
    assert got[0] == "refused" and re.search(r"line \d+", got[2]), got


def _many_channels(pad: str) -> bytes:
    """A Keepalive listing 200 channels: its <Info> holds more than MANSCDP_TEXT_MAX characters of
    leaves, and `pad` of whitespace between them (its own text, which the limit counts)."""
    ids = "".join(f"<DeviceID>3402000000134{i:07d}</DeviceID>{pad}" for i in range(200))
    return (f"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>{CAM}</DeviceID>"
            f"<Status>OK</Status><Info>{ids}</Info></Notify>").encode()


def test_a_container_of_many_leaves_is_scanned_and_its_own_text_is_counted_exactly(monkeypatch):
    within = _many_channels(" " * (MANSCDP_TEXT_MAX // 200))        # 4000 characters of its own
    over = _many_channels(" " * (MANSCDP_TEXT_MAX // 200 + 1))      # 4200
    assert len(within) > 2 * MANSCDP_TEXT_MAX
    assert same(within)[0] == "value"
    refused = same(over)
    assert refused[:2] == ("refused", "too_large") and "text of <Info>" in refused[2]

    def no_expat(*_a: object) -> object:
        raise AssertionError("the expat path was taken")
    monkeypatch.setattr(manscdp, "_tree", no_expat)
    assert len(parse(within).get_all("Info/DeviceID")) == 200


_N = 32000  # about SIGNALING_MESSAGE_BODY_MAX: the longest body the scan takes
_SCAN_HOSTILE = {
    "open_then_text": b"<Notify><a>" + b"x" * _N,
    "open_then_spaces": b"<Notify><a " + b" " * _N,
    "leaves_then_lt": b"<Notify>" + b"<a>x</a>" * 3900 + b"<",
    "opens_with_text": b"<Notify>" + (b"<a>" + b"x" * 10) * 2400,
    "attribute_unclosed": b'<Notify><a b="' + b"x" * _N,
    "many_attributes": b"<Notify><a" + b' b="1"    ' * 2900,
    "lt_space": b"<Notify>" + b"< " * 16000,
    "name_only": b"<Notify><" + b"a" * _N,
    "close_then_spaces": b"<Notify><a>1</a" + b" " * _N,
}


@pytest.mark.parametrize("name", sorted(_SCAN_HOSTILE))
def test_bodies_hostile_to_the_scan_are_refused_as_before_in_linear_time(name):
    t0 = time.process_time()
    assert same(_SCAN_HOSTILE[name])[0] == "refused"
    assert time.process_time() - t0 < 2.0  # generous (each takes milliseconds): no backtracking blow-up


# --- the property: equal to the reference --------------------------------------------------------

_INSERTS = [
    # unknown, repeated and misplaced elements
    "<Extra>1</Extra>", "<Password>x</Password>", "<Info><Foo>1</Foo></Info>", "<Info/>", "<Info />",
    "<Status>OK</Status>", "<SN>5</SN>", "<Item><DeviceID>34020000001320000009</DeviceID></Item>",
    "<DeviceList Num=\"1\"></DeviceList>", "<SumNum>9</SumNum>", "<名>1</名>", "<x:y>1</x:y>",
    "<_a>1</_a>", "<a.b-c>1</a.b-c>", "<status>ok</status>", "<Status/>",
    # entities, references, DTDs, processing instructions, comments, CDATA
    "&amp;", "&lt;", "&gt;", "&#13;", "&#x62A5;", "&#0;", "&x;", "&lol9;", "&",
    "<!DOCTYPE Notify>", '<!DOCTYPE Notify [<!ENTITY a "b">]>', '<!ENTITY a "b">',
    "<?pi x?>", '<?xml-stylesheet href="x"?>', '<?xml version="1.0"?>', "<!-- c -->", "<!---->",
    "<![CDATA[x]]>", "<![CDATA[<a>]]>", "]]>", "]", ">", "<", "</", "<>", "</>",
    # whitespace, line ends and characters XML or the schema treat specially
    " ", "\t", "\r", "\n", "\r\n", "\x00", "\x01", "\x0b", "\x7f", "\x85", "\xa0", "\u2028", "\u202e",
    "\ufeff", "\ufffe", "\uffff", "\U0001f600", "门", "镕",
    # tags with whitespace and attributes
    "<Status >OK</Status >", "<Status\n>OK</Status\t>", '<Info a="1"/>', "<Info a='1' b=\"2\"/>",
    '<Info a="1" a="2"/>', '<Info a="1"b="2"/>', '<Info a="x\ty"/>', '<Info a="x\ny"/>',
    '<Info a="<"/>', '<Info a="&amp;"/>', '<Info a = "1" />', '<Info a="1" b="2" c="3" d="4" e="5"/>',
    '<Info a="' + "v" * (MANSCDP_TEXT_MAX + 1) + '"/>',
]
_ATTRS = [' Num="1"', ' Num="2"', " Num='2'", ' Num=" 2 "', ' Num="x"', ' a="1"', ' Num="1" Num="1"',
          ' Num="1" a="b"', ' Num="2\n"', ' Num="&#50;"', " ", "\t", "\n", "/"]
_LABELS = [b"GB2312", b"gb2312", b"GBK", b"GB18030", b"UTF-8", b"utf8", b"ISO-8859-1", b"UTF-16", b"Big5"]
_DECLS = [b"", b'<?xml version="1.0"?>', b"<?xml version='1.0' encoding='GB2312'?>\n",
          b'<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>\r\n', b'<?xml version="1.1"?>',
          b'<?xml  version="1.0"encoding="GB2312"?>', b"<?xml?>", b'<?xml version="1.0" ?>\n\n',
          b"\xef\xbb\xbf", b"\r\n \t", b'<?xml version="1.0" encoding="GB2312"?><!-- c -->']


def _enc(draw, s: str) -> bytes:
    codec = draw(st.sampled_from(["utf-8", "gb18030"]))
    try:
        return s.encode(codec)
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw):
    """A real device body changed one to five times in the ways the fast path must get right."""
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3, 5]))):  # mostly one change: most bodies stay valid
        op = draw(st.sampled_from(["insert", "repeat", "cut", "delete", "charset", "deep", "long", "attr",
                                   "lines", "rename", "digit", "flip", "splice"]))
        decl = raw.find(b"?>") + 2 if raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<?xml") else 0
        ends = [i + 1 for i, c in enumerate(raw) if c == ord(">") and i >= decl] or [len(raw)]
        pos = draw(st.integers(decl if draw(st.integers(0, 3)) else 0, max(decl, len(raw))))
        if op == "insert":  # mostly between or inside elements, sometimes anywhere
            at = draw(st.sampled_from(ends)) if draw(st.booleans()) else pos
            raw[at:at] = _enc(draw, draw(st.sampled_from(_INSERTS)))
        elif op == "repeat":  # an element (leaf or container) written twice
            spans = [m.span() for m in re.finditer(rb"<([A-Za-z]+)[^<>]*>(?:[^<]*|.*?)</\1>", raw, re.S)]
            if spans:
                a, b = draw(st.sampled_from(spans))
                raw[b:b] = raw[a:b]
        elif op == "cut":
            del raw[pos:]
        elif op == "delete":
            del raw[pos:pos + draw(st.integers(1, 12))]
        elif op == "charset":
            m = re.match(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*<\?xml[^>]*>", raw)
            choice = draw(st.integers(0, 2))
            if choice == 0 and m is not None:  # relabel the declaration
                label = draw(st.sampled_from(_LABELS))
                raw[:m.end()] = re.sub(rb'encoding="[^"]*"', b'encoding="' + label + b'"', raw[:m.end()])
            elif choice == 1:  # another declaration, none, a BOM, leading whitespace
                raw[:m.end() if m else 0] = draw(st.sampled_from(_DECLS))
            else:
                raw[:0] = b"\xef\xbb\xbf"
        elif op == "deep":  # an element wrapped in containers, up to past the depth limit
            at = draw(st.sampled_from(ends))
            k = draw(st.integers(1, MANSCDP_DEPTH_MAX + 1))
            leaf = draw(st.sampled_from([b"<DeviceID>" + CAM.encode() + b"</DeviceID>", b"<x>1</x>", b"<x/>",
                                         b"<AlarmType>2</AlarmType>", b""]))
            name = draw(st.sampled_from([b"Info", b"Item", b"AlarmTypeParam", b"y"]))
            raw[at:at] = b"<" + name + b">" * 1 + (b"<" + name + b">") * (k - 1) + leaf + (b"</" + name + b">") * k
        elif op == "long":  # text at and past the limits, in a value or between elements
            n = draw(st.sampled_from([MANSCDP_FREE_TEXT_MAX, MANSCDP_FREE_TEXT_MAX + 1, MANSCDP_TEXT_MAX,
                                      MANSCDP_TEXT_MAX + 1, MANSCDP_TEXT_MAX - 2]))
            ch = draw(st.sampled_from(["A", "门", " ", "\n", "\r\n", "\t"]))
            text = _enc(draw, (ch * n)[:n])
            at = draw(st.sampled_from(ends))
            raw[at:at] = text
        elif op == "attr":  # attributes and whitespace inside a start tag
            starts = [m.end(1) for m in re.finditer(rb"<([A-Za-z]+)", raw)]
            if starts:
                at = draw(st.sampled_from(starts))
                raw[at:at] = draw(st.sampled_from(_ATTRS)).encode()
        elif op == "lines":
            raw = bytearray(draw(st.sampled_from([
                raw.replace(b"\r\n", b"\n"), raw.replace(b"\n", b"\r\n"), raw.replace(b"\r\n", b"\r"),
                raw.replace(b"\r\n", b"").replace(b"\n", b""), raw.replace(b">\r\n", b">\t\r\n  ")])))
        elif op == "rename":  # an element's name changed in one or both of its tags
            names = sorted({m.group(1) for m in re.finditer(rb"<([A-Za-z]+)>", raw)})
            if names:
                old = draw(st.sampled_from(names))
                new = draw(st.sampled_from([old.lower(), old + b"1", b"x:" + old, b"_" + old, b".a", b"1a"]))
                count = draw(st.sampled_from([0, 1, 2]))
                raw = bytearray(raw.replace(b"<" + old + b">", b"<" + new + b">", count or -1)
                                .replace(b"</" + old + b">", b"</" + new + b">", 1 if count == 1 else -1))
        elif op == "digit":
            digits = [i for i, c in enumerate(raw) if 0x30 <= c <= 0x39]
            if digits:
                raw[draw(st.sampled_from(digits))] = draw(st.integers(0x30, 0x39))
        elif op == "flip" and pos < len(raw):
            raw[pos] = draw(st.integers(0, 255))
        elif op == "splice":
            other = draw(st.sampled_from(SEEDS))
            raw[pos:pos] = other[draw(st.integers(0, len(other))):][:draw(st.integers(0, 200))]
    return bytes(raw)


_CHARSETS = st.sampled_from([None] * 6 + ["GB2312", "gbk", '"GB18030"', "UTF-8", "utf8", "latin-1", ""])


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), _CHARSETS)
@example(KEEPALIVE_GB.replace(b"OK", b"O&#75;"), None)
@example(KEEPALIVE_GB.replace(b"<Status>", b"<Status>\r\n"), None)
@example(KEEPALIVE_GB.replace(b"\r\n<Status>", b"]]>\r\n<Status>"), None)
@example(KEEPALIVE_GB + b"<!-- after -->", None)
@example(KEEPALIVE_GB + b"x", None)
@example(b'<?xml version="1.0" encoding="GB2312"?><Notify/>', None)
def test_mutated_device_bodies_parse_as_the_strict_reference_does(raw, charset):
    same(raw, charset)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.sampled_from(["GB2312", "GBK", "GB18030", "UTF-8"]))
def test_built_messages_parse_as_the_strict_reference_does(m, encoding):
    assert same(build(m, encoding=encoding))[0] == "value"


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512), _CHARSETS)
def test_random_bytes_parse_as_the_strict_reference_does(raw, charset):
    same(raw, charset)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(st.sampled_from(list("<>/=\"' \t\r\n&;#x!?[]-_.:aN1门\x00\x85\ufffe")), max_size=80),
       st.sampled_from(SEEDS[:2]), st.integers(0, 200))
def test_random_markup_inside_a_keepalive_parses_as_the_strict_reference_does(text, seed, at):
    at = min(at, len(seed))
    raw = seed[:at] + text.encode("utf-8", "surrogatepass") + seed[at:]
    same(raw)
    same(raw, "GB18030")


# --- flat bodies: a root holding only leaves, composed from names and values that matter -------------

_FLAT_NAMES = ["CmdType", "SN", "DeviceID", "Status", "Info", "Result", "SumNum", "DeviceList", "Alarmstatus",
               "DeviceName", "Channel", "AlarmTime", "AlarmPriority", "PTZCmd", "StartTime", "Password",
               "Extra", "Item", "DeviceTime", "Online"]
_FLAT_TEXTS = ["", " ", "\r\n", "OK", " OK ", "ok", "ERROR", "MAYBE", "ONLINE", "1", "0", "01", "-1", "+3",
               "2147483647", "2147483648", "99999999999", "Keepalive", "Catalog", "DeviceInfo", "DeviceStatus",
               "Alarm", "DeviceControl", "MediaStatus", "Keep alive", "9Keep", CAM, " " + CAM + "\t", CAM[:-1],
               NVR + "/" + CAM, "A50F01021F0000D6", "A50F01021F0000D7", "2023-05-06T10:11:12",
               "2023-02-30T10:11:12", "南门", "a\x85b", "a\u202eb", "x" * (MANSCDP_FREE_TEXT_MAX + 1)]


@st.composite
def flat_bodies(draw):
    root = draw(st.sampled_from([*manscdp.ROOTS, "Register", "notify"]))
    cmd = draw(st.sampled_from(["Keepalive", "Catalog", "DeviceInfo", "DeviceStatus", "Alarm", "DeviceControl",
                                "RecordInfo"]))
    leaves = [("CmdType", cmd), ("SN", str(draw(st.integers(0, 9999)))), ("DeviceID", CAM)]
    leaves += draw(st.lists(st.tuples(st.sampled_from(_FLAT_NAMES), st.sampled_from(_FLAT_TEXTS)), max_size=8))
    leaves = draw(st.permutations(leaves))
    if draw(st.integers(0, 4)) == 0 and leaves:  # now and then one of the common fields goes
        leaves.pop(draw(st.integers(0, len(leaves) - 1)))
    sep = draw(st.sampled_from(["", "\n", "\r\n", "\r\n\t", " "]))
    inner = sep.join(f"<{n}>{t}</{n}>" for n, t in leaves)
    decl = draw(st.sampled_from(['<?xml version="1.0" encoding="GB2312"?>' + sep, '<?xml version="1.0"?>', ""]))
    text = f"{decl}<{root}>{sep}{inner}{sep}</{root}>{sep}"
    return text.encode(draw(st.sampled_from(["gb18030", "utf-8"])))


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flat_bodies())
def test_flat_bodies_parse_as_the_strict_reference_does(raw):
    same(raw)
    same(raw, "GB2312")


# --- the free-text check, done by one regular expression -------------------------------------------

def test_the_free_text_check_refuses_exactly_the_control_characters_it_did():
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        before = unicodedata.category(c) in ("Cc", "Cs") or c in reference._NOT_TEXT
        assert (manscdp._check_text(f"a{c}b") is not None) == before, hex(cp)
    assert manscdp._check_text("a\x85b\x01") == reference._check_text("a\x85b\x01")


# --- the benchmark runs -------------------------------------------------------------------------------

def test_bench_manscdp_codec_runs_and_prints_its_last_line():
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "bench" / "manscdp_codec.py"), "--n", "20", "--runs", "1"],
                       capture_output=True, text=True, timeout=120, cwd=root, check=False)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"keepalive_gb_us=[0-9.]+ keepalive_utf8_us=[0-9.]+ catalog20_us=[0-9.]+ "
                        r"catalog20_speedup=[0-9.]+", last), r.stdout
