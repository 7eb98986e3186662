"""The package arrows, checked on the source (ast only: nothing is imported).

ferry is a pure core under a thin shell (docs, STYLE.md):

    shell:  agents  mgmt  kernel  cli  demo  camera  provision  (__main__)
              |       |      |      |     |      |
    core:   lanes  policy  audit  wire  crypto  codecs  limits  pb

Rules, each reported with the file and line of every import that breaks it:

- ``core-imports-shell``: no core package imports a shell package.
- ``codecs-imports``: ``ferry.codecs`` imports no other ferry package but ``ferry.limits`` and ``ferry.pb``.
- ``policy-imports-lanes``: ``ferry.policy`` does not import ``ferry.lanes`` (lanes apply the policy).
- ``mgmt-imports-agents``: ``ferry.mgmt`` does not import ``ferry.agents`` (mgmt defines the interface
  the agents implement).
- ``crypto-backend``: only ``ferry.crypto`` imports a crypto backend (``cryptography``, ``gmssl_pyx``,
  ``gmssl``). ``hashlib`` is the standard library and stays free for non-cryptographic digests (a
  camera's stream id, a content hash for a file name); what counts as a backend use is asking it (or
  ``hmac``) for SM3: ``hashlib.new("sm3"...)``, ``hmac.new(k, m, "sm3")``, ``hashlib.sm3``, which belong
  to ``ferry.crypto.sm3``.
- ``cycle``: the package-level graph (``ferry.X`` -> ``ferry.Y`` for any import between them) has no
  cycle; a cycle is printed with the import that makes each of its arrows.
- every module of ferry belongs to a package named below (a new package must be placed).

Imports are counted wherever they are (function bodies, ``if TYPE_CHECKING:`` blocks): a type-only
import is an arrow too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ferry"

CORE = frozenset({"codecs", "wire", "crypto", "policy", "audit", "lanes", "limits", "reasons", "pb"})
SHELL = frozenset({"agents", "mgmt", "kernel", "cli", "config", "durable", "demo", "camera", "provision", "__main__"})
CODECS_MAY_IMPORT = frozenset({"codecs", "limits", "reasons", "pb"})
CRYPTO_BACKENDS = frozenset({"cryptography", "gmssl_pyx", "gmssl"})

# Known violations: none. An entry is (rule, file relative to the repository, imported module);
# test_allowlist_is_not_stale fails once an entry no longer matches a real violation, so this
# list can only shrink.
KNOWN_VIOLATIONS: frozenset[tuple[str, str, str]] = frozenset()


@dataclass(frozen=True)
class Import:
    path: str        # file, relative to the repository
    line: int
    source: str      # importing module, e.g. ferry.policy.plan
    target: str      # imported module, e.g. ferry.lanes.files or cryptography.hazmat

    def where(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}"


@dataclass(frozen=True)
class Violation:
    rule: str
    imp: Import

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rule, self.imp.path, self.imp.target)

    def __str__(self) -> str:
        return f"[{self.rule}] {self.imp.where()}"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str | None:
    """'ferry.policy.plan' -> 'policy', 'ferry.cli' -> 'cli', 'ferry' -> None; None outside ferry."""
    parts = module.split(".")
    if parts[0] != "ferry" or len(parts) < 2:
        return None
    return parts[1]


def _is_sm3_call(node: ast.AST) -> bool:
    """hashlib.new("sm3", ...), hmac.new(key, msg, "sm3") / digestmod="sm3", or hashlib.sm3 (any case)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) \
            and node.func.value.id in ("hashlib", "hmac"):
        values = list(node.args) + [k.value for k in node.keywords]
        return any(isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value.lower() == "sm3"
                   for v in values)
    return (isinstance(node, ast.Attribute) and node.attr.lower() == "sm3"
            and isinstance(node.value, ast.Name) and node.value.id == "hashlib")


def imports_of(path: Path) -> list[Import]:
    """Every import in one file of ferry (resolved to absolute module names), and every SM3 use of hashlib."""
    return imports_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


def _is_module(name: str) -> bool:
    base = PACKAGE.parent / name.replace(".", "/")
    return base.is_dir() or base.with_suffix(".py").is_file()


