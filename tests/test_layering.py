"""Imports point one way: config -> data -> models/noise -> training -> store -> runners, reports -> app -> cli.

Reads every module under ``src/`` with ``ast`` (imports inside functions count too) and checks the
package order and that no two modules import each other, directly or in a loop. A ``_target_`` string
is an import Hydra makes later, so it counts as one of the module that holds it; the ``_target_``s of the
config groups in ``conf/`` are instantiated by the training layer. Every such target must exist.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.utils import get_object

ROOT = Path(__file__).resolve().parents[1]
SRC, CONF = ROOT / "src", ROOT / "conf"

#: Each package of ``dropout_lab`` with its layer; a module may import only from its own or lower layers.
LAYERS = {
    "errors": 0, "compat": 0, "config": 1, "data": 2, "models": 2, "evaluation": 3, "training": 4,
    "store": 5, "analysis": 6, "runners": 7, "reports": 7, "app": 8, "cli": 9,
}
#: The Hydra sweeper plugin sits beside the commands: it drives studies through the tuning core.
PLUGIN_LAYER = 8
#: The config groups' targets are built by the training layer (``training/fit.py``).
CONF_HOLDER = "dropout_lab.training"
OURS = ("dropout_lab", "hydra_plugins")


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _python_targets(tree: ast.AST) -> Iterator[str]:
    """String ``_target_`` values: ``_target_: str = "..."``, ``{"_target_": "..."}``, ``f(_target_="...")``."""
    for node in ast.walk(tree):
        pairs: list[tuple[Any, Any]] = []
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            pairs = [(node.target.id, node.value)]
        elif isinstance(node, ast.Dict):
            pairs = [(k.value if isinstance(k, ast.Constant) else None, v) for k, v in zip(node.keys, node.values)]
        elif isinstance(node, ast.Call):
            pairs = [(k.arg, k.value) for k in node.keywords]
        for key, value in pairs:
            if key == "_target_" and isinstance(value, ast.Constant) and isinstance(value.value, str):
                yield value.value


def _yaml_targets(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "hydra":  # Hydra's own launcher and sweeper: Hydra builds them
                continue
            if key == "_target_" and isinstance(value, str):
                yield value
            else:
                yield from _yaml_targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _yaml_targets(value)


def _module_of(target: str, modules: dict[str, Path]) -> str:
    """The module a dotted target lives in: its longest prefix that is a module of ``src/``."""
    parts = target.split(".")
    return next(".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules)


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    found.update(_module_of(t, modules) for t in _python_targets(tree) if t.startswith(OURS))
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
CONF_TARGETS = sorted({t for path in CONF.rglob("*.yaml") for t in _yaml_targets(yaml.safe_load(path.read_text()))})
PY_TARGETS = sorted({t for path in SRC.rglob("*.py") for t in _python_targets(ast.parse(path.read_text()))})


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


def test_config_groups_and_modules_name_targets_that_exist() -> None:
    ours = [t for t in CONF_TARGETS + PY_TARGETS if t.startswith(OURS)]
    assert "dropout_lab.models.NoisyMLP" in ours and "dropout_lab.data.FashionMNISTDataModule" in ours
    for target in CONF_TARGETS + PY_TARGETS:
        if "${" not in target:
            assert get_object(target) is not None, target


@pytest.mark.parametrize("target", [t for t in CONF_TARGETS if t.startswith(OURS)])
def test_config_group_targets_point_no_higher_than_the_training_layer(target: str) -> None:
    assert _layer(_module_of(target, MODULES)) <= _layer(CONF_HOLDER), target


def test_no_module_name_is_used_twice() -> None:
    """Names by role: one ``fit.py``, one ``tuner.py`` ... (``__init__``/``__main__`` aside), and no singular and
    plural near-twins (``record``/``records``)."""
    stems = [p.stem for p in SRC.rglob("*.py") if p.stem not in ("__init__", "__main__")]
    assert sorted({s for s in stems if stems.count(s) > 1}) == []
    assert sorted({s for s in stems if s + "s" in stems or s + "es" in stems}) == []
