"""A study's declared analysis plan and seed design: what decides each question, written before the runs.

A study file declares (see ``docs/studies-and-statistics.md``)::

    seeds: {first: 100, min: 10, max: 60, batch: 10}   # or a fixed list: [100, 101, ...]
    plan:
      primary: test_acc_at_best_val     # the metric every verdict reads
      alpha: 0.05
      correction: holm                  # within each family, for significance and equivalence alike
      comparisons:
        - name: swap 0.3/0.5
          family: swaps
          treatment: {model.dropout_1: 0.3, model.dropout_2: 0.5}
          control: {model.dropout_1: 0.5, model.dropout_2: 0.3}
          margin: 0.003
          why: one epoch-to-epoch wobble of validation accuracy with dropout (0.3 pp)
      references:
        - name: the book's printed accuracy
          cell: {model: scratch}
          value: 0.852
          why: one run the book printed, against the prediction interval for one run of this protocol

``treatment`` and ``control`` select runs by their config values (dotted keys of the run table);
runs are paired on their seed. A comparison with ``minus: {treatment: ..., control: ...}`` is a difference of
differences, (treatment - control) - (minus.treatment - minus.control) per seed: an interaction, e.g. whether
one factor's effect depends on another's level. Everything not declared here is a labelled sensitivity
analysis.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from omegaconf import MISSING

#: The metrics a plan may declare as primary: each is read on the test set, with its validation
#: counterpart (what tuning optimises and pruning watches) and a description for the report.
PRIMARY_METRICS: dict[str, tuple[str, str, str]] = {
    "test_acc_at_best_val": ("best_test_acc", "best_val_acc",
                             "test accuracy of the weights of the best-validation epoch (early stopping)"),
    "test_acc_last_epoch": ("test_acc", "val_acc", "test accuracy of the last epoch's weights (a fixed budget)"),
}
#: Corrections a plan may declare for the tests within one family.
CORRECTIONS = ("holm", "bonferroni")


@dataclass
class SeedDesign:
    """Seeds ``first, first + 1, ...``: ``min`` at the first look, then ``batch`` more per look, up to ``max``."""

    first: int = 0
    min: int = 10
    max: int = 10
    batch: int = 10

    def looks(self) -> list[int]:
        """The numbers of seeds at which the plan is evaluated: min, min + batch, ..., max."""
        sizes = list(range(self.min, self.max, self.batch)) if self.batch > 0 else []
        return [*sizes, self.max] if not sizes or sizes[-1] != self.max else sizes

    def seeds(self, n: int) -> list[int]:
        """The first ``n`` seeds of the design."""
        return list(range(self.first, self.first + n))


@dataclass
class Difference:
    """``treatment`` minus ``control``, two cells paired on seeds (a comparison's second difference)."""

    treatment: dict[str, Any] = MISSING
    control: dict[str, Any] = MISSING


@dataclass
class Comparison:
    """One declared question: ``treatment`` minus ``control`` on the primary metric, paired on seeds; with
    ``minus``, that difference minus ``minus``'s (an interaction contrast of four cells, paired on seeds).

    ``margin`` (a proportion: 0.005 is 0.5 pp) is the smallest difference that matters; inside it the
    two are called equivalent. ``why`` justifies it in one line. ``family`` groups comparisons whose
    tests are corrected together. ``metric`` replaces the primary metric for this comparison (a column
    of the study's per-run table, e.g. an instrument's).
    """

    name: str = MISSING
    treatment: dict[str, Any] = MISSING
    control: dict[str, Any] = MISSING
    margin: float = MISSING
    why: str = MISSING
    family: str = "main"
    metric: str | None = None
    minus: Difference | None = None

    def cells(self) -> list[tuple[str, dict[str, Any]]]:
        """Its cells with their field names: treatment, control, and ``minus``'s two where it has them."""
        own = [("treatment", self.treatment), ("control", self.control)]
        if self.minus is None:
            return own
        return [*own, ("minus.treatment", self.minus.treatment), ("minus.control", self.minus.control)]


@dataclass
class Reference:
    """An absolute claim: the runs of ``cell`` against a reference ``value`` (a printed number, a goal).

    A printed number (one run the book printed) is checked against the seeds' prediction interval for one run;
    a goal (``goal: true``) against the interval of their mean, which includes the test set's own sampling
    error. ``why`` says, in one line, what the check is. ``margin`` is read by neither check (a prediction
    interval has no tolerance to choose, and a goal has none): it is optional, ignored, and kept only so that
    older study files still load.
    """

    name: str = MISSING
    cell: dict[str, Any] = MISSING
    value: float = MISSING
    margin: float | None = None
    why: str = MISSING
    goal: bool = False


@dataclass
class AnalysisPlan:
    """What decides a study's questions (see the module docstring)."""

    primary: str = "test_acc_at_best_val"
    alpha: float = 0.05
    correction: str = "holm"
    comparisons: list[Comparison] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    #: Other readings, reported as labelled sensitivity analyses (never verdicts).
    sensitivity: list[str] = field(default_factory=lambda: ["test_acc_last_epoch"])
    #: Not declared: the comparisons and references left out because a grid narrowed on the command line
    #: does not hold their cells (see :func:`restrict_to_grid`); the report lists them.
    dropped: list[str] = field(default_factory=list)

    @property
    def test_column(self) -> str:
        """The run table's column of the primary metric (test set)."""
        return PRIMARY_METRICS[self.primary][0]

    @property
    def validation_column(self) -> str:
        """The run table's column of the primary metric's validation counterpart."""
        return PRIMARY_METRICS[self.primary][1]

    def families(self) -> dict[str, list[Comparison]]:
        """The declared comparisons by family, in declaration order."""
        out: dict[str, list[Comparison]] = {}
        for comparison in self.comparisons:
            out.setdefault(comparison.family, []).append(comparison)
        return out


def plan_problems(plan: AnalysisPlan, grid_keys: set[str]) -> list[tuple[str, Any, str]]:
    """Every invalid field of ``plan`` as (field, value, allowed); ``grid_keys`` are the keys cells may name."""
    problems: list[tuple[str, Any, str]] = []
    if plan.primary not in PRIMARY_METRICS:
        problems.append(("plan.primary", plan.primary, f"one of {', '.join(PRIMARY_METRICS)}"))
    if not 0.0 < plan.alpha < 0.5:
        problems.append(("plan.alpha", plan.alpha, "a level in (0, 0.5), e.g. 0.05"))
    if plan.correction not in CORRECTIONS:
        problems.append(("plan.correction", plan.correction, f"one of {', '.join(CORRECTIONS)}"))
    for name in plan.sensitivity:
        if name not in PRIMARY_METRICS:
            problems.append(("plan.sensitivity", name, f"names from {', '.join(PRIMARY_METRICS)}"))
    names = [c.name for c in plan.comparisons] + [r.name for r in plan.references]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        problems.append(("plan.comparisons.name", duplicate, "a name used once per plan"))
    for i, comparison in enumerate(plan.comparisons):
        where = f"plan.comparisons[{i}]"
        if not 0.0 < comparison.margin < 1.0:
            problems.append((f"{where}.margin", comparison.margin, "a proportion in (0, 1), e.g. 0.005 for 0.5 pp"))
        if not comparison.why.strip():
            problems.append((f"{where}.why", comparison.why, "a one-line justification of the margin"))
        if comparison.treatment == comparison.control:
            problems.append((f"{where}.treatment", dict(comparison.treatment), "a cell other than the control's"))
        if comparison.minus is not None and comparison.minus.treatment == comparison.minus.control:
            problems.append((f"{where}.minus.treatment", dict(comparison.minus.treatment),
                             "a cell other than minus.control's"))
        for side, cell in comparison.cells():
            unknown = sorted(set(cell) - grid_keys)
            if unknown and comparison.metric is None:
                allowed = f"keys of the study's cells: {', '.join(sorted(grid_keys))}"
                problems.append((f"{where}.{side}", unknown, allowed))
    for i, reference in enumerate(plan.references):
        where = f"plan.references[{i}]"
        if not 0.0 < reference.value < 1.0:
            problems.append((f"{where}.value", reference.value, "an accuracy in (0, 1)"))
        if not reference.why.strip():
            problems.append((f"{where}.why", reference.why, "a one-line statement of what the check is"))
        unknown = sorted(set(reference.cell) - grid_keys)
        if unknown:
            problems.append((f"{where}.cell", unknown, f"keys of the study's cells: {', '.join(sorted(grid_keys))}"))
    return problems


def _same(a: Any, b: Any) -> bool:
    """Cell values as a YAML file and a grid give them: 0.5 == 0.5, "0.5" == 0.5, None == None."""
    return a == b or str(a) == str(b)


def cell_problems(plan: AnalysisPlan, grid: dict[str, list[Any]]) -> list[tuple[str, Any, str]]:
    """Cells of ``plan`` (treatment, control, reference) naming a value the ``grid`` does not have.

    Comparisons with their own ``metric`` (instrument rows) may select keys of those rows, so they are skipped.
    """
    problems: list[tuple[str, Any, str]] = []
    cells = [(f"plan.comparisons[{i}].{side}", cell) for i, c in enumerate(plan.comparisons)
             if c.metric is None for side, cell in c.cells()]
    cells += [(f"plan.references[{i}].cell", r.cell) for i, r in enumerate(plan.references)]
    for where, cell in cells:
        for key, value in cell.items():
            if key in grid and not any(_same(value, v) for v in grid[key]):
                problems.append((f"{where}.{key}", value, f"one of the grid's values {list(grid[key])} (a grid "
                                 "narrowed on the command line keeps the plan's cells, or drops the plan: plan=null)"))
    return problems


def restrict_to_grid(plan: AnalysisPlan, grid: dict[str, list[Any]], narrowed: set[str]) -> AnalysisPlan:
    """``plan`` without the comparisons and references whose cells name a value that a ``narrowed`` grid key
    no longer holds (``grid.model.dropout_1=[0.5]`` on the command line); their names go to ``plan.dropped``."""

    def kept(cell: dict[str, Any]) -> bool:
        return all(key not in narrowed or key not in grid or any(_same(value, v) for v in grid[key])
                   for key, value in cell.items())

    comparisons = [c for c in plan.comparisons if c.metric is not None or all(kept(cell) for _, cell in c.cells())]
    references = [r for r in plan.references if kept(r.cell)]
    dropped = [c.name for c in plan.comparisons if c not in comparisons]
    dropped += [r.name for r in plan.references if r not in references]
    return replace(plan, comparisons=comparisons, references=references, dropped=[*plan.dropped, *dropped])


def design_problems(design: SeedDesign) -> list[tuple[str, Any, str]]:
    """Every invalid field of a sequential seed design as (field, value, allowed)."""
    problems: list[tuple[str, Any, str]] = []
    if design.min < 2:
        problems.append(("seeds.min", design.min, "an integer >= 2 (a paired test needs two seeds)"))
    if design.max < design.min:
        problems.append(("seeds.max", design.max, f"an integer >= seeds.min ({design.min})"))
    if design.batch < 1:
        problems.append(("seeds.batch", design.batch, "an integer >= 1"))
    if design.first < 0:
        problems.append(("seeds.first", design.first, "an integer >= 0"))
    return problems
