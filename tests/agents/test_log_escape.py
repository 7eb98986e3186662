"""The text log escapes control and bidi characters as the audit trail does (issue 11 item 8):
a file name cannot recolour the terminal, forge a log line or reorder one."""
from __future__ import annotations

import io
import json
import logging

from ferry.agents.common import EscapingFormatter, escape_log_text

NAME = "bad\x1b[31mred\nFAKE 2026 ferry INFO sent evil.pdf\r\u202etxt.exe\u2028\x85\x7f.txt"


def _log(message: str, *args, exc: bool = False) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(EscapingFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("ferry.test-escape")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        if exc:
            try:
                raise ValueError(message % args)
            except ValueError:
                log.exception(message, *args)
        else:
            log.info(message, *args)
    finally:
        log.removeHandler(handler)
    return out.getvalue()


def test_a_hostile_file_name_makes_one_escaped_line():
    text = _log("refused %s: %s", NAME, "ferry-files-lane")
    assert text.count("\n") == 1 and text.endswith("\n")
    line = text[:-1]
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f or c in "\u202e\u2028" for c in line)
    assert line == ('INFO refused bad\\u001b[31mred\\nFAKE 2026 ferry INFO sent evil.pdf\\r\\u202etxt.exe'
                    '\\u2028\\u0085\\u007f.txt: ferry-files-lane')
    # the same escapes as the audit trail's JSON (which writes the name with ensure_ascii=False)
    assert escape_log_text("\x1b\n\t\x00") == json.dumps("\x1b\n\t\x00")[1:-1]


def test_plain_text_is_untouched_and_a_traceback_keeps_its_lines():
    assert escape_log_text("sent 报告.pdf (object 5, blocks [1, 2])") == "sent 报告.pdf (object 5, blocks [1, 2])"
    text = _log("cannot move %s", "a\x1bb", exc=True)
    lines = text.splitlines()
    assert lines[0] == "ERROR cannot move a\\u001bb" and lines[1].startswith("Traceback")
    assert "\x1b" not in text and lines[-1] == "ValueError: cannot move a\\u001bb"
