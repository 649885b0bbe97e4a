"""Study files (``studies/<name>.yaml``), composed with overrides and validated.

A study is named by a *reference*: a name or a path to a YAML file, then field overrides in Hydra's
override grammar, e.g. ``ex1_rates seeds=[0,1] epochs=2`` or ``ex7_tune technique=gamma``. A
file's ``params`` are named parameters the rest of the file uses as ``${params.NAME}``; on the
command line ``NAME=VALUE`` sets one (short for ``params.NAME=VALUE``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, cast

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dropout_lab.compat import parse_overrides
from dropout_lab.config.analysis_plan import (
    AnalysisPlan,
    SeedDesign,
    cell_problems,
    design_problems,
    plan_problems,
    restrict_to_grid,
)
from dropout_lab.config.paths import STUDIES_DIR
from dropout_lab.config.samplers import is_grid, pruner_config, sampler_config
from dropout_lab.config.schema import METRICS
from dropout_lab.errors import InvalidValueError, StudySpecError

#: A study's name names folders (``results/studies/NAME``, ``reports/NAME``) and the stored Optuna study.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
NAME_ALLOWED = "letters, digits, '_', '.' and '-', starting with a letter or digit, without '..' (it names folders)"


@dataclass
class SearchDimension:
    """One tuned hyperparameter: ``float``/``int`` in [low, high] (``log`` scale optional) or ``categorical``."""

    type: str = MISSING
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None


@dataclass
class StudySpec:
    """What a study answers and how: overlay, grid or search space, seeds, budget, metric, analysis.

    ``tuned_from`` lists tuning studies as references (``"ex7_tune technique=gamma"``): the grid
    is then each one's best parameters (plus its fixed ``key=value`` overrides, e.g.
    ``noise=gamma``), rerun with every seed. ``params`` holds the file's named parameters.
    ``margin`` is the smallest effect of interest on test accuracy (a proportion: 0.005 is 0.5 pp):
    a report may say "no difference" only when an equivalence test (TOST) within +-margin says so.
    ``goal`` is an optional target for the best configuration's mean test accuracy, declared before
    the runs; the report says whether it is met, from the stored runs. ``stretch_goal`` is a higher,
    optional second target, read beside the goal (without one, it is not read).

    ``seeds`` is a list, or a sequential design ``{first, min, max, batch}`` (:class:`SeedDesign`):
    ``study run`` then adds ``batch`` seeds at a time until every comparison of the ``plan``
    (:class:`AnalysisPlan`) is decided or ``max`` is reached. ``seed_list`` is the fixed list, or the
    design's first look.
    """

    name: str = MISSING
    question: str = MISSING
    epochs: int = MISSING
    experiment: str | None = None
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    # A list of ints, or {first, min, max, batch}; None (not given) is [0]. Not a list default: OmegaConf
    # cannot merge a file's mapping into a list node.
    seeds: Any = None
    search_space: dict[str, SearchDimension] = field(default_factory=dict)
    n_trials: int | None = None
    sampler: Any = "tpe"  # a short name (tpe, random, grid, cmaes, gp, ...) or {_target_: optuna.samplers.X, ...}
    # a short name (median, hyperband, successive_halving, none) or {_target_: optuna.pruners.X, ...}
    pruner: Any = "median"
    metric: str = "val_acc"
    analysis: str = "compare"
    tuned_from: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    margin: float = 0.005
    goal: float | None = None
    stretch_goal: float | None = None
    plan: AnalysisPlan | None = None

    @property
    def design(self) -> SeedDesign | None:
        """The sequential seed design, or None for a fixed list of seeds."""
        return self.seeds if isinstance(self.seeds, SeedDesign) else None

    @property
    def seed_list(self) -> list[int]:
        """The fixed seeds, or those of the design's first look."""
        return self.design.seeds(self.design.min) if self.design else list(self.seeds)

    def at_look(self, n: int) -> StudySpec:
        """This study with the first ``n`` seeds of its design, as a fixed list (the runs of that look)."""
        if self.design is None:
            return self
        return replace(self, seeds=self.design.seeds(n))

    @property
    def is_tuning(self) -> bool:
        """True for a search-space study (Optuna sampler), False for a grid over seeds."""
        return bool(self.search_space)

    @property
    def objective(self) -> str:
        """A trial's value, a run-table column: for a tuning study with a plan, the validation counterpart of its
        primary metric (``best_val_acc`` or ``val_acc``; averaged over the seeds), otherwise ``metric``."""
        return self.plan.validation_column if self.plan is not None and self.is_tuning else self.metric

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        """Whether the objective is maximised (accuracy) or minimised (loss)."""
        return METRICS[self.objective.removeprefix("best_")]


