"""Imports run one way, as in timm: every module has a layer rank and imports only modules of its own
rank or lower, at module level, inside functions and under ``TYPE_CHECKING`` alike; and no modules
import each other in a circle.

The ranks (``docs/design.md`` §7 explains them):

0. ``errors``, ``version``, ``labels``, ``progress``: what everything may use.
1. ``layers`` (the temporal modules) and ``data`` (decoding, sampling, transforms): independent leaves.
2. ``models.backbone``, ``models.video`` and the modules they are built from (``methods``, the method
   table; ``probe``, ``ops``, ``tokens``, ``insertion``, ``fusion``, ``difference``), ``models.contract``
   (timm's model contract: features, checkpointing, parameter groups, fx), ``models.inference``: the
   architecture (a timm backbone made temporal), its explicit inference step, and (``models.causal``,
   ``models.streaming``) its causal, streaming form.
3. ``models.pretrained`` (one metadata record per weight), ``models.registry`` (names),
   ``models.checkpoint``, ``models.official`` (reading, converting, writing weights),
   ``models.zoo_table``: names and weights, no model building.
4. ``models.hub_download``, ``models.hub_loading``, ``models.description``: download weights, read exports and
   what trained weights record (classes, clip settings); they hand files
   and configs back and never build a model (timm keeps its ``_hub`` in ``models`` too).
5. ``models.builder``, ``models.factory`` and the ``models`` package: the one path that builds a
   model (``create_model``), which asks ``models.hub_loading`` for files, as timm's ``_factory`` asks
   ``_hub``. Nothing in ``models`` imports a package above it.
6. ``train``, ``eval``, ``export``, ``hub`` (writing and uploading exports, model cards): what users do
   with a model.
7. ``prediction``, ``bench``: built on evaluation and training.
8. ``cli``, ``__main__``: argument parsing and printing.
9. ``tdnzoo`` (its ``__init__``): the public API, re-exporting from all.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tdnzoo"

# A module's rank is its own entry, else that of the nearest package listed here as a whole.
RANKS = {
    "tdnzoo.errors": 0, "tdnzoo.version": 0, "tdnzoo.labels": 0, "tdnzoo.progress": 0,
    "tdnzoo.layers": 1, "tdnzoo.data": 1,
    "tdnzoo.models.backbone": 2, "tdnzoo.models.video": 2, "tdnzoo.models.probe": 2, "tdnzoo.models.ops": 2,
    "tdnzoo.models.tokens": 2, "tdnzoo.models.insertion": 2, "tdnzoo.models.fusion": 2,
    "tdnzoo.models.difference": 2, "tdnzoo.models.inference": 2, "tdnzoo.models.blocks": 2,
    "tdnzoo.models.placement": 2, "tdnzoo.models.families": 2, "tdnzoo.models.contract": 2,
    "tdnzoo.models.methods": 2, "tdnzoo.models.causal": 2, "tdnzoo.models.streaming": 2,
    "tdnzoo.models.pretrained": 3, "tdnzoo.models.registry": 3, "tdnzoo.models.checkpoint": 3,
    "tdnzoo.models.official": 3, "tdnzoo.models.zoo_table": 3,
    "tdnzoo.models.hub_download": 4, "tdnzoo.models.hub_loading": 4, "tdnzoo.models.description": 4,
    "tdnzoo.models.builder": 5, "tdnzoo.models.factory": 5,
    "tdnzoo.train": 6, "tdnzoo.eval": 6, "tdnzoo.export": 6, "tdnzoo.hub": 6,
    "tdnzoo.prediction": 7, "tdnzoo.bench": 7,
    "tdnzoo.cli": 8, "tdnzoo.__main__": 8,
}
# Package __init__ files ranked apart from their modules: they re-export what is below them.
INIT_RANKS = {"tdnzoo.models": 5, "tdnzoo": 9}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _target(name: str) -> str | None:
    """The tdnzoo module ``name`` refers to: itself, or the nearest enclosing module (``pkg.mod.attr`` -> ``pkg.mod``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, source: str | None = None) -> set[str]:
    """Every tdnzoo module that ``module`` (or ``source`` read as that module) imports, wherever the statement is."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8") if source is None else source)
    package = module if _is_package(module) else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base = ".".join(base_parts[: len(base_parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name``, the module mod.
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "tdnzoo" or name.startswith("tdnzoo."):
                target = _target(name)
                if target and target != module:
                    found.add(target)
    return found


def rank_of(module: str) -> int:
    if module in INIT_RANKS:
        return INIT_RANKS[module]
    name = module
    while name:
        if name in RANKS:
            return RANKS[name]
        name = name.rpartition(".")[0]
    raise KeyError(module)


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_rank():
    missing = []
    for module in MODULES:
        try:
            rank_of(module)
        except KeyError:
            missing.append(module)
    assert not missing, f"give these modules a rank in RANKS (and docs/design.md §7): {missing}"


def test_imports_only_go_down():
    upward = sorted(
        f"{m} (rank {rank_of(m)}) imports {t} (rank {rank_of(t)})"
        for m, targets in GRAPH.items() for t in targets if rank_of(t) > rank_of(m)
    )
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_the_checker_sees_every_kind_of_import():
    """The graph must include imports inside functions and under TYPE_CHECKING, or the tests above prove little."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import video\n"
        "import tdnzoo.errors\n"
        "if TYPE_CHECKING:\n"
        "    from ..layers import TemporalShift\n"
        "def f():\n"
        "    from .registry import list_models\n"
    )
    assert imports_of("tdnzoo.models.factory", source) == {
        "tdnzoo.models.video", "tdnzoo.errors", "tdnzoo.layers", "tdnzoo.models.registry"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", ["tdnzoo.hub", "tdnzoo.models.pretrained", "tdnzoo.models.registry"])
def test_lower_layers_do_not_build_models(module):
    """Only the factory builds: the hub and the metadata never import it (timm: ``_hub`` never imports ``_factory``)."""
    below = {m for m in MODULES if m == module or m.startswith(module + ".")}
    reached = set(below)
    todo = list(below)
    while todo:
        for t in GRAPH[todo.pop()]:
            if t not in reached:
                reached.add(t)
                todo.append(t)
    assert not reached & {"tdnzoo.models.factory", "tdnzoo.models.builder", "tdnzoo.models"}