def imports_in(text: str, rel: str) -> list[Import]:
    """The imports of one source text, `rel` being its file's path relative to the repository."""
    source = module_name(ROOT / rel)
    is_pkg = rel.endswith("__init__.py")
    tree = ast.parse(text, filename=rel)
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(rel, node.lineno, source, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = source.split(".") if is_pkg else source.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from ferry import limits`, `from ferry.lanes import files`: the names may be modules;
            # the package itself counts where a name is not a module (its __init__ runs either way)
            subs = [f"{mod}.{a.name}" for a in node.names if _is_module(f"{mod}.{a.name}")]
            if len(subs) < len(node.names) or not subs:
                found.append(Import(rel, node.lineno, source, mod))
            found += [Import(rel, node.lineno, source, sub) for sub in subs]
        elif _is_sm3_call(node):
            found.append(Import(rel, getattr(node, "lineno", 0), source, "hashlib.sm3"))
    return found


def all_imports() -> list[Import]:
    return [imp for path in sorted(PACKAGE.rglob("*.py")) for imp in imports_of(path)]


def violations(imports: list[Import]) -> list[Violation]:
    out: list[Violation] = []
    for imp in imports:
        src, dst = package_of(imp.source), package_of(imp.target)
        top = imp.target.split(".")[0]
        if (top in CRYPTO_BACKENDS or imp.target == "hashlib.sm3") and src != "crypto":
            out.append(Violation("crypto-backend", imp))
        if src is None or dst is None or src == dst:
            continue
        if src in CORE and dst in SHELL:
            out.append(Violation("core-imports-shell", imp))
        if src == "codecs" and dst not in CODECS_MAY_IMPORT:
            out.append(Violation("codecs-imports", imp))
        if src == "policy" and dst == "lanes":
            out.append(Violation("policy-imports-lanes", imp))
        if src == "mgmt" and dst == "agents":
            out.append(Violation("mgmt-imports-agents", imp))
    return out


def package_graph(imports: list[Import]) -> dict[str, dict[str, Import]]:
    """ferry.X -> {ferry.Y: the first import (by file and line) that makes that arrow}."""
    graph: dict[str, dict[str, Import]] = {}
    for imp in sorted(imports, key=lambda i: (i.path, i.line)):
        src, dst = package_of(imp.source), package_of(imp.target)
        if src is not None and dst is not None and src != dst:
            graph.setdefault(src, {}).setdefault(dst, imp)
    return graph


def find_cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Every cycle a depth-first search closes (one per back edge), as [a, b, ..., a]."""
    white, grey, black = 0, 1, 2
    colour = {n: white for n in set(graph) | {d for ds in graph.values() for d in ds}}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        colour[node] = grey
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if colour[nxt] == grey:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif colour[nxt] == white:
                visit(nxt)
        stack.pop()
        colour[node] = black

    for node in sorted(colour):
        if colour[node] == white:
            visit(node)
    return cycles


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, Import]]) -> str:
    arrows = "\n".join(f"    {graph[a][b].where()}" for a, b in zip(cycle, cycle[1:], strict=False))
    return " -> ".join(cycle) + "\n" + arrows


# --- the checks on ferry itself --------------------------------------------------------------------

IMPORTS = all_imports()


def test_every_module_is_placed() -> None:
    modules = {str(p.relative_to(ROOT)): module_name(p) for p in PACKAGE.rglob("*.py")}
    unplaced = sorted(f"{path} (package {package_of(m)})" for path, m in modules.items()
                      if package_of(m) not in CORE | SHELL | {None})
    assert not unplaced, "modules in no known package (add the package to CORE or SHELL):\n" + "\n".join(unplaced)


def test_package_arrows() -> None:
    bad = [v for v in violations(IMPORTS) if v.key not in KNOWN_VIOLATIONS]
    assert not bad, f"{len(bad)} import(s) break the package arrows:\n" + "\n".join(map(str, bad))


def test_no_cycles_between_packages() -> None:
    known = {(k[1], k[2]) for k in KNOWN_VIOLATIONS}
    graph = package_graph([i for i in IMPORTS if (i.path, i.target) not in known])
    cycles = find_cycles(graph)
    assert not cycles, "import cycles between ferry's packages:\n" + "\n".join(
        describe_cycle(c, graph) for c in cycles)


def test_allowlist_is_not_stale() -> None:
    real = {v.key for v in violations(IMPORTS)}
    stale = sorted(KNOWN_VIOLATIONS - real)
    assert not stale, "KNOWN_VIOLATIONS entries that are no longer violations (remove them):\n" + "\n".join(
        map(str, stale))


# --- the checker itself, on made-up sources ----------------------------------------------------------


def _imp(source: str, target: str, line: int = 1) -> Import:
    return Import(source.replace(".", "/") + ".py", line, source, target)


@pytest.mark.parametrize(("source", "target", "rule"), [
    ("ferry.wire.sender", "ferry.agents.link_io", "core-imports-shell"),
    ("ferry.limits", "ferry.cli", "core-imports-shell"),
    ("ferry.codecs.rtp", "ferry.wire.frame", "codecs-imports"),
    ("ferry.codecs.rtp", "ferry.lanes.video", "codecs-imports"),
    ("ferry.policy.plan", "ferry.lanes.files", "policy-imports-lanes"),
    ("ferry.mgmt.server", "ferry.agents.common", "mgmt-imports-agents"),
    ("ferry.lanes.files", "cryptography.hazmat.primitives", "crypto-backend"),
    ("ferry.audit.trail", "gmssl_pyx", "crypto-backend"),
    ("ferry.camera", "hashlib.sm3", "crypto-backend"),
])
def test_rule_catches(source: str, target: str, rule: str) -> None:
    assert [v.rule for v in violations([_imp(source, target)])] == [rule]


@pytest.mark.parametrize(("source", "target"), [
    ("ferry.codecs.rtp", "ferry.limits"),
    ("ferry.codecs.rtp", "ferry.codecs.nal"),
    ("ferry.codecs.rtp", "ferry.pb.ferry_pb2"),
    ("ferry.agents.outer", "ferry.lanes.files"),
    ("ferry.mgmt.server", "ferry.policy.bundle"),
    ("ferry.crypto.sm4", "cryptography.hazmat.primitives"),
    ("ferry.crypto.sm3", "hashlib.sm3"),
    ("ferry.camera", "hashlib"),
    ("ferry.policy.plan", "struct"),
])
def test_rule_allows(source: str, target: str) -> None:
    assert violations([_imp(source, target)]) == []


def test_imports_found_everywhere_with_lines() -> None:
    """Relative, from-package, function-level and TYPE_CHECKING imports, and hashlib's SM3, with their lines."""
    text = (
        "from typing import TYPE_CHECKING\n"              # 1
        "from ..lanes import files\n"                      # 2
        "from . import plan\n"                             # 3
        "if TYPE_CHECKING:\n"                              # 4
        "    from ferry.agents.outer import Outer\n"       # 5
        "def f():\n"                                       # 6
        "    import ferry.kernel.nft\n"                    # 7
        "    import hashlib\n"                             # 8
        "    return hashlib.new('SM3')\n"                  # 9
        "h = hmac.new(b'k', b'm', digestmod='sm3')\n"      # 10
        "d = hashlib.sha256(b'not sm3')\n")                # 11
    found = imports_in(text, "ferry/policy/probe.py")
    assert {(2, "ferry.lanes.files"), (3, "ferry.policy.plan"),
            (5, "ferry.agents.outer"), (7, "ferry.kernel.nft"), (8, "hashlib"), (9, "hashlib.sm3"),
            (10, "hashlib.sm3")} <= {(i.line, i.target) for i in found}
    assert (11, "hashlib.sm3") not in {(i.line, i.target) for i in found}
    assert all(i.source == "ferry.policy.probe" and i.path == "ferry/policy/probe.py" for i in found)
    assert (2, "ferry.lanes") not in {(i.line, i.target) for i in found}
    rules = sorted((v.rule, v.imp.line) for v in violations(found))
    assert rules == [("core-imports-shell", 5), ("core-imports-shell", 7), ("crypto-backend", 9),
                     ("crypto-backend", 10), ("policy-imports-lanes", 2)]
    assert "[core-imports-shell] ferry/policy/probe.py:7: ferry.policy.probe imports ferry.kernel.nft" in {
        str(v) for v in violations(found)}


def test_cycles_found_and_described() -> None:
    imps = [_imp("ferry.wire.a", "ferry.lanes.b", 3), _imp("ferry.lanes.b", "ferry.policy.c", 4),
            _imp("ferry.policy.c", "ferry.wire.d", 5), _imp("ferry.audit.e", "ferry.crypto.f", 6)]
    graph = package_graph(imps)
    cycles = find_cycles(graph)
    assert cycles == [["lanes", "policy", "wire", "lanes"]]
    text = describe_cycle(cycles[0], graph)
    assert "ferry/lanes/b.py:4" in text and "ferry/policy/c.py:5" in text and "ferry/wire/a.py:3" in text
    assert find_cycles(package_graph(imps[:2] + imps[3:])) == []
