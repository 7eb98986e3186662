"""Strict YAML for policy files: values plus the line of every key.

PyYAML keeps the last of two equal keys and happily builds booleans from
``no`` keys; here every mapping key must be a plain string, appear once, and
no aliases, merge keys or explicit tags (``!!int``, ``!foo``) are allowed: a
policy needs none, and PyYAML's constructors answer some tagged values
(``!!bool maybe``, ``!!int ""``) with KeyError or IndexError. The result is
plain data (dict, list, str, int, float, bool, None) and a map from a path
such as ``("rules", 0, "files", "max_size")`` to its 1-based line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ferry import limits
from ferry.policy.errors import PolicyError

Path = tuple[str | int, ...]
Lines = dict[Path, int]

_STR_TAG = "tag:yaml.org,2002:str"
_YAML_TAG_PREFIX = "tag:yaml.org,2002:"


class _Loader(yaml.SafeLoader):
    """SafeLoader that remembers which nodes carried an explicit tag, as written."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.explicit_tags: dict[int, str] = {}

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
        tag = getattr(event, "tag", None)  # None on an alias and on an untagged node
        node = super().compose_node(parent, index)
        if tag is not None and node is not None:
            self.explicit_tags.setdefault(id(node), tag)
        return node


def load_yaml(path: str, data: bytes) -> tuple[Any, Lines]:
    """Parse one policy file; raise PolicyError naming ``path`` and a line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PolicyError(path, line, "", "file is not valid UTF-8") from None
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:
        line = text[: e.position].count("\n") + 1
        raise PolicyError(path, line, "", f"character U+{e.character:04X} is not allowed in YAML") from None
    except yaml.YAMLError as e:
        raise PolicyError(path, None, "", f"YAML error: {e}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise PolicyError(path, 1, "", "file is empty")
        lines: Lines = {(): node.start_mark.line + 1}
        _walk(loader, path, node, (), lines, set(), 0)
        value = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise PolicyError(path, mark.line + 1 if mark is not None else None, "", _yaml_message(e)) from None
    except yaml.YAMLError as e:
        raise PolicyError(path, None, "", f"YAML error: {e}") from None
    except (ValueError, OverflowError) as e:
        # PyYAML's constructors: out-of-range dates, ints past Python's digit limit.
        raise PolicyError(path, None, "", f"bad YAML value: {e}") from None
    except RecursionError:
        raise PolicyError(path, None, "", "YAML nested too deeply") from None
    finally:
        loader.dispose()
    return value, lines


def _yaml_message(e: yaml.MarkedYAMLError) -> str:
    context = e.context or ""
    if context and e.context_mark is not None and e.problem_mark is not None \
            and e.context_mark.line != e.problem_mark.line:
        context += f" (line {e.context_mark.line + 1})"
    parts = [p for p in (context, e.problem) if p]
    return "YAML error: " + (", ".join(parts) if parts else "invalid YAML")


def _shown_tag(tag: str) -> str:
    """A tag the way a file writes it: ``!!int``, ``!foo``, ``!<urn:x>``."""
    if tag.startswith(_YAML_TAG_PREFIX):
        return "!!" + tag[len(_YAML_TAG_PREFIX):]
    return tag if tag.startswith("!") else f"!<{tag}>"


def _refuse_explicit_tag(loader: _Loader, path: str, node: Node, at: Path) -> None:
    tag = loader.explicit_tags.get(id(node))
    if tag is not None:
        raise PolicyError(path, node.start_mark.line + 1, render_key(at),
                          f"explicit YAML tags are not allowed: {_shown_tag(tag)}")


def _walk(loader: _Loader, path: str, node: Node, at: Path, lines: Lines, seen: set[int], depth: int) -> None:
    """Record key lines; refuse aliases, explicit tags, non-string and duplicate keys, deep nesting.

    Nothing is constructed before its node has passed these checks.
    """
    line = node.start_mark.line + 1
    if id(node) in seen:  # an alias: the node starts at its anchor, so quote the key
        raise PolicyError(path, lines.get(at, line), render_key(at), "YAML aliases (*name) are not allowed")
    seen.add(id(node))
    _refuse_explicit_tag(loader, path, node, at)
    if isinstance(node, ScalarNode):
        try:
            loader.construct_object(node)
        except (ValueError, OverflowError) as e:
            # PyYAML's constructors: out-of-range dates, ints past Python's digit limit.
            raise PolicyError(path, line, render_key(at), f"bad value: {e}") from None
        return
    if depth >= limits.POLICY_DEPTH_MAX:
        raise PolicyError(path, line, render_key(at), f"nested deeper than {limits.POLICY_DEPTH_MAX} levels")
    if isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            lines[at + (i,)] = item.start_mark.line + 1
            _walk(loader, path, item, at + (i,), lines, seen, depth + 1)
    elif isinstance(node, MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if id(key_node) in seen:
                raise PolicyError(path, key_line, render_key(at), "YAML aliases (*name) are not allowed")
            seen.add(id(key_node))
            _refuse_explicit_tag(loader, path, key_node, at)
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR_TAG:
                if key_node.tag.endswith(":merge"):
                    message = "merge keys (<<) are not allowed"
                elif isinstance(key_node, ScalarNode):
                    message = f"key {key_node.value!r} is not a string (quote it)"
                else:
                    message = "keys must be strings, not collections"
                raise PolicyError(path, key_line, render_key(at), message)
            key = key_node.value
            if key in first:
                raise PolicyError(
                    path, key_line, render_key(at + (key,)),
                    f"duplicate key (first defined on line {first[key]})",
                )
            first[key] = key_line
            lines[at + (key,)] = key_line
            _walk(loader, path, value_node, at + (key,), lines, seen, depth + 1)


def render_key(at: Path) -> str:
    """Render a path the way a reader writes it: ``rules[0].files.max_size``."""
    out = ""
    for part in at:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out




def line_of(lines: Lines, loc: tuple[Any, ...]) -> tuple[int | None, Path]:
    """The line of the deepest part of ``loc`` that the file has, and that part."""
    at: Path = ()
    for part in loc:
        if at + (part,) in lines:
            at = at + (part,)
    return lines.get(at), at
