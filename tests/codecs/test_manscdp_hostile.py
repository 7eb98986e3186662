"""Hostile MANSCDP bodies: each is refused with ManscdpError, quickly and without allocating much.

The bombs are refused at their DOCTYPE, before any entity is declared or expanded; the limits
(body, depth, elements, attributes, text) are checked as expat reports each event.
"""
from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ferry.codecs.manscdp import Manscdp, ManscdpError, build, parse
from ferry.limits import (
    MANSCDP_ATTRIBUTES_MAX,
    MANSCDP_BODY_MAX,
    MANSCDP_DEPTH_MAX,
    MANSCDP_ELEMENTS_MAX,
    MANSCDP_TEXT_MAX,
)

CAM = "34020000001320000001"
HEAD = f"<CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>{CAM}</DeviceID>"
DECL = '<?xml version="1.0" encoding="GB2312"?>\n'


def bomb_billion_laughs() -> bytes:
    ents = ['<!ENTITY lol "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10)]
    return (DECL + "<!DOCTYPE Notify [" + "".join(ents) + "]>"
            + f"<Notify>{HEAD}<Status>&lol9;</Status></Notify>").encode()


def bomb_quadratic() -> bytes:
    big = "A" * 50_000
    refs = "&a;" * 60_000  # about 3 GB of text if it were expanded
    return (DECL + f'<!DOCTYPE Notify [<!ENTITY a "{big}">]>'
            + f"<Notify>{HEAD}<Status>{refs}</Status></Notify>").encode()


HOSTILE: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "billion_laughs": (bomb_billion_laughs, "markup", "DOCTYPE"),
    "quadratic_blowup": (bomb_quadratic, "markup", "DOCTYPE"),
    "xxe_file": (lambda: (DECL + '<!DOCTYPE Notify [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                          f"<Notify>{HEAD}<Status>&x;</Status></Notify>").encode(), "markup", "DOCTYPE"),
    "xxe_http": (lambda: (DECL + '<!DOCTYPE Notify [<!ENTITY x SYSTEM "http://127.0.0.1:9/x">]>'
                          f"<Notify>{HEAD}<Status>&x;</Status></Notify>").encode(), "markup", "DOCTYPE"),
    "external_dtd": (lambda: (DECL + '<!DOCTYPE Notify SYSTEM "http://127.0.0.1:9/x.dtd">'
                              f"<Notify>{HEAD}</Notify>").encode(), "markup", "DOCTYPE"),
    "parameter_entity": (lambda: (DECL + '<!DOCTYPE Notify [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
                                  f"<Notify>{HEAD}</Notify>").encode(), "markup", "DOCTYPE"),
    "doctype_alone": (lambda: (DECL + f"<!DOCTYPE Notify><Notify>{HEAD}</Notify>").encode(),
                      "markup", "DOCTYPE"),
    "undeclared_entity": (lambda: f"<Notify>{HEAD}<Status>&x;</Status></Notify>".encode(),
                          "malformed", "undefined entity"),
    "processing_instruction": (lambda: f'<Notify>{HEAD}<?php system("id"); ?></Notify>'.encode(),
                               "markup", "processing instruction"),
    "stylesheet_pi": (lambda: (DECL + '<?xml-stylesheet href="http://127.0.0.1:9/x"?>'
                               f"<Notify>{HEAD}</Notify>").encode(), "markup", "processing instruction"),
    "deep_nesting": (lambda: (f"<Notify>{HEAD}" + "<Info>" * 10_000 + "</Info>" * 10_000
                              + "</Notify>").encode(), "too_large", "nested deeper"),
    "text_1mb": (lambda: f"<Notify>{HEAD}<Status>{'A' * (1 << 20)}</Status></Notify>".encode(),
                 "too_large", "larger than"),
    "text_node_over_limit": (lambda: (f"<Notify>{HEAD}<Status>" + "A" * (MANSCDP_TEXT_MAX + 1)
                                      + "</Status></Notify>").encode(), "too_large", "text of <Status>"),
    "cdata_over_limit": (lambda: (f"<Notify>{HEAD}<Status><![CDATA[" + "]" * (MANSCDP_TEXT_MAX + 1)
                                  + "]]></Status></Notify>").encode(), "too_large", "text of <Status>"),
    "many_elements": (lambda: (f"<Notify>{HEAD}" + "<x/>" * MANSCDP_ELEMENTS_MAX + "</Notify>").encode(),
                      "too_large", "elements"),
    "many_attributes": (lambda: ("<Notify " + " ".join(f'a{i}="1"' for i in range(MANSCDP_ATTRIBUTES_MAX + 1))
                                 + f">{HEAD}</Notify>").encode(), "too_large", "attributes"),
    "invalid_gb2312_bytes": (lambda: (DECL + f"<Notify>{HEAD}<Status>").encode() + b"\xff\xfe\x81"
                             + b"</Status></Notify>", "encoding", "not valid GB18030"),
    "declared_utf8_but_gbk": (lambda: ('<?xml version="1.0" encoding="UTF-8"?><Notify>' + HEAD
                                       + "<Status>").encode() + "正常".encode("gbk") + b"</Status></Notify>",
                              "encoding", "not valid UTF-8"),
    "declared_latin1": (lambda: (f'<?xml version="1.0" encoding="ISO-8859-1"?><Notify>{HEAD}</Notify>').encode(),
                        "encoding", "ISO-8859-1"),
    "declared_utf16_utf8_bytes": (lambda: f'<?xml version="1.0" encoding="UTF-16"?><Notify>{HEAD}</Notify>'.encode(),
                                  "encoding", "UTF-16"),
    "utf16_body": (lambda: f'<?xml version="1.0" encoding="UTF-16"?><Notify>{HEAD}</Notify>'.encode("utf-16"),
                   "encoding", "not valid UTF-8"),
    "bom_in_gb_body": (lambda: b"\xef\xbb\xbf" + (DECL + f"<Notify>{HEAD}</Notify>").encode(),
                       "encoding", "byte order mark"),
    "malformed_declaration": (lambda: f'<?xml encoding="GB2312"?><Notify>{HEAD}</Notify>'.encode(),
                              "malformed", "XML declaration"),
    "nul_byte": (lambda: f"<Notify>{HEAD}<Status>OK\x00</Status></Notify>".encode(), "malformed",
                 "not well-formed"),
    "nul_in_name": (lambda: f"<Noti\x00fy>{HEAD}</Notify>".encode(), "malformed", "not well-formed"),
    "unknown_root": (lambda: f"<Register>{HEAD}</Register>".encode(), "malformed", "root <Register>"),
    "two_roots": (lambda: f"<Notify>{HEAD}</Notify><Notify>{HEAD}</Notify>".encode(), "malformed",
                  "junk after document element"),
    "empty": (lambda: b"", "malformed", "no element found"),
    "truncated": (lambda: f"<Notify>{HEAD}<Status>OK</Sta".encode(), "malformed", "line 1"),
    "html": (lambda: b"<html><body>hello</body></html>", "malformed", "root <html>"),
}


def _measure(raw: bytes) -> tuple[ManscdpError, float, int]:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ManscdpError) as exc:
            parse(raw)
        elapsed = time.perf_counter() - t0
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return exc.value, elapsed, peak


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_body_is_refused_quickly_and_small(name):
    make, kind, words = HOSTILE[name]
    raw = make()
    err, elapsed, peak = _measure(raw)
    assert err.kind == kind, str(err)
    assert words in str(err)
    # at most a few copies of the body (bytes, text, UTF-8 for expat) and 4 MB besides (the element
    # tree of MANSCDP_ELEMENTS_MAX nodes is about 2.6 MB); an expanded bomb would be gigabytes
    assert peak < 4 * min(len(raw), MANSCDP_BODY_MAX) + (4 << 20), peak
    assert elapsed < 2.0  # generous: the machine is shared; each takes milliseconds


def test_the_bombs_fit_the_body_limit_so_their_doctype_is_what_refuses_them():
    assert len(bomb_quadratic()) < MANSCDP_BODY_MAX
    assert len(bomb_billion_laughs()) < MANSCDP_BODY_MAX


def test_depth_limit_boundary():
    def nested(depth: int) -> bytes:  # depth counts the root
        inner = depth - 2
        return (f"<Notify>{HEAD}<Info>" + "<x>" * inner + "</x>" * inner + "</Info></Notify>").encode()
    m = parse(nested(MANSCDP_DEPTH_MAX))
    assert m.dropped == ("Info/x",)
    with pytest.raises(ManscdpError, match="nested deeper"):
        parse(nested(MANSCDP_DEPTH_MAX + 1))


def test_a_policy_limit_lower_than_the_codec_limit_applies():
    raw = build(Manscdp("Notify", "Keepalive", 1, CAM, (("Status", "OK"),)))
    assert parse(raw, max_bytes=len(raw)).sn == 1
    with pytest.raises(ManscdpError, match="larger than") as exc:
        parse(raw, max_bytes=len(raw) - 1)
    assert exc.value.kind == "too_large"


def test_expat_errors_name_the_line_and_column():
    with pytest.raises(ManscdpError, match=r"line 3 column \d+: mismatched tag"):
        parse(f"<Notify>\n{HEAD}\n<Status>OK</Statu></Notify>".encode())


# --- property tests: a value or ManscdpError, and nothing else, in bounded time ----------------

SEEDS = [
    build(Manscdp("Notify", "Keepalive", 7, CAM, (("Status", "OK"), ("Info/DeviceID", CAM)))),
    build(Manscdp("Notify", "Alarm", 9, CAM, (("AlarmPriority", "1"), ("AlarmDescription", "南门报警"),
                                             ("Longitude", "120.5"), ("Info/AlarmType", "2")))),
    build(Manscdp("Control", "DeviceControl", 3, CAM, (("PTZCmd", "A50F01021F0000D6"),))),
    bomb_billion_laughs()[:600],
]


def _one_of(raw: bytes, charset: str | None = None) -> None:
    t0 = time.perf_counter()
    try:
        m = parse(raw, content_charset=charset)
    except ManscdpError as exc:
        assert str(exc) and exc.kind in ("too_large", "markup", "encoding", "malformed", "value")
    else:
        assert isinstance(m, Manscdp)
        # whatever parses can be rebuilt, and the rebuilt body parses to the same values
        out = build(m)
        assert parse(out) == Manscdp(m.root, m.cmd_type, m.sn, m.device_id, m.fields, m.items, m.sum_num)
    assert time.perf_counter() - t0 < 2.0


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048), st.sampled_from([None, "GB2312", "UTF-8", "latin-1", ""]))
@example(b"<?xml", None)
@example(b"<Notify/>", None)
@example(b"\xef\xbb\xbf", "GB2312")
def test_random_bytes_give_a_value_or_manscdp_error(raw, charset):
    _one_of(raw, charset)


