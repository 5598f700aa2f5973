"""The project's import graph as installed, for the layering contracts in test_import_graph.py.

grimp discovers modules by walking a package's folder, so `grimp.build_graph("blipsearch")` sees only
the core folder: the stages live in top-level folders that install as `blipsearch.<stage>` through
pyproject's `package-dir`. This reads that mapping, parses every module (imports inside functions
and under TYPE_CHECKING included: both are dependencies a reader must follow) and fills a grimp
graph, whose queries (chains, cycles) the contracts then use.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "blipsearch"


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the distribution by its installed name."""
    package_dir: dict[str, str] = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    mounted = {folder for name, folder in package_dir.items() if name != PACKAGE}
    modules: dict[str, Path] = {}
    for package, folder in package_dir.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            relative = path.relative_to(base)
            if package == PACKAGE and relative.parts[0] in mounted:
                continue
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _imported_names(module: str, path: Path) -> set[str]:
    names: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def build_graph(root: Path = ROOT) -> grimp.ImportGraph:
    modules = module_files(root)
    graph = grimp.ImportGraph()
    for module in modules:
        graph.add_module(module)
    for module, path in modules.items():
        for name in _imported_names(module, path):
            target = name
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(f"{target}."):
                graph.add_import(importer=module, imported=target)
    return graph