def available_studies(folder: Path = STUDIES_DIR) -> list[str]:
    """Names of the study files in ``folder``."""
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def is_safe_name(name: str) -> bool:
    """True if ``name`` is a single safe path component (see :data:`NAME_PATTERN`), never ``..`` or a path."""
    return NAME_PATTERN.fullmatch(name) is not None and ".." not in name


def _check(spec: StudySpec, source: str, narrowed: frozenset[str] = frozenset()) -> StudySpec:
    """Validate ``spec``; ``narrowed`` are the grid keys given new values on the command line (a plan then
    keeps the comparisons whose cells remain, see ``restrict_to_grid``)."""
    def bad(field_: str, value: Any, allowed: str) -> StudySpecError:
        return StudySpecError(f"{source}: {field_}={value!r} is invalid: allowed {allowed}")

    if not is_safe_name(spec.name):  # the resolved name: ex7_tune builds it from ${params.technique}
        raise bad("name", spec.name, NAME_ALLOWED)
    if spec.epochs < 1:
        raise bad("epochs", spec.epochs, "an integer >= 1")
    _check_seeds(spec, bad)
    if not spec.grid and not spec.search_space and not spec.tuned_from:
        raise bad("grid", dict(spec.grid), "a non-empty grid or search_space (this study would run nothing)")
    for key, values in spec.grid.items():
        if not values:
            raise bad(f"grid.{key}", list(values), "a non-empty list of values")
    try:
        sampler_config(spec.sampler)
        pruner_config(spec.pruner)
    except InvalidValueError as exc:
        raise bad(exc.field, exc.value, exc.allowed) from None
    if spec.metric not in METRICS:
        raise bad("metric", spec.metric, f"one of {', '.join(METRICS)}")
    if not 0.0 < spec.margin < 1.0:
        raise bad("margin", spec.margin, "a proportion of test accuracy in (0, 1), e.g. 0.005 for 0.5 pp")
    if spec.goal is not None and not 0.0 < spec.goal < 1.0:
        raise bad("goal", spec.goal, "a test accuracy in (0, 1), e.g. 0.89, or null")
    if spec.stretch_goal is not None and not (spec.goal or 0.0) < spec.stretch_goal < 1.0:
        raise bad("stretch_goal", spec.stretch_goal, f"a test accuracy in (goal, 1) (goal={spec.goal}), e.g. 0.90 "
                  "beside goal 0.89, or null")
    if spec.plan is not None:
        if narrowed:
            spec.plan = restrict_to_grid(spec.plan, dict(spec.grid), set(narrowed))
        for field_, value, allowed in [*plan_problems(spec.plan, _cell_keys(spec)),
                                       *cell_problems(spec.plan, dict(spec.grid))]:
            raise bad(field_, value, allowed)
    if spec.is_tuning and spec.design is not None:
        raise bad("seeds", spec.seeds, "a list for a tuning study (a sequential design is for grids)")
    if spec.design is not None and (spec.plan is None or not spec.plan.comparisons):
        left_out = f" (the grid narrowed on the command line left out: {', '.join(spec.plan.dropped)})" \
            if spec.plan is not None and spec.plan.dropped else ""
        raise bad("plan", spec.plan, "a plan with at least one comparison: a sequential design {first, min, max, "
                  "batch} stops when the plan's comparisons are decided" + left_out)
    if spec.is_tuning:
        if spec.n_trials is None or spec.n_trials < 1:
            raise bad("n_trials", spec.n_trials, "an integer >= 1 for a study with a search_space")
        for key, dim in spec.search_space.items():
            if dim.type == "categorical":
                if not dim.choices:
                    raise bad(f"search_space.{key}.choices", dim.choices, "a non-empty list")
            elif dim.type in ("float", "int"):
                if dim.low is None or dim.high is None or dim.low > dim.high:
                    raise bad(f"search_space.{key}", f"[{dim.low}, {dim.high}]", "low <= high, both set")
            else:
                raise bad(f"search_space.{key}.type", dim.type, "float, int or categorical")
        if (is_grid(spec.sampler) and "search_space" not in sampler_config(spec.sampler)
                and any(d.type != "categorical" for d in spec.search_space.values())):
            raise bad("sampler", spec.sampler, "a grid only with categorical search dimensions (or a search_space)")
    return spec


