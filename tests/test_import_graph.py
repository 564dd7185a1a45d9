"""The import graph keeps DESIGN §1's direction: ``onboarding`` is the base, ``triggers`` reads it,
``dashboard`` reads both, and no module imports itself back through others.

Read with the standard library's ``ast``, so nothing is imported to check it:
- ``triggers`` never imports ``dashboard``, not even inside a function;
- ``onboarding`` imports neither ``dashboard`` nor ``triggers``, not even inside a function;
- no cycle among the modules, counting every import that can run, inside a function body too
  (an import moved into a function hides a cycle from Python, not from the design); only imports
  under ``if TYPE_CHECKING:`` are left out, since they never run. So channels are named by
  dotted path in settings, and a service queues a task by its name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("config", "onboarding", "dashboard", "triggers")

# (importing app, imported app) pairs that DESIGN §1 forbids.
FORBIDDEN = {("triggers", "dashboard"), ("onboarding", "dashboard"), ("onboarding", "triggers")}


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    runs: bool  # False only under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def app_modules(root: Path = ROOT, apps: tuple[str, ...] = APPS) -> dict[str, Path]:
    """Every module of the apps, by dotted name (a package by its own name, for its __init__)."""
    found: dict[str, Path] = {}
    for app in apps:
        for path in sorted((root / app).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in; None outside the apps."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, known: dict[str, Path]) -> list[Import]:
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        if node.level:
            base_parts = package.split(".")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        # ``from a import b`` loads a.b when b is a module, else only a.
        return [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
            for alias in node.names
        ]

    def visit(node: ast.AST, runs: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for name in dict.fromkeys(targets(child)):
                    target = _resolve(name, known)
                    if target is not None and target != module:
                        found.append(Import(module, target, child.lineno, runs))
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), False)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), runs)
            else:
                visit(child, runs)

    visit(ast.parse(path.read_text(), filename=str(path)), True)
    return found


def import_graph(root: Path = ROOT, apps: tuple[str, ...] = APPS) -> list[Import]:
    known = app_modules(root, apps)
    return [edge for module, path in known.items() for edge in imports_of(module, path, known)]


def forbidden_imports(edges: list[Import]) -> list[Import]:
    return [
        edge
        for edge in edges
        if (edge.source.split(".")[0], edge.target.split(".")[0]) in FORBIDDEN
    ]


def cycles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected components (of more than one module) of the imports that run."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if edge.runs:
            graph.setdefault(edge.source, set()).add(edge.target)
            graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan; the graph is a few hundred modules deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def _describe(component: list[str], edges: list[Import]) -> str:
    members = set(component)
    inside = [str(e) for e in edges if e.runs and e.source in members and e.target in members]
    return "cycle among " + ", ".join(component) + ":\n    " + "\n    ".join(inside)


def test_triggers_never_imports_dashboard_and_onboarding_imports_neither():
    bad = forbidden_imports(import_graph())
    assert not bad, "imports against DESIGN §1's direction:\n" + "\n".join(map(str, bad))


def test_no_import_cycles():
    edges = import_graph()
    found = cycles(edges)
    assert not found, "\n".join(_describe(component, edges) for component in found)


def test_the_checks_catch_a_planted_wrong_way_import_and_a_cycle(tmp_path):
    """The checker itself can fail: a tree with each kind of fault is flagged, exactly."""
    files = {
        "onboarding/__init__.py": "",
        "onboarding/models.py": "def lazy():\n    from triggers import engine\n",
        "dashboard/__init__.py": "",
        "dashboard/views.py": "from triggers.engine import run\nfrom onboarding import models\n",
        "triggers/__init__.py": "",
        "triggers/engine.py": (
            "from typing import TYPE_CHECKING\nfrom . import tasks\n"
            "if TYPE_CHECKING:\n    from dashboard import views\n"
        ),
        "triggers/tasks.py": "from triggers.engine import run\n",
        "triggers/lazy.py": "def later():\n    from triggers import ok\n",
        "triggers/ok.py": "from .tasks import x\nfrom triggers import lazy\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    edges = import_graph(tmp_path, ("onboarding", "dashboard", "triggers"))
    assert sorted(map(str, forbidden_imports(edges))) == [
        "onboarding.models:2 imports triggers.engine",
        "triggers.engine:4 imports dashboard.views",
    ]
    assert cycles(edges) == [
        ["triggers.engine", "triggers.tasks"],
        ["triggers.lazy", "triggers.ok"],
    ]
