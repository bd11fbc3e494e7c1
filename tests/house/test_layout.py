"""The layout holds: no import cycle among the project's modules (type-only imports count: a
cycle hidden behind TYPE_CHECKING is still two modules that cannot be understood apart), the
gateway never imports the backend, and models/ stays pure (no I/O, no other package of ours)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("backend", "gateway", "models", "firmware")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if "migrations/versions" in path.as_posix():
                continue
            found[_module_name(path)] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Our modules that ``name`` imports, at any depth of its code (inside functions too)."""
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _module_level_graph() -> dict[str, set[str]]:
    """Imports at module level (including under ``if TYPE_CHECKING:``), not inside functions."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        for n in tree.body:
            if isinstance(n, ast.If):  # if TYPE_CHECKING: ...
                top += [m for m in n.body if isinstance(m, (ast.Import, ast.ImportFrom))]
        sub = ast.Module(body=top, type_ignores=[])
        tmp = {}
        for node in ast.walk(sub):
            if isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:
                    tmp.setdefault(f"{node.module}.{a.name}", None)
                tmp.setdefault(node.module, None)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    tmp.setdefault(a.name, None)
        deps = set()
        for target in tmp:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + ".") and not target.startswith(name + "."):
                deps.add(target)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
    return out


def test_no_import_cycle_between_modules():
    assert _cycles(_module_level_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_gateway_never_imports_the_backend():
    offenders = {m: sorted(d for d in deps if d.startswith("backend")) for m, deps in _graph().items()
                 if m.startswith("gateway")}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_models_import_nothing_of_ours():
    offenders = {m: sorted(d for d in deps if not d.startswith("models")) for m, deps in _graph().items()
                 if m.startswith("models")}
    assert {m: d for m, d in offenders.items() if d} == {}