def _check_seeds(spec: StudySpec, bad: Any) -> None:
    """Validate ``seeds`` and turn a mapping into a :class:`SeedDesign`."""
    seeds = [0] if spec.seeds is None else spec.seeds
    if isinstance(seeds, dict):
        unknown = sorted(set(seeds) - {"first", "min", "max", "batch"})
        if unknown:
            raise bad(f"seeds.{unknown[0]}", seeds[unknown[0]], "only the keys first, min, max, batch")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds.values()):
            raise bad("seeds", seeds, "integers for first, min, max and batch")
        design = SeedDesign(**seeds)
        for field_, value, allowed in design_problems(design):
            raise bad(field_, value, allowed)
        spec.seeds = design
    elif not isinstance(seeds, (list, tuple)) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise bad("seeds", seeds, "a non-empty list of integers, or {first, min, max, batch}")
    elif len(set(seeds)) != len(seeds):
        raise bad("seeds", list(seeds), "seeds listed once each")
    else:
        spec.seeds = list(seeds)


def _cell_keys(spec: StudySpec) -> set[str]:
    """The keys a plan's cells may name: the grid's, and ``technique`` for a study of tuned winners (ex7)."""
    return set(spec.grid) | ({"technique"} if spec.tuned_from else set())


#: Fields whose keys are dotted config paths: ``grid.model.dropout_1=[0.1]`` sets key ``model.dropout_1``.
PATH_KEYED_FIELDS = ("grid", "search_space")
SEARCH_DIMENSION_FIELDS = tuple(f.name for f in fields(SearchDimension))


def split_ref(ref: str) -> tuple[str, list[str]]:
    """A study reference ``"NAME_OR_PATH [KEY=VALUE ...]"`` (shell quoting) as (name or path, overrides)."""
    try:
        parts = shlex.split(ref)
    except ValueError as exc:
        raise StudySpecError(f"study reference {ref!r} is invalid: {exc}") from None
    if not parts:
        raise StudySpecError(f"study reference {ref!r} is invalid: allowed NAME_OR_PATH [KEY=VALUE ...]")
    return parts[0], parts[1:]


def study_ref(name_or_path: str, overrides: Sequence[str] = ()) -> str:
    """The reference that :func:`load_study_ref` reads back as ``name_or_path`` with ``overrides``."""
    return shlex.join([str(name_or_path), *overrides])


def load_study_ref(ref: str, folder: Path = STUDIES_DIR) -> StudySpec:
    """Load and validate the study of a reference (``"ex7_tune technique=gamma"``)."""
    name, overrides = split_ref(ref)
    return load_spec(name, overrides, folder)


def _study_file(name_or_path: str, folder: Path) -> Path:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = Path(folder) / f"{name_or_path}.yaml"
    if not path.is_file():
        names = ", ".join(available_studies(folder)) or "(none)"
        raise StudySpecError(f"unknown study {name_or_path!r}: choose one of {names} in {folder}, "
                             "or a path to a YAML file")
    return path


def _node_path(cfg: DictConfig, key: str) -> list[str]:
    """Where override ``key`` points in the study config (see :data:`PATH_KEYED_FIELDS`, ``params``)."""
    head, _, rest = key.partition(".")
    if head not in cfg and head in cfg.params.keys():
        return ["params", *key.split(".")]
    if head in PATH_KEYED_FIELDS and rest:
        inner, _, attr = rest.rpartition(".")
        if head == "search_space" and inner and attr in SEARCH_DIMENSION_FIELDS:
            return [head, inner, attr]
        return [head, rest]
    return key.split(".")


