"""Policy files: every class of error names the file, the line and the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferry import limits
from ferry.policy import PolicyError, load_policy, parse_policy
from .parsing import error, parse

DEMO = Path(__file__).resolve().parents[2] / "policy" / "demo"

GOOD = """\
policy: test
version: 1
default: deny
sources:
  outer-spool: {kind: spool}
destinations:
  inner-spool: {kind: spool}
rules:
  - id: files-documents
    lane: files
    from: outer-spool
    to: inner-spool
    files:
      max_size: 1048576
      media_types: [application/pdf, text/plain]
      name_pattern: '[a-z]+\\.(pdf|txt)'
"""
#  line numbers in GOOD:  1 policy, 2 version, 3 default, 4 sources, 5 outer-spool,
#  6 destinations, 7 inner-spool, 8 rules, 9 id, 10 lane, 11 from, 12 to, 13 files,
#  14 max_size, 15 media_types, 16 name_pattern


def test_good_policy_parses():
    p = parse(GOOD)
    assert p.policy == "test"
    assert p.rules[0].id == "files-documents"
    assert p.rules[0].from_ == "outer-spool"
    assert p.rules[0].files.max_size == 1048576


def test_demo_policy_loads():
    p = load_policy(DEMO)
    assert p.policy == "demo"
    assert [r.id for r in p.rules] == ["files-documents", "video-social"]
    assert p.rules[0].files.max_size == 1 << 20
    assert p.rules[1].video.max_width == 1920


def test_models_are_frozen():
    p = parse(GOOD)
    with pytest.raises(Exception):
        p.policy = "other"  # type: ignore[misc]
    with pytest.raises(Exception):
        p.rules[0].files.max_size = 5  # type: ignore[misc]


def test_error_format_is_file_line_key_message():
    e = error(GOOD.replace("max_size: 1048576", "max_size: 1.5"))
    assert (e.path, e.line, e.key) == ("pol/policy.yaml", 14, "rules[0].files.max_size")
    assert str(e).startswith("pol/policy.yaml:14: rules[0].files.max_size: Input should be a valid integer")


def test_unknown_key():
    e = error(GOOD.replace("    to: inner-spool\n", "    to: inner-spool\n    too: x\n"))
    assert str(e) == "pol/policy.yaml:13: rules[0].too: Extra inputs are not permitted"


def test_unknown_top_level_key():
    e = error(GOOD + "extra: 1\n")
    assert str(e) == "pol/policy.yaml:17: extra: Extra inputs are not permitted"


def test_wrong_type():
    e = error(GOOD.replace("media_types: [application/pdf, text/plain]", "media_types: application/pdf"))
    assert (e.line, e.key) == (15, "rules[0].files.media_types")
    assert "valid list" in e.message


def test_no_coercion_of_string_to_int():
    e = error(GOOD.replace("max_size: 1048576", 'max_size: "1048576"'))
    assert str(e).startswith("pol/policy.yaml:14: rules[0].files.max_size: Input should be a valid integer")
    assert "'1048576'" in e.message


def test_no_coercion_of_int_to_string():
    e = error(GOOD.replace("policy: test", "policy: 1"))
    assert (e.line, e.key) == (1, "policy")
    assert "valid string" in e.message


def test_no_coercion_of_bool_to_int():
    e = error(GOOD.replace("max_size: 1048576", "max_size: true"))
    assert (e.line, e.key) == (14, "rules[0].files.max_size")


def test_yaml_one_one_booleans_are_not_strings():
    e = error(GOOD.replace("policy: test", "policy: no"))
    assert (e.line, e.key) == (1, "policy")
    assert "boolean false" in e.message


def test_missing_key():
    e = error(GOOD.replace("      max_size: 1048576\n", ""))
    # the missing key is reported at the line of the mapping that lacks it
    assert str(e) == "pol/policy.yaml:13: rules[0].files.max_size: Field required"


def test_missing_top_level_key():
    e = error(GOOD.replace("default: deny\n", ""))
    assert (e.line, e.key, e.message) == (1, "default", "Field required")


def test_duplicate_key():
    e = error(GOOD.replace("    lane: files\n", "    lane: files\n    lane: files\n"))
    assert (e.path, e.line, e.key) == ("pol/policy.yaml", 11, "rules[0].lane")
    assert "duplicate key (first defined on line 10)" in str(e)


def test_duplicate_key_quoted_and_plain():
    e = error(GOOD.replace("version: 1\n", "version: 1\n'version': 1\n"))
    assert (e.line, e.key) == (3, "version")
    assert "duplicate" in e.message


def test_duplicate_top_level_mapping():
    e = error(GOOD + "sources:\n  other: {kind: spool}\n")
    assert (e.line, e.key) == (17, "sources")


def test_duplicate_rule_id():
    rule = GOOD[GOOD.index("  - id:"):]
    e = error(GOOD + rule)
    assert str(e) == ("pol/policy.yaml:17: rules[1].id: duplicate rule id 'files-documents' "
                      "(first on line 9)")


def test_unknown_source_reference():
    e = error(GOOD.replace("from: outer-spool", "from: outer"))
    assert str(e) == "pol/policy.yaml:11: rules[0].from: unknown source 'outer' (known: outer-spool)"


def test_unknown_destination_reference():
    e = error(GOOD.replace("to: inner-spool", "to: nowhere"))
    assert (e.line, e.key) == (12, "rules[0].to")
    assert "unknown destination 'nowhere'" in e.message


def test_all_reference_errors_are_collected():
    e = error(GOOD.replace("from: outer-spool", "from: a").replace("to: inner-spool", "to: b"))
    assert [x.line for x in e.errors] == [11, 12]


def test_bad_regex():
    e = error(GOOD.replace("name_pattern: '[a-z]+\\.(pdf|txt)'", "name_pattern: '([a-z]+'"))
    assert (e.line, e.key) == (16, "rules[0].files.name_pattern")
    assert "bad regular expression" in e.message


def test_unknown_media_type():
    e = error(GOOD.replace("application/pdf, text/plain", "application/pdf, text/PLAIN"))
    assert (e.line, e.key) == (15, "rules[0].files.media_types[1]")
    assert "unknown media type 'text/PLAIN'" in e.message


def test_duplicate_media_type():
    e = error(GOOD.replace("application/pdf, text/plain", "text/plain, text/plain"))
    assert (e.line, e.key) == (15, "rules[0].files.media_types")
    assert "listed twice" in e.message


def test_max_size_above_hard_ceiling():
    e = error(GOOD.replace("max_size: 1048576", f"max_size: {limits.FILE_MAX + 1}"))
    assert (e.line, e.key) == (14, "rules[0].files.max_size")


def test_default_must_be_deny():
    e = error(GOOD.replace("default: deny", "default: allow"))
    assert (e.line, e.key) == (3, "default")
    assert "'deny'" in e.message


def test_unknown_lane():
    e = error(GOOD.replace("lane: files", "lane: telex"))
    assert (e.line, e.key) == (10, "rules[0].lane")
    assert e.message.startswith("unknown lane 'telex' (known: files, video, viid, signaling, reverse)")


def test_section_of_another_lane():
    e = error(GOOD.replace("lane: files", "lane: video"))
    # the rule lacks its video section (line of the rule) and holds a files section (its line)
    assert [(x.line, x.key) for x in e.errors] == [(9, "rules[0].video"), (13, "rules[0].files")]
    assert e.errors[1].message == "a video rule holds only its own section 'video', not 'files'"


def test_unknown_source_kind():
    e = error(GOOD.replace("outer-spool: {kind: spool}", "outer-spool: {kind: udp}"))
    assert (e.line, e.key) == (5, "sources.outer-spool.kind")


def test_bad_source_name():
    e = error(GOOD.replace("  outer-spool: {kind: spool}", "  Outer Spool: {kind: spool}"))
    assert (e.line, e.key) == (5, "sources.Outer Spool")


def test_unsupported_version():
    e = error(GOOD.replace("version: 1", "version: 2"))
    assert (e.line, e.key) == (2, "version")


def test_yaml_syntax_error():
    e = error(GOOD.replace("media_types: [application/pdf, text/plain]", "media_types: [application/pdf, text/plain"))
    assert e.path == "pol/policy.yaml"
    assert e.line == 16  # PyYAML notices where the sequence fails to close
    assert "YAML error" in e.message and "line 15" in e.message


def test_tab_indentation_is_a_syntax_error():
    e = error(GOOD.replace("    lane: files", "\tlane: files"))
    assert (e.path, e.line) == ("pol/policy.yaml", 10)


def test_non_string_key():
    e = error(GOOD + "1: x\n")
    assert (e.line, e.message) == (17, "key '1' is not a string (quote it)")


def test_alias_refused():
    text = GOOD.replace("media_types: [application/pdf, text/plain]",
                        "media_types: &types [application/pdf, text/plain]")
    text += "  - id: two\n    lane: files\n    from: outer-spool\n    to: inner-spool\n" \
            "    files:\n      max_size: 1\n      media_types: *types\n      name_pattern: x\n"
    e = error(text)
    assert (e.line, e.key) == (23, "rules[1].files.media_types")
    assert "aliases" in e.message


def test_merge_key_refused():
    e = error(GOOD.replace("  inner-spool: {kind: spool}", "  inner-spool: {<<: {kind: spool}}"))
    assert e.line == 7 and "merge" in e.message


def test_python_tags_refused():
    e = error(GOOD.replace("policy: test", "policy: !!python/object:os.system x"))
    assert e.line == 1


# Explicit tags: PyYAML's own constructors raise KeyError, IndexError or AttributeError
# on some of these (issue 15); a policy needs no tag, so every one is refused by name.
EXPLICIT_TAGS = [
    ("!!bool maybe", "!!bool"), ("!!bool", "!!bool"), ('!!bool ""', "!!bool"),
    ("!!int", "!!int"), ('!!int ""', "!!int"), ('!!int "-"', "!!int"), ('!!int "+"', "!!int"),
    ("!!float", "!!float"), ('!!float ""', "!!float"), ('!!float "-"', "!!float"),
    ("!!timestamp nope", "!!timestamp"), ("!!timestamp 2024-01-01x", "!!timestamp"),
    ("!!int 5", "!!int"), ("!!str x", "!!str"), ("!<tag:yaml.org,2002:int> 3", "!!int"),
    ("!!python/object:os.system x", "!!python/object:os.system"), ("!foo x", "!foo"), ("! 5", "!"),
    ("!!map {}", "!!map"), ("!!seq []", "!!seq"), ("!!set {a}", "!!set"), ("!<urn:x> 1", "!<urn:x>"),
]


@pytest.mark.parametrize(("value", "shown"), EXPLICIT_TAGS)
def test_explicit_tags_refused_from_a_folder(tmp_path, value, shown):
    (tmp_path / "policy.yaml").write_text(GOOD.replace("max_size: 1048576", "max_size: " + value))
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    e = info.value
    assert (e.path, e.line, e.key) == (str(tmp_path / "policy.yaml"), 14, "rules[0].files.max_size")
    assert e.message == f"explicit YAML tags are not allowed: {shown}"


def test_explicit_tags_refused_on_keys_collections_and_the_document():
    e = error(GOOD.replace("policy: test", "!!str policy: test"))
    assert (e.line, e.message) == (1, "explicit YAML tags are not allowed: !!str")
    e = error(GOOD.replace("media_types: [", "media_types: !!seq ["))
    assert (e.line, e.key, e.message) == (15, "rules[0].files.media_types", "explicit YAML tags are not allowed: !!seq")
    e = error("--- !!map\n" + GOOD)
    assert (e.line, e.key, e.message) == (1, "", "explicit YAML tags are not allowed: !!map")
    e = error("%TAG !e! tag:example.com,2000:\n---\n" + GOOD.replace("policy: test", "policy: !e!x test"))
    assert (e.line, e.message) == (3, "explicit YAML tags are not allowed: !<tag:example.com,2000:x>")


def test_bad_scalar_values_have_lines():
    e = error(GOOD.replace("policy: test", "policy: 2024-13-45"))
    assert (e.line, e.key) == (1, "policy")
    e = error(GOOD.replace("max_size: 1048576", "max_size: " + "9" * 5000))
    assert (e.line, e.key) == (14, "rules[0].files.max_size")


def test_deep_nesting_refused():
    e = error(GOOD + "x: " + "[" * 200 + "]" * 200 + "\n")
    assert e.path == "pol/policy.yaml"


def test_empty_file():
    e = error("")
    assert (e.path, e.line) == ("pol/policy.yaml", 1)


def test_top_level_not_a_mapping():
    e = error("- 1\n")
    assert e.line == 1 and "a list" in e.message


def test_not_utf8():
    e = error_bytes(GOOD.encode().replace(b"policy: test", b"policy: \xff"))
    assert (e.path, e.line) == ("pol/policy.yaml", 1)
    assert "UTF-8" in e.message


def error_bytes(data: bytes) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy({"policy.yaml": data}, base="pol")
    return info.value


def test_file_too_big():
    data = GOOD.encode() + b"#" * limits.POLICY_FILE_MAX
    e = error_bytes(data)
    assert e.path == "pol/policy.yaml" and "larger than" in e.message


def test_missing_policy_file():
    with pytest.raises(PolicyError, match="policy.yaml: missing"):
        parse_policy({})


def test_unknown_policy_file():
    with pytest.raises(PolicyError) as info:
        parse_policy({"policy.yaml": GOOD.encode(), "polcy.yaml": b""})
    assert info.value.path == "polcy.yaml"


# --- load_policy: the file system side ------------------------------------------------

def test_load_policy_names_the_file(tmp_path: Path):
    (tmp_path / "policy.yaml").write_text(GOOD.replace("max_size: 1048576", "max_size: x"))
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}/policy.yaml:14: rules[0].files.max_size: ")


def test_load_policy_file_too_big_is_not_read_whole(tmp_path: Path):
    with open(tmp_path / "policy.yaml", "wb") as f:
        f.truncate(limits.POLICY_FILE_MAX * 4)
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert info.value.path == f"{tmp_path}/policy.yaml"
    assert "larger than" in info.value.message


def test_load_policy_refuses_symlink(tmp_path: Path):
    (tmp_path / "real.txt").write_text(GOOD)
    os.symlink(tmp_path / "real.txt", tmp_path / "policy.yaml")
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert info.value.path == f"{tmp_path}/policy.yaml"


def test_load_policy_missing_directory(tmp_path: Path):
    with pytest.raises(PolicyError, match="cannot read policy directory"):
        load_policy(tmp_path / "nope")


def test_load_policy_ignores_non_yaml_files(tmp_path: Path):
    (tmp_path / "policy.yaml").write_text(GOOD)
    (tmp_path / "README.md").write_text("notes")
    assert load_policy(tmp_path).policy == "test"


def test_regex_that_python_warns_about_is_refused():
    e = error(GOOD.replace("name_pattern: '[a-z]+\\.(pdf|txt)'", "name_pattern: '[[a-z]--x]'"))
    assert (e.line, e.key) == (16, "rules[0].files.name_pattern")
    assert "bad regular expression" in e.message
