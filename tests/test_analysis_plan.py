"""The declared analysis plan and the sequential seed design in a study file: loaded, checked, refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dropout_lab.config.analysis_plan import SeedDesign
from dropout_lab.config.study_spec import load_spec
from dropout_lab.errors import StudySpecError

COMPARISON = {"name": "0.3 vs 0.5", "treatment": {"model.dropout_1": 0.3}, "control": {"model.dropout_1": 0.5},
              "margin": 0.003, "why": "the seed sd at the best-validation epoch"}
REFERENCE = {"name": "printed", "cell": {"model.dropout_1": 0.5}, "value": 0.852,
             "why": "one printed run against the prediction interval for one run"}
STUDY = {"name": "planned", "question": "q", "experiment": "smoke", "epochs": 1,
         "grid": {"model.dropout_1": [0.3, 0.5]}, "seeds": {"first": 40, "min": 4, "max": 10, "batch": 3},
         "plan": {"comparisons": [COMPARISON]}}


def _load(tmp_path: Path, **changes):
    fields = {**STUDY, **changes}
    path = tmp_path / "planned.yaml"
    path.write_text(yaml.safe_dump(fields))
    return load_spec(str(path))


def test_a_seed_design_gives_its_looks_and_seeds(tmp_path: Path) -> None:
    spec = _load(tmp_path)
    assert spec.design == SeedDesign(first=40, min=4, max=10, batch=3)
    assert spec.design.looks() == [4, 7, 10]
    assert spec.seed_list == [40, 41, 42, 43]
    assert spec.at_look(7).seeds == list(range(40, 47)) and spec.at_look(7).design is None
    assert SeedDesign(min=10, max=60, batch=10).looks() == [10, 20, 30, 40, 50, 60]
    assert SeedDesign(min=10, max=10, batch=10).looks() == [10]


def test_the_plan_is_loaded_with_its_defaults(tmp_path: Path) -> None:
    plan = _load(tmp_path).plan
    assert plan is not None and plan.primary == "test_acc_at_best_val" and plan.alpha == 0.05
    assert (plan.test_column, plan.validation_column) == ("best_test_acc", "best_val_acc")
    assert list(plan.families()) == ["main"] and plan.comparisons[0].margin == 0.003


def test_a_reference_needs_no_margin_and_an_older_files_margin_is_ignored(tmp_path: Path) -> None:
    goal = {**REFERENCE, "name": "goal", "value": 0.89, "goal": True, "why": "a population claim"}
    plan = _load(tmp_path, plan={"comparisons": [COMPARISON], "references": [REFERENCE, goal]}).plan
    assert plan is not None and [r.margin for r in plan.references] == [None, None]
    assert [r.goal for r in plan.references] == [False, True]
    older = _load(tmp_path, plan={"comparisons": [COMPARISON], "references": [{**REFERENCE, "margin": 0.016}]}).plan
    assert older is not None and older.references[0].margin == 0.016  # loads; no verdict reads it


@pytest.mark.parametrize(("changes", "message"), [
    ({"plan": {"comparisons": [COMPARISON], "references": [{**REFERENCE, "value": 85.2}]}},
     "plan.references[0].value=85.2 is invalid: allowed an accuracy in (0, 1)"),
    ({"plan": {"comparisons": [COMPARISON], "references": [{**REFERENCE, "why": " "}]}},
     "plan.references[0].why=' ' is invalid: allowed a one-line statement of what the check is"),
    ({"plan": {"primary": "test_acc_somewhere", "comparisons": [COMPARISON]}},
     "plan.primary='test_acc_somewhere' is invalid: allowed one of test_acc_at_best_val, test_acc_last_epoch"),
    ({"plan": {"alpha": 0.7, "comparisons": [COMPARISON]}}, "plan.alpha=0.7 is invalid"),
    ({"plan": {"correction": "sidak", "comparisons": [COMPARISON]}}, "plan.correction='sidak' is invalid"),
    ({"plan": {"comparisons": [{**COMPARISON, "margin": 0.0}]}}, "plan.comparisons[0].margin=0.0 is invalid"),
    ({"plan": {"comparisons": [{**COMPARISON, "why": " "}]}}, "a one-line justification of the margin"),
    ({"plan": {"comparisons": [{**COMPARISON, "treatment": {"model.dropout_2": 0.3}}]}},
     "plan.comparisons[0].treatment=['model.dropout_2'] is invalid: allowed keys of the study's cells: "
     "model.dropout_1"),
    ({"plan": {"comparisons": [{**COMPARISON, "treatment": {"model.dropout_1": 0.2}}]}},
     "plan.comparisons[0].treatment.model.dropout_1=0.2 is invalid: allowed one of the grid's values [0.3, 0.5]"),
    ({"plan": {"comparisons": [COMPARISON, COMPARISON]}}, "'0.3 vs 0.5' is invalid: allowed a name used once"),
    ({"plan": {"comparisons": [{**COMPARISON, "minus": {"treatment": {"model.dropout_1": 0.3},
                                                        "control": {"model.dropout_1": 0.3}}}]}},
     "plan.comparisons[0].minus.treatment={'model.dropout_1': 0.3} is invalid: allowed a cell other than "
     "minus.control's"),
    ({"plan": {"comparisons": [{**COMPARISON, "minus": {"treatment": {"model.dropout_1": 0.3},
                                                        "control": {"model.dropout_1": 0.7}}}]}},
     "plan.comparisons[0].minus.control.model.dropout_1=0.7 is invalid: allowed one of the grid's values"),
    ({"plan": {"comparisons": [{**COMPARISON, "minus": {"treatment": {"model.dropout_1": 0.3}}}]}},
     "missing required field(s): plan.comparisons[0].minus.control"),
    ({"plan": None}, "plan=None is invalid: allowed a plan with at least one comparison"),
    ({"seeds": {"first": 0, "min": 1, "max": 10, "batch": 5}}, "seeds.min=1 is invalid"),
    ({"seeds": {"first": 0, "min": 10, "max": 5, "batch": 5}}, "seeds.max=5 is invalid"),
    ({"seeds": {"min": 10, "max": 20, "step": 5}}, "seeds.step=5 is invalid: allowed only the keys"),
    ({"seeds": [1, 1]}, "seeds=[1, 1] is invalid: allowed seeds listed once each"),
])
def test_a_bad_plan_or_design_is_refused_naming_field_value_and_what_is_allowed(tmp_path: Path, changes: dict,
                                                                                 message: str) -> None:
    with pytest.raises(StudySpecError, match=None) as error:
        _load(tmp_path, **changes)
    assert message in str(error.value), str(error.value)


def test_a_tuning_study_cannot_take_a_sequential_design(tmp_path: Path) -> None:
    with pytest.raises(StudySpecError, match="a list for a tuning study"):
        _load(tmp_path, grid={}, search_space={"optim.lr": {"type": "float", "low": 0.01, "high": 0.5}},
              n_trials=2, plan=None)