def apply_overrides(cfg: DictConfig, overrides: Sequence[str], source: str) -> None:
    """Apply field overrides (Hydra's grammar: ``key=value``, ``+key=value``, ``~key``) to a study config.

    Values are typed by the grammar (``seeds=[0,1]`` is a list) and checked by the schema on
    assignment; an unknown field is refused with the fields allowed there.
    """
    if not overrides:
        return
    from hydra.errors import HydraException

    try:
        parsed = parse_overrides(overrides)
    except HydraException as exc:
        raise StudySpecError(f"{source}: {str(exc).splitlines()[0]}") from None
    for override in parsed:
        key = override.key_or_group
        text = override.input_line or key
        if override.is_sweep_override():
            raise StudySpecError(f"{source}: {text} is invalid: allowed a single value per field "
                                 f"(write a list as {key}=[a,b])")
        path = _node_path(cfg, key)
        parent: Any = cfg
        for depth, part in enumerate(path[:-1]):
            if not isinstance(parent, DictConfig) or part not in parent:
                raise _unknown(source, text, ".".join(path[:depth + 1]), parent, parent is cfg)
            parent = parent[part]
        last = path[-1]
        present = isinstance(parent, DictConfig) and (last in parent or last in parent.keys())
        try:
            if override.is_delete():
                if not present:
                    raise _unknown(source, text, key, parent, parent is cfg)
                del parent[last]
            elif override.is_add() and present:
                raise StudySpecError(f"{source}: {text} is invalid: {key} is already set; use {key}=VALUE")
            elif not (override.is_add() or override.is_force_add()) and not present:
                raise _unknown(source, text, key, parent, parent is cfg)
            else:
                parent[last] = override.value()
        except OmegaConfBaseException as exc:
            raise StudySpecError(f"{source}: {text} is invalid: {str(exc).splitlines()[0]}") from None


def _unknown(source: str, text: str, key: str, parent: Any, top: bool) -> StudySpecError:
    if isinstance(parent, DictConfig):
        known = [str(k) for k in parent.keys()]
        if top:  # the study's fields, and the file's parameters
            params = [str(k) for k in parent.params.keys()]
            known = [k for k in known if k != "params"] + [f"{p} (params.{p})" for p in params] + ["params"]
        allowed = f"one of {', '.join(known)}" if known else "no keys here (add one with +KEY=VALUE)"
    else:
        allowed = "no sub-keys (this field is a value)"
    return StudySpecError(f"{source}: {text} is invalid: unknown field {key!r}; allowed {allowed}")


def load_spec(name_or_path: str, overrides: Sequence[str] = (), folder: Path = STUDIES_DIR) -> StudySpec:
    """Load a study by name (``definitions/NAME.yaml``) or path, apply field ``overrides``, validate."""
    path = _study_file(name_or_path, folder)
    source = str(path) + (f" (with {' '.join(overrides)})" if overrides else "")
    try:
        merged = cast(DictConfig, OmegaConf.merge(OmegaConf.structured(StudySpec), OmegaConf.load(path)))
        apply_overrides(merged, overrides, source)
        params = [k for k in merged.params.keys()
                  if OmegaConf.is_missing(merged.params, k) and not OmegaConf.is_interpolation(merged.params, k)]
        if params:  # other missing fields derive from these
            raise StudySpecError(f"{source}: missing parameter(s) {', '.join(f'params.{k}' for k in params)}: "
                                 f"set {' '.join(f'{k}=VALUE' for k in params)} after the study's name")
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise StudySpecError(f"{source}: missing required field(s): {', '.join(missing)}")
        spec = cast(StudySpec, OmegaConf.to_object(merged))
    except OmegaConfBaseException as exc:
        raise StudySpecError(f"{source}: {str(exc).splitlines()[0]} (full_key: {exc.full_key})") from None
    narrowed = frozenset(key for key in (o.lstrip("+~").split("=", 1)[0] for o in overrides)
                         if key.startswith("grid."))
    return _check(spec, source, frozenset(key.removeprefix("grid.") for key in narrowed))
