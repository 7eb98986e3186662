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

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ferry import limits
from ferry.policy.errors import PolicyError

Path = tuple[str | int, ...]

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


def load_yaml(path: str, data: bytes, *, lines_depth: int = 0) -> tuple[Any, Lines]:
    """Parse one policy file; raise PolicyError naming ``path`` and a line.

    The value comes from libyaml's event stream (``_load_fast``: a 4 MiB policy in about
    a second, where PyYAML's pure-Python composer took half a minute and 500 MB). Any
    document it does not take as plainly valid goes the old way (``_load_checked``), whose
    errors are the ones reported; lines are found the old way too, the first time one is
    asked for (so only error messages pay for them), except those of paths of at most
    ``lines_depth`` parts, which the fast way notes as it goes (a test suite's cases).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PolicyError(path, line, "", "file is not valid UTF-8") from None
    if _CLoader is not None and not _NON_PRINTABLE.search(text) and not _LIBYAML_DIFFERS.search(text):
        known: dict[Path, int] = {}
        try:
            value = _load_fast(text, lines_depth, known)
        except _Unsure:
            pass
        else:
            return value, Lines(lambda: _all_lines(path, text), known)
    value, lines = _load_checked(path, text)
    return value, Lines(lambda: lines)


def _load_checked(path: str, text: str) -> tuple[Any, dict[Path, int]]:
    """The pure-Python way: compose the whole document, check every node, then construct."""
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
        lines: dict[Path, int] = {(): node.start_mark.line + 1}
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


def _all_lines(path: str, text: str) -> dict[Path, int]:
    """Every line of a document the fast way took: the fast way again, noting them all (a
    4 MiB policy: about a second, where the checked way takes half a minute)."""
    lines: dict[Path, int] = {}
    try:
        _load_fast(text, limits.POLICY_DEPTH_MAX + 1, lines)
    except _Unsure:
        return _load_checked(path, text)[1]
    if () not in lines:
        lines[()] = _load_checked(path, text)[1][()]     # a scalar document: a small one
    return lines


class Lines(Mapping[Path, int]):
    """Path -> 1-based line, computed on first use (a 4 MiB policy has 300,000 of them),
    but for the ``known`` ones."""

    __slots__ = ("_find", "_lines", "_known")

    def __init__(self, find: Callable[[], dict[Path, int]], known: dict[Path, int] | None = None) -> None:
        self._find: Callable[[], dict[Path, int]] | None = find
        self._lines: dict[Path, int] = {}
        self._known = known or {}

    def _map(self) -> dict[Path, int]:
        if self._find is not None:
            self._lines, self._find = self._find(), None
        return self._lines

    def __getitem__(self, at: Path) -> int:
        line = self._known.get(at)
        return line if line is not None else self._map()[at]

    def __iter__(self) -> Iterator[Path]:
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())


# --- the fast way: libyaml's events, plain values built directly ---------------------

_CLoader: type[Any] | None = getattr(yaml, "CSafeLoader", None)
# What PyYAML's Reader refuses (it says which character): those documents go the old way.
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE
# Where libyaml takes what PyYAML refuses (found by tests/policy/test_scale_yaml.py): tabs
# (``p\tolicy: x``), byte-order marks after the start. A policy needs neither.
_LIBYAML_DIFFERS = re.compile("[\t\ufeff]")
# A block scalar's header as PyYAML reads it: indicator, chomping and/or indentation, a comment
# after a space.
_BLOCK_HEADER = re.compile(r"[|>](?:[-+][1-9]?|[1-9][-+]?)?(?: +(?:#.*)?)?\r?")


class _Unsure(Exception):
    """The fast way does not take this document; the checked way decides."""


class _Scalars(yaml.SafeLoader):
    """PyYAML's own resolver and constructors for plain scalars, remembered by text."""

    def __init__(self) -> None:  # no stream: only resolve() and the constructors are used
        yaml.resolver.Resolver.__init__(self)
        self.plain: dict[str, tuple[bool, Any]] = {}

    def value(self, text: str, mark: Any) -> tuple[bool, Any]:
        """(is a string, value) of a plain scalar."""
        hit = self.plain.get(text)
        if hit is None:
            tag = self.resolve(ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
            constructor = self.yaml_constructors.get(tag)
            if constructor is None:
                raise _Unsure
            try:
                value = constructor(self, ScalarNode(tag, text, mark, mark))
            except Exception:
                raise _Unsure from None
            hit = (tag == _STR_TAG, value)
            if len(self.plain) < _PLAIN_MEMO_MAX:
                self.plain[text] = hit
        return hit


_PLAIN_MEMO_MAX = 1 << 16


def _load_fast(text: str, lines_depth: int = 0, lines: dict[Path, int] | None = None) -> Any:
    """The document's value, or _Unsure for anything but a plain single document: aliases,
    tags, non-string or repeated keys, nesting past POLICY_DEPTH_MAX, values PyYAML cannot
    construct, YAML errors. Keeps no node or mark; notes in ``lines`` the lines of paths of
    at most ``lines_depth`` parts (as _load_checked: a key's line, an item's first line)."""
    if lines is None:
        lines = {}
    assert _CLoader is not None
    parser = _CLoader(text)
    scalars = _Scalars()
    plain = scalars.plain
    ScalarEvent, MappingStart, SequenceStart = (yaml.ScalarEvent, yaml.MappingStartEvent,
                                                yaml.SequenceStartEvent)
    CollectionEnd = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    depth_max = limits.POLICY_DEPTH_MAX
    try:
        get = parser.get_event
        if not isinstance(get(), yaml.StreamStartEvent) or not isinstance(get(), yaml.DocumentStartEvent):
            raise _Unsure
        # open collections: [container, is a mapping, key waiting for its value, in flow context,
        # its path if the lines of its children are to be noted]
        stack: list[list[Any]] = []
        root: Any = None
        done = False
        while not done:
            event = get()
            kind = type(event)
            if kind is ScalarEvent:
                if event.tag is not None:
                    raise _Unsure
                if event.implicit[0]:    # plain (libyaml says style "", PyYAML None)
                    if stack and stack[-1][3] and "?" in event.value:
                        raise _Unsure   # PyYAML ends a plain scalar at "?" in flow context, libyaml not
                    hit = plain.get(event.value)
                    is_str, value = hit if hit is not None else scalars.value(event.value, event.start_mark)
                else:
                    if event.style in ("|", ">"):
                        start = event.start_mark.index
                        end = text.find("\n", start)
                        if not _BLOCK_HEADER.fullmatch(text[start:end if end >= 0 else len(text)]):
                            raise _Unsure   # e.g. "|#": libyaml takes it, PyYAML wants a space first
                    is_str, value = True, event.value
                new = None
            elif kind is MappingStart or kind is SequenceStart:
                if event.tag is not None or len(stack) >= depth_max:
                    raise _Unsure
                value = {} if kind is MappingStart else []
                is_str = False
                new = [value, kind is MappingStart, _NO_KEY, bool(event.flow_style or (stack and stack[-1][3]))]
            elif kind in CollectionEnd:
                if not stack or stack[-1][2] is not _NO_KEY:
                    raise _Unsure
                stack.pop()
                if not stack:
                    done = True
                continue
            else:       # an alias, or the document ending early
                raise _Unsure
            path: Path | None = None
            if not stack:
                root = value
                done = new is None
                if lines_depth > 0:
                    path = ()
                    if new is not None:    # (a scalar document's line: libyaml may differ)
                        lines[path] = event.start_mark.line + 1
            else:
                top = stack[-1]
                container = top[0]
                parent = top[4]
                if not top[1]:
                    if parent is not None:
                        path = parent + (len(container),)
                        lines[path] = event.start_mark.line + 1
                    container.append(value)
                elif top[2] is _NO_KEY:
                    if not is_str or value in container:
                        raise _Unsure   # a key that is no string (or a collection), or repeated
                    if parent is not None:
                        lines[parent + (value,)] = event.start_mark.line + 1
                    top[2] = value
                    container[value] = None
                else:
                    if parent is not None:
                        path = parent + (top[2],)
                    container[top[2]] = value
                    top[2] = _NO_KEY
            if new is not None:
                new.append(path if path is not None and len(path) < lines_depth else None)
                stack.append(new)
        if not isinstance(get(), yaml.DocumentEndEvent) or not isinstance(get(), yaml.StreamEndEvent):
            raise _Unsure
    except yaml.YAMLError:
        raise _Unsure from None
    finally:
        parser.dispose()
    return root


_NO_KEY = object()


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


def _walk(loader: _Loader, path: str, node: Node, at: Path, lines: dict[Path, int], seen: set[int],
          depth: int) -> None:
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




def line_of(lines: Mapping[Path, int], loc: tuple[Any, ...]) -> tuple[int | None, Path]:
    """The line of the deepest part of ``loc`` that the file has, and that part."""
    at: Path = ()
    for part in loc:
        if at + (part,) in lines:
            at = at + (part,)
    return lines.get(at), at
