"""The package's shape (issue 15): no import circle, no class over 200 lines, no function of
the daemon over 60 lines. Read from the source with ast: nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "skat_plugin"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every skat_plugin module this file imports, at the top or inside a function."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for n in ast.walk(block)}  # for type checkers only: never imported
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("skat_plugin")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("skat_plugin"):
                continue
            found.add(target)
            for alias in node.names:  # `from . import role`: the module role
                found.add(f"{target}.{alias.name}")
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # A package's __init__ is imported with any of its modules: not an edge worth a
        # circle (skat_plugin.daemon -> skat_plugin.daemon.loop is the package itself).
        graph[name] = {t for t in _imports(path) if t in files and t != name
                       and not name.startswith(t + ".")}
    return graph


def test_no_import_circle() -> None:
    graph = _graph()
    circles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def _long(limit: int, kinds: tuple[type, ...], paths: list[Path]) -> list[str]:
    out = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, kinds) and node.end_lineno - node.lineno + 1 > limit:
                out.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} "
                           f"({node.end_lineno - node.lineno + 1} lines)")
    return out


def test_no_class_over_200_lines() -> None:
    assert _long(200, (ast.ClassDef,), sorted(PACKAGE.rglob("*.py"))) == []


def test_no_function_of_the_daemon_over_60_lines() -> None:
    daemon = sorted((PACKAGE / "daemon").glob("*.py"))
    assert daemon, "the daemon is a package"
    assert _long(60, (ast.FunctionDef, ast.AsyncFunctionDef), daemon) == []


def test_the_loop_names_no_subsystem() -> None:
    """loop.py imports the standard library and the source protocol, nothing else."""
    imports = _imports(PACKAGE / "daemon" / "loop.py")
    assert imports <= {"skat_plugin.watch", "skat_plugin.watch.Source"}, imports
