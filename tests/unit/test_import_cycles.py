"""Import cycles in the core: read every module's imports (module level and inside functions) with ast.

Every cycle in aetheris_ray is listed in the failure messages and in ``-rA`` output;
the assertions cover the pairs issue 13 untangled.  An import inside a function still
counts: it only hides the cycle from the import system until the call.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = "aetheris_ray"
ROOT = Path(__file__).resolve().parents[2] / PKG


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """module -> the aetheris_ray modules it imports anywhere in its body."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join([*pkg, base] if base else pkg)
                # `from pkg import sub` imports the submodule when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:  # `import a.b.c` of a name inside a module: the module
                    t = t.rpartition(".")[0]
                if t.startswith(PKG) and t != mod:
                    graph[mod].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _path(graph: dict[str, set[str]], a: str, b: str) -> list[str] | None:
    """A shortest import chain from ``a`` to ``b`` (breadth first), or None."""
    prev: dict[str, str | None] = {a: None}
    queue = [a]
    while queue:
        v = queue.pop(0)
        if v == b:
            chain = [v]
            while prev[chain[-1]] is not None:
                chain.append(prev[chain[-1]])  # type: ignore[arg-type]
            return chain[::-1]
        for w in sorted(graph[v]):
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return None


GRAPH = _graph()

PAIRS = [
    ("aetheris_ray.engine", "aetheris_ray.walkforward"),
    ("aetheris_ray.model", "aetheris_ray.walkforward"),
    ("aetheris_ray.engine", "aetheris_ray.pairs"),
    ("aetheris_ray.engine", "aetheris_ray.state_cache"),
    ("aetheris_ray.evaluation.backtest", "aetheris_ray.evaluation.report"),
    ("aetheris_ray.evaluation.backtest", "aetheris_ray.evaluation.uncertainty"),
    ("aetheris_ray.components.residuals", "aetheris_ray.components.volatility"),
]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_no_import_cycle_between(a, b):
    assert a in GRAPH and b in GRAPH, f"{a} or {b} is not a module of {PKG} any more: update PAIRS"
    there, back = _path(GRAPH, a, b), _path(GRAPH, b, a)
    all_cycles = "\n".join(" <-> ".join(c) for c in _cycles(GRAPH)) or "none"
    assert there is None or back is None, (
        f"import cycle {a} <-> {b}: {' -> '.join(there or [])} and {' -> '.join(back or [])} "
        f"(imports inside functions count).\nAll cycles in {PKG}:\n{all_cycles}"
    )


def test_report_all_cycles_in_the_package():
    """Not an assertion on the package: lists every cycle (see with -rA), and checks the finder itself."""
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(toy) == [["a", "b", "c"]]
    assert _path(toy, "d", "c") == ["d", "a", "b", "c"] and _path(toy, "a", "e") is None
    assert "aetheris_ray.evaluation._frames" in GRAPH["aetheris_ray.evaluation.report"]
    print("import cycles in aetheris_ray:", *(" <-> ".join(c) for c in _cycles(GRAPH)) or ["none"], sep="\n  ")
