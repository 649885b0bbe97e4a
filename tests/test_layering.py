"""Imports point one way: config -> data -> models/noise -> training -> store -> runners, reports -> app -> cli.

Reads every module under ``src/`` with ``ast`` (imports inside functions count too) and checks the
package order and that no two modules import each other, directly or in a loop.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Each package of ``dropout_lab`` with its layer; a module may import only from its own or lower layers.
LAYERS = {
    "errors": 0, "compat": 0, "config": 1, "data": 2, "models": 2, "evaluation": 3, "training": 4,
    "store": 5, "runners": 6, "reports": 6, "app": 7, "cli": 8,
}
#: The Hydra sweeper plugin sits beside the commands: it drives studies through the tuning core.
PLUGIN_LAYER = 7


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in modules}


def _layer(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "hydra_plugins":
        return PLUGIN_LAYER
    if len(parts) == 1:  # the package itself: its __init__ holds only the version
        return 0
    return LAYERS[parts[1]]


MODULES = _modules()
GRAPH = {name: _imports(path, MODULES) - {name} for name, path in MODULES.items()}


def test_every_package_has_a_layer() -> None:
    unknown = {m.split(".")[1] for m in MODULES if m.startswith("dropout_lab.")} - set(LAYERS)
    assert not unknown, f"packages without a layer in LAYERS: {sorted(unknown)}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_upwards(module: str) -> None:
    upward = sorted(dep for dep in GRAPH[module] if _layer(dep) > _layer(module))
    assert not upward, f"{module} (layer {_layer(module)}) imports from a higher layer: {upward}"


def test_no_import_cycles() -> None:
    try:
        graphlib.TopologicalSorter(GRAPH).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