@st.composite
def mutated(draw, gentle=False):
    """A device body changed a few times; `gentle` keeps it well-formed (additions between elements,
    digits changed), so the schema and value checks are what it meets."""
    raw = bytearray(draw(st.sampled_from(SEEDS[:3] if gentle else SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["between", "digit"] if gentle else
                                  ["flip", "insert", "delete", "truncate", "splice", "between", "digit"]))
        pos = draw(st.integers(0, len(raw)))
        ends = [i + 1 for i, c in enumerate(raw) if c == ord(">")]
        digits = [i for i, c in enumerate(raw) if chr(c).isdigit()]
        if op == "between" and ends:  # well-formed additions between elements
            at = draw(st.sampled_from(ends))
            raw[at:at] = draw(st.sampled_from(
                [b"\r\n\t ", b"<Extra>1</Extra>", b"<!-- c -->", b"<Info/>", b"<Status>OK</Status>",
                 b"<Password>x</Password>", b"<Info><DeviceID>34020000001320000009</DeviceID></Info>",
                 b"<SN>5</SN>", "<Name>门</Name>".encode("gbk")]))
        elif op == "digit" and digits:
            raw[draw(st.sampled_from(digits))] = ord(str(draw(st.integers(0, 9))))
        elif op == "flip" and pos < len(raw):
            raw[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            raw[pos:pos] = draw(st.sampled_from(
                [b"<", b">", b"&", b"&lol;", b"<!DOCTYPE x>", b"<?pi?>", b"\x00", b"\xff", b"\xa1",
                 b"<x>", b"</x>", b"<Info>", b"]]>", b"<![CDATA[", b'"', b"&#0;", b"&#x10FFFF;"]))
        elif op == "delete":
            del raw[pos:pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del raw[pos:]
        elif op == "splice":
            other = draw(st.sampled_from(SEEDS))
            raw[pos:pos] = other[: draw(st.integers(0, len(other)))]
    return bytes(raw)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_device_bodies_give_a_value_or_manscdp_error(raw):
    _one_of(raw)
    _one_of(raw, "GB18030")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(gentle=True))
def test_well_formed_mutations_give_a_value_or_manscdp_error(raw):
    _one_of(raw)
