"""The layout's rules, enforced: import layers, no cycles, pure cores, module size.

Every import statement of every module under agent/ counts, at any depth
(inside functions, under TYPE_CHECKING): a lazy import is still a dependency,
and a cycle hidden behind one is still a knot.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "agent"

# Each group may import its own modules and the groups below it, never above.
# Read top-down: the commands use the runtime, which builds the stages, which
# stand on the base modules. Stages on one line are siblings and must not
# import each other; the entry points, and the base modules, may (the cycle
# test still holds them to a tree).
LAYERS: list[tuple[str, ...]] = [
    ("agent.commands", "agent.__main__"),
    ("agent.runtime",),
    ("agent.recording", "agent.delivery", "agent.crosschex", "agent.metrics"),
    ("agent.reading", "agent.journal", "agent.clock", "agent.feedback"),
    ("agent.config", "agent.schema", "agent.errors", "agent.records", "agent.redact", "agent.fsio", "agent.tls",
     "agent"),
]

OPEN_LAYERS = {0, len(LAYERS) - 1}

# Pure cores: the standard library, each other and these base modules only.
PURE = {
    "agent.reading.frames", "agent.reading.hidkeys", "agent.reading.tagformat", "agent.reading.debounce",
    "agent.delivery.wire", "agent.clock.policy", "agent.crosschex.matching", "agent.crosschex.wire",
    "agent.feedback.patterns", "agent.clock.reasons", "agent.delivery.isolation",
    "agent.reading.pn532wire", "agent.reading.wiegand", "agent.metrics.exposition",
}
PURE_MAY_IMPORT = {"agent.errors", "agent.records", "agent.redact"}

MAX_LINES = 400
WHY_ONE_FILE = "one file because"  # the comment that lets a module pass MAX_LINES


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: pathlib.Path) -> set[str]:
    """Every module ``name`` imports (absolute names), at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            # "from agent.x import y" may name a submodule y
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imports_of(name, path) if m in mods and m != name} for name, path in mods.items()}


def group_of(name: str) -> tuple[int, str]:
    """(layer index, group prefix) of an agent module: the longest matching prefix."""
    best = (-1, "")
    for i, groups in enumerate(LAYERS):
        for g in groups:
            if (name == g or name.startswith(g + ".")) and len(g) > len(best[1]):
                best = (i, g)
    assert best[0] >= 0, f"{name} belongs to no layer: add it to LAYERS"
    return best


def layer_violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in g.items():
        si, sg = group_of(src)
        for dst in targets:
            di, dg = group_of(dst)
            if dst == "agent" or dst == sg:  # a package's own __init__ (version, docstring)
                continue
            if di < si or (di == si and dg != sg and si not in OPEN_LAYERS):
                bad.append(f"{src} imports {dst} ({sg} may not depend on {dg})")
    return sorted(bad)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_imports_flow_one_way():
    assert layer_violations(graph()) == []


def test_no_import_cycles_even_inside_functions():
    g = graph()
    # a package's __init__ importing its own submodules is not a cycle of concerns
    assert cycles(g) == []


def test_pure_cores_import_only_the_standard_library():
    mods = modules()
    stdlib = sys.stdlib_module_names
    bad = []
    for name in sorted(PURE & mods.keys()):
        for imp in imports_of(name, mods[name]):
            top = imp.split(".")[0]
            if top == "agent":
                if imp in mods and imp not in PURE_MAY_IMPORT | PURE and imp != "agent":
                    bad.append(f"{name} imports {imp}")
            elif top not in stdlib and top != "__future__":
                bad.append(f"{name} imports {imp}")
    assert bad == []
    assert PURE & mods.keys() == PURE, f"pure modules missing: {sorted(PURE - mods.keys())}"


def test_modules_stay_small_or_say_why():
    big = []
    for name, path in modules().items():
        text = path.read_text()
        n = text.count("\n")
        head = text[:3000].lower()
        if n > MAX_LINES and WHY_ONE_FILE not in head:
            big.append(f"{name}: {n} lines")
    assert big == []


def test_nothing_imports_commands_from_below():
    g = graph()
    bad = [f"{s} imports {d}" for s, ds in g.items() for d in ds
           if d.startswith("agent.commands") and not s.startswith(("agent.commands", "agent.__main__"))]
    assert bad == []


# ---------------------------------------------------------- the rule itself


@pytest.mark.parametrize("src, dst", [
    ("agent.journal.store", "agent.runtime.control"),      # a stage reaching up
    ("agent.delivery.deliverer", "agent.crosschex.client"),  # siblings
    ("agent.config", "agent.journal.store"),                # base reaching up
])
def test_a_deliberate_back_import_is_caught(src, dst):
    g = graph()
    assert src in g and dst in g
    g[src] = g[src] | {dst}
    assert any(v.startswith(f"{src} imports {dst}") for v in layer_violations(g))


def test_a_deliberate_cycle_through_a_function_import_is_caught(tmp_path):
    g = graph()
    g["agent.runtime.wiring"] = g["agent.runtime.wiring"] | {"agent.runtime.access"}
    g["agent.runtime.access"] = g["agent.runtime.access"] | {"agent.runtime.wiring"}
    assert any("agent.runtime.wiring" in c and "agent.runtime.access" in c for c in cycles(g))
    # and imports_of really sees an import inside a function
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from agent.runtime import access\n")
    assert "agent.runtime.access" in imports_of("agent.x", mod)
