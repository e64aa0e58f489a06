"""The layering, executable: import contracts, no import cycles, no private names across modules,
and no choice of backend outside the backend packages."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "tenants", "webhooks", "models_registry", "deployments")
# Where naming a backend is the point: the backends themselves, the data model and its history.
BACKEND_HOMES = (
    "deployments/backends/",
    "models_registry/training/backends/",
    "deployments/models.py",
    "models_registry/models.py",
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_no_import_cycle_among_project_modules_counting_imports_inside_functions():
    graph = grimp.build_graph(*PACKAGES)  # grimp reads every import, function-level ones too
    edges = {
        module: {
            imported
            for imported in graph.find_modules_directly_imported_by(module)
            if imported.split(".")[0] in PACKAGES
        }
        for module in graph.modules
        if module.split(".")[0] in PACKAGES and ".migrations" not in module
    }
    # A package importing its own submodules is not a cycle of behaviour.
    edges = {m: {i for i in ims if not m.startswith(i + ".")} for m, ims in edges.items()}
    assert _strongly_connected(edges) == []


def test_the_cycle_check_finds_a_cycle():
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]
    ]


def _private_imports() -> list[str]:
    modules = _modules()
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if alias.name.startswith("_") and submodule not in modules:
                    found.append(f"{name}:{node.lineno} imports {node.module}.{alias.name}")
    return found


def test_no_private_name_is_imported_from_another_module():
    assert _private_imports() == []


def test_no_backend_is_chosen_outside_the_backend_packages():
    choice = re.compile(
        r"Backend\.(SAGEMAKER|LOCAL)\b|backend\s*[!=]=\s*[\"'](local|sagemaker)[\"']"
        r"|backend=[\"'](local|sagemaker)[\"']"
    )
    found = []
    for path in _modules().values():
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(BACKEND_HOMES) or relative in BACKEND_HOMES:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if choice.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert found == []
