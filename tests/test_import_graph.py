"""Dependencies point one way. Each contract names the rule from the development docs' layout page.

Stages (`indexer`, `search`, `api`, `train`) and the command line (`cli`) install under
`blipsearch.`; everything else under `blipsearch.` is the shared core.
"""

from __future__ import annotations

import grimp
import pytest

from import_graph import build_graph, module_files

STAGES = ("indexer", "search", "api", "train", "cli", "migrations", "web")

# (importer group, groups it must never reach, directly or through other modules)
FORBIDDEN = [
    ("core", ("indexer", "search", "api", "train", "cli")),
    ("indexer", ("search", "api", "train", "cli")),
    ("search", ("indexer", "api", "train", "cli")),
    ("api", ("train", "cli")),
    ("train", ("api", "indexer", "cli")),
    ("migrations", ("indexer", "search", "api", "train", "cli")),
]


def group_of(module: str) -> str:
    second = module.split(".")[1] if "." in module else ""
    return second if second in STAGES else "core"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return build_graph()


def _members(graph: grimp.ImportGraph, group: str) -> set[str]:
    return {m for m in graph.modules if group_of(m) == group and m != "blipsearch.__main__"}


def test_the_graph_sees_every_stage_and_the_core(graph: grimp.ImportGraph) -> None:
    groups = {group_of(m) for m in graph.modules}
    assert {"core", "indexer", "search", "api", "train", "cli"} <= groups
    assert "blipsearch.search.service" in graph.modules
    assert "blipsearch.storage.catalog" in graph.modules
    # A known edge, to prove imports are read at all (the service ranks with the vector store).
    assert graph.chain_exists(importer="blipsearch.search.service", imported="blipsearch.settings")


def test_the_builder_agrees_with_grimp_on_the_core_folder(graph: grimp.ImportGraph) -> None:
    """Where grimp can read the layout itself (the core folder), both graphs have the same edges."""
    reference = grimp.build_graph("blipsearch", include_external_packages=False)
    core = {m for m in reference.modules if group_of(m) == "core"} & set(graph.modules)
    assert len(core) > 20
    for module in sorted(core):
        ours = {m for m in graph.find_modules_directly_imported_by(module) if m in core}
        theirs = {m for m in reference.find_modules_directly_imported_by(module) if m in core}
        assert ours == theirs, module


@pytest.mark.parametrize(("importer", "forbidden"), FORBIDDEN, ids=[rule[0] for rule in FORBIDDEN])
def test_dependencies_point_one_way(
    graph: grimp.ImportGraph, importer: str, forbidden: tuple[str, ...]
) -> None:
    broken = []
    for target in forbidden:
        for source in sorted(_members(graph, importer)):
            for module in sorted(_members(graph, target)):
                chain = graph.find_shortest_chain(importer=source, imported=module)
                if chain:
                    broken.append(" -> ".join(chain))
    assert not broken, f"{importer} must not import {forbidden}:\n" + "\n".join(broken[:20])


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    cycles = set()
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.add(" -> ".join((module, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_every_module_on_disk_is_in_the_graph() -> None:
    files = module_files()
    assert all(path.is_file() for path in files.values())
    assert {"blipsearch.api.app", "blipsearch.indexer.pipeline", "blipsearch.train.loop"} <= set(files)
